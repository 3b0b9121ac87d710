"""Soak: a bounded run under load in production mode, then exactness and steadiness checks.

Usage: ``.venv/bin/python -m bench.soak [--seconds 60] [--concurrency 32] [--workers 4]``

Starts the mock upstream and the gateway (gunicorn, ``--workers`` workers) on PostgreSQL and
Redis (``DATABASE_URL``/``REDIS_URL``, or a fresh database on 127.0.0.1:5432 and Redis db 12),
sends JSON and SSE chat completions (3:1) with a virtual key that carries a budget and a rate
limit, samples worker memory, open file descriptors, PostgreSQL and Redis connections every few
seconds, stops the gateway with SIGTERM, and checks that nothing was lost:

- every 200 the clients saw has its UsageRecord, and the mock served exactly as many requests;
- the budget's usage in the database equals the sum of the UsageRecords' cost, and so does the
  live (Redis) usage; the rate limit counted exactly the requests served;
- no error answers; memory and connections did not keep growing.

Prints the figures and exits 1 if a check fails.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from decimal import Decimal
from pathlib import Path

from bench import loadgen
from bench.run import GUNICORN, HOST, PYTHON, ROOT, SETUP, body, free_port, start

SAMPLE_SECONDS = 5.0


def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def governed_key_agrees(requests: int) -> list[str]:
    """Print the governed key's budget and request counter as the database, the live (hot) copy and
    the ledger see them; returns what disagrees (budget against the ledger's sum, request counter
    against ``requests``, the governed requests served)."""
    from django.db.models import Sum

    from governance.metering import live as live_counters
    from governance.models import Budget, RateLimit, UsageRecord

    governed = "bench-governed"
    ledger_cost = UsageRecord.objects.filter(virtual_key__name=governed).aggregate(total=Sum("cost"))[
        "total"
    ] or Decimal("0")
    budget = Budget.objects.get(virtual_key__name=governed)
    rate_limit = RateLimit.objects.get(virtual_key__name=governed)
    live = live_counters.budget_usage([budget.pk])[str(budget.pk)]
    live_requests = live_counters.rate_limit_usage([rate_limit.pk])[str(rate_limit.pk)].requests.usage
    print(f"budget: database {budget.current_usage} = ledger {ledger_cost}; live {live}")
    print(f"rate limit: database {rate_limit.request_current_usage} requests, live {live_requests}")
    failures = []
    if budget.current_usage != ledger_cost or live != ledger_cost:
        failures.append(f"budget usage {budget.current_usage} / live {live} != ledger {ledger_cost}")
    if not (rate_limit.request_current_usage == live_requests == requests):
        failures.append(f"request counter {rate_limit.request_current_usage}/{live_requests} != {requests}")
    return failures


def stop_all(procs: list[subprocess.Popen], created_db: str | None, *, timeout: float) -> None:
    """Stop the processes a run started (last first) and drop the database it created."""
    for proc in reversed(procs):
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
    from django.db import connections

    connections.close_all()
    if created_db:
        subprocess.run(["psql", "-h", HOST, "-U", "postgres", "-qc", f"DROP DATABASE IF EXISTS {created_db}"])


def _workers(master: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{master}/task/{master}/children").read_text().split()]
    except OSError:
        return []


def _fds(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


def main() -> None:  # noqa: C901 - a script: set up, run, sample, check, report
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--workers", type=int, default=4)
    args = parser.parse_args()

    database_url = os.environ.get("DATABASE_URL")
    created_db = None
    if not database_url:
        created_db = f"bifrost_soak_{os.getpid()}"
        subprocess.run(["psql", "-h", HOST, "-U", "postgres", "-qc", f"CREATE DATABASE {created_db}"], check=True)
        database_url = f"postgres://postgres@{HOST}:5432/{created_db}"
    redis_url = os.environ.get("REDIS_URL") or f"redis://{HOST}:6379/12"
    env = {
        **{k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"},
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "DJANGO_SETTINGS_MODULE": "bifrost_site.settings",
        "BIFROST_DATA_DIR": tempfile.mkdtemp(prefix="bifrost-soak-"),
        "BIFROST_LOG_LEVEL": "WARNING",
        "GUNICORN_WORKERS": str(args.workers),
    }
    os.environ.update(env)
    import django

    django.setup()
    import redis
    from django.db import connection

    from governance.models import UsageRecord

    redis.Redis.from_url(redis_url).flushdb()
    mock_port, gw_port = free_port(), free_port()
    env["BENCH_UPSTREAM"] = f"http://{HOST}:{mock_port}"
    procs = []
    failures: list[str] = []
    try:
        procs.append(start([PYTHON, "-m", "bench.mock_upstream", "--port", str(mock_port)], env, mock_port))
        subprocess.run([PYTHON, "manage.py", "migrate", "-v", "0"], cwd=ROOT, env=env, check=True)
        subprocess.run([PYTHON, "manage.py", "seed_prices"], cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL)
        keys = subprocess.run([PYTHON, "-c", SETUP], cwd=ROOT, env=env, check=True, capture_output=True, text=True)
        vk = keys.stdout.strip().splitlines()[-1].split()[1]  # the governed key
        gateway = start(
            [GUNICORN, "-c", "gunicorn.conf.py", "bifrost_site.wsgi:application"],
            {**env, "BIFROST_BIND": f"{HOST}:{gw_port}"},
            gw_port,
        )
        procs.append(gateway)
        headers = {"Authorization": f"Bearer {vk}"}
        json_request = loadgen.build_request(HOST, gw_port, "/v1/chat/completions", body(False, "gpt-4o-mini"), headers)
        sse_request = loadgen.build_request(HOST, gw_port, "/v1/chat/completions", body(True, "gpt-4o-mini"), headers)
        sse_clients = max(1, args.concurrency // 4)
        mix = [(json_request, args.concurrency - sse_clients), (sse_request, sse_clients)]

        samples: list[dict] = []
        done = threading.Event()

        def sample() -> None:
            rds = redis.Redis.from_url(redis_url)
            while not done.wait(SAMPLE_SECONDS):
                workers = _workers(gateway.pid)
                with connection.cursor() as cursor:
                    cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()")
                    pg = cursor.fetchone()[0]
                connection.close()
                samples.append(
                    {
                        "t": len(samples) * SAMPLE_SECONDS + SAMPLE_SECONDS,
                        "rss_mb": round(sum(_rss_kb(w) for w in workers) / 1024, 1),
                        "fds": sum(_fds(w) for w in workers),
                        "pg_connections": pg,
                        "redis_clients": rds.info("clients")["connected_clients"],
                    }
                )
                print(f"  t={samples[-1]['t']:5.0f}s {json.dumps(samples[-1])}", flush=True)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        started = time.perf_counter()
        results = loadgen.run_mixed(HOST, gw_port, mix, seconds=args.seconds)
        elapsed = time.perf_counter() - started
        done.set()
        sampler.join()
        gateway.terminate()  # SIGTERM: graceful, the workers drain their ledger queues
        gateway.wait(60)

        ok = sum(len(r.latencies) for r in results)
        errors = sum(r.errors for r in results)
        served = json.load(urllib.request.urlopen(f"http://{HOST}:{mock_port}/_mock/stats"))  # noqa: S310
        upstream_chats = served["by_path"].get("/v1/chat/completions", 0)
        records = UsageRecord.objects.filter(status_code=200).count()

        all_latencies = sorted(x for r in results for x in r.latencies)
        print(f"\nsoak: {elapsed:.0f} s, c={args.concurrency} ({sse_clients} SSE), {args.workers} workers")
        print(
            f"answers: {ok} x 200, {errors} errors; {ok / elapsed:.0f} req/s; "
            f"p50 {all_latencies[len(all_latencies) // 2] * 1000:.1f} ms, "
            f"p99 {all_latencies[int(len(all_latencies) * 0.99)] * 1000:.1f} ms"
        )
        print(f"ledger: {records} UsageRecords (status 200), mock served {upstream_chats} chat requests")
        agreement = governed_key_agrees(records)  # the soak sends only the governed key's requests
        if samples:
            first, last = samples[0], samples[-1]
            print(
                f"workers RSS {first['rss_mb']} MB -> {last['rss_mb']} MB; fds {first['fds']} -> {last['fds']}; "
                f"PostgreSQL connections {first['pg_connections']} -> {last['pg_connections']}; "
                f"Redis clients {first['redis_clients']} -> {last['redis_clients']}"
            )
            if len(samples) >= 4:
                middle = samples[len(samples) // 2]
                if last["rss_mb"] > middle["rss_mb"] * 1.25 + 20:
                    failures.append(f"worker memory kept growing: {middle['rss_mb']} -> {last['rss_mb']} MB")
                if last["fds"] > middle["fds"] + 20 or last["pg_connections"] > middle["pg_connections"] + 10:
                    failures.append("open connections kept growing")
        if errors:
            failures.append(f"{errors} error answers")
        if not (ok == records == upstream_chats):
            failures.append(f"200 answers {ok}, UsageRecords {records}, upstream served {upstream_chats} differ")
        failures += agreement
    finally:
        stop_all(procs, created_db, timeout=15)
    if failures:
        print("\nFAILED: " + "; ".join(failures))
        sys.exit(1)
    print("\nall checks passed")


if __name__ == "__main__":
    main()
