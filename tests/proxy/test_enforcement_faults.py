"""Faults through live gateway processes: failed upstreams, Redis outages, SIGTERM with requests in flight.

Rules under test (``governance.metering.enforcement``):

- a failed upstream costs nothing; an attempt that reached the upstream (an error answer, a
  dropped connection) counts one request against request limits, a connection that was refused
  gives its request slot back;
- ``GOVERNANCE_COUNTERS=auto``: while Redis is down the database counters enforce the limits,
  and the hot counters are rebuilt from the database when Redis is back;
- ``GOVERNANCE_COUNTERS=redis``: while Redis is down every request is refused with 503
  ``governance_unavailable`` (never let through unchecked, never a 500);
- SIGTERM of the gunicorn master lets requests in flight finish and record their usage.

Redis faults use a private ``redis-server`` started by the test; the shared Redis is never touched.
"""

from __future__ import annotations

import threading
import time
from decimal import Decimal

import pytest

from governance.metering.counters.base import UNAVAILABLE
from governance.models import Budget, UsageRecord
from governance.services import provider_create, provider_key_create
from tests.proxy.conftest import free_port, make_setup, wait_for
from tests.proxy.conftest_enforcement import (
    budget_usage,
    chat,
    mock_served,
    post,
    rate_limit_of,
    settled,
    sigterm_drains_requests_in_flight,
    spend,
    wait_until,
)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

LIMITED = "Rate limit check failed: VK request limit exceeded (10/10, resets every 1h)"


def test_failed_upstream_costs_nothing_but_counts_the_request_it_made(gateway, mock, price):
    for model in ("fail-500", "reset", "gpt-4o-mini"):
        price(model, output="0.001")
    live = make_setup(
        mock.url,
        rate_limit={"request_max_limit": 2, "request_reset_duration": "1m"},
        budgets=[{"max_limit": "1", "reset_duration": "1h"}],
    )

    failed = post(gateway.url, chat("fail-500"), vk=live.value)
    dropped = post(gateway.url, chat("reset"), vk=live.value)
    after = post(gateway.url, chat("gpt-4o-mini"), vk=live.value)

    assert (failed.status, failed.json()["error"]["message"]) == (500, "mock upstream failure 500")
    assert dropped.error[0::2] == (502, "upstream provider 'openai' failed: connection closed before an answer")
    # Both attempts reached the upstream, so they used the two request slots.
    assert after.error == (
        429,
        "request_limited",
        "Rate limit check failed: VK request limit exceeded (2/2, resets every 1m)",
    )
    rows = settled(2, vk=live.vk)
    assert [(r.model, r.status_code, r.cost, r.total_tokens) for r in rows] == [
        ("fail-500", 500, Decimal("0"), 0),
        ("reset", 502, Decimal("0"), 0),
    ]
    assert budget_usage(live.vk) == Decimal("0")
    assert rate_limit_of(live.vk).request_current_usage == 2
    assert (mock_served(mock, "fail-500"), mock_served(mock, "reset"), mock_served(mock, "gpt-4o-mini")) == (1, 1, 0)


def test_unreachable_provider_costs_nothing_and_gives_the_request_slot_back(gateway, price):
    price("gpt-4o-mini", output="0.001")
    closed_port = free_port()  # nothing listens there: the connection is refused
    live = make_setup(
        f"http://127.0.0.1:{closed_port}",
        rate_limit={"request_max_limit": 1, "request_reset_duration": "1m"},
        budgets=[{"max_limit": "1", "reset_duration": "1h"}],
    )

    replies = [post(gateway.url, chat(), vk=live.value) for _ in range(3)]

    # A limit of one request would refuse the second attempt had a refused connection counted.
    assert [(r.status, r.json()["error"]["message"]) for r in replies] == [
        (502, "upstream provider 'openai' is unreachable")
    ] * 3
    rows = settled(3, vk=live.vk)
    assert {(r.status_code, r.cost, r.total_tokens) for r in rows} == {(502, Decimal("0"), 0)}
    assert budget_usage(live.vk) == Decimal("0")
    assert rate_limit_of(live.vk).request_current_usage == 0


