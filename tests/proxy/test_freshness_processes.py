"""A configuration change is in force on the very next request, in every worker of every process.

Two gateway processes of two workers each, on the test database, cache configuration for five
minutes (``GOVERNANCE_CONFIG_CACHE_SECONDS=300``): only the shared configuration generation
(``governance.metering.freshness``) can tell them about a change. The change is made by this test process,
as an operator's admin or API call in another worker would be. Runs in embedded mode (SQLite, the
generation in a shared file) and, in the production run, with PostgreSQL and Redis (the
generation pushed through Redis: ``tests/proxy/test_freshness_push.py`` covers its faults) and
with PostgreSQL alone (database row).
"""

from __future__ import annotations

import pytest
from django.conf import settings
from django.db import connection

from governance.metering import freshness
from governance.models import RateLimit, UsageRecord, VirtualKey
from governance.services import provider_create, provider_key_create, virtual_key_delete, virtual_key_rotate
from governance.services.virtual_keys import virtual_key_set_active
from tests.proxy.conftest import make_setup
from tests.proxy.conftest_enforcement import chat, post, wait_until

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

LONG_CACHE = {"GOVERNANCE_CONFIG_CACHE_SECONDS": "300"}
ROUNDS = 12  # fresh connections per process: both workers of each serve some of them


def _modes() -> list[dict[str, str | None]]:
    if connection.vendor == "sqlite":
        return [{}]
    modes = [{"REDIS_URL": None, "GOVERNANCE_COUNTERS": "database"}]
    if settings.REDIS_URL:
        modes.insert(0, {})
    return modes


@pytest.fixture(params=range(2), ids=["first-mode", "second-mode"])
def cluster(request, gateways):
    modes = _modes()
    if request.param >= len(modes):
        pytest.skip("this database has one freshness mode")
    env = {**LONG_CACHE, **modes[request.param]}
    return [gateways(workers=2, **env), gateways(workers=2, **env)]


def statuses(cluster, body, value) -> list[int]:
    return [post(process.url, body, vk=value).status for process in cluster for _ in range(ROUNDS)]


def warm(cluster, value, body=None) -> None:
    assert set(statuses(cluster, body or chat(), value)) == {200}


def test_a_deactivated_key_is_refused_by_every_worker_at_once(cluster, mock):
    live = make_setup(mock.url)
    warm(cluster, live.value)

    virtual_key_set_active(vk=live.vk, active=False)

    replies = [post(p.url, chat(), vk=live.value) for p in cluster for _ in range(ROUNDS)]
    assert {(r.status, r.json()["error"]["message"]) for r in replies} == {(403, "Virtual key is inactive")}

    virtual_key_set_active(vk=VirtualKey.objects.get(pk=live.vk.pk), active=True)
    assert set(statuses(cluster, chat(), live.value)) == {200}


def test_a_rotated_or_deleted_key_stops_working_everywhere_at_once(cluster, mock):
    live = make_setup(mock.url)
    warm(cluster, live.value)

    new_value = virtual_key_rotate(vk=live.vk)
    assert set(statuses(cluster, chat(), live.value)) == {401}
    assert set(statuses(cluster, chat(), new_value)) == {200}

    # Deleted while the gateways are still writing the usage rows of the answers just given: the
    # delete locks the key first, so it neither fails nor loses a row (services.locking).
    virtual_key_delete(vk=VirtualKey.objects.get(pk=live.vk.pk))
    assert set(statuses(cluster, chat(), new_value)) == {401}
    served = 2 * len(cluster) * ROUNDS
    wait_until(lambda: UsageRecord.objects.filter(model="gpt-4o-mini").count() >= served, what="usage rows")
    rows = list(UsageRecord.objects.attempts().values_list("model", "status_code", "virtual_key_id"))
    assert len(rows) == served, rows
    assert not UsageRecord.objects.filter(virtual_key__isnull=False).exists()
    # The old value's and the deleted key's 401s are entries too: refusals, no key of their own.
    assert set(UsageRecord.objects.refusals().values_list("status_code", "error_type")) == {
        (401, "virtual_key_not_found")
    }


def test_a_provider_added_in_one_process_routes_in_every_other_at_once(cluster, mock):
    live = make_setup(mock.url, allow_all_providers=True)
    warm(cluster, live.value)
    body = chat("fresh-openai/gpt-4o-mini")

    def served_by() -> set[str]:
        replies = [post(p.url, body, vk=live.value) for p in cluster for _ in range(ROUNDS)]
        assert {r.status for r in replies} == {200}
        return {r.json()["extra_fields"]["provider"] for r in replies}

    # Not a provider yet (and cached so): the whole string is a model of the VK's weighted config.
    assert served_by() == {"openai"}

    fresh = provider_create(name="fresh-openai", base_url=mock.url, timeout_seconds=2.0)
    provider_key_create(provider=fresh, name="main", value="sk-upstream-fresh")

    assert served_by() == {"fresh-openai"}


def test_a_raised_request_limit_admits_the_next_request_everywhere(cluster, mock):
    live = make_setup(mock.url, rate_limit={"request_max_limit": 1, "request_reset_duration": "1h"})
    assert post(cluster[0].url, chat(), vk=live.value).status == 200
    assert set(statuses(cluster, chat(), live.value)) == {429}

    limit = RateLimit.objects.get(virtual_key=live.vk)
    limit.request_max_limit = 1 + 2 * ROUNDS + 10
    limit.save()

    assert set(statuses(cluster, chat(), live.value)) == {200}


@pytest.mark.skipif(not settings.REDIS_URL, reason="the Redis copy of the generation needs REDIS_URL")
def test_a_lost_redis_generation_never_leaves_a_revoked_key_working(gateways, mock):
    """Redis restarted or flushed: the value is gone. A change whose update was lost with it (made
    here without any signal, as if its bump never arrived) is still seen, because a missing value
    counts as a change in every process."""
    import redis

    cluster = [gateways(workers=2, **LONG_CACHE), gateways(workers=2, **LONG_CACHE)]
    live = make_setup(mock.url, rate_limit={"request_max_limit": 1000, "request_reset_duration": "1h"})
    warm(cluster, live.value)

    VirtualKey.objects.filter(pk=live.vk.pk).update(is_active=False)  # no signal, no bump
    # Nobody was told: the workers that cached the key still serve it (one that never served it
    # loads it afresh, so not necessarily every answer).
    assert 200 in statuses(cluster, chat(), live.value)
    redis.Redis.from_url(settings.REDIS_URL).delete(freshness.REDIS_KEY)

    assert set(statuses(cluster, chat(), live.value)) == {403}
