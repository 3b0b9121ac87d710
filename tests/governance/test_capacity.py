"""``governance.metering.capacity``: the figures routing rules read, per level, from whichever
counters hold them; the database read reused for up to ``CACHE_SECONDS``; windows that ended read 0."""

from __future__ import annotations

import uuid
from decimal import Decimal

import pytest

from governance.metering import capacity, enforcement, snapshot
from governance.models import Budget, RateLimit
from governance.services import customer_create, team_create, virtual_key_create

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _forget():
    capacity.forget()
    yield
    capacity.forget()


def make_key():
    customer = customer_create(name="acme", budgets=[{"max_limit": Decimal("100"), "reset_duration": "1M"}])
    team = team_create(
        name="research",
        customer=customer,
        budgets=[
            {"max_limit": Decimal("10"), "reset_duration": "1d"},
            {"max_limit": Decimal("4"), "reset_duration": "1h"},
        ],
        rate_limit={
            "request_max_limit": 10,
            "request_reset_duration": "1m",
            "token_max_limit": 1000,
            "token_reset_duration": "1m",
        },
    )
    _vk, value = virtual_key_create(name="svc", team=team)
    return team, customer, snapshot.virtual_key(value)


def test_database_mode_reads_the_rows_once_per_second(settings, django_assert_num_queries, monkeypatch):
    settings.GOVERNANCE_COUNTERS = "database"
    team, customer, vk = make_key()
    Budget.objects.filter(team=team, reset_duration="1d").update(current_usage=Decimal("2.5"))
    Budget.objects.filter(team=team, reset_duration="1h").update(current_usage=Decimal("3"))
    Budget.objects.filter(customer=customer).update(current_usage=Decimal("1"))
    RateLimit.objects.filter(team=team).update(request_current_usage=3, token_current_usage=900)
    with django_assert_num_queries(2):  # the budget rows, the rate-limit rows
        use = capacity.level_use(vk, ["virtual_key", "team", "customer"])
    assert use["team"] == capacity.LevelUse(75.0, 30.0, 90.0)  # the higher of the two budgets: 3 of 4
    assert use["customer"] == capacity.LevelUse(1.0, 0.0, 0.0)
    assert use["virtual_key"] == capacity.NO_USE
    with django_assert_num_queries(0):  # reused within CACHE_SECONDS
        assert capacity.level_use(vk, ["team"])["team"] == use["team"]
    monkeypatch.setattr(capacity, "CACHE_SECONDS", 0.0)
    capacity.forget()
    RateLimit.objects.filter(team=team).update(request_current_usage=5)
    with django_assert_num_queries(2):
        assert capacity.level_use(vk, ["team"])["team"].rate_limit_used_percent == 50.0


def test_the_hot_counters_are_read_live_without_a_query(django_assert_num_queries):
    team, _customer, vk = make_key()
    admitted = enforcement.admit(
        request_id=uuid.uuid4(),
        budgets=vk.team_budgets,
        rate_limits=[vk.team_rate_limit],
        estimated_cost=Decimal("1"),
        estimated_tokens=100,
    )
    assert isinstance(admitted, enforcement.Admission)
    capacity.forget()
    capacity.level_use(vk, ["team"])  # Redis mode: the first read of a process fills its cache
    with django_assert_num_queries(0):
        use = capacity.level_use(vk, ["team"])["team"]
    assert use == capacity.LevelUse(25.0, 10.0, 10.0)  # $1 of $4, 1 of 10 requests, 100 of 1000 tokens


def test_a_window_that_ended_reads_zero():
    (gauge,) = capacity._gauges((capacity.BudgetSpec(str(uuid.uuid4()), "Team", Decimal("1"), "1h", False),), None)
    hour = 3_600_000
    assert capacity._fraction(gauge, gauge.limit // 2, anchor_ms=10 * hour, now_ms=10 * hour + 5) == 0.5
    assert capacity._fraction(gauge, gauge.limit // 2, anchor_ms=10 * hour, now_ms=11 * hour) == 0.0


def test_no_key_and_levels_without_limits_read_nothing(django_assert_num_queries):
    with django_assert_num_queries(0):
        assert capacity.level_use(None, ["team"]) == {"team": capacity.NO_USE}
    _vk, value = virtual_key_create(name="bare")
    vk = snapshot.virtual_key(value)
    with django_assert_num_queries(0):
        assert capacity.level_use(vk, ["virtual_key", "team", "customer"]) == dict.fromkeys(
            ["virtual_key", "team", "customer"], capacity.NO_USE
        )
