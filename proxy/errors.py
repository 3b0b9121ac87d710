"""Proxy failures as one exception type, rendered in the project's error body (``bifrost_site.errors``)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from bifrost_site.errors import error_body, error_bytes
from governance.keys import VK_NOT_FOUND, VK_REQUIRED
from governance.models.usage import REFUSAL_TYPES

if TYPE_CHECKING:
    from governance.metering.counters.base import Rejection


class ProxyError(Exception):
    """A request the proxy answers itself with ``status`` and the Bifrost error body.

    ``type_`` is the enforcement ``type`` of SPEC section 6 (``virtual_key_required`` ...);
    ``retryable`` marks failures after which a fallback is tried (connection error, timeout,
    429, 5xx, or a rejection by the accounting seam).
    """

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type_: str | None = None,
        headers: dict[str, str] | None = None,
        extra_fields: dict[str, Any] | None = None,
        error_fields: dict[str, Any] | None = None,
        retryable: bool = False,
        upstream_reached: bool = True,
        refused_by: tuple[str, ...] = (),
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type_ = type_
        self.headers = headers or {}
        self.extra_fields = extra_fields or {}
        self.error_fields = error_fields or {}
        self.retryable = retryable
        # False when the upstream was never reached (connection refused or connect timeout):
        # such an attempt does not count against request limits (governance.metering.enforcement).
        self.upstream_reached = upstream_reached
        self.refused_by = refused_by  # the limits behind a governance refusal (``Rejection.refused_by``)
        self.recorded = False  # its ledger entry is written (``proxy.accounting.refused``)

    @property
    def is_refusal(self) -> bool:
        """Refused by governance (the key, an allow-list, a limit), not a bad request or an upstream failure."""
        return self.type_ in REFUSAL_TYPES

    def body(self) -> bytes:
        if not self.error_fields:
            return error_bytes(self.status, self.message, type_=self.type_, extra_fields=self.extra_fields)
        payload = error_body(self.status, self.message, type_=self.type_, extra_fields=self.extra_fields)
        # Upstream error details (type, code, param) kept beside the message for SDKs that read them.
        payload["error"] = {**self.error_fields, "message": self.message}
        return json.dumps(payload, separators=(",", ":")).encode()


def vk_required() -> ProxyError:
    return ProxyError(401, VK_REQUIRED, type_="virtual_key_required")


def vk_not_found() -> ProxyError:
    return ProxyError(401, VK_NOT_FOUND, type_="virtual_key_not_found")


def vk_blocked(message: str) -> ProxyError:
    return ProxyError(403, message, type_="virtual_key_blocked")


def provider_blocked(provider: str) -> ProxyError:
    return ProxyError(403, f"Provider '{provider}' is not allowed for this virtual key", type_="provider_blocked")


def model_blocked(model: str) -> ProxyError:
    return ProxyError(403, f"Model '{model}' is not allowed for this virtual key", type_="model_blocked")


def bad_request(message: str) -> ProxyError:
    return ProxyError(400, message)


def refusal(rejection: Rejection) -> ProxyError:
    """Governance's refusal (402, 429 or 503 from the counters; 400 for an unpriced model on a
    budgeted path) as the proxy's answer, ``Retry-After`` included."""
    return ProxyError(
        rejection.status,
        rejection.message,
        type_=rejection.type,
        headers=rejection.headers,
        refused_by=rejection.refused_by,
    )
