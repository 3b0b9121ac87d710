"""A refusal names every limit that stands in the way, through a live gateway, in each counter backend.

Each test starts a gateway (gunicorn, 2 workers) whose counters live in the database rows, the
host-local table or Redis (``GOVERNANCE_COUNTERS=database|local|redis``), and reads live usage
from the same place in this process.

The limits are exhausted by *settling* the previous request, not by its reservation: the gateway
reserves ``GOVERNANCE_DEFAULT_MAX_TOKENS=1`` output token for a request without ``max_tokens``,
while the mock upstream then produces 16, so the first request is admitted with room to spare and
only its actual usage, settled after the answer, uses the limits up. The next request must find
all of them.
"""

from __future__ import annotations

import http.client
import json
import uuid
from decimal import Decimal

import pytest
from django.utils import timezone

from governance.metering.counters import hot_counters
from governance.metering.counters.base import REQUESTS, Counter
from governance.services import team_create
from tests.governance.conftest_counters import _configured_redis_url
from tests.proxy.conftest import make_setup
from tests.proxy.conftest_enforcement import (
    ESTIMATED_PROMPT_TOKENS,
    MESSAGES,
    MOCK_PROMPT_TOKENS,
    budget_usage,
    mock_served,
    post,
    rate_limit_of,
    retry_after,
    settled,
    spend,
    without_resets,
)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

MODEL = "gpt-4o-mini"
# What the mock produces for a request without max_tokens, and what the gateway reserves for it.
MOCK_DEFAULT_COMPLETION = 16
ACTUAL_TOKENS = MOCK_PROMPT_TOKENS + MOCK_DEFAULT_COMPLETION  # 20
RESERVED_TOKENS = ESTIMATED_PROMPT_TOKENS + 1  # 14
UNCAPPED = {"model": MODEL, "messages": MESSAGES}


@pytest.fixture(params=["database", "local", "redis"])
def backend(request, gateways, settings, tmp_path):
    """``(mode, gateway)``: a gateway whose counters live in ``mode``; this process reads them there too."""
    mode = request.param
    env: dict[str, str | None] = {"GOVERNANCE_DEFAULT_MAX_TOKENS": "1", "GOVERNANCE_COUNTERS": mode}
    if mode == "redis":
        url = _configured_redis_url() or request.getfixturevalue("private_redis").url
        env["REDIS_URL"] = url
        settings.REDIS_URL = url
    else:
        # On PostgreSQL the local table lives in BIFROST_DATA_DIR (on SQLite beside the database).
        env |= {"REDIS_URL": None, "BIFROST_DATA_DIR": str(tmp_path)}
        settings.DATA_DIR, settings.REDIS_URL = tmp_path, None
    settings.GOVERNANCE_COUNTERS = mode
    return mode, gateways(**env)


def assert_counted_in(mode: str, rate_limit) -> None:
    """The gateway's request counter is in the backend under test (not in a fallback)."""
    counter = Counter(
        REQUESTS, str(rate_limit.pk), "VK", rate_limit.request_max_limit, rate_limit.request_reset_duration, False, 0
    )
    hot = hot_counters()
    if mode == "database":
        assert hot is None
        return
    assert hot is not None and hot.name == mode
    [state] = hot.read([counter], timezone.now())
    assert state is not None and state[0] == 1, state
    if mode == "redis":
        assert hot.client.keys(f"bf:gov:r:{rate_limit.pk}:*")


def quota(gateway, value: str) -> dict:
    host, port = gateway.url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.request("GET", "/api/governance/virtual-keys/quota", headers={"x-bf-vk": value})
        answer = conn.getresponse()
        assert answer.status == 200
        return json.loads(answer.read())
    finally:
        conn.close()


def test_token_and_request_limits_exhausted_by_settling_are_both_named(backend, mock, price):
    mode, gateway = backend
    price(MODEL, output="0.001")
    live = make_setup(
        mock.url,
        name=f"vk-{uuid.uuid4().hex[:6]}",
        rate_limit={
            "token_max_limit": 16,
            "token_reset_duration": "1h",
            "request_max_limit": 1,
            "request_reset_duration": "1m",
        },
    )
    # Admitted with room: the reservation alone would not exhaust the token limit.
    assert RESERVED_TOKENS < 16 <= ACTUAL_TOKENS
    assert post(gateway.url, UNCAPPED, vk=live.value).status == 200
    [row] = settled(1, vk=live.vk)
    assert row.total_tokens == ACTUAL_TOKENS

    second = post(gateway.url, UNCAPPED, vk=live.value)

    assert second.error == (
        429,
        "rate_limited",
        "Rate limit check failed: VK token limit exceeded (20/16, resets every 1h); "
        "VK request limit exceeded (1/1, resets every 1m)",
    )
    assert second.headers["content-type"] == "application/json"
    # Both must clear before a request can pass: the hour-long token window decides.
    assert retry_after(second, 3600) > 60
    assert mock_served(mock, MODEL) == 1
    limit = rate_limit_of(live.vk)
    assert (limit.token_current_usage, limit.request_current_usage) == (ACTUAL_TOKENS, 1)
    assert_counted_in(mode, limit)
    # The quota endpoint of the same gateway reads the same counters.
    body = quota(gateway, live.value)
    assert (body["rate_limit"]["token_current_usage"], body["rate_limit"]["request_current_usage"]) == (20, 1)


def test_rate_limit_and_budgets_exhausted_by_settling_are_all_named_in_the_429(backend, mock, price):
    mode, gateway = backend
    price(MODEL, output="0.001")
    team = team_create(name=f"team-{uuid.uuid4().hex[:6]}", budgets=[{"max_limit": "0.01", "reset_duration": "1d"}])
    live = make_setup(
        mock.url,
        name=f"vk-{uuid.uuid4().hex[:6]}",
        team=team,
        budgets=[{"max_limit": "0.015", "reset_duration": "1h"}],
        rate_limit={"request_max_limit": 1, "request_reset_duration": "1m"},
    )
    # Reserved: 1 output token ($0.001); charged: 16 ($0.016), past both budgets.
    assert post(gateway.url, UNCAPPED, vk=live.value).status == 200
    [row] = settled(1, vk=live.vk)
    assert row.cost == Decimal("0.016")

    second = post(gateway.url, UNCAPPED, vk=live.value)

    assert without_resets(second.error) == (
        429,
        "request_limited",
        "Rate limit check failed: VK request limit exceeded (1/1, resets every 1m). "
        "Budget exceeded: VK budget exceeded: $0.016 of $0.015 used; "
        "Team budget exceeded: $0.016 of $0.01 used",
    )
    # Retry-After is the request window's: budgets never set it.
    retry_after(second, 60)
    assert mock_served(mock, MODEL) == 1
    assert budget_usage(live.vk) == budget_usage(team) == spend(live.vk) == Decimal("0.016")
    assert_counted_in(mode, rate_limit_of(live.vk))
