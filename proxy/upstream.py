"""The HTTP client to upstream providers: pooled urllib3 connections per upstream origin.

urllib3 rather than ``requests`` on the hot path: it is ``requests``' own transport without the
per-call session, environment (``trust_env``) and hook machinery, about 2.5x less CPU per call.
Retries and redirects are off (fallbacks are the proxy's own decision); the connect timeout is
``PROXY_CONNECT_TIMEOUT_SECONDS`` and the read timeout the provider's ``timeout_seconds`` (it
bounds every wait for bytes, so a stream that stalls is cut off too).
"""

from __future__ import annotations

import threading

import urllib3
from django.conf import settings
from urllib3.connectionpool import HTTPConnectionPool, connection_from_url
from urllib3.exceptions import ConnectTimeoutError, HTTPError, NewConnectionError, ProtocolError, TimeoutError
from urllib3.util import parse_url

from governance.snapshot import KeySnapshot, ProviderSnapshot
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
    }
)
DROP_RESPONSE_HEADERS = frozenset(
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

# One connection pool per upstream origin, found by the full URL of the call: the
# PoolManager's per-call URL parsing and pool lookup cost ~7 % of the gateway's CPU per request.
_targets: dict[str, tuple[HTTPConnectionPool, str]] = {}
_pools: dict[tuple[str, str, int | None], HTTPConnectionPool] = {}
_pool_lock = threading.Lock()
MAX_TARGETS = 1024  # distinct upstream URLs remembered; beyond that the table starts afresh


def target(url: str) -> tuple[HTTPConnectionPool, str]:
    """The pooled connections for ``url``'s origin and the path to request there."""
    found = _targets.get(url)
    if found is not None:
        return found
    parsed = parse_url(url)
    origin = (parsed.scheme or "http", parsed.host or "", parsed.port)
    with _pool_lock:
        pool = _pools.get(origin)
        if pool is None:
            pool = connection_from_url(url, maxsize=settings.PROXY_POOL_MAXSIZE, block=False, retries=False)
            _pools[origin] = pool
        if len(_targets) >= MAX_TARGETS:
            _targets.clear()
        found = _targets[url] = (pool, parsed.request_uri)
    return found


def forwardable_headers(environ: dict) -> list[tuple[str, str]]:
    """The client's headers that may go upstream (WSGI ``HTTP_*`` keys back to header names)."""
    connection_listed = {
        token.strip().lower() for token in environ.get("HTTP_CONNECTION", "").split(",") if token.strip()
    }
    out = []
    for key, value in environ.items():
        if not key.startswith("HTTP_"):
            continue
        name = key[5:].replace("_", "-").lower()
        if name in DROP_REQUEST_HEADERS or name in connection_listed or name.startswith("x-bf-"):
            continue
        out.append((name, value))
    return out


def upstream_url(provider: ProviderSnapshot, path: str) -> str:
    """``base_url`` + the API path; a base URL that already ends in ``/v1`` is not doubled."""
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
        headers[name.lower()] = value
    if provider.api_format == "anthropic":
        headers["x-api-key"] = key.value
        headers.setdefault("anthropic-version", "2023-06-01")
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
) -> urllib3.BaseHTTPResponse:
    """One upstream call. Network failures become ProxyError 502/504 (retryable)."""
    timeout = urllib3.Timeout(connect=settings.PROXY_CONNECT_TIMEOUT_SECONDS, read=provider.timeout_seconds)
    try:
        pool, request_path = target(upstream_url(provider, path))
        return pool.urlopen(
            method,
            request_path,
            body=body,
            headers=request_headers(provider, key, client_headers),
            timeout=timeout,
            retries=False,
            redirect=False,
            assert_same_host=False,
            preload_content=not stream,
            decode_content=False,
        )
    except NewConnectionError:
        raise ProxyError(
            502, f"upstream provider '{provider.name}' is unreachable", retryable=True, upstream_reached=False
        ) from None
    except ConnectTimeoutError:
        message = f"upstream provider '{provider.name}' did not accept a connection in time"
        raise ProxyError(504, message, retryable=True, upstream_reached=False) from None
    except TimeoutError:
        message = f"upstream provider '{provider.name}' did not answer within {provider.timeout_seconds:g}s"
        raise ProxyError(504, message, retryable=True) from None
    except (ProtocolError, HTTPError, OSError) as exc:
        message = f"upstream provider '{provider.name}' failed: {type(exc).__name__}"
        raise ProxyError(502, message, retryable=True) from None


def response_headers(upstream: urllib3.BaseHTTPResponse) -> list[tuple[str, str]]:
    return [(name, value) for name, value in upstream.headers.items() if name.lower() not in DROP_RESPONSE_HEADERS]
