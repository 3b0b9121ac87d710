"""Faults of the processes around a live gateway: a database outage under load, a worker killed or stopped mid-stream.

Rules under test (``governance.metering.enforcement``, ``governance.metering.writer``, ``proxy.accounting``):

- **database outage** (PostgreSQL mode, Redis up): Redis keeps admitting with the configuration
  the gateway has cached; a request that needs the database meanwhile is answered 503 in the
  error shape (never a 500, never a hang); settles that cannot be written are retried until the
  database is back, keeping their reservations meanwhile, so every answered request ends up in
  the ledger and the budget's database usage equals the ledger's sum; a stream that ends during
  the outage needs no database to finish; a batch whose commit was not acknowledged is charged
  exactly once when retried;
- **SIGKILL of a worker** between admit and settle: the request is cut, gunicorn starts a new
  worker, whose lease reaper settles the killed request's reservation within the lease bound
  (``governance.metering.reaper``): a UsageRecord with status 0 charged at the reservation, as the
  upstream had been called; the rows, the hot counters and the ledger agree again, in every
  counter backend, and no request is admitted past the budget meanwhile;
- **SIGTERM of a worker** (not the master): the worker finishes the stream it is serving and
  records its usage before it exits, and the master starts a new one.

The database is cut off through a loopback TCP proxy (``tests.proxy.tcp_fault_proxy``); the
real PostgreSQL server is never stopped.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import threading
import time
from decimal import Decimal
from pathlib import Path

import pytest
from django.db import OperationalError, connection

from governance.metering import ledger
from governance.metering import live as live_counters
from governance.models import Budget, UsageRecord
from governance.services import virtual_key_create
from proxy.usage import estimate_prompt_tokens
from proxy.wsgi import DATABASE_UNAVAILABLE
from tests.governance.conftest_counters import T0, admit, anchor_windows, ledger_total, path_specs
from tests.governance.conftest_counters import settle as settle_now
from tests.proxy.conftest import HOST, make_setup, wait_for
from tests.proxy.conftest_enforcement import (
    Reply,
    budget_usage,
    chat,
    database_url,
    mock_served,
    post,
    rate_limit_of,
    records,
    settled,
    spend,
    vk_headers,
    wait_until,
)
from tests.proxy.tcp_fault_proxy import TcpFaultProxy

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

OUTAGE_SECONDS = 2.0
REQUEST_TIMEOUT = 10.0


# --- helpers -------------------------------------------------------------------------------------


class Load:
    """One client sending requests back to back on a background thread until stopped.

    Each reply is kept with the monotonic time it arrived; a request that raised (a hang past the
    timeout, a dropped connection) is kept as the exception, for the test to fail on.
    """

    def __init__(self, url: str, vk: str, body: dict) -> None:
        self.replies: list[tuple[float, Reply]] = []
        self.failures: list[BaseException] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(url, vk, body), daemon=True)
        self._thread.start()

    def _run(self, url: str, vk: str, body: dict) -> None:
        while not self._stop.is_set():
            try:
                reply = post(url, body, vk=vk, timeout=REQUEST_TIMEOUT)
            except Exception as exc:  # noqa: BLE001 - reported by the test
                self.failures.append(exc)
                continue
            self.replies.append((time.monotonic(), reply))

    def count(self, status: int, since: float = 0.0) -> int:
        return sum(1 for at, reply in self.replies if at >= since and reply.status == status)

    def stop(self) -> list[tuple[float, Reply]]:
        self._stop.set()
        self._thread.join(REQUEST_TIMEOUT + 5)
        return self.replies


def worker_pids(master_pid: int) -> set[int]:
    """The gunicorn master's child processes (its workers)."""
    path = Path(f"/proc/{master_pid}/task/{master_pid}/children")
    return {int(pid) for pid in path.read_text().split()}


def the_worker(master_pid: int) -> int:
    pids = wait_until(lambda: worker_pids(master_pid), what="a gunicorn worker")
    assert len(pids) == 1, pids
    return next(iter(pids))


