from __future__ import annotations

from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from unittest.mock import patch

import pytest
from django.utils import timezone

from governance.metering.enforcement import Admission
from governance.models import Budget, RateLimit, VirtualKey
from governance.services import customer_create, team_create, virtual_key_create
from tests.governance.conftest_counters import admit, path_specs

pytestmark = pytest.mark.django_db
URL = "/api/governance/virtual-keys/quota"
T0 = datetime(2030, 1, 15, 12, 0, tzinfo=UTC)


@contextmanager
def freeze_now(moment: datetime):
    """The live reads' clock (windows are computed against it)."""
    with patch("governance.metering.live.timezone.now", return_value=moment):
        yield


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
    body = response.json()
    assert body["virtual_key_name"] == "svc" and body["is_active"] is True
    assert body["virtual_key_id"] == str(vk.pk)
    assert body["virtual_key_value"] == f"sk-bf-…{value[-4:]}"
    assert body["budgets"][0]["current_usage"] == 1.25 and body["budgets"][0]["max_limit"] == 10.0
    assert body["rate_limit"]["request_max_limit"] == 5
    assert body["team"]["budgets"][0]["max_limit"] == 50.0
    assert body["customer"]["budgets"][0]["max_limit"] == 100.0
    assert value not in response.content.decode()


# Bifrost v1.5's documented quota response (docs.getbifrost.ai, "Get virtual key quota"), less
# ``config_hash`` everywhere and ``created_at``/``updated_at`` on the rate limit (not kept here).
BIFROST_TOP = {"virtual_key_name", "is_active", "budgets", "rate_limit"}
BIFROST_BUDGET = {
    "id",
    "max_limit",
    "reset_duration",
    "calendar_aligned",
    "last_reset",
    "current_usage",
    "created_at",
    "updated_at",
}
BIFROST_RATE_LIMIT = {
    "id",
    "token_max_limit",
    "token_reset_duration",
    "token_current_usage",
    "token_last_reset",
    "request_max_limit",
    "request_reset_duration",
    "request_current_usage",
    "request_last_reset",
}


def test_quota_answers_bifrost_v1_5_shape_at_the_top_level(anon_api, holder):
    vk, value = holder
    Budget.objects.filter(virtual_key=vk).update(last_reset=T0)
    RateLimit.objects.filter(virtual_key=vk).update(request_current_usage=3, request_last_reset=T0)

    with freeze_now(T0 + timedelta(seconds=10)):
        body = anon_api.get(URL, HTTP_X_BF_VK=value).json()

    assert BIFROST_TOP <= set(body) and "virtual_key" not in body
    [budget] = body["budgets"]
    assert BIFROST_BUDGET <= set(budget)
    assert {k: budget[k] for k in ("max_limit", "reset_duration", "calendar_aligned", "current_usage")} == {
        "max_limit": 10.0,
        "reset_duration": "1d",
        "calendar_aligned": False,
        "current_usage": 1.25,
    }
    assert budget["last_reset"] == "2030-01-15T12:00:00Z"
    assert budget["id"] == str(Budget.objects.get(virtual_key=vk).pk)
    rate_limit = body["rate_limit"]
    assert set(rate_limit) >= BIFROST_RATE_LIMIT
    assert rate_limit["id"] == str(RateLimit.objects.get(virtual_key=vk).pk)
    assert {k: rate_limit[k] for k in BIFROST_RATE_LIMIT - {"id", "token_last_reset"}} == {
        "token_max_limit": None,
        "token_reset_duration": None,
        "token_current_usage": 0,
        "request_max_limit": 5,
        "request_reset_duration": "1m",
        "request_current_usage": 3,
        "request_last_reset": "2030-01-15T12:00:00Z",
    }
    # The levels above, beside Bifrost's fields, in the same shapes.
    assert body["team"]["name"] == "Core" and BIFROST_BUDGET <= set(body["team"]["budgets"][0])
    assert body["customer"]["name"] == "Acme" and body["customer"]["rate_limit"] is None


def test_quota_of_a_key_without_limits_has_empty_budgets_and_null_rate_limit(anon_api):
    _, value = virtual_key_create(name="bare")

    response = anon_api.get(URL, HTTP_X_BF_VK=value)

    assert response.status_code == 200
    body = response.json()
    assert {k: body[k] for k in BIFROST_TOP} == {
        "virtual_key_name": "bare",
        "is_active": True,
        "budgets": [],
        "rate_limit": None,
    }
    assert (body["team"], body["customer"], body["provider_configs"]) == (None, None, [])


def test_quota_of_an_inactive_or_expired_key_says_is_active_false(anon_api, holder):
    vk, value = holder
    VirtualKey.objects.filter(pk=vk.pk).update(is_active=False)
    assert anon_api.get(URL, HTTP_X_BF_VK=value).json()["is_active"] is False

    VirtualKey.objects.filter(pk=vk.pk).update(is_active=True, expires_at=timezone.now() - timedelta(minutes=1))
    body = anon_api.get(URL, HTTP_X_BF_VK=value).json()
    assert body["is_active"] is False and body["expires_at"] is not None


def test_quota_without_a_key_is_401_required(anon_api):
    response = anon_api.get(URL)
    assert response.status_code == 401
    assert response.json()["type"] == "virtual_key_required"


def test_quota_with_unknown_key_is_401_not_found(anon_api):
    response = anon_api.get(URL, HTTP_X_BF_VK="sk-bf-00000000-0000-4000-8000-000000000000")
    assert response.status_code == 401
    assert response.json()["type"] == "virtual_key_not_found"


@pytest.mark.django_db(transaction=True)
def test_quota_shows_the_live_usage_of_every_counter_backend(counter_mode, anon_api, holder):
    vk, value = holder
    # A request in flight: its slot and worst-case cost are reserved in the backend's counters
    # (in Redis and the local table only there, not yet in the database rows).
    admission = admit(path_specs(vk), cost="0.5", now=timezone.now())
    assert isinstance(admission, Admission) and admission.backend == counter_mode
    in_rows = RateLimit.objects.get(virtual_key=vk).request_current_usage
    assert in_rows == (1 if counter_mode == "database" else 0)

    body = anon_api.get(URL, HTTP_X_BF_VK=value).json()

    assert body["rate_limit"]["request_current_usage"] == 1
    assert body["budgets"][0]["current_usage"] == 1.75
    assert body["team"]["budgets"][0]["current_usage"] == 0.5
    assert body["customer"]["budgets"][0]["current_usage"] == 0.5
