"""Fixtures and helpers of the end-to-end tests through gateway processes (``test_enforcement_*.py``,
``test_*_processes.py``, ``test_freshness_push.py``).

A pytest plugin (``pytest_plugins`` in ``tests/conftest.py``): its fixtures are available to
every test module by name; test modules import only its helpers (``chat``, ``post``, ``settled``...).

- ``gateways``: starts extra gateway processes (the ``BIFROST_SERVER`` server, as ``bin/run``) on
  the test database with a chosen environment (``GOVERNANCE_COUNTERS``, ``REDIS_URL``, workers);
  each is stopped after the test. ``GatewayProcess.terminate()`` sends SIGTERM to the master (graceful shutdown).
- ``fault_redis``: a private ``redis-server`` (no persistence, free port) that a test may stop and
  start again; the shared Redis is never touched.
- ``price``: a ``ModelPrice`` row with known per-token prices, so costs are exact and predictable.
- ``post`` / ``burst``: one inference call on its own HTTP connection, and many of them at once
  from real threads released together.
- ``settled`` / ``spend``: wait until the gateway has settled every admitted request (ledger rows
  written and, in Redis mode, the hot counters agree with the database), then read the ledger.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.db import connection
from django.db.models import Sum

from bifrost_site import serving
from governance.metering import live
from governance.models import Budget, ModelPrice, RateLimit, UsageRecord
from tests.proxy.conftest import HOST, ROOT, free_port, wait_for, wait_port

MESSAGES = [{"role": "user", "content": "Say hello, please."}]
# What the mock upstream reports for MESSAGES: characters of the prompt text // 4.
MOCK_PROMPT_TOKENS = len(MESSAGES[0]["content"]) // 4
# What the gateway reserves for the prompt before the call: about four characters per token of
# the JSON-encoded prompt fields (``proxy.usage.estimate_prompt_tokens``).
ESTIMATED_PROMPT_TOKENS = max(1, len(json.dumps([MESSAGES])) // 4)


def chat(model: str = "gpt-4o-mini", max_tokens: int = 4, **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": MESSAGES, "max_tokens": max_tokens, **extra}


# --- HTTP ----------------------------------------------------------------------------------------


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def error(self) -> tuple[int, str | None, str]:
        """``(status, type, message)`` of an error body in the project's shape."""
        data = self.json()
        return self.status, data.get("type"), data["error"]["message"]


def vk_headers(value: str, form: str = "authorization") -> dict[str, str]:
    """The VK in one of the four header forms of SPEC section 6."""
    return {
        "x-bf-vk": {"x-bf-vk": value},
        "authorization": {"Authorization": f"Bearer {value}"},
        "x-api-key": {"x-api-key": value},
        "x-goog-api-key": {"x-goog-api-key": value},
    }[form]


def post(
    base_url: str,
    body: dict[str, Any],
    *,
    vk: str,
    form: str = "authorization",
    path: str = "/v1/chat/completions",
    timeout: float = 20.0,
) -> Reply:
    """One POST on a fresh connection (each call, and so each thread, has its own)."""
    host, port = base_url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        raw = json.dumps(body).encode()
        headers = {"Content-Type": "application/json", **vk_headers(vk, form)}
        conn.request("POST", path, body=raw, headers=headers)
        answer = conn.getresponse()
        return Reply(answer.status, {k.lower(): v for k, v in answer.getheaders()}, answer.read())
    finally:
        conn.close()


def burst(tasks: list[Callable[[], Any]]) -> list[Any]:
    """Run every task on its own thread, all released at once; results in task order."""
    results: list[Any] = [None] * len(tasks)
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(tasks))

    def run(index: int) -> None:
        try:
            barrier.wait(10)
            results[index] = tasks[index]()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test thread below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(tasks))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    if errors:
        raise errors[0]
    return results


def retry_after(reply: Reply, window_seconds: int) -> int:
    """The ``Retry-After`` of a 429, checked to lie within the limit's window."""
    value = int(reply.headers["retry-after"])
    assert 1 <= value <= window_seconds, value
    return value


# --- database state ------------------------------------------------------------------------------


RESETS_AT = re.compile(r" \(resets at \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC\)")


def without_resets(error: Any) -> Any:
    """A budget refusal's message (or ``Reply.error`` tuple) with each budget's reset time taken
    out, since it moves with the clock; fails unless every budget named has one."""
    if isinstance(error, tuple):
        return (*error[:-1], without_resets(error[-1]))
    assert error.count("budget exceeded:") == len(RESETS_AT.findall(error)), error
    return RESETS_AT.sub("", error)


def records(vk=None, **filters: Any) -> list[UsageRecord]:
    queryset = UsageRecord.objects.attempts().filter(**filters).order_by("created_at", "id")
    if vk is not None:
        queryset = queryset.filter(virtual_key=vk)
    return list(queryset)