class OpenStream:
    """A streamed chat request read chunk by chunk, so a test can act between chunks."""

    def __init__(self, base_url: str, body: dict, vk: str) -> None:
        host, port = base_url.removeprefix("http://").split(":")
        self.conn = http.client.HTTPConnection(host, int(port), timeout=REQUEST_TIMEOUT)
        headers = {"Content-Type": "application/json", **vk_headers(vk)}
        self.conn.request("POST", "/v1/chat/completions", body=json.dumps(body).encode(), headers=headers)
        self.response = self.conn.getresponse()
        self.data = b""
        self.error: BaseException | None = None

    def read_until(self, marker: bytes) -> bytes:
        while marker not in self.data:
            chunk = self.response.read1(65536)
            assert chunk, f"the stream ended before {marker!r}: {self.data!r}"
            self.data += chunk
        return self.data

    def read_rest(self) -> bytes:
        """Everything until the end of the body, or until the connection breaks (kept in ``error``)."""
        try:
            while True:
                chunk = self.response.read1(65536)
                if not chunk:
                    break
                self.data += chunk
        except (http.client.HTTPException, OSError) as exc:
            self.error = exc
        finally:
            self.conn.close()
        return self.data


def live_budget(vk) -> Decimal:
    budget = Budget.objects.get(virtual_key=vk)
    return live_counters.budget_usage([budget.pk])[str(budget.pk)]


def live_requests(vk) -> int:
    rate_limit = rate_limit_of(vk)
    return live_counters.rate_limit_usage([rate_limit.pk])[str(rate_limit.pk)].requests.usage


# --- database outage -----------------------------------------------------------------------------


@pytest.fixture
def database_proxy():
    """A TCP fault proxy in front of the test database's PostgreSQL server (skips on SQLite)."""
    db = connection.settings_dict
    if db["ENGINE"].endswith("sqlite3"):
        pytest.skip("a database outage needs a database server: run with DATABASE_URL=postgres://...")
    proxy = TcpFaultProxy(int(db["PORT"] or 5432), db["HOST"] or HOST)
    yield proxy
    proxy.close()


def test_a_database_outage_under_load_answers_200_or_503_and_loses_no_usage(
    fault_redis, database_proxy, gateways, mock, price, settings
):
    # A private Redis: configuration changes published by anything else on a shared server would
    # empty the gateway's configuration cache in the middle of the outage.
    settings.REDIS_URL = fault_redis.url
    model = "gpt-4o-mini"
    price(model, output="0.001")
    live = make_setup(
        mock.url,
        rate_limit={"request_max_limit": 100_000, "request_reset_duration": "1h"},
        budgets=[{"max_limit": "100", "reset_duration": "1h"}],
    )
    # A key the gateway has never seen: its configuration must be read from the database.
    unseen_vk, unseen = virtual_key_create(
        name="unseen",
        provider_configs=[{"provider": "openai", "weight": 1.0, "allowed_models": ["*"], "key_ids": ["*"]}],
        budgets=[{"max_limit": "1", "reset_duration": "1h"}],
    )
    proxied = database_url().replace(f":{connection.settings_dict['PORT'] or 5432}/", f":{database_proxy.port}/")
    assert f":{database_proxy.port}/" in proxied
    # Configuration cached for a minute (Redis invalidates it on change, and nothing changes during
    # the test): the loaded key is served from the cache while the database is away. One worker,
    # so that the cache the load warmed is the one that serves it during the outage.
    server = gateways(
        workers=1,
        DATABASE_URL=proxied,
        REDIS_URL=fault_redis.url,
        GOVERNANCE_COUNTERS="auto",
        GOVERNANCE_CONFIG_CACHE_SECONDS="60",
    )
    load = Load(server.url, live.value, chat(model, max_tokens=2))
    try:
        wait_until(lambda: load.count(200) >= 10, what="answers before the outage")
        assert database_proxy.connections > 0, "the gateway does not reach the database through the proxy"
        database_proxy.cut()
        cut_at = time.monotonic()
        refused = post(server.url, chat(model, max_tokens=2), vk=unseen, timeout=REQUEST_TIMEOUT)
        time.sleep(max(0.0, OUTAGE_SECONDS - (time.monotonic() - cut_at)))
        database_proxy.restore()
        restored_at = time.monotonic()
        wait_until(lambda: load.count(200, since=restored_at) >= 10, timeout=15, what="answers after the outage")
        welcome = post(server.url, chat(model, max_tokens=2), vk=unseen, timeout=REQUEST_TIMEOUT)
    finally:
        replies = load.stop()

    # A request that needs the database while it is away: 503 in the error shape, never a 500.
    assert refused.error == (503, None, DATABASE_UNAVAILABLE), refused.body
    assert refused.headers["retry-after"] == "1"
    assert welcome.status == 200, welcome.body
    # The loaded key: no failure, no hang past the timeout, and Redis kept admitting it.
    assert load.failures == [], load.failures
    during = [reply.status for at, reply in replies if cut_at <= at < restored_at]
    assert len(during) >= 3, during
    statuses = [reply.status for _, reply in replies]
    assert set(statuses) == {200}, {reply.body for _, reply in replies if reply.status != 200}

    answered = len(statuses)
    # Every answered request is in the ledger once the database is back (its settle was retried),
    # and the database counters agree with the ledger.
    rows = settled(answered, vk=live.vk, timeout=20)
    assert {r.status_code for r in rows} == {200}
    assert budget_usage(live.vk) == spend(live.vk) == answered * Decimal("0.002")
    assert rate_limit_of(live.vk).request_current_usage == answered
    assert mock_served(mock, model) == answered + 1  # and the unseen key's one request after the outage
    assert [r.status_code for r in records(unseen_vk)] == [200]


