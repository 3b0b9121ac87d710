"""Pure functions for secret values: generation, digests, masking, comparison.

A virtual key value is ``sk-bf-`` + a UUID4 (42 characters). Only its SHA-256 digest and its
last four characters are stored, so a database dump does not leak usable keys.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid

VK_PREFIX = "sk-bf-"


def new_virtual_key_value() -> str:
    return f"{VK_PREFIX}{uuid.uuid4()}"


def digest(value: str) -> str:
    """Hex SHA-256 of a secret. Plain SHA-256 suffices: the values carry 122 random bits."""
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


def last_four(value: str) -> str:
    return value[-4:]


# Bifrost's answers to a missing or unknown VK (the proxy's 401s and the quota endpoint's).
VK_REQUIRED = "virtual key is required. Provide a virtual key via the x-bf-vk header."
VK_NOT_FOUND = "virtual key not found. The provided virtual key does not exist or has been revoked."


def mask_virtual_key(last4: str) -> str:
    return f"{VK_PREFIX}…{last4}"


def mask_secret(last4: str) -> str:
    return f"…{last4}" if last4 else ""


def new_token(prefix: str) -> str:
    """A random bearer secret (admin API tokens, OAuth codes and tokens)."""
    return f"{prefix}{secrets.token_urlsafe(32)}"


# ``api-key`` is where ``openai.AzureOpenAI`` clients send their key.
_PREFIXED_HEADERS = ("HTTP_X_API_KEY", "HTTP_X_GOOG_API_KEY", "HTTP_API_KEY")


def _canonical(value: str) -> str:
    # The prefix is matched case-insensitively; the stored digest is of the canonical form.
    return VK_PREFIX + value[6:] if value[:6].lower() == VK_PREFIX else value


def presented_virtual_key(environ: dict) -> str | None:
    """The VK value a client presented in a WSGI environ (or ``request.META``), or None.

    Header names are case-insensitive by construction (WSGI upper-cases them into ``HTTP_*``).
    ``x-bf-vk`` takes any value; ``Authorization: Bearer``, ``x-api-key``, ``x-goog-api-key`` and
    ``api-key`` count only with the ``sk-bf-`` prefix (matched case-insensitively), so a client that sends a
    provider key in direct-key mode is not mistaken for a VK holder.
    """
    value = environ.get("HTTP_X_BF_VK")
    if value and value.strip():
        return _canonical(value.strip())
    auth = environ.get("HTTP_AUTHORIZATION")
    if auth:
        scheme, _, token = auth.strip().partition(" ")
        token = token.strip()
        if scheme.lower() == "bearer" and token[:6].lower() == VK_PREFIX:
            return _canonical(token)
    for name in _PREFIXED_HEADERS:
        value = environ.get(name)
        if value and value.strip()[:6].lower() == VK_PREFIX:
            return _canonical(value.strip())
    return None
