"""Slow clients: does normal traffic still get through while many connections trickle requests?

Usage: ``.venv/bin/python -m bench.slow_clients [--server granian|gunicorn] [--server-cmd CMD]
[--slow 200] [--interval 2] [--seconds 10] [--ramp 5] [--concurrency 8] [--timeout 5]``

A threaded server gives each connection whose request it is reading a thread, for as long as the
client takes to send it: a few hundred clients on slow links (or one attacker) sending a byte
every few seconds can hold every thread while costing almost nothing. This script starts the mock
upstream and the gateway as ``bench.run`` does (same environment, virtual key, fresh database),
measures normal traffic (JSON chat completions at c=``--concurrency``, every request bounded by
``--timeout``) as a baseline, then, for each variant, opens ``--slow`` connections that send a
request one byte every ``--interval`` seconds and measures normal traffic again while they
trickle:

- ``headers``: the request line and headers, byte by byte;
- ``body``: the headers at once (``Content-Length`` given), then the body byte by byte.

The slow connections are closed after each measurement (the run is bounded: ``--ramp`` +
``--seconds`` + ``--timeout`` per variant) and the script waits for the server to answer again.

It prints, per phase, p50/p99 of normal traffic (over every request, a failed one counted at the
time it took, a timed-out one at ``--timeout``), the non-2xx answers, 5xx answers and connection
failures (refused, reset, timed out), and what the server did to the slow connections. It exits 1
when the p99 during a variant is more than twice the baseline's, or normal traffic saw a 5xx or a
connection failure.

``--server gunicorn`` runs the project's ``gunicorn.conf.py``, ``--server granian`` its granian
launcher (``bifrost_site.serve_granian``), each as ``bin/run`` starts it; ``--server-cmd`` takes any
command, ``{port}`` standing for the port to listen on.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field

from bench import loadgen
from bench.run import HOST, PYTHON, ROOT, body, free_port, prepare_gateway, start, wait_port
from bifrost_site import serving

VARIANTS = ("headers", "body")


@dataclass
class Traffic:
    """Normal traffic of one phase: every request's time, and what went wrong."""

    seconds: list[float] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    failures: Counter[str] = field(default_factory=Counter)

    def pct(self, q: float) -> float:
        ordered = sorted(self.seconds)
        return ordered[min(len(ordered) - 1, int(len(ordered) * q))] * 1000 if ordered else float("nan")

    @property
    def non_2xx(self) -> int:
        return sum(n for status, n in self.statuses.items() if not 200 <= status < 300)

    @property
    def server_errors(self) -> int:
        return sum(n for status, n in self.statuses.items() if status >= 500)


async def _normal_client(port: int, request: bytes, deadline: float, timeout: float, traffic: Traffic) -> None:
    conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
    while time.perf_counter() < deadline:
        started = time.perf_counter()
        try:
            if conn is None:
                conn = await asyncio.wait_for(asyncio.open_connection(HOST, port), timeout)
            reader, writer = conn
            writer.write(request)
            remaining = timeout - (time.perf_counter() - started)
            status, keep = await asyncio.wait_for(loadgen._read_response(reader), remaining)
        except (TimeoutError, OSError, asyncio.IncompleteReadError) as exc:
            traffic.seconds.append(time.perf_counter() - started)
            traffic.failures["timed out" if isinstance(exc, TimeoutError) else type(exc).__name__] += 1
            if conn is not None:
                conn[1].close()
            conn = None
            await asyncio.sleep(0.1)  # a server that refuses at once is not hammered in a loop
            continue
        traffic.seconds.append(time.perf_counter() - started)
        traffic.statuses[status] += 1
        if not keep:
            writer.close()
            conn = None
    if conn is not None:
        conn[1].close()


async def _normal(port: int, request: bytes, concurrency: int, seconds: float, timeout: float) -> Traffic:
    traffic = Traffic()
    deadline = time.perf_counter() + seconds
    await asyncio.gather(*(_normal_client(port, request, deadline, timeout, traffic) for _ in range(concurrency)))
    return traffic


async def _slow_client(
    port: int, head: bytes, trickle: bytes, interval: float, stop: asyncio.Event, seen: Counter
) -> None:
    """Sends ``head`` at once and ``trickle`` one byte every ``interval`` seconds until ``stop``;
    notes what the server did (answered, closed the connection, or nothing)."""
    started = time.perf_counter()
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(HOST, port), 10)
    except (TimeoutError, OSError):
        seen["could not connect"] += 1
        return

    async def watch() -> None:
        try:
            data = await reader.read(65536)
        except OSError:
            data = b""
        after = time.perf_counter() - started
        what = f"answered {data[9:12].decode(errors='replace')}" if data else "closed by the server"
        seen[f"{what} (after ~{round(after / 5) * 5:.0f} s)"] += 1

    watcher, stopped = asyncio.ensure_future(watch()), asyncio.ensure_future(stop.wait())
    try:
        if head:
            writer.write(head)
        for index in range(len(trickle)):
            writer.write(trickle[index : index + 1])
            await writer.drain()
            await asyncio.wait([watcher, stopped], timeout=interval, return_when=asyncio.FIRST_COMPLETED)
            if stopped.done() or watcher.done():
                break
        else:  # the whole request went out: wait for the answer or the end of the phase
            await asyncio.wait([watcher, stopped], return_when=asyncio.FIRST_COMPLETED)
    except OSError:
        pass
    finally:
        if not watcher.done():
            seen["still open at the end"] += 1
            watcher.cancel()
        stopped.cancel()
        writer.close()


