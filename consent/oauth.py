"""Pure OAuth helpers for the consent flow: redirect-URI rules, PKCE, secrets, redirect URLs.

Nothing here touches the database, so every rule can be tested on its own.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import re
import secrets
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from governance.keys import digest

# RFC 7636 section 4.1: 43-128 characters from the unreserved set. A S256 challenge is the
# base64url SHA-256 of the verifier: exactly 43 characters without padding.
_VERIFIER_RE = re.compile(r"^[A-Za-z0-9\-._~]{43,128}$")
_CHALLENGE_RE = re.compile(r"^[A-Za-z0-9\-_]{43}$")
# RFC 3986 scheme grammar; a private-use scheme (RFC 8252 section 7.1) such as cursor:// or
# com.example.app:/callback is what native MCP clients register.
_SCHEME_RE = re.compile(r"^[a-z][a-z0-9+.\-]*$")
# Schemes that run code, read local files or smuggle content: never a redirect target, even
# though they are syntactically valid schemes.
FORBIDDEN_SCHEMES = frozenset({"javascript", "data", "file", "vbscript", "blob", "about", "ftp", "ws", "wss"})
MAX_REDIRECT_URI_LENGTH = 2000
MAX_REDIRECT_URIS = 10


class RedirectUriError(ValueError):
    """A redirect URI that must not be registered; the message names the problem."""


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def validate_redirect_uri(uri: object) -> str:
    """Return ``uri`` when it is an acceptable redirect target, else raise ``RedirectUriError``.

    Accepted: ``https://`` with a host, ``http://`` on a loopback host (RFC 8252 section 7.3) and
    private-use schemes. Refused: ``javascript:``, ``data:``, ``file:`` and friends, remote plain
    ``http://``, fragments (RFC 6749 section 3.1.2) and credentials in the URI.
    """
    if not isinstance(uri, str) or not uri:
        raise RedirectUriError("redirect_uris must contain non-empty strings")
    if len(uri) > MAX_REDIRECT_URI_LENGTH:
        raise RedirectUriError(f"redirect_uri is longer than {MAX_REDIRECT_URI_LENGTH} characters")
    if uri != uri.strip() or any(ord(ch) < 0x21 or ord(ch) == 0x7F for ch in uri):
        raise RedirectUriError(f"redirect_uri {uri!r} contains whitespace or control characters")
    scheme, sep, _ = uri.partition(":")
    scheme = scheme.lower()
    if not sep or not _SCHEME_RE.match(scheme):
        raise RedirectUriError(f"redirect_uri {uri!r} is not an absolute URI")
    if scheme in FORBIDDEN_SCHEMES:
        raise RedirectUriError(f"redirect_uri scheme {scheme!r} is not allowed")
    try:
        parts = urlsplit(uri)
        host = (parts.hostname or "").lower()
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError:
        raise RedirectUriError(f"redirect_uri {uri!r} is malformed")
    if parts.fragment or "#" in uri:
        raise RedirectUriError(f"redirect_uri {uri!r} must not contain a fragment")
    if parts.username is not None or parts.password is not None:
        raise RedirectUriError(f"redirect_uri {uri!r} must not contain credentials")
    if scheme == "https":
        if not host:
            raise RedirectUriError(f"redirect_uri {uri!r} has no host")
        return uri
    if scheme == "http":
        if not _is_loopback(host):
            raise RedirectUriError(f"redirect_uri {uri!r}: plain http is only allowed on a loopback host")
        return uri
    # A private-use scheme (cursor://, vscode://, com.example.app:/cb): the operating system
    # hands the URI to the app that registered the scheme, so nothing more can be checked here.
    return uri


def validate_redirect_uris(uris: object) -> list[str]:
    """The full list rule used by registration and the admin form."""
    if not isinstance(uris, list) or not uris:
        raise RedirectUriError("redirect_uris must be a non-empty list of URIs")
    if len(uris) > MAX_REDIRECT_URIS:
        raise RedirectUriError(f"at most {MAX_REDIRECT_URIS} redirect_uris may be registered")
    cleaned = [validate_redirect_uri(uri) for uri in uris]
    if len(set(cleaned)) != len(cleaned):
        raise RedirectUriError("redirect_uris must not contain duplicates")
    return cleaned


def redirect_target(uri: str) -> str:
    """Where a redirect URI sends the browser, as a person should read it: the host (with its
    port) of an http(s) URI, or ``scheme://host`` of a private-use one (the app that claimed
    ``cursor://`` opens it, so the scheme is what names the destination)."""
    parts = urlsplit(uri)
    if parts.scheme in ("http", "https"):
        return parts.netloc
    return f"{parts.scheme}://{parts.netloc}" if parts.netloc else f"{parts.scheme}:"


def is_valid_code_challenge(challenge: str) -> bool:
    return bool(_CHALLENGE_RE.match(challenge))


def is_valid_code_verifier(verifier: str) -> bool:
    return bool(_VERIFIER_RE.match(verifier))


def s256_challenge(verifier: str) -> str:
    """RFC 7636 ``BASE64URL-ENCODE(SHA256(ASCII(code_verifier)))`` without padding."""
    raw = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def pkce_matches(verifier: str, challenge: str) -> bool:
    if not is_valid_code_verifier(verifier):
        return False
    return hmac.compare_digest(s256_challenge(verifier), challenge)


def new_secret() -> tuple[str, str]:
    """A random secret and its digest; only the digest is ever stored."""
    value = secrets.token_urlsafe(32)
    return value, digest(value)


def secret_matches(value: str | None, stored_digest: str) -> bool:
    """Constant-time comparison; a missing value never matches."""
    if not value or not stored_digest:
        return False
    return hmac.compare_digest(digest(value), stored_digest)


def add_query(uri: str, params: dict[str, str]) -> str:
    """``uri`` with ``params`` added to its query, keeping what the client registered there."""
    parts = urlsplit(uri)
    query = parse_qsl(parts.query, keep_blank_values=True)
    query.extend(params.items())
    return urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(query), parts.fragment))
