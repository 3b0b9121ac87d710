from __future__ import annotations

import pytest

pytestmark = pytest.mark.django_db


def test_health_is_ok_when_database_answers(client, settings):
    settings.REDIS_URL = None
    response = client.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "database": "ok", "redis": "disabled"}


def test_health_is_503_naming_redis_when_redis_is_down(client, settings):
    # Port 1 on loopback refuses connections: the same answer as a stopped Redis.
    settings.REDIS_URL = "redis://:secret-password@127.0.0.1:1/0"
    response = client.get("/health")
    assert response.status_code == 503
    assert response.json() == {"status": "unhealthy", "database": "ok", "redis": "unreachable"}
    assert b"secret-password" not in response.content


def test_health_refuses_writes(client):
    assert client.post("/health").status_code == 405
