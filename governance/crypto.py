"""Encryption at rest for provider key values (they must be sent upstream, so not hashed)."""

from __future__ import annotations

import base64
import hashlib
from functools import cache

from cryptography.fernet import Fernet, InvalidToken
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured


@cache
def _fernet() -> Fernet:
    configured = settings.BIFROST_ENCRYPTION_KEY
    if configured:
        try:
            return Fernet(configured.encode())
        except ValueError:
            message = "BIFROST_ENCRYPTION_KEY must be a Fernet key (32 url-safe base64 bytes)"
            raise ImproperlyConfigured(message) from None
    derived = hashlib.sha256(b"bifrost-provider-keys:" + settings.SECRET_KEY.encode()).digest()
    return Fernet(base64.urlsafe_b64encode(derived))


def encrypt(value: str) -> str:
    return _fernet().encrypt(value.encode("utf-8")).decode("ascii")


def decrypt(token: str) -> str:
    try:
        return _fernet().decrypt(token.encode("ascii")).decode("utf-8")
    except InvalidToken:
        raise ImproperlyConfigured("a provider key cannot be decrypted: the encryption key changed") from None
