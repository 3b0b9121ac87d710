"""Keys for django-ratelimit shared by every rate-limited surface (consent form, API sign-in)."""

from __future__ import annotations

import ipaddress

from django.http import HttpRequest


def client_address(_group: str, request: HttpRequest) -> str:
    """The connection's address, an IPv6 one as its /64 (one host usually holds a whole /64, as
    django-ratelimit's own ``"ip"`` key assumes).

    Not that ``"ip"`` key: it raises when a server gives no ``REMOTE_ADDR`` (a Unix socket, some
    test clients), a 500 instead of an answer; such requests share one bucket here.
    """
    address = request.META.get("REMOTE_ADDR") or ""
    try:
        return str(ipaddress.ip_network(f"{address}/{64 if ':' in address else 32}", strict=False).network_address)
    except ValueError:
        return "unknown"
