"""The first enforcement checks (SPEC section 6, rows 1-3) on the VK the client presented
(``governance.keys.presented_virtual_key`` reads it from the headers)."""

from __future__ import annotations

from typing import Any

from django.conf import settings

from governance.keys import presented_virtual_key
from governance.metering import snapshot
from governance.metering.snapshot import VirtualKeySnapshot
from proxy import errors


def authenticate(environ: dict[str, Any]) -> VirtualKeySnapshot | None:
    """The caller's VK snapshot; None only in direct-key mode without a VK. Raises ProxyError 401/403."""
    value = presented_virtual_key(environ)
    if value is None:
        if settings.GOVERNANCE_ENFORCE_VIRTUAL_KEYS:
            raise errors.vk_required()
        return None
    vk = snapshot.virtual_key(value)
    if vk is None:
        raise errors.vk_not_found()
    if not vk.is_active:
        raise errors.vk_blocked("Virtual key is inactive")
    if vk.is_expired:
        raise errors.vk_blocked("Virtual key has expired")
    return vk
