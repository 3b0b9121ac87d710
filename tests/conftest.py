"""The fixed cast of actors shared by every test module.

- ``alice``: superuser, the platform admin; ``alice_api`` calls the management API with her token.
- ``bob``: staff in the view-only group; ``bob_api`` can read but not write.
- ``anon_api``: no credentials at all.

The fixtures of the counter and of the end-to-end enforcement tests live in two plugin modules
listed in ``pytest_plugins`` below, so every test module that asks for them by name gets them
(test modules import only their helper functions and constants, never a fixture):

- ``tests.governance.conftest_counters``: ``counter_mode``, ``redis_mode``, ``private_redis``,
  ``redis_server_process``, ``make_vk``;
- ``tests.proxy.conftest_enforcement``: ``gateways``, ``fault_redis``, ``price``.
"""

from __future__ import annotations

import time

import pytest
from django.contrib.auth.models import Group, Permission
from rest_framework.test import APIClient

from governance.services import api_token_create

pytest_plugins = ["tests.governance.conftest_counters", "tests.proxy.conftest_enforcement"]


@pytest.fixture(autouse=True, scope="session")
def _flush_retries_a_deadlock():
    """A transactional test's teardown empties the tables with one ``TRUNCATE`` of them all, in
    an order of its own (a set's), while the live gateways of the test may still be writing its
    last usage rows: PostgreSQL can pick the TRUNCATE as a deadlock's victim. Tried again, it
    finds the writes done. (Only tests truncate tables under traffic.)"""
    from django.core.management.base import CommandError
    from django.core.management.commands import flush

    original = flush.Command.handle

    def handle(self, *args, **options):
        for attempt in range(1, 6):
            try:
                return original(self, *args, **options)
            except CommandError as exc:
                if attempt == 5 or "deadlock" not in str(exc.__cause__).lower():
                    raise
                time.sleep(0.2 * attempt)
        return None

    flush.Command.handle = handle
    yield
    flush.Command.handle = original


@pytest.fixture(autouse=True)
def fast_password_hashing(settings):
    """PBKDF2's deliberate slowness costs ~0.5 s per user created; tests need no such strength."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def alice(django_user_model):
    return django_user_model.objects.create_superuser("alice", "alice@example.com", "alice-password-123")


@pytest.fixture
def alice_token(alice) -> str:
    return api_token_create(user=alice, name="tests")[1]


@pytest.fixture
def alice_api(alice_token) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {alice_token}")
    return client


@pytest.fixture
def bob(django_user_model):
    user = django_user_model.objects.create_user("bob", "bob@example.com", "bob-password-123", is_staff=True)
    viewers, _ = Group.objects.get_or_create(name="viewers")
    viewers.permissions.set(Permission.objects.filter(codename__startswith="view_"))
    user.groups.add(viewers)
    return user


@pytest.fixture
def bob_api(bob) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {api_token_create(user=bob, name='tests')[1]}")
    return client


@pytest.fixture
def anon_api() -> APIClient:
    return APIClient()


@pytest.fixture(scope="session")
def django_db_modify_db_settings(tmp_path_factory) -> None:
    """SQLite tests use a file database: concurrency tests open one connection per thread,
    which an in-memory shared-cache database answers with "table is locked" instead of waiting."""
    from django.conf import settings

    database = settings.DATABASES["default"]
    if database["ENGINE"] == "django.db.backends.sqlite3":
        database.setdefault("TEST", {})["NAME"] = str(tmp_path_factory.mktemp("db") / "test.sqlite3")
