"""Virtual-key extraction and the first enforcement checks (SPEC section 6, rows 1-3).

Header names are case-insensitive by construction (WSGI upper-cases them into ``HTTP_*``).
``x-bf-vk`` takes any value; ``Authorization: Bearer``, ``x-api-key`` and ``x-goog-api-key``
count as a virtual key only with the ``sk-bf-`` prefix (matched case-insensitively), so a client
that sends a provider key in direct-key mode is not mistaken for a VK holder.
"""

from __future__ import annotations

from django.conf import settings

from governance import snapshot
from governance.keys import VK_PREFIX
from governance.snapshot import VirtualKeySnapshot
from proxy import errors

_PREFIXED = ("HTTP_X_API_KEY", "HTTP_X_GOOG_API_KEY")


def _canonical(value: str) -> str:
    # The prefix is matched case-insensitively; the stored digest is of the canonical form.
    return VK_PREFIX + value[6:] if value[:6].lower() == VK_PREFIX else value


def presented_virtual_key(environ: dict) -> str | None:
    """The VK value the client presented, or None."""
    value = environ.get("HTTP_X_BF_VK")
    if value and value.strip():
        return _canonical(value.strip())
    auth = environ.get("HTTP_AUTHORIZATION")
    if auth:
        scheme, _, token = auth.strip().partition(" ")
        token = token.strip()
        if scheme.lower() == "bearer" and token[:6].lower() == VK_PREFIX:
            return _canonical(token)
    for name in _PREFIXED:
        value = environ.get(name)
        if value and value.strip()[:6].lower() == VK_PREFIX:
            return _canonical(value.strip())
    return None


def authenticate(environ: dict) -> VirtualKeySnapshot | None:
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
