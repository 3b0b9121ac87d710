"""``GET /health``: is this instance able to serve? Checks the database and, if configured, Redis.

200 ``{"status": "ok", ...}`` when every dependency answers; 503 with the failing component
named otherwise, so a load balancer takes the instance out of rotation. No authentication and
no secrets: connection URLs are never echoed.
"""

from __future__ import annotations

import logging

from django.conf import settings
from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.views.decorators.http import require_GET

logger = logging.getLogger("bifrost.health")


def _database() -> str:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
        return "ok"
    except Exception as exc:  # noqa: BLE001 - any failure means "not healthy", reported by name
        logger.warning("health: database unreachable", extra={"error": type(exc).__name__})
        return "unreachable"


def _redis() -> str:
    if not settings.REDIS_URL:
        return "disabled"
    import redis

    try:
        client = redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=1, socket_timeout=1)
        try:
            client.ping()
        finally:
            client.close()
        return "ok"
    except redis.RedisError as exc:
        logger.warning("health: redis unreachable", extra={"error": type(exc).__name__})
        return "unreachable"


@require_GET
def health(request: HttpRequest) -> JsonResponse:
    checks = {"database": _database(), "redis": _redis()}
    healthy = all(state in ("ok", "disabled") for state in checks.values())
    return JsonResponse({"status": "ok" if healthy else "unhealthy", **checks}, status=200 if healthy else 503)