def test_a_stream_that_ends_while_the_database_is_away_is_recorded_once_it_is_back(
    fault_redis, database_proxy, gateways, mock, price, settings
):
    settings.REDIS_URL = fault_redis.url
    price("slow-stream", output="0.001")
    live = make_setup(
        mock.url,
        rate_limit={"request_max_limit": 100, "request_reset_duration": "1h"},
        budgets=[{"max_limit": "1", "reset_duration": "1h"}],
    )
    proxied = database_url().replace(f":{connection.settings_dict['PORT'] or 5432}/", f":{database_proxy.port}/")
    # A configuration cache shorter than the stream: what the request looked up when it began
    # has expired by the time it ends, in the middle of the outage.
    server = gateways(workers=1, DATABASE_URL=proxied, REDIS_URL=fault_redis.url, GOVERNANCE_CONFIG_CACHE_SECONDS="0.5")

    stream = OpenStream(server.url, chat("slow-stream", max_tokens=5, stream=True), live.value)
    assert stream.response.status == 200
    stream.read_until(b'"delta"')
    database_proxy.cut()
    cut_at = time.monotonic()
    data = stream.read_rest()
    assert stream.error is None and data.endswith(b"data: [DONE]\n\n"), (data, stream.error)
    time.sleep(max(0.0, OUTAGE_SECONDS - (time.monotonic() - cut_at)))
    database_proxy.restore()

    rows = settled(1, vk=live.vk, timeout=15)
    assert [(r.streamed, r.completion_tokens, r.status_code, r.cost) for r in rows] == [
        (True, 5, 200, Decimal("0.005"))
    ]
    assert budget_usage(live.vk) == live_budget(live.vk) == Decimal("0.005")
    assert live_requests(live.vk) == 1


def test_a_settle_whose_commit_was_not_acknowledged_is_charged_once_when_retried(counter_mode, make_vk, monkeypatch):
    """The connection broke after the database committed the batch but before it said so: the
    settler retries, finds the UsageRecord, and neither releases the reservation twice (database
    counters) nor forgets to charge the hot copy (Redis counters)."""
    vk = make_vk(
        budgets=[{"max_limit": "1", "reset_duration": "1d"}],
        rate_limit={"request_max_limit": 10, "request_reset_duration": "1h"},
    )
    anchor_windows()
    specs = path_specs(vk)
    admission = admit(specs, cost="0.5")
    record_many = ledger.record_many

    def commit_then_lose_the_acknowledgement(charges, *, now):
        record_many(charges, now=now)
        raise OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(ledger, "record_many", commit_then_lose_the_acknowledgement)
    with pytest.raises(OperationalError):
        settle_now(admission, cost="0.3", vk=vk)
    monkeypatch.undo()

    assert settle_now(admission, cost="0.3", vk=vk) is False  # the first attempt charged it
    assert settle_now(admission, cost="0.3", vk=vk) is False  # and a third does nothing
    budget, rate_limit = Budget.objects.get(), rate_limit_of(vk)
    assert UsageRecord.objects.attempts().count() == 1
    assert budget.current_usage == ledger_total() == Decimal("0.3")
    assert rate_limit.request_current_usage == 1
    assert live_counters.budget_usage([budget.pk], now=T0)[str(budget.pk)] == Decimal("0.3")
    live = live_counters.rate_limit_usage([rate_limit.pk], now=T0)[str(rate_limit.pk)]
    assert live.requests.usage == 1