def test_a_refused_primary_gives_its_slot_and_reservation_to_the_fallback(gateway, mock, price):
    price("gpt-4o-mini", output="0.001", provider="backup")
    price("gpt-4o-mini", output="0.001")
    backup = provider_create(name="backup", base_url=mock.url, api_format="openai", timeout_seconds=2.0)
    provider_key_create(provider=backup, name="main", value="sk-upstream-backup-secret")
    live = make_setup(
        f"http://127.0.0.1:{free_port()}",  # openai: the connection is refused
        provider_configs=[
            {"provider": "openai", "weight": 1.0, "allowed_models": ["*"], "key_ids": ["*"]},
            {"provider": "backup", "weight": None, "allowed_models": ["*"], "key_ids": ["*"]},
        ],
        rate_limit={"request_max_limit": 1, "request_reset_duration": "1m"},
        # Room for one worst case ($0.006) only: the fallback fits once the primary let go.
        budgets=[{"max_limit": "0.01", "reset_duration": "1h"}],
    )

    reply = post(gateway.url, chat("openai/gpt-4o-mini", max_tokens=6, fallbacks=["backup/gpt-4o-mini"]), vk=live.value)

    assert reply.status == 200, reply.body
    assert reply.json()["extra_fields"]["provider"] == "backup"
    rows = settled(2, vk=live.vk)
    assert [(r.provider, r.status_code, r.cost) for r in rows] == [
        ("openai", 502, Decimal("0")),
        ("backup", 200, Decimal("0.006")),
    ]
    assert budget_usage(live.vk) == spend(live.vk) == Decimal("0.006")
    assert rate_limit_of(live.vk).request_current_usage == 1
    assert mock_served(mock, "gpt-4o-mini") == 1


class Stream:
    """One client sending requests back to back on a background thread until stopped."""

    def __init__(self, url: str, vk: str, body: dict) -> None:
        self.replies: list = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(url, vk, body), daemon=True)
        self._thread.start()

    def _run(self, url: str, vk: str, body: dict) -> None:
        while not self._stop.is_set():
            self.replies.append(post(url, body, vk=vk))

    def statuses(self, since: int = 0) -> list[int]:
        return [r.status for r in self.replies[since:]]

    def stop(self) -> list:
        self._stop.set()
        self._thread.join(30)
        return self.replies


def _hot_counters(redis_server, rate_limit_id) -> list[str]:
    return redis_server.client().keys(f"bf:gov:r:{rate_limit_id}:*")


def test_redis_outage_falls_back_to_the_database_and_loses_no_usage(gateways, mock, price, fault_redis, settings):
    # The test reads live usage from the same Redis as the gateway.
    settings.REDIS_URL, settings.GOVERNANCE_COUNTERS = fault_redis.url, "auto"
    model = "slow-100"  # ~100 ms per answer: requests are in flight when Redis goes away
    price(model, output="0.001")
    live = make_setup(
        mock.url,
        rate_limit={"request_max_limit": 10, "request_reset_duration": "1h"},
        budgets=[{"max_limit": "1", "reset_duration": "1h"}],
    )
    rate_limit = rate_limit_of(live.vk)
    server = gateways(REDIS_URL=fault_redis.url, GOVERNANCE_COUNTERS="auto")
    stream = Stream(server.url, live.value, chat(model, max_tokens=2))
    try:
        wait_until(lambda: stream.statuses().count(200) >= 3, what="three answers with Redis up")
        assert _hot_counters(fault_redis, rate_limit.pk), "the gateway did not use Redis"
        fault_redis.stop()
        outage = len(stream.replies)
        # The limit of 10 is reached while Redis is down: the database counters refuse.
        wait_until(lambda: stream.statuses(outage).count(429) >= 3, what="refusals during the outage")
        fault_redis.start()  # empty: every counter is rebuilt from the database
        back = len(stream.replies)
        wait_until(lambda: _hot_counters(fault_redis, rate_limit.pk), what="counters rebuilt in Redis")
        seen = len(stream.replies)
        wait_until(lambda: stream.statuses(seen).count(429) >= 3, what="refusals after the restart")
    finally:
        replies = stream.stop()

    statuses = [r.status for r in replies]
    assert set(statuses) <= {200, 429}, statuses  # never a 500 or 503 in auto mode
    assert statuses.count(200) == 10
    # Requests were admitted through the database while Redis was down, up to the limit.
    assert 200 in statuses[outage:back]
    assert 200 not in statuses[back:], "the rebuilt counters forgot usage recorded during the outage"
    assert {r.error for r in replies if r.status == 429} == {(429, "request_limited", LIMITED)}
    rows = settled(10, vk=live.vk)
    assert {r.status_code for r in rows} == {200}
    assert budget_usage(live.vk) == spend(live.vk) == 10 * Decimal("0.002")
    assert rate_limit_of(live.vk).request_current_usage == 10
    assert mock_served(mock, model) == 10


def _hot_figures(redis_server, budget, rate_limit) -> tuple[Decimal | None, int | None]:
    """The budget's dollars and the request count as Redis holds them, None unless built in the current epoch."""
    client = redis_server.client()
    epoch = client.get("bf:gov:epoch") or "0"
    figures = []
    for key, scale in ((f"bf:gov:b:{budget.pk}:1h:0", Decimal(10) ** 9), (f"bf:gov:r:{rate_limit.pk}:1h:0", 1)):
        usage, built = client.hmget(key, "u", "e")
        figures.append(None if usage is None or built != epoch else Decimal(usage) / scale)
    return figures[0], figures[1]


