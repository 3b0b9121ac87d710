"""The connection test of a provider key: one real request for the upstream's model list.

It goes out exactly as the proxy's calls do (``proxy.upstream``: the provider type's URL layout
and credential header, the provider's extra headers), so a key that passes here authenticates on
the request path too: OpenAI-compatible types ``GET {base}/v1/models`` with ``Authorization:
Bearer``, Anthropic ``GET {base}/v1/models`` with ``x-api-key`` and ``anthropic-version``, Gemini
``GET {base}/v1beta/models`` with ``x-goog-api-key``, Azure ``GET {endpoint}/openai/models`` with
``api-key``.

Governance never imports ``proxy`` at module level (ARCHITECTURE.md): ``proxy.upstream`` is
imported when a test runs. The result says what a person needs (status, how many models, how
long, a short reason) and never contains the key: an upstream that echoes it is redacted.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import logging
import time
from dataclasses import dataclass
from typing import Any

from governance.metering import snapshot
from governance.models import ProviderKey

logger = logging.getLogger("bifrost.governance")

# The wait for the answer; the wait for a connection is the proxy's (PROXY_CONNECT_TIMEOUT_SECONDS).
TIMEOUT_SECONDS = 5.0
MAX_REASON = 160


@dataclass(frozen=True)
class CheckResult:
    ok: bool
    status: int | None  # the upstream's HTTP status; None when no answer came
    millis: int
    models: int | None = None
    reason: str = ""

    @property
    def message(self) -> str:
        """``OK: 200, 12 models listed in 123 ms`` or what went wrong."""
        if self.ok:
            listed = f"{self.models} model{'s' if self.models != 1 else ''} listed" if self.models is not None else ""
            return f"OK: {self.status}, {listed or 'answered'} in {self.millis} ms"
        if self.status is None:
            return f"Failed: {self.reason} ({self.millis} ms)"
        return f"Failed: HTTP {self.status}{': ' + self.reason if self.reason else ''} ({self.millis} ms)"


def _redact(text: str, secret: str) -> str:
    text = text.replace(secret, "[key]") if secret else text
    text = " ".join(text.split())
    return text if len(text) <= MAX_REASON else text[: MAX_REASON - 1] + "…"


def _reason(body: bytes | None) -> str:
    """The error message of an upstream's error body (OpenAI, Anthropic, Gemini and Azure all put
    it at ``error.message``), else the start of the body."""
    if not body:
        return ""
    try:
        payload: Any = json.loads(body)
    except ValueError:
        return body[:MAX_REASON].decode("utf-8", "replace")
    error = payload.get("error") if isinstance(payload, dict) else None
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        return str(error["message"])
    if isinstance(error, str):
        return error
    return json.dumps(payload)[:MAX_REASON]


def _count(body: bytes | None) -> int | None:
    """How many models a list holds: ``data`` (OpenAI, Anthropic, Azure) or ``models`` (Gemini)."""
    try:
        payload = json.loads(body or b"")
    except ValueError:
        return None
    for name in ("data", "models"):
        items = payload.get(name) if isinstance(payload, dict) else None
        if isinstance(items, list):
            return len(items)
    return None


def check_key(*, key: ProviderKey, timeout: float = TIMEOUT_SECONDS) -> CheckResult:
    """Ask the upstream of ``key``'s provider for its model list with ``key``; never raises for
    an upstream's failure (it is the result)."""
    upstream: Any = importlib.import_module("proxy.upstream")
    errors: Any = importlib.import_module("proxy.errors")
    # The rows as committed now: this process's cache may predate a change made elsewhere.
    snapshot.invalidate_local()
    provider = snapshot.providers().get(key.provider.name)
    found = next((k for k in provider.keys if k.id == str(key.pk)), None) if provider else None
    if provider is None or found is None:
        return CheckResult(False, None, 0, reason="the key is no longer configured")
    provider = dataclasses.replace(provider, timeout_seconds=min(provider.timeout_seconds, timeout))
    path = "/v1beta/models?pageSize=1000" if provider.api_format == "gemini" else "/v1/models"
    started = time.monotonic()
    try:
        answer = upstream.send("GET", provider, found, path, None, [], stream=False)
    except errors.ProxyError as exc:
        result = CheckResult(False, None, _since(started), reason=_redact(exc.message, found.value))
    else:
        millis = _since(started)
        if 200 <= answer.status < 300:
            result = CheckResult(True, answer.status, millis, models=_count(answer.data))
        else:
            result = CheckResult(False, answer.status, millis, reason=_redact(_reason(answer.data), found.value))
    logger.info(
        "provider key connection test",
        extra={"provider": provider.name, "key_name": found.name, "ok": result.ok, "status": result.status},
    )
    return result


def _since(started: float) -> int:
    return round((time.monotonic() - started) * 1000)