# --- killed and stopped workers ------------------------------------------------------------------


def test_sigkill_of_a_worker_mid_stream_settles_its_reservation_and_admits_nothing_past_the_budget(
    gateways, mock, price
):
    for model in ("slow-stream", "gpt-4o-mini"):
        price(model, output="0.001")
    live = make_setup(
        mock.url,
        rate_limit={"request_max_limit": 100, "request_reset_duration": "1h"},
        # Four worst cases of $0.005: the killed stream's and three more requests.
        budgets=[{"max_limit": "0.02", "reset_duration": "1h"}],
    )
    server = gateways(workers=1)
    worker = the_worker(server.proc.pid)

    stream = OpenStream(server.url, chat("slow-stream", max_tokens=5, stream=True), live.value)
    assert stream.response.status == 200
    stream.read_until(b'"delta"')
    os.kill(worker, signal.SIGKILL)
    data = stream.read_rest()

    assert b"data: [DONE]" not in data and stream.error is not None, (data, stream.error)
    respawned = wait_until(lambda: worker_pids(server.proc.pid) - {worker}, what="a new worker")
    assert worker not in respawned
    server.wait_serving()
    replies = [post(server.url, chat("gpt-4o-mini", max_tokens=5), vk=live.value) for _ in range(4)]

    assert [r.status for r in replies] == [200, 200, 200, 402], [r.body for r in replies]
    assert replies[3].json()["type"] == "budget_exceeded"
    # The three answered requests are in the ledger, and so is the killed one: the new worker's
    # lease reaper settled it at its reservation ($0.005 worst case, one request slot), as its
    # upstream call had started. Whether it ran before or after the three, nothing passed the limit.
    assert wait_for(lambda: UsageRecord.objects.attempts().filter(virtual_key=live.vk).count() == 4, timeout=10)
    rows = sorted(records(live.vk), key=lambda r: r.status_code)
    assert [(r.model, r.status_code, r.cost, r.upstream_reached) for r in rows] == [
        ("slow-stream", 0, Decimal("0.005"), True)
    ] + [("gpt-4o-mini", 200, Decimal("0.005"), True)] * 3
    wait_until(lambda: live_budget(live.vk) == spend(live.vk) == budget_usage(live.vk), what="settled counters")
    assert live_budget(live.vk) == Decimal("0.02")
    assert live_requests(live.vk) == rate_limit_of(live.vk).request_current_usage == 4
    assert (mock_served(mock, "slow-stream"), mock_served(mock, "gpt-4o-mini")) == (1, 3)
    assert mock.stats()["streams_finished"] == 0


LEASE_SECONDS = 10