def spend(vk=None, **filters: Any) -> Decimal:
    """Sum of the ledger's cost (exact Decimal)."""
    queryset = UsageRecord.objects.filter(**filters)
    if vk is not None:
        queryset = queryset.filter(virtual_key=vk)
    return queryset.aggregate(total=Sum("cost"))["total"] or Decimal("0")


def settled(count: int, *, vk=None, timeout: float = 10.0, **filters: Any) -> list[UsageRecord]:
    """The ledger rows, once ``count`` exist and every counter's live usage equals its database row.

    The gateway settles after the answer was sent, so a client can be ahead of the ledger. Live
    usage includes reservations of requests in flight; in Redis mode it is read from the hot copy
    and in database mode from the rows, so equality with the rows means nothing is in flight.
    """

    def done() -> bool:
        attempts = UsageRecord.objects.attempts()  # refusals are entries too, but reached no upstream
        if attempts.filter(**filters, **({"virtual_key": vk} if vk else {})).count() < count:
            return False
        budgets = list(Budget.objects.all())
        limits = list(RateLimit.objects.all())
        live_b = live.budget_usage([b.pk for b in budgets])
        live_r = live.rate_limit_usage([r.pk for r in limits])
        for budget in budgets:
            if live_b[str(budget.pk)] != budget.current_usage:
                return False
        for limit in limits:
            state = live_r[str(limit.pk)]
            if state.tokens is not None and state.tokens.usage != limit.token_current_usage:
                return False
            if state.requests is not None and state.requests.usage != limit.request_current_usage:
                return False
        return True

    assert wait_for(done, timeout=timeout), "the gateway did not settle every request in time"
    found = records(vk, **filters)
    assert len(found) == count, [(r.model, r.status_code) for r in found]
    return found


def budget_usage(owner) -> Decimal:
    return Budget.objects.get(**{_owner_field(owner): owner}).current_usage


def rate_limit_of(owner) -> RateLimit:
    return RateLimit.objects.get(**{_owner_field(owner): owner})


def _owner_field(owner) -> str:
    name = owner._meta.model_name
    return {"virtualkey": "virtual_key", "providerconfig": "provider_config"}.get(name, name)


@pytest.fixture
def price(db) -> Callable[..., ModelPrice]:
    """``price(model, input=..., output=..., provider="openai")``: dollars per token, exact."""

    def make(model: str, *, input: str = "0", output: str = "0", provider: str = "openai") -> ModelPrice:
        return ModelPrice.objects.create(
            provider=provider,
            model=model,
            input_cost_per_token=Decimal(input),
            output_cost_per_token=Decimal(output),
        )

    return make


# --- gateway processes ---------------------------------------------------------------------------


