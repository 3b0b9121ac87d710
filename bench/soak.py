"""Soak: a bounded run under load in production mode, then exactness and steadiness checks.

Usage: ``.venv/bin/python -m bench.soak [--seconds 600] [--concurrency 32] [--workers 4]
[--big-answer-mib 256] [--server granian|gunicorn]``

Starts the mock upstream and the gateway (``--server``, granian by default; ``--workers`` workers)
on PostgreSQL and Redis (``DATABASE_URL``/``REDIS_URL``, or a fresh database on 127.0.0.1:5432 and Redis db 12).

First a **large answer**: one non-streamed chat completion whose answer is ``--big-answer-mib``
MiB (the mock's ``x-mock-answer-bytes``; 256 MiB is the gateway's default
``PROXY_MAX_RESPONSE_BYTES``, and the text is a few kB short of it so the whole body fits) goes
through the gateway with a plain virtual key, while every worker's resident memory is watched
(its peak, ``VmHWM``, reset just before). A gateway that holds the answer once needs about its
size; each extra copy (a decoded string, the parsed JSON, a re-serialised body) adds as much
again. The check wants the serving worker's peak increase at most 1.3x the answer, and every
worker alive afterwards.

Then the **soak**: JSON and SSE chat completions (3:1) for ``--seconds`` (10 minutes by default;
a shorter run is a smoke) with a virtual key that carries a budget and a rate limit. Every
``--sample-seconds`` it samples each worker's heap (``RssAnon``: ``VmRSS`` also counts shared
and file pages), open file descriptors, PostgreSQL and Redis connections. It stops the gateway
with SIGTERM and checks that nothing was lost:

- every 200 the clients saw has its UsageRecord, and the mock served exactly as many requests;
- the budget's usage in the database equals the sum of the UsageRecords' cost, and so does the
  live (Redis) usage; the rate limit counted exactly the requests served;
- no error answers; no worker died; no worker's heap nor the connections kept growing (per
  worker: heap at start, end and peak, and its slope in MB per minute over the run and over its
  second half).

Prints the figures and exits 1 if a check fails.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from decimal import Decimal
from pathlib import Path

from bench import loadgen
from bench.run import HOST, PYTHON, ROOT, SETUP, body, free_port, start
from bifrost_site import serving

MIB = 1024 * 1024
ENVELOPE = 4096  # room for the answer's JSON around its text, within PROXY_MAX_RESPONSE_BYTES
PEAK_TARGET = 1.3  # the serving worker's peak increase, in answer sizes: the answer held once


def _memory_kb(pid: int) -> dict[str, int]:
    """VmRSS, VmHWM (peak RSS) and RssAnon (heap) of a process, in kB; {} once it is gone."""
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return {}
    found = {}
    for line in lines:
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM", "RssAnon"):
            found[name] = int(value.split()[0])
    return found


def warm_up(master: int, port: int, vk: str, workers: int) -> None:
    """Waits for every worker (the server starts them one after another, the port answers as soon as
    the first is up) and gives each its first requests, so the large answer meets warm workers."""
    deadline = time.monotonic() + 120
    while len(_workers(master)) < workers:
        if time.monotonic() > deadline:
            raise SystemExit(f"the server did not start {workers} workers")
        time.sleep(0.2)
    # gpt-4o on the plain key: apart from the soak's figures (gpt-4o-mini on the governed key).
    request = loadgen.build_request(
        HOST, port, "/v1/chat/completions", body(False, "gpt-4o"), {"Authorization": f"Bearer {vk}"}
    )
    warm = loadgen.run(HOST, port, request, concurrency=2 * workers, seconds=2.0, warmup=0.0)
    if warm.errors:
        raise SystemExit(f"{warm.errors} errors while warming the workers up")


def big_answer(master: int, port: int, vk: str, mib: int) -> list[str]:
    """One non-streamed answer of ``mib`` MiB through the gateway; prints each worker's peak
    memory increase and returns what failed (status, size, peak over the target, a dead worker)."""
    size = mib * MIB - ENVELOPE
    workers = _workers(master)
    before = {}
    for pid in workers:
        Path(f"/proc/{pid}/clear_refs").write_text("5")  # VmHWM := the current RSS
        before[pid] = _memory_kb(pid)
    peak_heap = {pid: before[pid]["RssAnon"] for pid in workers}
    done = threading.Event()

    def watch() -> None:  # the heap's peak too: VmHWM also counts file pages
        while not done.wait(0.01):
            for pid in workers:
                peak_heap[pid] = max(peak_heap[pid], _memory_kb(pid).get("RssAnon", 0))

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    payload = json.loads(body(False, "gpt-4o"))
    headers = {"Authorization": f"Bearer {vk}", "Content-Type": "application/json", "x-mock-answer-bytes": str(size)}
    started = time.perf_counter()
    conn = http.client.HTTPConnection(HOST, port, timeout=600)
    try:
        conn.request("POST", "/v1/chat/completions", json.dumps(payload), headers)
        answer = conn.getresponse()
        received, tail = 0, b""
        while piece := answer.read(MIB):  # counted, never held: the client's memory is not measured
            received += len(piece)
            tail = (tail + piece)[-4096:]
        status = answer.status
    except (OSError, http.client.HTTPException) as exc:
        status, received, tail = 0, 0, repr(exc).encode()
    finally:
        conn.close()
    elapsed = time.perf_counter() - started
    done.set()
    watcher.join()
    after = {pid: _memory_kb(pid) for pid in workers}

    print(f"large answer: {status}, {received / MIB:.1f} MiB (text {size / MIB:.2f} MiB) in {elapsed:.1f} s")
    failures = []
    if status != 200 or received < size or b'"usage"' not in tail:
        failures.append(f"large answer: status {status}, {received} bytes, ends {tail[-200:]!r}")
    increases = {}
    for pid in workers:
        if not after[pid]:
            failures.append(f"large answer: worker {pid} died")
            print(f"  worker {pid}: died")
            continue
        increases[pid] = (after[pid]["VmHWM"] - before[pid]["VmRSS"]) * 1024
        print(
            f"  worker {pid}: RSS {before[pid]['VmRSS'] / 1024:.0f} MB -> peak {after[pid]['VmHWM'] / 1024:.0f} MB "
            f"(+{increases[pid] / MIB:.0f} MiB = {increases[pid] / size:.2f}x the answer; heap peak "
            f"+{(peak_heap[pid] - before[pid]['RssAnon']) / 1024:.0f} MiB) -> {after[pid]['VmRSS'] / 1024:.0f} MB after"
        )
    peak = max(increases.values(), default=0)
    if peak > PEAK_TARGET * size:
        ratio = peak / size
        failures.append(
            f"large answer: worker peak +{peak / MIB:.0f} MiB = {ratio:.2f}x the answer (<= {PEAK_TARGET}x)"
        )
    return failures


def _slope(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (minutes, MB) points: MB per minute (0.0 under two points)."""
    if len(points) < 2:
        return 0.0
    return statistics.linear_regression([t for t, _ in points], [mb for _, mb in points]).slope


