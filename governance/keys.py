"""Pure functions for secret values: generation, digests, masking, comparison.

A virtual key value is ``sk-bf-`` + a UUID4 (42 characters). Only its SHA-256 digest and its
last four characters are stored, so a database dump does not leak usable keys.
"""

from __future__ import annotations

import hashlib
import hmac
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


def mask_virtual_key(last4: str) -> str:
    return f"{VK_PREFIX}…{last4}"


def mask_secret(last4: str) -> str:
    return f"…{last4}" if last4 else ""


def digests_match(value: str, stored_digest: str) -> bool:
    return hmac.compare_digest(digest(value), stored_digest)


def new_token(prefix: str) -> str:
    """A random bearer secret (admin API tokens, OAuth codes and tokens)."""
    return f"{prefix}{secrets.token_urlsafe(32)}"
