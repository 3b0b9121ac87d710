"""Exact limits under concurrency through live gateway processes.

The session gateway runs 2 gunicorn workers with 8 threads each; the second test adds another
gunicorn master on the same database (and the same Redis when ``REDIS_URL`` is set; in embedded
mode both use the SQLite file and its host-local counter table). Every client thread has its own
connection.
"""

from __future__ import annotations

import math
from decimal import Decimal

import pytest

from governance.models import UsageRecord
from governance.services import virtual_key_create
from tests.proxy.conftest import make_setup, wait_for
from tests.proxy.conftest_enforcement import (
    ESTIMATED_PROMPT_TOKENS,
    MOCK_PROMPT_TOKENS,
    budget_usage,
    burst,
    chat,
    mock_served,
    post,
    rate_limit_of,
    retry_after,
    settled,
    spend,
)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

MODEL = "gpt-4o-mini"


def test_request_limit_of_20_admits_exactly_20_of_60_concurrent_requests(gateway, mock, price):
    price(MODEL, input="0.000001", output="0.00001")
    live = make_setup(
        mock.url,
        rate_limit={"request_max_limit": 20, "request_reset_duration": "1m"},
        budgets=[{"max_limit": "100", "reset_duration": "1d"}],
    )

    replies = burst([lambda: post(gateway.url, chat(), vk=live.value)] * 60)

    statuses = [r.status for r in replies]
    assert (statuses.count(200), statuses.count(429)) == (20, 40), statuses
    for reply in replies:
        if reply.status == 429:
            assert reply.error == (
                429,
                "request_limited",
                "Rate limit check failed: VK request limit exceeded (20/20, resets every 1m)",
            )
            retry_after(reply, 60)
    rows = settled(20, vk=live.vk)
    assert {r.status_code for r in rows} == {200}
    assert rate_limit_of(live.vk).request_current_usage == 20
    assert mock_served(mock, MODEL) == 20
    assert budget_usage(live.vk) == spend(live.vk) == 20 * Decimal("0.000044")


def test_concurrent_requests_never_take_a_budget_past_its_limit(gateway, mock, price):
    price(MODEL, input="0.000001", output="0.0001")
    limit = Decimal("0.0105")
    live = make_setup(mock.url, budgets=[{"max_limit": str(limit), "reset_duration": "1h"}])
    actual = MOCK_PROMPT_TOKENS * Decimal("0.000001") + 10 * Decimal("0.0001")
    worst_case = ESTIMATED_PROMPT_TOKENS * Decimal("0.000001") + 10 * Decimal("0.0001")
    assert worst_case > actual

    replies = burst([lambda: post(gateway.url, chat(max_tokens=10), vk=live.value)] * 40)

    passed = sum(r.status == 200 for r in replies)
    for reply in replies:
        if reply.status != 200:
            status, type_, message = reply.error
            assert (status, type_) == (402, "budget_exceeded")
            assert message.startswith("Budget exceeded: VK budget exceeded: ") and message.endswith(" UTC)")
    # Admissions are serialised and each holds at most its worst case, so the first
    # floor(limit / worst case) always fit; no more can pass than the limit pays for.
    assert math.floor(limit / worst_case) <= passed <= math.floor(limit / actual)
    rows = settled(passed, vk=live.vk)
    usage = budget_usage(live.vk)
    assert usage <= limit
    assert usage == spend(live.vk) == passed * actual
    assert all(r.cost == actual for r in rows)
    assert mock_served(mock, MODEL) == passed


def test_two_gateway_processes_enforce_one_request_limit_together(gateway, gateways, mock, price):
    price(MODEL, output="0.00001")
    other = gateways(workers=2)
    live = make_setup(mock.url, rate_limit={"request_max_limit": 10, "request_reset_duration": "1h"})
    # Both processes take part: three requests through each, one after the other...
    for url in (gateway.url, other.url) * 3:
        assert post(url, chat(), vk=live.value).status == 200

    # ...then a burst spread over both; four slots are left.
    urls = [gateway.url, other.url] * 12
    replies = burst([lambda url=url: post(url, chat(), vk=live.value) for url in urls])

    statuses = [r.status for r in replies]
    assert (statuses.count(200), statuses.count(429)) == (4, 20), statuses
    rejected = {r.error for r in replies if r.status == 429}
    assert rejected == {
        (429, "request_limited", "Rate limit check failed: VK request limit exceeded (10/10, resets every 1h)")
    }
    settled(10, vk=live.vk)
    assert rate_limit_of(live.vk).request_current_usage == 10
    assert mock_served(mock, MODEL) == 10


def test_rollups_equal_the_ledger_after_concurrent_traffic_through_two_workers(gateway, mock, price):
    """Served, refused, streamed and unlimited requests at once, through both workers: the hourly
    and daily rollups (what the dashboard and /api/logs/stats read) equal the ledger's sums."""
    from governance.metering import rollups
    from governance.models import UsageRollup
    from governance.models.rollups import DAY

    price(MODEL, input="0.000001", output="0.00001")
    limited = make_setup(mock.url, rate_limit={"request_max_limit": 10, "request_reset_duration": "1m"})
    free, free_value = virtual_key_create(
        name="free", provider_configs=[{"provider": "openai", "weight": 1, "allowed_models": ["*"], "key_ids": ["*"]}]
    )
    streamed = chat(stream=True, stream_options={"include_usage": True})
    tasks = [lambda: post(gateway.url, chat(), vk=limited.value)] * 25
    tasks += [lambda: post(gateway.url, chat(max_tokens=7), vk=free_value)] * 15
    tasks += [lambda: post(gateway.url, streamed, vk=free_value)] * 10

    replies = burst(tasks)

    assert sorted(r.status for r in replies).count(200) == 35
    assert [r.status for r in replies].count(429) == 15
    settled(10, vk=limited.vk)
    settled(25, vk=free)
    refusals = UsageRecord.objects.refusals().filter(virtual_key=limited.vk)
    assert wait_for(lambda: refusals.count() == 15), refusals.count()
    assert rollups.differences() == []
    for vk, served, refused in ((limited.vk, 10, 15), (free, 25, 0)):
        days = UsageRollup.objects.filter(granularity=DAY, virtual_key_id=vk.pk)
        assert sum(d.requests for d in days if not d.refused) == served
        assert sum(d.requests for d in days if d.refused) == refused
        assert sum(d.cost for d in days) == spend(vk) > 0
