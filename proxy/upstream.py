"""Calls to upstream providers over pooled keep-alive connections (``proxy.http1``).

The hot path's own HTTP/1.1 client rather than urllib3 or ``requests``: see ``proxy.http1`` for
why (about 10x less CPU per call). Retries and redirects are off (fallbacks are the proxy's own
decision); the connect timeout is ``PROXY_CONNECT_TIMEOUT_SECONDS`` and the read timeout the
provider's ``timeout_seconds`` (it bounds every wait for bytes, so a stream that stalls is cut off
too). A JSON answer larger than ``PROXY_MAX_RESPONSE_BYTES`` is refused (502).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from django.conf import settings

from bifrost_site.slots import lent
from governance.metering.snapshot import KeySnapshot, ProviderSnapshot
from governance.models.providers import RESERVED_EXTRA_HEADERS
from proxy import http1
from proxy.errors import ProxyError

# Never forwarded: hop-by-hop headers (RFC 9110 section 7.6.1), ones we set ourselves, the
# caller's credentials (the VK or any key: the provider key replaces them) and cookies.
DROP_REQUEST_HEADERS = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
        "content-type",
        "accept-encoding",
        "authorization",
        "x-api-key",
        "x-goog-api-key",
        "api-key",
        "cookie",
        "forwarded",
        "x-forwarded-for",
        "x-forwarded-host",
        "x-forwarded-proto",
        "x-real-ip",
        # They choose which organisation or project of the operator's provider account is
        # billed: that is the operator's decision (a provider's extra_headers), never a caller's.
        "openai-organization",
        "openai-project",
    }
)
# Answer headers naming the operator's provider account: callers have no business knowing it.
ACCOUNT_RESPONSE_HEADERS = frozenset({"openai-organization", "openai-project", "anthropic-organization-id"})
DROP_RESPONSE_HEADERS = ACCOUNT_RESPONSE_HEADERS | frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "content-length",
        "content-encoding",
        "content-type",
        "set-cookie",
        "server",
        "date",
    }
)

# The pool and request path for each upstream URL, so a call parses no URL: remembered up to
# MAX_TARGETS distinct URLs, then the table starts afresh.
_targets: dict[str, tuple[http1.Pool, str]] = {}
MAX_TARGETS = 1024


def target(url: str) -> tuple[http1.Pool, str]:
    """The pooled connections for ``url``'s origin and the path to request there."""
    found = _targets.get(url)
    if found is not None:
        return found
    scheme: str | None
    port: int | None
    try:
        parts = urlsplit(url)
        scheme, port = parts.scheme.lower(), parts.port
    except ValueError:  # an invalid port: a configuration error, not the client's
        scheme = port = None
    if scheme not in ("http", "https") or not parts.hostname:
        raise ProxyError(502, "upstream base URL is not a valid http(s) URL", retryable=True, upstream_reached=False)
    port = port or (443 if scheme == "https" else 80)
    pool = http1.pool_for(scheme, parts.hostname, port, settings.PROXY_POOL_MAXSIZE)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    if len(_targets) >= MAX_TARGETS:
        _targets.clear()
    found = _targets[url] = (pool, path)
    return found


def forwardable_headers(environ: dict[str, Any]) -> list[tuple[str, str]]:
    """The client's headers that may go upstream (WSGI ``HTTP_*`` keys back to header names)."""
    connection_listed = {
        token.strip().lower() for token in environ.get("HTTP_CONNECTION", "").split(",") if token.strip()
    }
    out: list[tuple[str, str]] = []
    for key, value in environ.items():
        if not key.startswith("HTTP_"):
            continue
        name = key[5:].replace("_", "-").lower()
        if name in DROP_REQUEST_HEADERS or name in connection_listed or name.startswith("x-bf-"):
            continue
        out.append((name, value))
    return out


