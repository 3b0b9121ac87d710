"""Leases and the lease reaper: a reservation whose process died is settled, once, in every backend.

Rules under test (``governance.metering.counters.leases``, ``governance.metering.reaper``,
``governance.metering.ledger``):

- a reservation held by a dead process (its lease file unlocked: SIGKILL, out of memory) is
  settled by the next reaper pass, with a UsageRecord of status 0: at its reservation when the
  process had started the upstream call, released when it had not; the database rows, the hot
  copy and the ledger agree afterwards;
- a live process's reservations are never touched; an owner on another host is judged by its
  registration (Redis) or its leases' expiry (database) instead, and charged as reached
  (``upstream_reached`` unknown);
- exactly once: a late settle of a reaped request changes nothing, and the reaper finishes a
  settle whose ledger write committed but whose hot copy was never settled;
- a database admission in flight when the hot copy is rebuilt (Redis back after an outage) is
  counted once, not twice (the issue's "counted and charged twice after a Redis restart").

Another process is simulated by a second lease book in this process; closing its file descriptor
drops its lock exactly as the kernel does when a process dies.
"""

from __future__ import annotations

import contextlib
import os
import time
import uuid
from datetime import timedelta
from decimal import Decimal

import pytest
from django.db.models import Sum
from django.utils import timezone

from governance.metering import enforcement, reaper
from governance.metering.counters import hot_counters, leases, redis_backend
from governance.metering.enforcement import Admission, LedgerEntry
from governance.metering.live import budget_usage, rate_limit_usage
from governance.models import Budget, CounterLease, RateLimit, UsageRecord
from tests.governance.conftest_counters import LIMITS, T0, anchor_windows, ledger_total, path_specs, settle
from tests.governance.conftest_counters import admit as admit_specs

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _retry_redis_at_once(monkeypatch):
    monkeypatch.setattr(redis_backend, "RETRY_SECONDS", 0)


@pytest.fixture(autouse=True)
def _own_lease_directory(tmp_path, monkeypatch):
    """Each test its own lease directory: no dead process of an earlier run (whose reservations
    were in another database) is anywhere to be reaped."""
    monkeypatch.setattr(leases, "directory", lambda: tmp_path / "leases")
    leases._books.clear()
    yield
    leases._books.clear()


@contextlib.contextmanager
def another_worker(directory=None):
    """Admissions made in the block are leased to another process (its own locked lease file)."""
    own = leases.book()
    directory = directory or own.directory
    directory.mkdir(parents=True, exist_ok=True)
    worker = leases.Book(directory, f"{own.owner}-w{uuid.uuid4().hex[:6]}")
    leases._books[os.getpid()] = worker
    try:
        yield worker
    finally:
        leases._books[os.getpid()] = own


def die(worker: leases.Book) -> None:
    """What the kernel does when the worker's process dies: its descriptors of the lease file (and
    the mapping's) are closed, which drops its lock."""
    worker.file.close()


def admit(vk, *, cost: str = "0", tokens: int = 0):
    """An admission of ``vk``'s path, leased with what the reaper records if it settles it."""
    entry = LedgerEntry(
        provider="openai",
        model="gpt-4o-mini",
        status_code=0,
        virtual_key_id=vk.pk,
        streamed=True,
        price_source="catalog:openai/gpt-4o-mini",
    )
    return admit_specs(path_specs(vk), cost=cost, tokens=tokens, entry=entry)


def assert_exact(cost: str, tokens: int, requests: int) -> None:
    """Rows, hot copy (live usage) and ledger all hold these figures."""
    budget, rate_limit = Budget.objects.get(), RateLimit.objects.get()
    live_budget = budget_usage([budget.pk], now=T0)[str(budget.pk)]
    live = rate_limit_usage([rate_limit.pk], now=T0)[str(rate_limit.pk)]
    ledger_tokens = UsageRecord.objects.aggregate(total=Sum("total_tokens"))["total"] or 0
    assert budget.current_usage == live_budget == ledger_total() == Decimal(cost)
    assert rate_limit.token_current_usage == live.tokens.usage == ledger_tokens == tokens
    assert rate_limit.request_current_usage == live.requests.usage == requests


def test_a_dead_workers_reservation_that_reached_the_upstream_is_charged_at_its_reservation(counter_mode, make_vk):
    vk = make_vk(**LIMITS)
    anchor_windows()
    with another_worker() as worker:
        admission = admit(vk, cost="0.4", tokens=300)
        leases.mark_called(admission.lease)
    assert reaper.run_once(now=T0) == 0  # alive: left alone
    die(worker)

    assert reaper.run_once(now=T0) == 1

    record = UsageRecord.objects.get()
    assert str(record.request_id) == admission.request_id
    assert (record.status_code, record.upstream_reached, record.cost, record.total_tokens) == (
        0,
        True,
        Decimal("0.4"),
        300,
    )
    assert (record.provider, record.model, record.virtual_key_id, record.streamed) == (
        "openai",
        "gpt-4o-mini",
        vk.pk,
        True,
    )
    assert record.price_source == "catalog:openai/gpt-4o-mini"  # the price it was reserved at
    assert_exact("0.4", 300, 1)
    assert not CounterLease.objects.exists()
    assert not worker.path.exists()
    assert reaper.run_once(now=T0) == 0


