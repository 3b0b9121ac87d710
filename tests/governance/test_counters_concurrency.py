"""Concurrency with real threads and processes against the configured database and Redis."""

from __future__ import annotations

import multiprocessing
import random
import uuid
from decimal import Decimal

import pytest

from governance.metering import enforcement, live
from governance.metering.enforcement import Admission, Rejection
from governance.models import Budget, RateLimit, UsageRecord
from governance.services import team_create
from tests.governance.conftest_counters import (
    T0,
    admit,
    anchor_windows,
    ledger_total,
    path_specs,
    run_concurrently,
    settle,
)

pytestmark = pytest.mark.django_db(transaction=True)


def test_request_limit_of_20_admits_exactly_20_of_60_concurrent_requests(counter_mode, make_vk):
    vk = make_vk(rate_limit={"request_max_limit": 20, "request_reset_duration": "1h"})
    anchor_windows()
    specs = path_specs(vk)

    results = run_concurrently(lambda i: admit(specs), 60)

    admitted = [r for r in results if isinstance(r, Admission)]
    rejected = [r for r in results if isinstance(r, Rejection)]
    assert (len(admitted), len(rejected)) == (20, 40)
    assert {r.type for r in rejected} == {"request_limited"}
    assert (
        live.rate_limit_usage([RateLimit.objects.get().pk], now=T0)[str(RateLimit.objects.get().pk)].requests.usage
        == 20
    )


def test_concurrent_admit_and_settle_never_pass_the_budget_and_match_the_ledger(counter_mode, make_vk):
    vk = make_vk(budgets=[{"max_limit": "1", "reset_duration": "1d"}])
    anchor_windows()
    specs = path_specs(vk)
    rng = random.Random(7)
    actual_costs = [Decimal(rng.randint(10, 50)) / 1000 for _ in range(60)]

    def request(i: int) -> bool:
        admission = admit(specs, cost="0.05")
        if isinstance(admission, Rejection):
            assert admission.type == "budget_exceeded"
            return False
        settle(admission, cost=actual_costs[i], vk=vk)
        return True

    outcomes = run_concurrently(request, 60)

    budget = Budget.objects.get()
    assert budget.current_usage <= Decimal("1")
    assert budget.current_usage == ledger_total(virtual_key=vk)
    assert UsageRecord.objects.count() == sum(outcomes)
    # Worst case $0.05 each: at least 20 requests fit, so the budget is not refused too early.
    assert sum(outcomes) >= 20
    assert live.budget_usage([budget.pk], now=T0)[str(budget.pk)] == budget.current_usage


def test_two_keys_of_one_team_share_its_request_limit_under_concurrency(counter_mode, make_vk):
    team = team_create(name="shared", rate_limit={"request_max_limit": 10, "request_reset_duration": "1h"})
    first, second = make_vk(team=team), make_vk(team=team)
    anchor_windows()
    specs = [path_specs(first), path_specs(second)]

    results = run_concurrently(lambda i: admit(specs[i % 2]), 40, threads=8)

    assert sum(isinstance(r, Admission) for r in results) == 10


def _admit_in_child(budgets, rate_limits, count: int, queue) -> None:
    admitted = 0
    for _ in range(count):
        result = enforcement.admit(
            request_id=uuid.uuid4(),
            budgets=budgets,
            rate_limits=rate_limits,
            estimated_cost=Decimal("0"),
            estimated_tokens=0,
            now=T0,
        )
        admitted += isinstance(result, Admission)
    queue.put(admitted)


@pytest.mark.slow
def test_four_processes_sharing_redis_admit_exactly_the_request_limit(redis_mode, make_vk):
    vk = make_vk(rate_limit={"request_max_limit": 20, "request_reset_duration": "1h"})
    anchor_windows()
    budgets, rate_limits = path_specs(vk)
    # Build the hot counter from the database first: the children then only talk to Redis.
    enforcement.release(admit((budgets, rate_limits)))
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    children = [context.Process(target=_admit_in_child, args=(budgets, rate_limits, 15, queue)) for _ in range(4)]

    for child in children:
        child.start()
    counts = [queue.get(timeout=30) for _ in children]
    for child in children:
        child.join(10)

    assert sum(counts) == 20
    assert all(child.exitcode == 0 for child in children)
