"""The configuration generation: one bump per committed change, and what a request does with it."""

from __future__ import annotations

import pytest
from django.db import transaction

from governance.metering import freshness, freshness_push, snapshot
from governance.models import ConfigGeneration, Customer
from governance.services import customer_create

pytestmark = pytest.mark.django_db


def generation() -> int:
    return ConfigGeneration.objects.filter(pk=1).values_list("value", flat=True).first() or 0


def test_a_transaction_of_many_changes_moves_the_generation_once(django_capture_on_commit_callbacks):
    before = generation()
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        with transaction.atomic():
            for index in range(30):
                customer_create(name=f"customer-{index}")
    assert len(callbacks) == 1
    assert generation() == before + 1


@pytest.mark.django_db(transaction=True)
def test_a_rolled_back_change_moves_nothing_and_the_next_one_still_does():
    ConfigGeneration.objects.get_or_create(pk=1)
    before = generation()
    with transaction.atomic():
        customer_create(name="kept")
        try:
            with transaction.atomic():
                customer_create(name="dropped")
                raise RuntimeError("roll back the savepoint")
        except RuntimeError:
            pass
    assert generation() == before + 1
    try:
        with transaction.atomic():
            customer_create(name="never")
            raise RuntimeError("roll back the transaction")
    except RuntimeError:
        pass
    assert generation() == before + 1
    Customer.objects.get(name="kept").delete()
    assert generation() == before + 2


def test_embedded_mode_drops_the_caches_when_another_process_moved_the_shared_counter(settings):
    if freshness._source() != "local":
        pytest.skip("the shared counter file is the embedded mode's")
    freshness.begin_request()
    snapshot._providers = (0.0, {"stale": None})  # what this process cached
    freshness._bump_file()  # what another process's commit does
    freshness.begin_request()
    assert snapshot._providers is None


class _LostReply:
    """A Redis client whose script call fails the way a lost reply or a refused connection does."""

    def __init__(self, error: Exception) -> None:
        self.error = error
        self.connection_pool = type("Pool", (), {"connection_kwargs": {"db": 0}})()

    def eval(self, *args):
        raise self.error


def test_a_change_redis_may_have_taken_without_confirming_waits_out_every_lease(monkeypatch):
    import redis

    slept: list[float] = []
    monkeypatch.setattr(freshness_push.time, "sleep", slept.append)
    freshness_push.announce(_LostReply(redis.TimeoutError("Timeout reading from socket")))
    assert len(slept) == 1
    assert freshness_push.LEASE_SECONDS < slept[0] <= freshness_push.LEASE_SECONDS + freshness_push.MARGIN_SECONDS

    slept.clear()  # never reached Redis: nothing moved there, nothing to wait for
    freshness_push.announce(_LostReply(redis.ConnectionError("Error 111 connecting to 127.0.0.1:1. Refused.")))
    assert slept == []


def test_a_process_trusts_its_copy_only_while_its_subscription_has_nothing_unread(monkeypatch, settings):
    import socket
    import time

    settings.REDIS_URL = "redis://127.0.0.1:1/0"
    listener = freshness_push.Listener(settings.REDIS_URL)  # not started: driven by hand
    monkeypatch.setattr(freshness_push, "_listener", listener)
    ours, redis_side = socket.socketpair()
    try:
        listener.trusted_until = time.monotonic() + 60
        assert not freshness_push.trusted()  # no subscription yet
        listener.socket_ref = (ours.fileno(), 1)
        assert freshness_push.trusted()
        redis_side.send(b">3\r\n$7\r\nmessage\r\n")  # a change arrived, not read yet
        assert not freshness_push.trusted()
        ours.recv(100)
        assert freshness_push.trusted()
        listener.socket_ref = (-1, 2)  # the listener dropped the socket
        assert not freshness_push.trusted()
        listener.socket_ref, listener.trusted_until = (ours.fileno(), 3), 0.0  # lease ran out
        assert not freshness_push.trusted()
    finally:
        ours.close()
        redis_side.close()
