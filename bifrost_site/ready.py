"""The lines the server prints once it is ready: where the API and the admin are, and what to do
first when there is no admin user yet (a new user's first question)."""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import urlsplit

from django.contrib.auth import get_user_model
from django.db import DatabaseError


def browsable(listener: str) -> str:
    """``http://0.0.0.0:8080`` as a URL a browser on this machine can open."""
    parts = urlsplit(listener)
    host = parts.hostname or "127.0.0.1"
    if host in ("0.0.0.0", "::", ""):  # noqa: S104 - reading a bind address, not binding
        host = "127.0.0.1"
    elif ":" in host:
        host = f"[{host}]"
    return f"{parts.scheme or 'http'}://{host}:{parts.port}" if parts.port else listener


def ready_lines(listeners: Iterable[str]) -> list[str]:
    addresses = [str(listener) for listener in listeners if str(listener).startswith("http")]
    if not addresses:  # a unix socket: the proxy in front knows the address
        return ["Bifrost gateway ready (listening on a unix socket)."]
    base = browsable(addresses[0])
    everywhere = any(urlsplit(a).hostname in ("0.0.0.0", "::") for a in addresses)  # noqa: S104
    lines = [
        f"Bifrost gateway ready: inference at {base}/v1 (OpenAI SDK base_url), {base}/anthropic, {base}/genai;"
        f" admin at {base}/admin/" + (" (listening on all interfaces)" if everywhere else ""),
    ]
    try:
        has_admin = get_user_model().objects.filter(is_superuser=True, is_active=True).exists()
    except DatabaseError:  # not migrated yet: the requests will say so; the line is only a hint
        has_admin = True
    if not has_admin:
        lines.append(
            "No admin user yet. In another terminal: .venv/bin/python manage.py createsuperuser"
            " (then log in at " + f"{base}/admin/; scripts use a token: manage.py create_api_token <user>)"
        )
    return lines
