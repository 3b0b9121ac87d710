from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from governance.models import Budget, RateLimit
from governance.services import team_create, virtual_key_create

pytestmark = pytest.mark.django_db


def test_budgets_list_shows_every_owner_with_live_usage(alice_api):
    vk, _ = virtual_key_create(name="svc", budgets=[{"max_limit": 10, "reset_duration": "1d"}])
    team_create(name="t", budgets=[{"max_limit": 100, "reset_duration": "1M"}])
    Budget.objects.filter(virtual_key=vk).update(current_usage=Decimal("2.5"))
    body = alice_api.get("/api/governance/budgets").json()
    assert body["count"] == 2
    by_owner = {b["owner"]["type"]: b for b in body["budgets"]}
    assert by_owner["virtual_key"]["current_usage"] == 2.5
    assert by_owner["virtual_key"]["owner"]["id"] == str(vk.pk)
    assert by_owner["team"]["current_usage"] == 0


def test_a_budget_whose_window_has_ended_reads_as_zero(alice_api):
    vk, _ = virtual_key_create(name="svc", budgets=[{"max_limit": 10, "reset_duration": "1h"}])
    Budget.objects.filter(virtual_key=vk).update(
        current_usage=Decimal("9"), last_reset=timezone.now() - timedelta(hours=3, minutes=10)
    )
    budget = alice_api.get("/api/governance/budgets").json()["budgets"][0]
    assert budget["current_usage"] == 0


def test_reset_budget_usage(alice_api, bob_api):
    vk, _ = virtual_key_create(name="svc", budgets=[{"max_limit": 10, "reset_duration": "1d"}])
    budget = Budget.objects.get(virtual_key=vk)
    Budget.objects.filter(pk=budget.pk).update(current_usage=Decimal("7"))
    assert bob_api.post(f"/api/governance/budgets/{budget.pk}/reset").status_code == 403
    response = alice_api.post(f"/api/governance/budgets/{budget.pk}/reset")
    assert response.status_code == 200
    assert response.json()["message"] == "Budget usage reset successfully"
    assert response.json()["budget"]["current_usage"] == 0
    budget.refresh_from_db()
    assert budget.current_usage == 0


def test_reset_unknown_budget_is_404(alice_api):
    response = alice_api.post("/api/governance/budgets/6f1c2a57-0000-4000-8000-000000000000/reset")
    assert response.status_code == 404
    assert response.json()["error"]["message"] == "Budget not found"


def test_rate_limits_list_shows_usage(alice_api):
    vk, _ = virtual_key_create(name="svc", rate_limit={"request_max_limit": 5, "request_reset_duration": "1m"})
    RateLimit.objects.filter(virtual_key=vk).update(request_current_usage=3)
    body = alice_api.get("/api/governance/rate-limits").json()
    assert body["count"] == 1
    assert body["rate_limits"][0]["request_current_usage"] == 3
    assert body["rate_limits"][0]["request_max_limit"] == 5