def heap_report(samples: list[dict]) -> list[str]:
    """Each worker's heap over the run: start, end, peak and slope (MB/min, over the run and over its
    second half); returns what failed (a worker that died, or whose heap kept growing)."""
    failures = []
    workers = sorted({pid for sample in samples for pid in sample["heap_mb"]})
    for pid in workers:
        points = [(s["t"] / 60, s["heap_mb"][pid]) for s in samples if pid in s["heap_mb"]]
        heaps = [heap for _, heap in points]
        slope, late = _slope(points), _slope(points[len(points) // 2 :])
        print(
            f"worker {pid} heap (RssAnon): {heaps[0]:.1f} MB -> {heaps[-1]:.1f} MB, peak {max(heaps):.1f} MB; "
            f"slope {slope:+.2f} MB/min over the run, {late:+.2f} MB/min over its second half"
        )
        if len(points) < len(samples):
            failures.append(f"worker {pid} was not there for the whole run")
        middle = heaps[len(heaps) // 2]
        if len(heaps) >= 4 and heaps[-1] > middle * 1.25 + 20:
            failures.append(f"worker {pid} heap kept growing: {middle} -> {heaps[-1]} MB")
    return failures


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
    parser.add_argument("--seconds", type=float, default=600.0, help="soak duration (a shorter run is a smoke)")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--sample-seconds", type=float, default=5.0)
    parser.add_argument("--big-answer-mib", type=int, default=256, help="the large answer's size; 0 skips it")
    parser.add_argument("--server", choices=serving.SERVERS, default=serving.DEFAULT_SERVER)
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
        plain_vk, vk = keys.stdout.strip().splitlines()[-1].split()  # the soak uses the governed key
        gateway = start(
            serving.command(args.server),
            {**env, "BIFROST_BIND": f"{HOST}:{gw_port}"},
            gw_port,
        )
        procs.append(gateway)
        if args.big_answer_mib:
            warm_up(gateway.pid, gw_port, plain_vk, args.workers)
            failures += big_answer(gateway.pid, gw_port, plain_vk, args.big_answer_mib)
        headers = {"Authorization": f"Bearer {vk}"}
        json_request = loadgen.build_request(HOST, gw_port, "/v1/chat/completions", body(False, "gpt-4o-mini"), headers)
        sse_request = loadgen.build_request(HOST, gw_port, "/v1/chat/completions", body(True, "gpt-4o-mini"), headers)
        sse_clients = max(1, args.concurrency // 4)
        mix = [(json_request, args.concurrency - sse_clients), (sse_request, sse_clients)]

        samples: list[dict] = []
        done = threading.Event()

        def sample() -> None:
            rds = redis.Redis.from_url(redis_url)
            while not done.wait(args.sample_seconds):
                workers = _workers(gateway.pid)
                with connection.cursor() as cursor:
                    cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()")
                    pg = cursor.fetchone()[0]
                connection.close()
                memory = {w: _memory_kb(w) for w in workers}
                samples.append(
                    {
                        "t": (len(samples) + 1) * args.sample_seconds,
                        "heap_mb": {w: round(m["RssAnon"] / 1024, 1) for w, m in memory.items() if m},
                        "rss_mb": round(sum(m.get("VmRSS", 0) for m in memory.values()) / 1024, 1),
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
        upstream_chats = served["by_model"].get("gpt-4o-mini", 0)  # the large answer asked for gpt-4o
        records = UsageRecord.objects.filter(status_code=200, virtual_key__name="bench-governed").count()

        all_latencies = sorted(x for r in results for x in r.latencies) or [float("nan")]
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
            failures += heap_report(samples)
            if len(samples) >= 4:
                middle = samples[len(samples) // 2]
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