def upstream_url(provider: ProviderSnapshot, key: KeySnapshot, path: str, model: str = "") -> str:
    """``base_url`` + the API path; a base URL that already ends in ``/v1`` is not doubled.

    Azure: the key's endpoint, the model's deployment and the API version, e.g.
    ``{endpoint}/openai/deployments/{deployment}/chat/completions?api-version=2024-10-21``.
    """
    if provider.provider_type == "azure":
        azure = key.azure
        if azure is None:  # refused on every write; a row from before that rule
            raise ProxyError(502, f"provider key '{key.name}' has no azure_key_config endpoint", retryable=True)
        suffix = path[4:] if path.startswith("/v1/") else path.lstrip("/")
        if suffix == "models":
            return f"{azure.endpoint}/openai/models?api-version={azure.api_version}"
        return f"{azure.endpoint}/openai/deployments/{azure.deployment(model)}/{suffix}?api-version={azure.api_version}"
    base = provider.base_url
    if base.endswith("/v1") and path.startswith("/v1/"):
        return base + path[3:]
    return base + path


def request_headers(
    provider: ProviderSnapshot, key: KeySnapshot, client_headers: list[tuple[str, str]]
) -> dict[str, str]:
    headers = dict(client_headers)
    headers["content-type"] = "application/json"
    # Identity: the proxy reads the body (usage) and must not have to decompress it.
    headers["accept-encoding"] = "identity"
    for name, value in provider.extra_headers:
        lower = name.lower()
        # Refused on every write (governance.models.providers); skipped here too, for rows saved
        # before that rule: a second Host or Content-Length would desynchronise the upstream.
        if lower not in RESERVED_EXTRA_HEADERS:
            headers[lower] = value
    if provider.api_format == "anthropic":
        headers["x-api-key"] = key.value
        headers.setdefault("anthropic-version", "2023-06-01")
    elif provider.api_format == "gemini":
        headers["x-goog-api-key"] = key.value
    elif provider.provider_type == "azure":
        headers["api-key"] = key.value
    else:
        headers["authorization"] = f"Bearer {key.value}"
    return headers


def send(
    method: str,
    provider: ProviderSnapshot,
    key: KeySnapshot,
    path: str,
    body: bytes | None,
    client_headers: list[tuple[str, str]],
    *,
    stream: bool,
    model: str = "",
) -> http1.Response:
    """One upstream call; with ``stream`` False the body is read (``.data``) and the connection
    released. Network failures become ProxyError 502/504 (retryable)."""
    name = provider.name
    try:
        pool, request_path = target(upstream_url(provider, key, path, model))
        headers = request_headers(provider, key, client_headers)
        with lent():  # the request's slot runs another request while this one waits (bifrost_site.slots)
            answer = http1.request(
                pool,
                method,
                request_path,
                headers.items(),
                body,
                connect_timeout=settings.PROXY_CONNECT_TIMEOUT_SECONDS,
                read_timeout=provider.timeout_seconds,
            )
            if not stream:
                try:
                    answer.read(settings.PROXY_MAX_RESPONSE_BYTES)
                finally:
                    answer.release()
        return answer
    except ValueError as exc:
        raise ProxyError(400, f"cannot forward the request: {exc}") from None
    except http1.ConnectTimeout:
        message = f"upstream provider '{name}' did not accept a connection in time"
        raise ProxyError(504, message, retryable=True, upstream_reached=False) from None
    except http1.ConnectFailed:
        raise ProxyError(
            502, f"upstream provider '{name}' is unreachable", retryable=True, upstream_reached=False
        ) from None
    except http1.ReadTimeout:
        message = f"upstream provider '{name}' did not answer within {provider.timeout_seconds:g}s"
        raise ProxyError(504, message, retryable=True) from None
    except http1.UpstreamError as exc:
        raise ProxyError(502, f"upstream provider '{name}' failed: {exc}", retryable=True) from None


def response_headers(upstream: http1.Response) -> list[tuple[str, str]]:
    """The upstream's answer headers a client may see. Its ``x-request-id`` comes back as
    ``x-upstream-request-id``: the client's ``x-request-id`` is the gateway's id of the request
    (``proxy.handler``), and the provider's own stays at hand for a support ticket."""
    out = []
    for name, value in upstream.headers:
        lower = name.lower()
        if lower in DROP_RESPONSE_HEADERS:
            continue
        out.append(("x-upstream-request-id", value) if lower == "x-request-id" else (name, value))
    return out