async def _phase(args: argparse.Namespace, port: int, request: bytes, variant: str) -> tuple[Traffic, Counter]:
    split = request.index(b"\r\n\r\n") + 4
    head, trickle = (b"", request) if variant == "headers" else (request[:split], request[split:])
    stop, seen = asyncio.Event(), Counter[str]()
    slow = [
        asyncio.ensure_future(_slow_client(port, head, trickle, args.interval, stop, seen)) for _ in range(args.slow)
    ]
    await asyncio.sleep(args.ramp)
    traffic = await _normal(port, request, args.concurrency, args.seconds, args.timeout)
    stop.set()
    await asyncio.gather(*slow)
    return traffic, seen


def _recover(port: int, request: bytes, limit: float = 60.0) -> float:
    """Seconds until one normal request is answered 200 again."""
    started = time.perf_counter()
    while time.perf_counter() - started < limit:
        traffic = asyncio.run(_normal(port, request, 1, 0.01, 5.0))
        if traffic.statuses.get(200):
            return time.perf_counter() - started
        time.sleep(0.5)
    raise SystemExit(f"the server did not answer again within {limit:.0f} s")


def server_command(args: argparse.Namespace, port: int, env: dict[str, str]) -> tuple[list[str], dict[str, str]]:
    env = {**env, "BIFROST_BIND": f"{HOST}:{port}"}
    if args.server_cmd:
        return shlex.split(args.server_cmd.format(port=port)), env
    return serving.command(args.server), env


def _line(name: str, traffic: Traffic, baseline: Traffic | None) -> str:
    ratio = f", p99 {traffic.pct(0.99) / baseline.pct(0.99):.1f}x the baseline" if baseline else ""
    return (
        f"{name:8} {len(traffic.seconds):6} requests, {traffic.statuses.get(200, 0)} x 200; "
        f"p50 {traffic.pct(0.5):8.1f} ms, p99 {traffic.pct(0.99):8.1f} ms{ratio}; non-2xx {traffic.non_2xx}, "
        f"5xx {traffic.server_errors}, connection failures {sum(traffic.failures.values())} {dict(traffic.failures)}"
    )


def main() -> None:  # noqa: C901 - a script: set up, measure each phase, report, judge
    parser = argparse.ArgumentParser()
    parser.add_argument("--server", choices=serving.SERVERS, default=serving.DEFAULT_SERVER)
    parser.add_argument("--server-cmd", help="any server command; {port} is the port it must listen on")
    parser.add_argument("--slow", type=int, default=200, help="slow connections")
    parser.add_argument("--interval", type=float, default=2.0, help="seconds between two bytes of a slow client")
    parser.add_argument("--variants", default=",".join(VARIANTS), help="headers,body")
    parser.add_argument("--concurrency", type=int, default=8, help="normal clients")
    parser.add_argument("--seconds", type=float, default=10.0, help="normal traffic measured per phase")
    parser.add_argument("--ramp", type=float, default=5.0, help="seconds the slow clients trickle before it")
    parser.add_argument("--timeout", type=float, default=5.0, help="a normal request's time limit")
    args = parser.parse_args()
    variants = [v for v in args.variants.split(",") if v]
    if set(variants) - set(VARIANTS):
        raise SystemExit(f"unknown variant in {args.variants!r}: choose among {', '.join(VARIANTS)}")

    mock_port, port = free_port(), free_port()
    procs: list[subprocess.Popen] = []
    failures: list[str] = []
    log = tempfile.NamedTemporaryFile(prefix="bench-slow-clients-server-", suffix=".log", delete=False)
    try:
        base_env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
        procs.append(start([PYTHON, "-m", "bench.mock_upstream", "--port", str(mock_port)], base_env, mock_port))
        env, vk, _ = prepare_gateway(f"http://{HOST}:{mock_port}")
        cmd, env = server_command(args, port, env)
        procs.append(subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=log))
        wait_port(port, timeout=60)
        request = loadgen.build_request(
            HOST, port, "/v1/chat/completions", body(False, "gpt-4o-mini"), {"Authorization": f"Bearer {vk}"}
        )
        _recover(port, request)
        asyncio.run(_normal(port, request, args.concurrency, 2.0, args.timeout))  # warm every worker
        print(f"server: {' '.join(cmd)}", flush=True)
        baseline = asyncio.run(_normal(port, request, args.concurrency, args.seconds, args.timeout))
        print(_line("baseline", baseline, None), flush=True)
        if baseline.non_2xx or baseline.failures:
            failures.append("the baseline itself had failures")
        for variant in variants:
            traffic, seen = asyncio.run(_phase(args, port, request, variant))
            print(_line(variant, traffic, baseline), flush=True)
            print(f"         {args.slow} slow connections ({variant}, a byte every {args.interval:g} s): {dict(seen)}")
            recovered = _recover(port, request)
            print(f"         answering again {recovered:.1f} s after they closed", flush=True)
            ratio = traffic.pct(0.99) / baseline.pct(0.99)
            if ratio > 2:
                failures.append(f"{variant}: normal p99 {ratio:.1f}x the baseline")
            if traffic.server_errors or traffic.failures:
                failures.append(
                    f"{variant}: {traffic.server_errors} 5xx and {sum(traffic.failures.values())} connection failures"
                )
    finally:
        for proc in reversed(procs):
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        log.close()
    if failures:
        print(f"\nFAILED: {'; '.join(failures)} (server log: {log.name})")
        sys.exit(1)
    os.unlink(log.name)
    print("\npassed: normal traffic kept its latency and had no failures")


if __name__ == "__main__":
    main()