def test_after_redis_restarts_under_load_redis_the_rows_and_the_ledger_agree_exactly(
    gateways, mock, price, fault_redis, settings
):
    """Redis is killed and restarted empty three times while eight clients keep two workers busy:
    requests in flight are admitted by the old Redis, by the database (a worker that saw Redis
    down falls back for a second) and by the new Redis, and settle across the rebuilds. Once all
    settled, Redis, the Budget/RateLimit rows and the ledger hold the same figures."""
    settings.REDIS_URL, settings.GOVERNANCE_COUNTERS = fault_redis.url, "auto"
    model = "slow-30"  # requests are in flight at every restart
    price(model, output="0.001")
    live = make_setup(
        mock.url,
        rate_limit={"request_max_limit": 1_000_000, "request_reset_duration": "1h"},
        budgets=[{"max_limit": "1000", "reset_duration": "1h"}],
    )
    budget, rate_limit = Budget.objects.get(virtual_key=live.vk), rate_limit_of(live.vk)
    server = gateways(workers=2, REDIS_URL=fault_redis.url, GOVERNANCE_COUNTERS="auto")
    streams = [Stream(server.url, live.value, chat(model, max_tokens=2)) for _ in range(8)]

    def answered_at_least(more: int) -> None:
        target = sum(len(s.replies) for s in streams) + more
        wait_until(lambda: sum(len(s.replies) for s in streams) >= target, what=f"{more} more answers")

    try:
        for _ in range(3):
            answered_at_least(100)
            fault_redis.stop()
            time.sleep(0.3)
            fault_redis.start()
        answered_at_least(200)
    finally:
        replies = [reply for s in streams for reply in s.stop()]

    assert {r.status for r in replies} == {200}, {r.body for r in replies if r.status != 200}
    # Workers did meet Redis down and admitted through the database meanwhile.
    assert b"applying the fallback rule" in server.log.read_bytes()
    answered = len(replies)
    assert wait_for(lambda: UsageRecord.objects.filter(virtual_key=live.vk).count() == answered, timeout=20)

    def figures():
        budget.refresh_from_db()
        rate_limit.refresh_from_db()
        return (
            _hot_figures(fault_redis, budget, rate_limit),
            (budget.current_usage, rate_limit.request_current_usage),
            (spend(live.vk), answered),
        )

    wait_for(lambda: len(set(figures())) == 1, timeout=10)
    hot, rows, ledger = figures()
    assert ledger == (answered * Decimal("0.002"), answered)
    assert rows == ledger, (rows, ledger)
    assert hot == ledger, (hot, ledger)
    assert mock_served(mock, model) == answered


def test_redis_required_and_down_answers_503_never_200_unchecked(gateways, mock, price, fault_redis, settings):
    settings.REDIS_URL, settings.GOVERNANCE_COUNTERS = fault_redis.url, "redis"
    model = "slow-50"
    price(model, output="0.001")
    live = make_setup(
        mock.url,
        rate_limit={"request_max_limit": 1000, "request_reset_duration": "1h"},
        budgets=[{"max_limit": "1", "reset_duration": "1h"}],
    )
    server = gateways(REDIS_URL=fault_redis.url, GOVERNANCE_COUNTERS="redis")
    stream = Stream(server.url, live.value, chat(model, max_tokens=2))
    try:
        wait_until(lambda: stream.statuses().count(200) >= 3, what="three answers with Redis up")
        fault_redis.stop()
        wait_until(lambda: stream.statuses().count(503) >= 5, what="503 answers while Redis is down")
        fault_redis.start()
        back = len(stream.replies)
        wait_until(lambda: stream.statuses(back).count(200) >= 3, what="answers once Redis is back")
    finally:
        replies = stream.stop()

    statuses = [r.status for r in replies]
    assert set(statuses) == {200, 503}, statuses
    refused = [r for r in replies if r.status == 503]
    assert {r.error for r in refused} == {(503, "governance_unavailable", UNAVAILABLE.message)}
    assert {r.headers["retry-after"] for r in refused} == {"1"}
    passed = statuses.count(200)
    # Only admitted requests reached the upstream, and each of them is in the ledger.
    assert mock_served(mock, model) == passed
    rows = settled(passed, vk=live.vk)
    assert {r.status_code for r in rows} == {200}
    assert budget_usage(live.vk) == spend(live.vk) == passed * Decimal("0.002")
    assert rate_limit_of(live.vk).request_current_usage == passed


def test_sigterm_lets_requests_in_flight_finish_and_keeps_their_usage(gateways, mock, price):
    sigterm_drains_requests_in_flight(mock, price, lambda: gateways(workers=2))
