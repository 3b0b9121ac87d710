"""Fixtures and helpers of the counter, enforcement and ledger tests.

A pytest plugin (``pytest_plugins`` in ``tests/conftest.py``): its fixtures are available to
every test module by name; test modules import only its helpers (``admit``, ``settle``,
``path_specs``, ``T0``...).

- ``counter_mode``: runs a test against the database counters, the local table and Redis (the configured
  ``REDIS_URL`` when there is one, else a private ``redis-server`` started by the tests); the
  Redis run is marked ``slow``, so ``bin/test --fast`` leaves it out.
- ``private_redis``: a redis-server on a free private port that tests may stop and restart; the
  shared Redis on 6379 is never touched.
- ``make_vk`` and ``path_specs``: entities with budgets and rate limits, and the specs the proxy
  would hand to ``admit`` for them.
- ``run_concurrently``: real threads released together by a barrier, each closing its own
  database connection at the end.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
import redis
from django.db import connections
from django.db.models import Sum

from governance.limitspec import BudgetSpec, RateLimitSpec
from governance.metering import enforcement
from governance.metering.ledger import LedgerEntry
from governance.models import Budget, ProviderConfig, RateLimit, UsageRecord, VirtualKey
from governance.services import virtual_key_create


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class PrivateRedis:
    """A throw-away redis-server (no persistence) on a private port."""

    def __init__(self) -> None:
        self.port = _free_port()
        self.dir = tempfile.mkdtemp(prefix="bf-redis-")
        self.proc: subprocess.Popen | None = None
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            return
        self.proc = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                self.dir,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis(port=self.port, socket_connect_timeout=0.2)
        deadline = time.monotonic() + 5
        while True:
            try:
                client.ping()
                return
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, decode_responses=True)


@contextlib.contextmanager
def started_private_redis():
    """A started :class:`PrivateRedis`, stopped and its folder removed afterwards."""
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    server = PrivateRedis()
    server.start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(server.dir, ignore_errors=True)


@pytest.fixture(scope="session")
def redis_server_process():
    with started_private_redis() as server:
        yield server


@pytest.fixture
def private_redis(redis_server_process: PrivateRedis) -> PrivateRedis:
    redis_server_process.start()
    redis_server_process.client().flushdb()
    return redis_server_process


def _configured_redis_url() -> str | None:
    return os.environ.get("REDIS_URL") or None


@pytest.fixture(params=["database", "local", pytest.param("redis", marks=pytest.mark.slow)])
def counter_mode(request, settings) -> str:
    """Run the test once per counter backend."""
    if request.param in ("database", "local"):
        settings.GOVERNANCE_COUNTERS = request.param
    else:
        configured = _configured_redis_url()
        if configured:
            # Start empty, as on the private server: lease owners and leases left by earlier tests
            # (or their gateway processes) must not be reaped by this one.
            import redis

            redis.Redis.from_url(configured).flushdb()
        settings.REDIS_URL = configured or request.getfixturevalue("private_redis").url
        settings.GOVERNANCE_COUNTERS = "auto"
    return request.param


@pytest.fixture
def redis_mode(settings, private_redis) -> PrivateRedis:
    """Redis counters on the private server (for tests that stop and restart it)."""
    settings.REDIS_URL = private_redis.url
    settings.GOVERNANCE_COUNTERS = "auto"
    return private_redis


@pytest.fixture
def make_vk(db) -> Callable[..., VirtualKey]:
    def make(**kwargs: Any) -> VirtualKey:
        kwargs.setdefault("name", f"vk-{uuid.uuid4().hex[:8]}")
        return virtual_key_create(**kwargs)[0]

    return make


def _budget_specs(budgets, entity: str) -> list[BudgetSpec]:
    return [BudgetSpec.of(b, entity) for b in budgets.order_by("reset_duration")]


def _rate_specs(owner, entity: str) -> list[RateLimitSpec]:
    field = {"virtualkey": "virtual_key", "providerconfig": "provider_config"}.get(
        owner._meta.model_name, owner._meta.model_name
    )
    rate_limit = RateLimit.objects.filter(**{field: owner}).first()
    return [] if rate_limit is None else [RateLimitSpec.of(rate_limit, entity)]


def path_specs(vk: VirtualKey, config: ProviderConfig | None = None) -> tuple[tuple, tuple]:
    """(budgets, rate_limits) on the path provider config -> VK -> team -> customer, as the proxy gives them."""
    vk = VirtualKey.objects.select_related("team__customer", "customer").get(pk=vk.pk)
    levels: list[tuple[Any, str]] = []
    if config is not None:
        levels.append((config, config.provider.name))
    levels.append((vk, "VK"))
    if vk.team is not None:
        levels.append((vk.team, "Team"))
    customer = vk.customer or (vk.team.customer if vk.team else None)
    if customer is not None:
        levels.append((customer, "Customer"))
    budgets: list[BudgetSpec] = []
    rate_limits: list[RateLimitSpec] = []
    for owner, entity in levels:
        budgets += _budget_specs(owner.budgets.all(), entity)
        rate_limits += _rate_specs(owner, entity)
    return tuple(budgets), tuple(rate_limits)


def budget_usage(budget_id) -> Decimal:
    return Budget.objects.get(pk=budget_id).current_usage


def run_concurrently(task: Callable[[int], Any], count: int, *, threads: int = 12) -> list[Any]:
    """Run ``task(i)`` for i in range(count) on ``threads`` real threads started together."""
    results: list[Any] = [None] * count
    errors: list[BaseException] = []
    barrier = threading.Barrier(threads)

    def worker(offset: int) -> None:
        try:
            barrier.wait()
            for index in range(offset, count, threads):
                results[index] = task(index)
        except BaseException as exc:  # noqa: BLE001 - reported to the test below
            errors.append(exc)
        finally:
            connections.close_all()

    pool = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join(60)
    if errors:
        raise errors[0]
    return results


# A fixed clock: every window in these tests is anchored here (2030-01-15 was a Tuesday).
T0 = datetime(2030, 1, 15, 12, 0, tzinfo=UTC)


def anchor_windows(at: datetime = T0) -> None:
    """Start every budget and rate-limit window at ``at``."""
    Budget.objects.update(last_reset=at)
    RateLimit.objects.update(token_last_reset=at, request_last_reset=at)


# A VK with a $1 daily budget, 2 requests and 1,000 tokens an hour.
LIMITS = {
    "budgets": [{"max_limit": "1", "reset_duration": "1d"}],
    "rate_limit": {
        "request_max_limit": 2,
        "request_reset_duration": "1h",
        "token_max_limit": 1000,
        "token_reset_duration": "1h",
    },
}


def admit(
    specs: tuple[tuple, tuple],
    *,
    cost: str | Decimal = "0",
    tokens: int = 0,
    now: datetime = T0,
    entry: LedgerEntry | None = None,
):
    budgets, rate_limits = specs
    return enforcement.admit(
        request_id=uuid.uuid4(),
        budgets=budgets,
        rate_limits=rate_limits,
        estimated_cost=Decimal(cost),
        estimated_tokens=tokens,
        now=now,
        entry=entry,
    )


def settle(
    admission,
    *,
    cost: str | Decimal = "0",
    tokens: int = 0,
    now: datetime = T0,
    vk: VirtualKey | None = None,
    upstream_called: bool = True,
    status_code: int = 200,
) -> bool:
    entry = LedgerEntry(
        provider="openai",
        model="gpt-4o-mini",
        status_code=status_code,
        virtual_key_id=vk.pk if vk else None,
        prompt_tokens=tokens,
    )
    return enforcement.settle(
        admission,
        actual_cost=Decimal(cost),
        actual_tokens=tokens,
        upstream_called=upstream_called,
        entry=entry,
        now=now,
    )


def ledger_total(**filters: Any) -> Decimal:
    """Sum of UsageRecord costs, at the column's precision (SQLite sums decimals as floats)."""
    total = UsageRecord.objects.filter(**filters).aggregate(total=Sum("cost"))["total"] or Decimal("0")
    return Decimal(total).quantize(Decimal("1e-10"))
