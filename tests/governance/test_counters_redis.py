"""Redis restarts and outages, on a private redis-server the tests stop and start themselves.

The rule under test (``governance.metering.counters``): with ``GOVERNANCE_COUNTERS=auto`` an unreachable
Redis falls back to the database counters; with ``redis`` it fails closed with 503. Counters lost
with a restart are rebuilt from the database, never restarted at zero.
"""

from __future__ import annotations

import io
import json
import threading
import time
from decimal import Decimal

import pytest
from django.core.management import call_command
from django.db import OperationalError

from governance.metering import live
from governance.metering.counters import database, redis_backend, redis_counters
from governance.metering.enforcement import Admission
from governance.models import Budget, RateLimit, UsageRecord
from proxy.errors import refusal
from tests.governance.conftest_counters import T0, admit, anchor_windows, ledger_total, path_specs, settle

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


@pytest.fixture(autouse=True)
def _retry_redis_at_once(monkeypatch):
    # Production waits a second before trying an unreachable Redis again; tests do not.
    monkeypatch.setattr(redis_backend, "RETRY_SECONDS", 0)


def test_counters_are_rebuilt_from_the_database_after_a_redis_restart(redis_mode, make_vk):
    vk = make_vk(
        budgets=[{"max_limit": "1", "reset_duration": "1d"}],
        rate_limit={"request_max_limit": 4, "request_reset_duration": "1h"},
    )
    anchor_windows()
    specs = path_specs(vk)
    for _ in range(3):
        settle(admit(specs, cost="0.2"), cost="0.2", vk=vk)

    redis_mode.stop()
    redis_mode.start()
    assert redis_mode.client().dbsize() == 0

    rejection = admit(specs, cost="0.5")
    assert rejection.message == (
        "Budget exceeded: VK budget exceeded: $0.60 of $1.00 used, this request needs up to $0.50"
        " (resets at 2030-01-16 12:00:00 UTC)"
    )
    assert isinstance(admit(specs, cost="0.1"), Admission)
    assert admit(specs, cost="0").message == "Rate limit check failed: VK request limit exceeded (4/4, resets every 1h)"
    assert redis_mode.client().dbsize() > 0  # served from the rebuilt hot copy, not the fallback


def test_unreachable_redis_falls_back_to_the_database_and_still_enforces(redis_mode, make_vk):
    vk = make_vk(
        rate_limit={"request_max_limit": 3, "request_reset_duration": "1h"},
        budgets=[{"max_limit": "1", "reset_duration": "1d"}],
    )
    anchor_windows()
    specs = path_specs(vk)
    settle(admit(specs, cost="0.1"), cost="0.1", vk=vk)
    redis_mode.stop()

    during = [admit(specs, cost="0.1") for _ in range(3)]

    assert [type(r).__name__ for r in during] == ["Admission", "Admission", "Rejection"]
    assert [r.backend for r in during[:2]] == ["database", "database"]
    assert during[2].type == "request_limited"
    for admission in during[:2]:
        settle(admission, cost="0.1", vk=vk)
    assert Budget.objects.get().current_usage == Decimal("0.3") == ledger_total()
    redis_mode.start()
    # Back on Redis, rebuilt from the database: the fallback period's usage is not forgotten.
    after = admit(specs)
    assert after.type == "request_limited"
    assert redis_mode.client().dbsize() > 0


def test_counters_that_survived_an_outage_are_rebuilt_when_redis_answers_again(redis_mode, make_vk, settings):
    vk = make_vk(rate_limit={"request_max_limit": 3, "request_reset_duration": "1h"})
    anchor_windows()
    specs = path_specs(vk)
    settle(admit(specs), vk=vk)
    # Redis stalls past the client timeout while keeping its data (a network partition).
    redis_mode.client().execute_command("CLIENT", "PAUSE", 1300, "ALL")
    during = admit(specs)
    assert during.backend == "database"
    settle(during, vk=vk)
    time.sleep(1.4)

    # Redis still holds a count of 1; the database says 2. The epoch bump makes Redis rebuild.
    assert isinstance(admit(specs), Admission)
    assert admit(specs).type == "request_limited"
    assert RateLimit.objects.get().request_current_usage == 2  # settled ones; the third is in flight


