"""The errors of the upstream layer, and the helpers that keep secrets out of their messages."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

if TYPE_CHECKING:
    from mcp_gateway.upstream.spec import ClientSpec


class UpstreamError(Exception):
    """An upstream MCP server could not be reached or did not answer; the message says why.

    Messages never carry a secret: no header value, no environment value, and URLs are quoted
    without their userinfo and query (see ``safe_url`` and ``scrub``).
    """


class ToolTimeout(UpstreamError):
    """A tool did not answer within its client's ``timeout_seconds``."""


def safe_url(url: str) -> str:
    """``url`` without userinfo, query and fragment (any of them may hold a token)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return "<invalid URL>"
    if not parts.scheme or not host:
        return "<invalid URL>"
    if ":" in host:  # an IPv6 literal
        host = f"[{host}]"
    netloc = f"{host}:{port}" if port is not None else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def scrub(text: str, secrets: Iterable[str]) -> str:
    """Replace every occurrence of each secret (of 3 characters or more) in ``text`` with ``***``."""
    for secret in sorted({s for s in secrets if s and len(s) >= 3}, key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


def seconds(value: float) -> str:
    """``30.0`` → ``30s``, ``0.5`` → ``0.5s``."""
    return f"{value:g}s"


def timeout_message(spec: ClientSpec, name: str) -> str:
    return f"tool '{name}' on MCP client '{spec.name}' did not answer within {seconds(spec.timeout_seconds)}"