@pytest.mark.parametrize("counters", ["local", "redis", "database"])
def test_a_request_whose_worker_was_killed_is_settled_within_the_lease_bound(
    counters, gateways, mock, price, fault_redis, settings
):
    """The upstream hangs, the worker serving the request is SIGKILL-ed: within the lease bound
    the request has a UsageRecord (status 0, charged its reservation: the upstream had been
    reached), and the database rows, the hot counters and the ledger agree, so the request limit
    refuses for no request that no longer exists and the monthly budget carries no phantom."""
    if counters == "local" and not connection.settings_dict["ENGINE"].endswith("sqlite3"):
        pytest.skip("embedded mode (the host-local table) runs on SQLite")
    env: dict[str, str | None] = {"GOVERNANCE_LEASE_SECONDS": str(LEASE_SECONDS), "REDIS_URL": None}
    if counters == "redis":
        settings.REDIS_URL = env["REDIS_URL"] = fault_redis.url
        settings.GOVERNANCE_COUNTERS = env["GOVERNANCE_COUNTERS"] = "redis"
    else:
        settings.REDIS_URL = None
        settings.GOVERNANCE_COUNTERS = env["GOVERNANCE_COUNTERS"] = counters
    for model in ("hang", "gpt-4o-mini"):
        price(model, output="0.001")
    live = make_setup(
        mock.url,
        rate_limit={"request_max_limit": 2, "request_reset_duration": "1h"},
        budgets=[{"max_limit": "0.1", "reset_duration": "1M", "calendar_aligned": True}],
    )
    server = gateways(workers=1, **env)
    worker = the_worker(server.proc.pid)

    hung: list = []
    caller = threading.Thread(
        target=lambda: hung.append(_outcome(lambda: post(server.url, chat("hang", max_tokens=5), vk=live.value)))
    )
    caller.start()
    wait_until(lambda: mock_served(mock, "hang") == 1, what="the request at the upstream")
    # In flight: its reservation (5 output tokens at $0.001, one request) is counted.
    assert (live_budget(live.vk), live_requests(live.vk)) == (Decimal("0.005"), 1)
    os.kill(worker, signal.SIGKILL)
    killed_at = time.monotonic()
    caller.join(REQUEST_TIMEOUT)
    assert isinstance(hung[0], ConnectionError | http.client.HTTPException), hung

    def exact() -> bool:
        found = UsageRecord.objects.filter(virtual_key=live.vk).exists()
        return (
            found
            and live_budget(live.vk) == spend(live.vk) == budget_usage(live.vk)
            and live_requests(live.vk) == rate_limit_of(live.vk).request_current_usage == UsageRecord.objects.count()
        )

    wait_until(exact, timeout=LEASE_SECONDS, what="the killed request settled by the lease reaper")
    assert time.monotonic() - killed_at < LEASE_SECONDS
    record = UsageRecord.objects.get()
    assert (record.model, record.status_code, record.upstream_reached) == ("hang", 0, True)
    # Charged its reservation: the prompt estimate and the output cap, the cap at the output price.
    reserved_tokens = estimate_prompt_tokens(chat("hang", max_tokens=5)) + 5
    assert (record.provider, record.cost, record.total_tokens) == ("openai", Decimal("0.005"), reserved_tokens)
    assert (budget_usage(live.vk), rate_limit_of(live.vk).request_current_usage) == (Decimal("0.005"), 1)

    # The killed request reached the upstream, so it keeps its one request of the two.
    server.wait_serving()
    replies = [post(server.url, chat("gpt-4o-mini", max_tokens=5), vk=live.value) for _ in range(2)]
    assert [r.status for r in replies] == [200, 429], [r.body for r in replies]
    settled(2, vk=live.vk)
    assert budget_usage(live.vk) == spend(live.vk) == Decimal("0.010")
    assert rate_limit_of(live.vk).request_current_usage == 2


def _outcome(call):
    try:
        return call()
    except Exception as exc:  # noqa: BLE001 - the test looks at what it was
        return exc


def test_sigterm_of_a_worker_mid_stream_finishes_the_stream_records_it_and_is_replaced(gateways, mock, price):
    price("slow-stream", input="0.000001", output="0.001")
    live = make_setup(
        mock.url,
        rate_limit={"request_max_limit": 100, "request_reset_duration": "1h"},
        budgets=[{"max_limit": "1", "reset_duration": "1h"}],
    )
    server = gateways(workers=1)
    worker = the_worker(server.proc.pid)

    stream = OpenStream(server.url, chat("slow-stream", max_tokens=5, stream=True), live.value)
    assert stream.response.status == 200
    stream.read_until(b'"delta"')
    os.kill(worker, signal.SIGTERM)
    data = stream.read_rest()

    assert stream.error is None and data.endswith(b"data: [DONE]\n\n"), (data, stream.error)
    assert data.count(b'"content":"mock "') == 5
    respawned = wait_until(lambda: worker_pids(server.proc.pid) - {worker}, what="a new worker")
    assert worker not in respawned
    server.wait_serving()
    after = post(server.url, chat("slow-stream", max_tokens=2), vk=live.value)
    assert after.status == 200, after.body

    rows = settled(2, vk=live.vk)
    assert [(r.streamed, r.completion_tokens, r.status_code) for r in rows] == [(True, 5, 200), (False, 2, 200)]
    assert budget_usage(live.vk) == spend(live.vk) == sum((r.cost for r in rows), Decimal("0")) > 0
    assert rate_limit_of(live.vk).request_current_usage == 2
    assert mock.stats()["streams_finished"] == 1
