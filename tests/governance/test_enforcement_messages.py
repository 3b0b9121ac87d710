"""Every rejection of SPEC section 6 that the counters produce: status, type, message, Retry-After.

Each test runs against the database counters, the host-local table and Redis.
"""

from __future__ import annotations

import json
from datetime import timedelta
from decimal import Decimal

import pytest

from governance.metering.enforcement import Admission, Rejection
from governance.models import Provider, ProviderConfig
from governance.services import customer_create, provider_create, team_create
from proxy.errors import refusal
from proxy.handler import error_reply
from tests.governance.conftest_counters import T0, admit, anchor_windows, path_specs, settle

pytestmark = pytest.mark.django_db(transaction=True)


def test_request_limit_admits_exactly_the_limit_then_answers_429_request_limited(counter_mode, make_vk):
    vk = make_vk(rate_limit={"request_max_limit": 2, "request_reset_duration": "1m"})
    anchor_windows()
    specs = path_specs(vk)
    assert isinstance(admit(specs), Admission)
    assert isinstance(admit(specs, now=T0 + timedelta(seconds=5)), Admission)

    rejection = admit(specs, now=T0 + timedelta(seconds=10))

    assert isinstance(rejection, Rejection)
    assert (rejection.status, rejection.type) == (429, "request_limited")
    assert rejection.message == "Rate limit check failed: VK request limit exceeded (2/2, resets every 1m)"
    assert rejection.retry_after == 50
    assert rejection.headers == {"Retry-After": "50"}


def test_token_limit_blocks_once_usage_reaches_it_with_429_token_limited(counter_mode, make_vk):
    vk = make_vk(rate_limit={"token_max_limit": 1000, "token_reset_duration": "1h"})
    anchor_windows()
    specs = path_specs(vk)
    first = admit(specs, tokens=800)
    assert isinstance(first, Admission)
    settle(first, cost="0.01", tokens=1500, vk=vk)

    rejection = admit(specs, tokens=10, now=T0 + timedelta(minutes=30))

    assert (rejection.status, rejection.type) == (429, "token_limited")
    assert rejection.message == "Rate limit check failed: VK token limit exceeded (1500/1000, resets every 1h)"
    assert rejection.retry_after == 1800


def test_token_and_request_limits_both_exceeded_answer_rate_limited_with_both_violations(counter_mode, make_vk):
    vk = make_vk(
        rate_limit={
            "token_max_limit": 100,
            "token_reset_duration": "1h",
            "request_max_limit": 1,
            "request_reset_duration": "1m",
        }
    )
    anchor_windows()
    specs = path_specs(vk)
    settle(admit(specs, tokens=50), tokens=120, vk=vk)

    rejection = admit(specs, now=T0 + timedelta(seconds=30))

    assert (rejection.status, rejection.type) == (429, "rate_limited")
    assert rejection.message == (
        "Rate limit check failed: VK token limit exceeded (120/100, resets every 1h); "
        "VK request limit exceeded (1/1, resets every 1m)"
    )
    # Both must clear before a request can pass: the later reset wins.
    assert rejection.retry_after == 3570


def test_budget_exhausted_answers_402_budget_exceeded_with_usage_and_limit(counter_mode, make_vk):
    vk = make_vk(budgets=[{"max_limit": "10", "reset_duration": "1d"}])
    anchor_windows()
    specs = path_specs(vk)
    # An answer can cost more than its estimate (e.g. the upstream reports the cost).
    settle(admit(specs, cost="5"), cost="10.0123", vk=vk)

    rejection = admit(specs, cost="0.001")

    assert (rejection.status, rejection.type) == (402, "budget_exceeded")
    assert (
        rejection.message
        == "Budget exceeded: VK budget exceeded: $10.0123 of $10.00 used (resets at 2030-01-16 12:00:00 UTC)"
    )
    assert rejection.headers == {}


def test_budget_rejects_a_request_whose_worst_case_would_pass_the_limit(counter_mode, make_vk):
    vk = make_vk(budgets=[{"max_limit": "10", "reset_duration": "1d"}])
    anchor_windows()
    specs = path_specs(vk)
    settle(admit(specs, cost="9.99"), cost="9.99", vk=vk)

    rejection = admit(specs, cost="0.02")
    fits = admit(specs, cost="0.01")

    assert rejection.message == (
        "Budget exceeded: VK budget exceeded: $9.99 of $10.00 used, this request needs up to $0.02"
        " (resets at 2030-01-16 12:00:00 UTC)"
    )
    assert isinstance(fits, Admission)


