"""Production mode's pushed generation (``governance.metering.freshness_push``), through live processes.

Each test runs gateway processes on a private redis-server (which it may kill and restart) and
makes configuration changes from this process, pointed at the same server, as an admin or API
call in another worker would.
"""

from __future__ import annotations

import os
import signal
import time

import pytest
from django.db import connection

from governance.metering import freshness, freshness_push
from governance.models import VirtualKey
from governance.services.virtual_keys import virtual_key_set_active
from tests.proxy.conftest import make_setup
from tests.proxy.conftest_enforcement import chat, post, wait_until

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

LONG_CACHE = {"GOVERNANCE_CONFIG_CACHE_SECONDS": "300"}
ROUNDS = 12


@pytest.fixture
def pushed(fault_redis, gateways, settings):
    """Two gateway processes of two workers on the private Redis, this process writing there."""
    settings.REDIS_URL = fault_redis.url
    cluster = [gateways(workers=2, REDIS_URL=fault_redis.url, **LONG_CACHE) for _ in range(2)]
    return fault_redis, cluster


def statuses(cluster, value) -> list[int]:
    return [post(process.url, chat(), vk=value).status for process in cluster for _ in range(ROUNDS)]


def leases(server) -> dict[str, str]:
    client = server.client()
    ids = client.zrange(freshness_push.PROCESSES, 0, -1)
    return {ident: client.get(freshness_push.LEASE_PREFIX + ident) for ident in ids}


def trusting(server, cluster, value, count: int = 4) -> None:
    """Serve requests until ``count`` worker processes hold a lease (a worker starts its listener
    on its first request, and which worker takes a connection is up to the kernel)."""
    for _ in range(40):
        assert set(statuses(cluster, value)) == {200}
        if sum(held is not None for held in leases(server).values()) >= count:
            return
    raise AssertionError(f"fewer than {count} leases: {leases(server)}")


def get_calls(server) -> int:
    return int(server.client().info("commandstats").get("cmdstat_get", {}).get("calls", 0))


def test_requests_without_limits_check_freshness_without_a_round_trip(pushed, mock):
    server, cluster = pushed
    live = make_setup(mock.url)  # no budget, no rate limit: nothing else reads Redis
    trusting(server, cluster, live.value)

    before, started = get_calls(server), time.monotonic()
    assert set(statuses(cluster, live.value) * 4) == {200}
    served, seconds = 4 * 2 * ROUNDS, time.monotonic() - started
    # Only the listeners' renewals read the generation: four processes, three a lease each.
    renewals = 4 * (seconds / (freshness_push.LEASE_SECONDS / 3) + 2)
    assert get_calls(server) - before <= renewals < served

    # And the next request after a change is refused in every worker.
    virtual_key_set_active(vk=live.vk, active=False)
    assert set(statuses(cluster, live.value)) == {403}


def test_a_change_is_answered_only_once_every_process_holds_it(pushed, mock):
    server, cluster = pushed
    live = make_setup(mock.url)
    trusting(server, cluster, live.value)

    virtual_key_set_active(vk=live.vk, active=False)

    current = server.client().get(freshness.REDIS_KEY)
    held = leases(server)
    assert len(held) == 4 and all(freshness_push.covers(value, current) for value in held.values()), held


def _workers(process) -> list[int]:
    pid = process.proc.pid
    with open(f"/proc/{pid}/task/{pid}/children") as children:
        return [int(child) for child in children.read().split()]


def test_a_stalled_process_is_waited_for_and_then_distrusts_its_cache(fault_redis, gateways, settings, mock):
    """A worker that cannot acknowledge (stopped here; in life: cut off, or starved) holds the
    writer until its lease ends; when it runs again its lease has ended, so it reads the generation
    before its next request and refuses the revoked key."""
    if connection.vendor == "sqlite":
        pytest.skip("a stopped worker may hold SQLite's one write lock (production mode is PostgreSQL)")
    settings.REDIS_URL = fault_redis.url
    gateway = gateways(workers=1, REDIS_URL=fault_redis.url, **LONG_CACHE)
    live = make_setup(mock.url)
    trusting(fault_redis, [gateway], live.value, count=1)
    (worker,) = _workers(gateway)

    os.kill(worker, signal.SIGSTOP)
    try:
        started = time.monotonic()
        virtual_key_set_active(vk=live.vk, active=False)
        waited = time.monotonic() - started
    finally:
        os.kill(worker, signal.SIGCONT)
    assert freshness_push.LEASE_SECONDS - freshness_push.MARGIN_SECONDS <= waited
    assert waited < freshness_push.LEASE_SECONDS + freshness_push.MARGIN_SECONDS + 1.0

    reply = post(gateway.url, chat(), vk=live.value)
    assert (reply.status, reply.json()["error"]["message"]) == (403, "Virtual key is inactive")


def test_a_redis_restart_never_leaves_a_revoked_key_working(pushed, mock):
    """Redis dies: the subscriptions drop, every process stops trusting its copy and reads the
    generation (the database row while Redis is away). A change made during the outage, and one
    made after Redis came back empty, are both in force on the next request."""
    server, cluster = pushed
    live = make_setup(mock.url)
    trusting(server, cluster, live.value)

    server.stop()
    virtual_key_set_active(vk=live.vk, active=False)  # the bump reaches the database row only
    assert set(statuses(cluster, live.value)) == {403}

    server.start()  # empty: no generation, no leases
    assert set(statuses(cluster, live.value)) == {403}
    wait_until(lambda: len(leases(server)) == 4, what="every listener back")

    virtual_key_set_active(vk=VirtualKey.objects.get(pk=live.vk.pk), active=True)
    assert set(statuses(cluster, live.value)) == {200}


def test_a_dropped_subscription_is_noticed_before_the_next_request(pushed, mock):
    """The subscriptions are cut (as a proxy or Redis itself may do); a change follows at once."""
    server, cluster = pushed
    live = make_setup(mock.url)
    trusting(server, cluster, live.value)

    server.client().client_kill_filter(_type="pubsub")
    virtual_key_set_active(vk=live.vk, active=False)
    assert set(statuses(cluster, live.value)) == {403}


def test_the_generation_counts_up_within_an_epoch_and_a_lost_one_starts_a_new_epoch(fault_redis):
    client = fault_redis.client()
    bump = client.register_script(freshness_push.BUMP)
    first, receivers = bump(keys=[freshness.REDIS_KEY], args=["epoch-a", "unheard"])
    second, _ = bump(keys=[freshness.REDIS_KEY], args=["epoch-b", "unheard"])
    assert (first, second, receivers) == ("epoch-a:1", "epoch-a:2", 0)
    assert freshness_push.covers(second, first) and not freshness_push.covers(first, second)

    client.delete(freshness.REDIS_KEY)  # Redis lost it: nobody may take the next one for old news
    third, _ = bump(keys=[freshness.REDIS_KEY], args=["epoch-c", "unheard"])
    assert third == "epoch-c:1"
    assert not freshness_push.covers(second, third) and not freshness_push.covers(None, third)