def database_url() -> str:
    """The test database as a URL for a gateway subprocess."""
    db = connection.settings_dict
    if db["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{db['NAME']}"
    user, host, port = db["USER"] or "postgres", db["HOST"] or HOST, db["PORT"] or 5432
    return f"postgres://{user}@{host}:{port}/{db['NAME']}"


class GatewayProcess:
    """The gateway served on the test database by ``server`` (``BIFROST_SERVER``, as ``bin/run``;
    ``bifrost_site.serving``), with ``workers`` workers; see ``gateways``."""

    server = serving.server()

    def command(self) -> list[str]:
        return serving.command(self.server)

    @property
    def start_timeout(self) -> float:
        # granian listens once a worker has loaded the app (gunicorn's master listens at once).
        return 90.0 if self.server == "granian" else 30.0

    def __init__(self, log: Path, env: dict[str, str | None], workers: int) -> None:
        self.port = free_port()
        self.url = f"http://{HOST}:{self.port}"
        self.log = log
        full = {
            **os.environ,
            "DATABASE_URL": database_url(),
            "DJANGO_SECRET_KEY": settings.SECRET_KEY,
            "BIFROST_ENCRYPTION_KEY": settings.BIFROST_ENCRYPTION_KEY,
            "BIFROST_BIND": f"{HOST}:{self.port}",
            "GUNICORN_WORKERS": str(workers),
            "GUNICORN_THREADS": "8",
            "GOVERNANCE_CONFIG_CACHE_SECONDS": "0",
            "BIFROST_LOG_LEVEL": "WARNING",
        }
        if settings.REDIS_URL:
            full["REDIS_URL"] = settings.REDIS_URL
        for name, value in env.items():
            if value is None:
                full.pop(name, None)
            else:
                full[name] = value
        self.proc: subprocess.Popen | None = None
        try:
            with open(log, "wb") as out:
                self.proc = subprocess.Popen(
                    self.command(),
                    cwd=ROOT,
                    env=full,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
            wait_port(self.port, self.proc, self.start_timeout)
            if self.server == "granian":
                # The port answers once one worker listens (each binds its own socket): wait for them all.
                wait_until(lambda: self.started() == workers, timeout=60, what=f"{workers} granian workers")
        except BaseException:
            if self.proc is not None:
                self.stop()
            raise

    def wait_serving(self, timeout: float = 60.0) -> None:
        """Until the port takes connections again after a worker was replaced: under granian a
        lone worker's successor opens it once it has loaded the app (``serve_granian``'s
        docstring, "Sockets"); gunicorn's master keeps it open throughout."""
        wait_port(self.port, self.proc, timeout)

    def started(self) -> int:
        """granian: the workers started so far (its log says each)."""
        return self.log.read_bytes().count(b"Started worker-")

    def worker_pids(self) -> set[int]:
        path = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
        return {int(pid) for pid in path.read_text().split()}

    def terminate(self) -> None:
        """SIGTERM to the master: the server stops accepting and lets requests in flight finish."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)

    def wait(self, timeout: float = 30.0) -> int:
        return self.proc.wait(timeout)

    def stop(self) -> None:
        if self.proc is None:
            return
        self.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


@pytest.fixture
def gateways(django_db_setup, tmp_path) -> Callable[..., GatewayProcess]:
    """``gateways(workers=2, **env)`` starts a gateway process; all are stopped after the test.

    An env value of None removes the variable (e.g. ``REDIS_URL=None`` for database counters).
    """
    started: list[GatewayProcess] = []

    def start(*, workers: int = 2, **env: str | None) -> GatewayProcess:
        process = GatewayProcess(tmp_path / f"gateway-{len(started)}.log", env, workers)
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop()


@pytest.fixture
def fault_redis():
    """A private redis-server for fault tests: ``stop()`` kills it, ``start()`` brings it back empty."""
    from tests.governance.conftest_counters import started_private_redis

    with started_private_redis() as server:
        yield server


def wait_until(predicate: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    """``wait_for`` that fails the test with ``what`` when the predicate never holds."""
    value = wait_for(predicate, timeout=timeout)
    assert value, f"timed out waiting for {what}"
    return value


def mock_served(mock, model: str) -> int:
    """Requests for ``model`` the mock upstream received."""
    return mock.stats()["by_model"].get(model, 0)


def elapsed(since: float) -> float:
    return time.monotonic() - since


def sigterm_drains_requests_in_flight(mock, price, start: Callable[[], Any]) -> Any:
    """SIGTERM to a gateway (``start()``: 2 workers) while 16 requests are in flight, half on a key
    with limits and half on one without (whose rows go through the batched writer), half of them
    streamed: every one is answered 200, and once the server has exited the ledger holds exactly
    one row per answer and the counters equal it. Returns the stopped server for further checks."""
    from concurrent.futures import ThreadPoolExecutor

    from governance.services import virtual_key_create
    from tests.proxy.conftest import make_setup

    for model in ("slow-400", "slow-stream-100"):
        price(model, input="0.000001", output="0.001")
    limited = make_setup(
        mock.url,
        rate_limit={"request_max_limit": 100, "request_reset_duration": "1h"},
        budgets=[{"max_limit": "1", "reset_duration": "1h"}],
    )
    free_vk, free = virtual_key_create(
        name="free", provider_configs=[{"provider": "openai", "weight": 1.0, "allowed_models": ["*"], "key_ids": ["*"]}]
    )
    server = start()
    jobs = [(limited.value, chat("slow-400", max_tokens=3)), (free, chat("slow-400", max_tokens=3))] * 4
    jobs += [(limited.value, chat("slow-stream-100", max_tokens=5, stream=True))] * 2
    jobs += [(free, chat("slow-stream-100", max_tokens=5, stream=True))] * 2

    with ThreadPoolExecutor(len(jobs)) as pool:
        futures = [pool.submit(post, server.url, body, vk=vk) for vk, body in jobs]
        # Every request has reached the upstream (is in flight) before the master gets SIGTERM.
        wait_until(
            lambda: mock_served(mock, "slow-400") == 8 and mock.stats()["streams_started"] == 4,
            what="all requests in flight",
        )
        server.terminate()
        replies = [f.result(timeout=30) for f in futures]
    assert server.wait(30) == 0

    assert [r.status for r in replies] == [200] * len(jobs)
    assert all(r.body.endswith(b"data: [DONE]\n\n") for r in replies[8:])
    # The gateway has exited: whatever it wrote is all there will ever be.
    limited_rows, free_rows = records(limited.vk), records(free_vk)
    assert len(limited_rows) == len(free_rows) == 6
    assert {r.status_code for r in limited_rows + free_rows} == {200}
    assert len({r.request_id for r in limited_rows + free_rows}) == 12  # one row per answer
    assert sorted(r.completion_tokens for r in limited_rows) == [3, 3, 3, 3, 5, 5]
    assert budget_usage(limited.vk) == spend(limited.vk) == sum((r.cost for r in limited_rows), Decimal("0")) > 0
    assert rate_limit_of(limited.vk).request_current_usage == 6
    return server