def test_budget_messages_name_the_team_customer_and_provider(counter_mode, make_vk):
    customer = customer_create(name="acme", budgets=[{"max_limit": "1", "reset_duration": "1M"}])
    team = team_create(name="ml", customer=customer, budgets=[{"max_limit": "2", "reset_duration": "1M"}])
    provider_create(name="openai", base_url="http://127.0.0.1:9/v1")
    vk = make_vk(team=team, provider_configs=[{"provider": "openai", "allowed_models": ["*"], "weight": 1}])
    config = ProviderConfig.objects.get(virtual_key=vk, provider=Provider.objects.get(name="openai"))
    config.budgets.create(max_limit=Decimal("3"), reset_duration="1M")
    anchor_windows()
    specs = path_specs(vk, config)

    # Every budget the request does not fit is named, in path order.
    assert admit(specs, cost="3.5").message == (
        "Budget exceeded: openai budget exceeded: $0.00 of $3.00 used, this request needs up to $3.50"
        " (resets at 2030-02-14 12:00:00 UTC); "
        "Team budget exceeded: $0.00 of $2.00 used, this request needs up to $3.50"
        " (resets at 2030-02-14 12:00:00 UTC); "
        "Customer budget exceeded: $0.00 of $1.00 used, this request needs up to $3.50"
        " (resets at 2030-02-14 12:00:00 UTC)"
    )
    assert admit(specs, cost="2.5").message == (
        "Budget exceeded: Team budget exceeded: $0.00 of $2.00 used, this request needs up to $2.50"
        " (resets at 2030-02-14 12:00:00 UTC); "
        "Customer budget exceeded: $0.00 of $1.00 used, this request needs up to $2.50"
        " (resets at 2030-02-14 12:00:00 UTC)"
    )
    assert admit(specs, cost="1.5").message == (
        "Budget exceeded: Customer budget exceeded: $0.00 of $1.00 used, this request needs up to $1.50"
        " (resets at 2030-02-14 12:00:00 UTC)"
    )
    assert isinstance(admit(specs, cost="1"), Admission)


def test_every_exhausted_budget_of_the_path_is_named_in_one_402(counter_mode, make_vk):
    team = team_create(name="ml", budgets=[{"max_limit": "5", "reset_duration": "1w"}])
    vk = make_vk(team=team, budgets=[{"max_limit": "10", "reset_duration": "1d"}])
    anchor_windows()
    specs = path_specs(vk)
    settle(admit(specs, cost="1"), cost="12", vk=vk)

    rejection = admit(specs, cost="0.001", now=T0 + timedelta(hours=1))

    assert (rejection.status, rejection.type) == (402, "budget_exceeded")
    assert rejection.message == (
        "Budget exceeded: VK budget exceeded: $12.00 of $10.00 used (resets at 2030-01-16 12:00:00 UTC); "
        "Team budget exceeded: $12.00 of $5.00 used (resets at 2030-01-22 12:00:00 UTC)"
    )
    assert rejection.headers == {}


def test_a_refusal_by_rate_limits_and_budgets_names_the_budgets_after_the_rate_limits(counter_mode, make_vk):
    customer = customer_create(name="acme", budgets=[{"max_limit": "1", "reset_duration": "1M"}])
    vk = make_vk(
        customer=customer,
        budgets=[{"max_limit": "10", "reset_duration": "1d"}],
        rate_limit={
            "token_max_limit": 100,
            "token_reset_duration": "1h",
            "request_max_limit": 1,
            "request_reset_duration": "1m",
        },
    )
    anchor_windows()
    specs = path_specs(vk)
    # Settling the first request's actual usage exhausts the token limit and the customer budget.
    settle(admit(specs, cost="0.5", tokens=50), cost="1.25", tokens=120, vk=vk)

    rejection = admit(specs, cost="0.01", now=T0 + timedelta(seconds=30))

    assert (rejection.status, rejection.type) == (429, "rate_limited")
    assert rejection.message == (
        "Rate limit check failed: VK token limit exceeded (120/100, resets every 1h); "
        "VK request limit exceeded (1/1, resets every 1m). "
        "Budget exceeded: Customer budget exceeded: $1.25 of $1.00 used (resets at 2030-02-14 12:00:00 UTC)"
    )
    # Retry-After is the rate limits' (the later one); the month-long budget does not set it.
    assert rejection.headers == {"Retry-After": "3570"}


def test_a_request_refused_only_by_its_rate_limit_does_not_mention_budgets_it_fits(counter_mode, make_vk):
    vk = make_vk(
        budgets=[{"max_limit": "10", "reset_duration": "1d"}],
        rate_limit={"request_max_limit": 1, "request_reset_duration": "1m"},
    )
    anchor_windows()
    specs = path_specs(vk)
    settle(admit(specs, cost="1"), cost="1", vk=vk)

    rejection = admit(specs, cost="1", now=T0 + timedelta(seconds=15))

    assert (rejection.status, rejection.type) == (429, "request_limited")
    assert rejection.message == "Rate limit check failed: VK request limit exceeded (1/1, resets every 1m)"
    assert rejection.headers == {"Retry-After": "45"}


def test_rejection_renders_the_bifrost_error_body_with_type_and_retry_after(counter_mode, make_vk):
    vk = make_vk(rate_limit={"request_max_limit": 1, "request_reset_duration": "30s"})
    anchor_windows()
    specs = path_specs(vk)
    admit(specs)

    reply = error_reply(refusal(admit(specs, now=T0 + timedelta(seconds=1))))

    assert reply.status == 429
    assert reply.headers == [("Content-Type", "application/json"), ("Retry-After", "29")]
    assert json.loads(b"".join(reply.body)) == {
        "is_bifrost_error": False,
        "status_code": 429,
        "error": {"message": "Rate limit check failed: VK request limit exceeded (1/1, resets every 30s)"},
        "extra_fields": {},
        "type": "request_limited",
    }


def test_a_request_without_limits_is_admitted_without_touching_any_counter(
    counter_mode, make_vk, django_assert_num_queries
):
    with django_assert_num_queries(0):
        admission = admit(((), ()))
    assert isinstance(admission, Admission)
    assert admission.backend == "none"
