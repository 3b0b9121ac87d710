from __future__ import annotations

from decimal import Decimal

import pytest

from governance.models import Budget
from governance.services import customer_create, team_create, virtual_key_create

pytestmark = pytest.mark.django_db
URL = "/api/governance/virtual-keys/quota"


@pytest.fixture
def holder():
    customer = customer_create(name="Acme", budgets=[{"max_limit": 100, "reset_duration": "1M"}])
    team = team_create(name="Core", customer=customer, budgets=[{"max_limit": 50, "reset_duration": "1w"}])
    vk, value = virtual_key_create(
        name="svc",
        team=team,
        budgets=[{"max_limit": 10, "reset_duration": "1d"}],
        rate_limit={"request_max_limit": 5, "request_reset_duration": "1m"},
    )
    Budget.objects.filter(virtual_key=vk).update(current_usage=Decimal("1.25"))
    return vk, value


@pytest.mark.parametrize(
    "header",
    ["HTTP_X_BF_VK", "HTTP_AUTHORIZATION", "HTTP_X_API_KEY", "HTTP_X_GOOG_API_KEY"],
)
def test_vk_holder_reads_its_own_quota_with_any_header(anon_api, holder, header):
    vk, value = holder
    presented = f"Bearer {value}" if header == "HTTP_AUTHORIZATION" else value
    response = anon_api.get(URL, **{header: presented})
    assert response.status_code == 200
    body = response.json()["virtual_key"]
    assert body["name"] == "svc" and body["is_active"] is True
    assert body["value"] == f"sk-bf-…{value[-4:]}"
    assert body["budgets"][0]["current_usage"] == 1.25 and body["budgets"][0]["max_limit"] == 10.0
    assert body["rate_limit"]["request_max_limit"] == 5
    assert body["team"]["budgets"][0]["max_limit"] == 50.0
    assert body["customer"]["budgets"][0]["max_limit"] == 100.0
    assert value not in response.content.decode()


def test_quota_without_a_key_is_401_required(anon_api):
    response = anon_api.get(URL)
    assert response.status_code == 401
    assert response.json()["type"] == "virtual_key_required"


def test_quota_with_unknown_key_is_401_not_found(anon_api):
    response = anon_api.get(URL, HTTP_X_BF_VK="sk-bf-00000000-0000-4000-8000-000000000000")
    assert response.status_code == 401
    assert response.json()["type"] == "virtual_key_not_found"
