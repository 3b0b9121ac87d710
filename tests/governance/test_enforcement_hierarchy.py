"""Every budget and rate limit on the path counts: provider config -> VK -> team -> customer."""

from __future__ import annotations

from decimal import Decimal

import pytest

from governance.metering.enforcement import Admission, Rejection
from governance.models import Budget, RateLimit
from governance.services import customer_create, team_create
from tests.governance.conftest_counters import admit, anchor_windows, path_specs, settle

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_team_budget_stops_all_of_its_virtual_keys(counter_mode, make_vk):
    team = team_create(name="research", budgets=[{"max_limit": "1", "reset_duration": "1d"}])
    first = make_vk(team=team, budgets=[{"max_limit": "100", "reset_duration": "1d"}])
    second = make_vk(team=team)
    anchor_windows()
    settle(admit(path_specs(first), cost="0.7"), cost="0.7", vk=first)

    rejection = admit(path_specs(second), cost="0.4")

    assert (rejection.status, rejection.message) == (
        402,
        "Budget exceeded: Team budget exceeded: $0.70 of $1.00 used, this request needs up to $0.40"
        " (resets at 2030-01-16 12:00:00 UTC)",
    )
    assert isinstance(admit(path_specs(second), cost="0.3"), Admission)


def test_a_customer_budget_stops_keys_of_its_teams_and_its_direct_keys(counter_mode, make_vk):
    customer = customer_create(name="acme", budgets=[{"max_limit": "1", "reset_duration": "1d"}])
    team = team_create(name="ops", customer=customer)
    via_team = make_vk(team=team)
    direct = make_vk(customer=customer)
    anchor_windows()
    settle(admit(path_specs(via_team), cost="1"), cost="1", vk=via_team)

    assert admit(path_specs(direct), cost="0.01").message == (
        "Budget exceeded: Customer budget exceeded: $1.00 of $1.00 used (resets at 2030-01-16 12:00:00 UTC)"
    )
    assert admit(path_specs(via_team), cost="0").type == "budget_exceeded"


def test_cost_and_requests_are_added_to_every_level(counter_mode, make_vk):
    customer = customer_create(
        name="acme",
        budgets=[{"max_limit": "10", "reset_duration": "1d"}],
        rate_limit={"request_max_limit": 10, "request_reset_duration": "1h"},
    )
    team = team_create(name="ops", customer=customer, budgets=[{"max_limit": "10", "reset_duration": "1d"}])
    vk = make_vk(
        team=team,
        budgets=[{"max_limit": "10", "reset_duration": "1d"}],
        rate_limit={"token_max_limit": 1000, "token_reset_duration": "1h"},
    )
    anchor_windows()

    settle(admit(path_specs(vk), cost="2", tokens=100), cost="1.25", tokens=40, vk=vk)

    assert sorted(Budget.objects.values_list("current_usage", flat=True)) == [Decimal("1.25")] * 3
    assert RateLimit.objects.get(customer=customer).request_current_usage == 1
    assert RateLimit.objects.get(virtual_key=vk).token_current_usage == 40


def test_a_rejection_at_one_level_reserves_nothing_at_the_others(counter_mode, make_vk):
    team = team_create(name="ops", rate_limit={"request_max_limit": 1, "request_reset_duration": "1h"})
    vk = make_vk(
        team=team,
        rate_limit={"request_max_limit": 5, "request_reset_duration": "1h"},
        budgets=[{"max_limit": "10", "reset_duration": "1d"}],
    )
    anchor_windows()
    settle(admit(path_specs(vk), cost="1"), cost="1", vk=vk)

    for _ in range(3):
        assert isinstance(admit(path_specs(vk), cost="1"), Rejection)

    assert RateLimit.objects.get(virtual_key=vk).request_current_usage == 1
    assert Budget.objects.get(virtual_key=vk).current_usage == Decimal("1")
