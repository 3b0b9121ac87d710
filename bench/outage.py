"""A long database outage under load: worker memory stays flat, the ledger loses nothing.

Usage: ``.venv/bin/python -m bench.outage [--outage 180] [--before 10] [--after 30] [--concurrency 16]
[--workers 2] [--memory-rows 1000]``

Starts the mock upstream and the gateway (gunicorn) on a fresh PostgreSQL database reached through
a loopback TCP proxy (``tests.proxy.tcp_fault_proxy``), and Redis (``REDIS_URL`` or db 12 on
127.0.0.1). Sends JSON chat completions with a governed key (budget + rate limit) and an
ungoverned one, cuts the database off for ``--outage`` seconds in the middle, and samples worker
memory and the journal every few seconds. After the load it waits for the journals to be
replayed, then checks:

- every 200 the clients saw has exactly one UsageRecord, and the mock served as many requests;
- the budget's database usage equals the ledger's sum and so does the live (Redis) usage; the
  rate limit counted exactly the governed requests served;
- worker memory did not grow with the backlog (from 20 s into the outage to its end).

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
from pathlib import Path

from bench import loadgen
from bench.run import GUNICORN, HOST, PYTHON, ROOT, SETUP, body, free_port, start
from bench.soak import _workers, governed_key_agrees, stop_all

SAMPLE_SECONDS = 5.0


def memory_mb(pid: int) -> tuple[float, float]:
    """(RssAnon, VmRSS) of ``pid`` in MB. RssAnon is the heap, where a backlog held in memory would
    live; VmRSS also counts the pages of memory-mapped files (the counter and lease tables)."""
    found = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("RssAnon", "VmRSS"):
            found[name] = round(int(value.split()[0]) / 1024, 1)
    return found.get("RssAnon", 0.0), found.get("VmRSS", 0.0)


def journal_state(data_dir: Path) -> tuple[int, int]:
    """(journal files, entries in them not yet replayed)."""
    files = list(data_dir.glob("ledger-journal/*/*.jsonl"))
    entries = 0
    for path in files:
        try:
            entries += sum(1 for line in path.read_bytes().splitlines() if line.startswith(b'{"n":'))
        except FileNotFoundError:
            continue
    return len(files), entries


def main() -> None:  # noqa: C901 - a script: set up, run, sample, check, report
    parser = argparse.ArgumentParser()
    parser.add_argument("--outage", type=float, default=180.0, help="seconds the database is cut off")
    parser.add_argument("--before", type=float, default=10.0)
    parser.add_argument("--after", type=float, default=30.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--memory-rows", type=int, default=1000, help="BIFROST_LEDGER_MEMORY_ROWS")
    args = parser.parse_args()

    sys.path.insert(0, str(ROOT))
    from tests.proxy.tcp_fault_proxy import TcpFaultProxy

    created_db = f"bifrost_outage_{os.getpid()}"
    subprocess.run(["psql", "-h", HOST, "-U", "postgres", "-qc", f"CREATE DATABASE {created_db}"], check=True)
    database_url = f"postgres://postgres@{HOST}:5432/{created_db}"
    redis_url = os.environ.get("REDIS_URL") or f"redis://{HOST}:6379/12"
    data_dir = Path(tempfile.mkdtemp(prefix="bifrost-outage-"))
    env = {
        **{k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"},
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "DJANGO_SETTINGS_MODULE": "bifrost_site.settings",
        "BIFROST_DATA_DIR": str(data_dir),
        "BIFROST_LOG_LEVEL": "WARNING",
        "GUNICORN_WORKERS": str(args.workers),
        "GOVERNANCE_CONFIG_CACHE_SECONDS": "3600",
        "BIFROST_LEDGER_MEMORY_ROWS": str(args.memory_rows),
    }
    os.environ.update(env)
    import django

    django.setup()
    import redis

    from governance.models import UsageRecord

    redis.Redis.from_url(redis_url).flushdb()
    proxy = TcpFaultProxy(5432, HOST)
    mock_port, gw_port = free_port(), free_port()
    env["BENCH_UPSTREAM"] = f"http://{HOST}:{mock_port}"
    procs = []
    failures: list[str] = []
    log_path = data_dir / "gateway.log"
    try:
        procs.append(start([PYTHON, "-m", "bench.mock_upstream", "--port", str(mock_port)], env, mock_port))
        subprocess.run([PYTHON, "manage.py", "migrate", "-v", "0"], cwd=ROOT, env=env, check=True)
        subprocess.run([PYTHON, "manage.py", "seed_prices"], cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL)
        keys = subprocess.run([PYTHON, "-c", SETUP], cwd=ROOT, env=env, check=True, capture_output=True, text=True)
        free_vk, governed_vk = keys.stdout.strip().splitlines()[-1].split()
        gateway_env = {
            **env,
            "BIFROST_BIND": f"{HOST}:{gw_port}",
            "DATABASE_URL": f"postgres://postgres@{HOST}:{proxy.port}/{created_db}",
        }
        with open(log_path, "wb") as log:
            gateway = subprocess.Popen(
                [GUNICORN, "-c", "gunicorn.conf.py", "bifrost_site.wsgi:application"],
                cwd=ROOT,
                env=gateway_env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        procs.append(gateway)
        from bench.run import wait_port

        wait_port(gw_port)
        requests = {
            name: loadgen.build_request(
                HOST, gw_port, "/v1/chat/completions", body(False, "gpt-4o-mini"), {"Authorization": f"Bearer {vk}"}
            )
            for name, vk in (("governed", governed_vk), ("free", free_vk))
        }
        free_clients = max(1, args.concurrency // 4)
        mix = [(requests["governed"], args.concurrency - free_clients), (requests["free"], free_clients)]
        total = args.before + args.outage + args.after

        samples: list[dict] = []
        done = threading.Event()
        started = time.monotonic()
        phase = {"name": "before"}

        def sample() -> None:
            while not done.wait(SAMPLE_SECONDS):
                files, entries = journal_state(data_dir)
                memory = [memory_mb(w) for w in _workers(gateway.pid)]
                samples.append(
                    {
                        "t": round(time.monotonic() - started),
                        "phase": phase["name"],
                        "anon_mb": [anon for anon, _ in memory],
                        "rss_mb": [rss for _, rss in memory],
                        "journal_files": files,
                        "journal_entries": entries,
                    }
                )
                print(f"  {json.dumps(samples[-1])}", flush=True)

        def outage() -> None:
            time.sleep(args.before)
            proxy.cut()
            phase["name"] = "outage"
            time.sleep(args.outage)
            proxy.restore()
            phase["name"] = "after"

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        cutter = threading.Thread(target=outage, daemon=True)
        cutter.start()
        results = loadgen.run_mixed(HOST, gw_port, mix, seconds=total)
        cutter.join()
        served = {"governed": len(results[0].latencies), "free": len(results[1].latencies)}
        errors = results[0].errors + results[1].errors

        # The journals are replayed within a few seconds of the database's return.
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if journal_state(data_dir) == (0, 0) and UsageRecord.objects.count() >= sum(served.values()):
                break
            time.sleep(1)
        time.sleep(2)
        done.set()
        sampler.join()

        records = {
            "governed": UsageRecord.objects.filter(virtual_key__name="bench-governed").count(),
            "free": UsageRecord.objects.filter(virtual_key__name="bench").count(),
        }
        mock_stats = json.load(urllib.request.urlopen(f"http://{HOST}:{mock_port}/_mock/stats"))  # noqa: S310
        upstream = mock_stats["by_path"].get("/v1/chat/completions", 0)
        events = []
        for line in log_path.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                try:
                    events.append(json.loads(line))
                except ValueError:
                    pass
        replays = [e for e in events if e["message"] == "ledger journal replayed"]
        spills = [e for e in events if e["message"].startswith("ledger backlog past its memory bound")]

        print(
            f"\noutage {args.outage:.0f} s under c={args.concurrency} ({free_clients} ungoverned), "
            f"{args.workers} workers, BIFROST_LEDGER_MEMORY_ROWS={args.memory_rows}"
        )
        print(f"answers: governed {served['governed']} x 200, ungoverned {served['free']} x 200, {errors} errors")
        print(f"ledger: {records} UsageRecords; mock served {upstream} chat requests")
        print(
            f"journal: {len(spills)} spill episodes, {len(replays)} files replayed "
            f"({sum(e['rows'] for e in replays)} rows, {sum(e['settlements'] for e in replays)} settlements, "
            f"{sum(e['set_aside'] for e in replays)} set aside) in {sum(e['seconds'] for e in replays):.1f} s"
        )
        agreement = governed_key_agrees(records["governed"])
        in_outage = [s for s in samples if s["phase"] == "outage"]
        if len(in_outage) >= 6:
            early = next(s for s in in_outage if s["t"] >= args.before + 20)
            last = in_outage[-1]
            print(
                f"workers' heap (RssAnon) during the outage: {early['anon_mb']} MB at t={early['t']} s "
                f"({early['journal_entries']} journaled) -> {last['anon_mb']} MB at t={last['t']} s "
                f"({last['journal_entries']} journaled); VmRSS {early['rss_mb']} -> {last['rss_mb']} MB"
            )
            growth = sum(last["anon_mb"]) - sum(early["anon_mb"])
            entries = last["journal_entries"] - early["journal_entries"]
            # Held in memory instead, each entry would take about 1.6 kB.
            if growth > 4 + entries * 0.25 / 1024:
                failures.append(f"worker memory grew by {growth:.1f} MB while {entries} entries were journaled")
        if errors:
            failures.append(f"{errors} error answers")
        if records != served or sum(served.values()) != upstream:
            failures.append(f"answers {served}, UsageRecords {records}, upstream served {upstream} differ")
        failures += agreement
    finally:
        stop_all(procs, None, timeout=30)
        proxy.close()
        stop_all([], created_db, timeout=30)
    print(f"gateway log: {log_path}")
    if failures:
        print("\nFAILED: " + "; ".join(failures))
        sys.exit(1)
    print("\nall checks passed")


if __name__ == "__main__":
    main()