def test_unreachable_redis_fails_closed_with_503_when_redis_is_required(redis_mode, make_vk, settings):
    settings.GOVERNANCE_COUNTERS = "redis"
    vk = make_vk(budgets=[{"max_limit": "1", "reset_duration": "1d"}])
    specs = path_specs(vk)
    redis_mode.stop()

    rejection = admit(specs, cost="0.1")

    assert (rejection.status, rejection.type, rejection.retry_after) == (503, "governance_unavailable", 1)
    answer = refusal(rejection)
    assert answer.status == 503 and answer.headers == {"Retry-After": "1"}
    assert json.loads(answer.body())["error"]["message"].startswith("Governance counters are unavailable")
    assert Budget.objects.get().current_usage == 0


def test_redis_and_database_both_unreachable_answer_503_never_500(redis_mode, make_vk, monkeypatch):
    vk = make_vk(budgets=[{"max_limit": "1", "reset_duration": "1d"}])
    specs = path_specs(vk)
    redis_mode.stop()

    def database_down(*args, **kwargs):
        raise OperationalError("connection refused")

    monkeypatch.setattr(database, "lock_rows", database_down)
    rejection = admit(specs, cost="0.1")

    assert (rejection.status, rejection.type) == (503, "governance_unavailable")


def test_a_redis_restart_in_the_middle_of_traffic_loses_no_usage(redis_mode, make_vk):
    vk = make_vk(budgets=[{"max_limit": "1000", "reset_duration": "1d"}])
    anchor_windows()
    specs = path_specs(vk)
    stop = threading.Event()
    admitted: list[int] = []
    backends: set[str] = set()

    def traffic() -> None:
        from django.db import connections

        try:
            while not stop.is_set():
                admission = admit(specs, cost="0.02")
                assert isinstance(admission, Admission), admission
                backends.add(admission.backend)
                settle(admission, cost="0.01", vk=vk)
                admitted.append(1)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=traffic) for _ in range(4)]
    for thread in threads:
        thread.start()
    time.sleep(0.4)
    redis_mode.stop()
    time.sleep(0.3)
    redis_mode.start()
    time.sleep(0.4)
    stop.set()
    for thread in threads:
        thread.join(30)

    budget = Budget.objects.get()
    assert UsageRecord.objects.count() == len(admitted) > 0
    assert budget.current_usage == ledger_total() == Decimal("0.01") * len(admitted)
    assert backends == {"redis", "database"}
    # The hot copy never under-counts. It may over-count by the estimates of requests that were
    # in flight while it was rebuilt (4 threads x $0.02), never more.
    hot = live.budget_usage([budget.pk], now=T0)[str(budget.pk)]
    assert budget.current_usage <= hot <= budget.current_usage + Decimal("0.08")
    # rebuild_counters makes it exact again.
    call_command("rebuild_counters", stdout=io.StringIO())
    assert isinstance(admit(specs, cost="0.02"), Admission)
    assert live.budget_usage([budget.pk], now=T0)[str(budget.pk)] == budget.current_usage + Decimal("0.02")


def test_settling_while_redis_is_down_still_writes_the_ledger(redis_mode, make_vk):
    vk = make_vk(budgets=[{"max_limit": "1", "reset_duration": "1d"}])
    anchor_windows()
    specs = path_specs(vk)
    admission = admit(specs, cost="0.5")
    redis_mode.stop()

    assert settle(admission, cost="0.4", vk=vk) is True

    assert Budget.objects.get().current_usage == Decimal("0.4") == ledger_total()
    redis_mode.start()
    assert admit(specs, cost="0.7").message == (
        "Budget exceeded: VK budget exceeded: $0.40 of $1.00 used, this request needs up to $0.70"
        " (resets at 2030-01-16 12:00:00 UTC)"
    )
    assert redis_counters() is not None