def test_a_dead_workers_reservation_that_never_called_the_upstream_is_released(counter_mode, make_vk):
    vk = make_vk(**LIMITS)
    anchor_windows()
    with another_worker() as worker:
        first, second = admit(vk, cost="0.4", tokens=300), admit(vk, cost="0.4", tokens=300)
    assert admit(vk).type == "request_limited"
    die(worker)

    assert reaper.run_once(now=T0) == 2

    records = list(UsageRecord.objects.all())
    assert {str(r.request_id) for r in records} == {first.request_id, second.request_id}
    assert {(r.status_code, r.upstream_reached, r.cost, r.total_tokens) for r in records} == {(0, False, 0, 0)}
    assert_exact("0", 0, 0)
    # The request slots no longer exist, so they no longer refuse anything.
    assert isinstance(admit(vk, cost="0.4"), Admission)
    assert isinstance(admit(vk, cost="0.4"), Admission)


def test_a_late_settle_of_a_reaped_request_changes_nothing(counter_mode, make_vk):
    vk = make_vk(**LIMITS)
    anchor_windows()
    with another_worker() as worker:
        admission = admit(vk, cost="0.4", tokens=300)
        leases.mark_called(admission.lease)
    die(worker)
    assert reaper.run_once(now=T0) == 1

    # The worker was not dead after all (only cut off): its own settle comes too late.
    assert settle(admission, cost="0.1", tokens=50, vk=vk) is False

    assert UsageRecord.objects.get().status_code == 0
    assert_exact("0.4", 300, 1)


def test_the_reaper_finishes_a_settle_whose_hot_part_never_ran(counter_mode, make_vk, monkeypatch):
    vk = make_vk(**LIMITS)
    anchor_windows()
    with another_worker() as worker:
        admission = admit(vk, cost="0.4", tokens=300)
        leases.mark_called(admission.lease)
        # The worker dies right after the ledger transaction committed, before the hot settle.
        monkeypatch.setattr(enforcement, "_settle_hot", lambda *args, **kwargs: None)
        monkeypatch.setattr(leases, "finished", lambda lease: None)
        assert settle(admission, cost="0.1", tokens=50, vk=vk) is True
        monkeypatch.undo()
    die(worker)

    reaper.run_once(now=T0)

    record = UsageRecord.objects.get()
    assert (record.status_code, record.cost, record.total_tokens) == (200, Decimal("0.1"), 50)
    assert_exact("0.1", 50, 1)
    assert reaper.run_once(now=T0) == 0


def test_an_owner_on_another_host_is_reaped_once_its_registration_expires(counter_mode, make_vk, tmp_path):
    if counter_mode == "local":
        pytest.skip("the local table is one host's: its owners are always judged by their lock")
    vk = make_vk(**LIMITS)
    anchor_windows()
    # Its lease file is not in this host's directory: only the expiry can tell it is gone.
    with another_worker(tmp_path / "elsewhere") as worker:
        admission = admit(vk, cost="0.4", tokens=300)
        leases.mark_called(admission.lease)
    assert reaper.run_once(now=T0) == 0

    past = int((time.time() - 1) * 1000)
    if counter_mode == "redis":
        hot_counters().client.zadd(redis_backend.OWNERS_KEY, {redis_backend.lease_key(worker.owner): past})
    else:
        CounterLease.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    assert reaper.run_once(now=T0) == 1

    record = UsageRecord.objects.get()
    # The other host's mark is out of reach: charged as reached, and the record says it is unknown.
    assert (record.status_code, record.upstream_reached, record.cost) == (0, None, Decimal("0.4"))
    assert_exact("0.4", 300, 1)


@pytest.fixture(params=["local", pytest.param("redis", marks=pytest.mark.slow)])
def hot_mode(request, settings) -> str:
    if request.param == "local":
        settings.GOVERNANCE_COUNTERS = "local"
    else:
        settings.REDIS_URL = request.getfixturevalue("private_redis").url
        settings.GOVERNANCE_COUNTERS = "auto"
    return request.param


def test_a_database_admission_in_flight_when_the_hot_copy_is_rebuilt_is_counted_once(hot_mode, make_vk):
    vk = make_vk(**LIMITS | {"rate_limit": {"request_max_limit": 10, "request_reset_duration": "1h"}})
    anchor_windows()
    assert settle(admit(vk, cost="0.1"), cost="0.1", vk=vk)
    backend = hot_counters()
    backend._down_until = time.monotonic() + 60  # unreachable: admissions go to the database rows
    in_flight, released = admit(vk, cost="0.2"), admit(vk, cost="0.2")
    assert (in_flight.backend, released.backend) == ("database", "database")
    backend._down_until = time.monotonic() - 1  # back: the epoch moves, the hot copy is rebuilt
    hot = admit(vk, cost="0.2")
    assert hot.backend == hot_mode

    assert settle(in_flight, cost="0.1", vk=vk)
    enforcement.release(released, now=T0)
    assert settle(hot, cost="0.05", vk=vk)

    budget, rate_limit = Budget.objects.get(), RateLimit.objects.get()
    live = rate_limit_usage([rate_limit.pk], now=T0)[str(rate_limit.pk)]
    assert budget.current_usage == ledger_total() == Decimal("0.25")
    assert budget_usage([budget.pk], now=T0)[str(budget.pk)] == Decimal("0.25")
    assert rate_limit.request_current_usage == live.requests.usage == UsageRecord.objects.count() == 3
