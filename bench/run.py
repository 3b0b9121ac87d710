"""Benchmark: direct to the mock upstream, the minimal forwarder, and the gateway.

Usage: ``.venv/bin/python -m bench.run [--rounds 3] [--seconds 3] [--c1-seconds 2] [--concurrency 32]
[--peers litellm,portkey] [--server granian|gunicorn]``

Starts the mock upstream, ``bench/forwarder.py`` (always under the project's ``gunicorn.conf.py``
with one worker per core and 16 threads: the yardstick) and the gateway (under the server
``--server`` names, as ``bin/run`` starts it; on a fresh embedded SQLite database in a temporary
directory, or on ``DATABASE_URL``/``REDIS_URL`` when set), then measures JSON and SSE chat
completions at c=1 (added p50/p99 latency over direct) and c=N (requests/s), in interleaved
rounds, and prints the medians of the ratios. The gateway
request carries a virtual key and goes through the full hot path: VK check, weighted routing, key
choice, usage extraction, ``extra_fields``, the ledger write. The ``translated``
target is the same OpenAI-format request for an Anthropic-type provider on the same mock: the
request, the answer and every stream event cross formats (``proxy.translation``). ``--peers``
adds other gateways, installed apart from the project (``bench/peers``), as targets of the same
rounds, and the report gives the gateway's ratios to each.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bench import loadgen, peers
from bifrost_site import serving

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
GUNICORN = str(Path(PYTHON).with_name("gunicorn"))
HOST = "127.0.0.1"
# The yardstick's server settings stay those it was first measured with (one worker per core, 16
# threads each), whatever the gateway's own defaults become.
FORWARDER_SIZES = {"BIFROST_WORKERS": str(os.cpu_count() or 1), "BIFROST_THREADS": "16"}


SETUP = """
import django, os
django.setup()
from governance.services import provider_create, provider_key_create, virtual_key_create
p = provider_create(name="openai", base_url=os.environ["BENCH_UPSTREAM"])
provider_key_create(provider=p, name="bench", value="sk-bench-upstream")
a = provider_create(name="anthropic", base_url=os.environ["BENCH_UPSTREAM"])
provider_key_create(provider=a, name="bench", value="sk-bench-upstream")
configs = [
    {"provider": "openai", "weight": 1.0, "allowed_models": ["*"], "key_ids": ["*"]},
    {"provider": "anthropic", "allowed_models": ["*"], "key_ids": ["*"]},
]
vk, value = virtual_key_create(name="bench", provider_configs=configs)
# The governed key carries a budget and a rate limit too large to trip: full enforcement runs
# (atomic admit before the upstream call, settle + ledger after it) without rejecting anything.
governed, governed_value = virtual_key_create(
    name="bench-governed",
    provider_configs=configs,
    budgets=[{"max_limit": "1000000", "reset_duration": "1d"}],
    rate_limit={"request_max_limit": 1000000000, "request_reset_duration": "1h",
                "token_max_limit": 1000000000000, "token_reset_duration": "1h"},
)
print(value, governed_value)
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def wait_port(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection((HOST, port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on port {port}")


def start(cmd: list[str], env: dict[str, str], port: int) -> subprocess.Popen:
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(port)
    return proc


def _tree(pid: int) -> list[int]:
    """A process and all its descendants (gunicorn master + workers, a peer's server processes)."""
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        children = []
    return [pid] + [descendant for child in children for descendant in _tree(int(child))]


def prepare_gateway(upstream: str) -> tuple[dict[str, str], str, str]:
    """The gateway's environment on a fresh embedded SQLite database (or ``DATABASE_URL`` /
    ``REDIS_URL`` when set), migrated, priced and set up with ``SETUP``'s providers and keys in
    front of ``upstream``; returns (environment, plain VK, governed VK)."""
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    env |= {
        "BIFROST_DATA_DIR": tempfile.mkdtemp(prefix="bifrost-bench-"),
        "BENCH_UPSTREAM": upstream,
        "DJANGO_SETTINGS_MODULE": "bifrost_site.settings",
        "BIFROST_LOG_LEVEL": "WARNING",
    }
    subprocess.run([PYTHON, "manage.py", "migrate", "-v", "0"], cwd=ROOT, env=env, check=True)
    subprocess.run([PYTHON, "manage.py", "seed_prices"], cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL)
    keys = subprocess.run([PYTHON, "-c", SETUP], cwd=ROOT, env=env, check=True, capture_output=True, text=True)
    vk, governed_vk = keys.stdout.strip().splitlines()[-1].split()
    return env, vk, governed_vk


def cpu_seconds(proc: subprocess.Popen) -> float:
    """User+system CPU of a process and its descendants, from /proc."""
    total = 0.0
    tick = os.sysconf("SC_CLK_TCK")
    for pid in _tree(proc.pid):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / tick
    return total


def body(stream: bool, model: str) -> bytes:
    payload = {
        "model": model,
        "messages": [{"role": "user", "content": "Say hello to the benchmark."}],
        "max_tokens": 16,
    }
    if stream:
        payload["stream"] = True
    return json.dumps(payload).encode()


def measure(proc: subprocess.Popen, request: bytes, port: int, concurrency: int, seconds: float) -> loadgen.Result:
    cpu_before = cpu_seconds(proc)
    result = loadgen.run(HOST, port, request, concurrency=concurrency, seconds=seconds)
    # Server CPU per answered request (warm-up included on both sides of the ratio).
    served = len(result.latencies) * (1 + 1.0 / seconds)
    result.cpu_us = (cpu_seconds(proc) - cpu_before) / served * 1e6 if served else 0.0
    return result


def median(values: list[float]) -> float:
    return statistics.median(values)


def report(rounds: dict[tuple[str, str, int], list[loadgen.Result]], c: int, peer_names: list[str]) -> None:
    """Medians over the rounds; every ratio is taken within a round, then the median of those."""

    def p(name: str, kind: str, q: float) -> list[float]:
        return [r.pct(q) for r in rounds[(name, kind, 1)]]

    def rps(name: str, kind: str) -> list[float]:
        return [r.rps for r in rounds[(name, kind, c)]]

    def added(name: str, base: str, kind: str, q: float) -> float:
        return median([a - b for a, b in zip(p(name, kind, q), p(base, kind, q), strict=True)])

    def div(a: float, b: float) -> float:
        return a / b if b else float("nan")  # a target too slow to finish a request in the window

    def ratio(name: str, base: str, kind: str) -> float:
        return median([div(a, b) for a, b in zip(rps(name, kind), rps(base, kind), strict=True)])

    def p50_ratio(name: str, base: str, kind: str) -> float:
        return median([div(a, b) for a, b in zip(p(name, kind, 0.5), p(base, kind, 0.5), strict=True)])

    def cpu(name: str, kind: str) -> float:
        return median([r.cpu_us for r in rounds[(name, kind, c)]])

    print(f"\nmedians over {len(rounds[('direct', 'json', 1)])} interleaved rounds")
    for kind in ("json", "sse"):
        k = kind.upper()
        print(
            f"{k}: added p50 over direct: forwarder {added('forwarder', 'direct', kind, 0.5):.3f} ms, "
            f"gateway {added('gateway', 'direct', kind, 0.5):.3f} ms; added p99: forwarder "
            f"{added('forwarder', 'direct', kind, 0.99):.3f} ms, "
            f"gateway {added('gateway', 'direct', kind, 0.99):.3f} ms"
        )
        print(
            f"{k}: c={c} gateway {median(rps('gateway', kind)):.0f} req/s, forwarder "
            f"{median(rps('forwarder', kind)):.0f} req/s: "
            f"gateway/forwarder = {ratio('gateway', 'forwarder', kind):.2f}x "
            f"(direct {median(rps('direct', kind)):.0f} req/s); server CPU per request "
            f"forwarder {cpu('forwarder', kind):.0f} µs, gateway {cpu('gateway', kind):.0f} µs"
        )
        print(
            f"{k}: translation (OpenAI client -> Anthropic upstream) adds p50 "
            f"{added('translated', 'gateway', kind, 0.5):.3f} ms over passthrough; c={c} "
            f"{median(rps('translated', kind)):.0f} req/s = {ratio('translated', 'gateway', kind):.2f}x passthrough; "
            f"server CPU {cpu('translated', kind):.0f} µs/req"
        )
        print(
            f"{k}: governance (budget + rate limit) adds p50 {added('governed', 'gateway', kind, 0.5):.3f} ms, "
            f"p99 {added('governed', 'gateway', kind, 0.99):.3f} ms over the plain gateway; c={c} "
            f"{median(rps('governed', kind)):.0f} req/s = {ratio('governed', 'gateway', kind):.2f}x the plain gateway, "
            f"{ratio('governed', 'forwarder', kind):.2f}x the forwarder; "
            f"server CPU {cpu('governed', kind):.0f} µs/req; "
            f"governed adds p50 {added('governed', 'direct', kind, 0.5):.3f} ms over direct"
        )
        for peer in peer_names:
            print(
                f"{k}: vs {peer}: c={c} gateway/{peer} throughput = {ratio('gateway', peer, kind):.2f}x, "
                f"governed/{peer} = {ratio('governed', peer, kind):.2f}x "
                f"({peer} {median(rps(peer, kind)):.0f} req/s); c=1 p50 gateway/{peer} = "
                f"{p50_ratio('gateway', peer, kind):.2f}x ({peer} {median(p(peer, kind, 0.5)):.3f} ms, "
                f"added over direct {added(peer, 'direct', kind, 0.5):.3f} ms); server CPU per request "
                f"{peer} {cpu(peer, kind):.0f} µs, gateway {cpu('gateway', kind):.0f} µs"
            )
    print_targets(ratio, added("governed", "direct", "json", 0.5), peer_names)


def print_targets(ratio: Callable[[str, str, str], float], added_p50: float, peer_names: list[str]) -> None:
    """The performance targets, each with its median figure and whether it holds (``ratio`` and
    ``added_p50``, the governed JSON p50 over direct at c=1, as ``report`` computes them)."""
    checks = [
        ("governed JSON / forwarder", ratio("governed", "forwarder", "json"), 1.0),
        ("governed SSE / forwarder", ratio("governed", "forwarder", "sse"), 0.9),
        ("translated JSON / passthrough", ratio("translated", "gateway", "json"), 0.9),
        ("translated SSE / passthrough", ratio("translated", "gateway", "sse"), 0.9),
    ]
    checks += [
        (f"governed JSON / {peer}", ratio("governed", peer, "json"), {"litellm": 15.0}.get(peer, 3.0))
        for peer in peer_names
    ]
    print("\ntargets (medians):")
    for name, value, floor in checks:
        print(f"  {name:32} {value:6.2f}x  (>= {floor:g}x: {'holds' if value >= floor else 'short'})")
    ceiling = 0.5 if os.environ.get("DATABASE_URL") or os.environ.get("REDIS_URL") else 0.35
    verdict = "holds" if added_p50 <= ceiling else "short"
    print(f"  {'governed JSON added p50, c=1':32} {added_p50:6.3f} ms (<= {ceiling} ms: {verdict})")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=3.0, help="measuring time at c=N")
    parser.add_argument("--c1-seconds", type=float, default=2.0, help="measuring time at c=1")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; medians are reported")
    parser.add_argument("--peers", default="", help="other gateways to measure too: litellm,portkey (bench/peers)")
    parser.add_argument(
        "--server",
        choices=serving.SERVERS,
        default=serving.DEFAULT_SERVER,
        help="the gateway's server (the forwarder stays on gunicorn)",
    )
    args = parser.parse_args()
    peer_names = peers.parse(args.peers)  # before anything starts: a missing peer says how to install it

    mock_port, fwd_port, gw_port = free_port(), free_port(), free_port()
    upstream = f"http://{HOST}:{mock_port}"
    base_env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    procs = []
    running_peers: list[peers.Peer] = []
    try:
        procs.append(start([PYTHON, "-m", "bench.mock_upstream", "--port", str(mock_port)], base_env, mock_port))
        gw_env, vk, governed_vk = prepare_gateway(upstream)
        procs.append(
            start(
                [GUNICORN, "-c", "gunicorn.conf.py", "bench.forwarder:application"],
                {**base_env, **FORWARDER_SIZES, "BIFROST_BIND": f"{HOST}:{fwd_port}", "BENCH_UPSTREAM": upstream},
                fwd_port,
            )
        )
        procs.append(
            start(
                serving.command(args.server),
                {**gw_env, "BIFROST_BIND": f"{HOST}:{gw_port}"},
                gw_port,
            )
        )
        plain = "gpt-4o-mini"
        targets = {
            "direct": (mock_port, {}, procs[0], plain),
            "forwarder": (fwd_port, {}, procs[1], plain),
            "gateway": (gw_port, {"Authorization": f"Bearer {vk}"}, procs[2], plain),
            "translated": (gw_port, {"Authorization": f"Bearer {vk}"}, procs[2], "anthropic/claude-3-5-haiku-latest"),
            "governed": (gw_port, {"Authorization": f"Bearer {governed_vk}"}, procs[2], plain),
        }
        for name in peer_names:
            peer = peers.start(name, free_port(), mock_port)
            running_peers.append(peer)
            print(f"{name}: {peers.check(peer.port, peer.headers)}", flush=True)
            targets[name] = (peer.port, peer.headers, peer.proc, plain)
        rounds: dict[tuple[str, str, int], list[loadgen.Result]] = {}
        for round_number in range(1, args.rounds + 1):
            # Rounds interleave the targets, so a slow spell on this shared machine hits all of
            # them rather than whichever happened to be measured during it.
            for kind in ("json", "sse"):
                for name, (port, headers, proc, model) in targets.items():
                    request = loadgen.build_request(
                        HOST, port, "/v1/chat/completions", body(kind == "sse", model), headers
                    )
                    for concurrency, seconds in ((1, args.c1_seconds), (args.concurrency, args.seconds)):
                        result = measure(proc, request, port, concurrency, seconds)
                        if result.errors:
                            raise SystemExit(f"{name} {kind} c={concurrency}: {result.errors} non-200 answers")
                        rounds.setdefault((name, kind, concurrency), []).append(result)
                        print(
                            f"round {round_number} {kind:4} {name:9} c={concurrency:<3} p50={result.pct(0.5):7.3f} ms "
                            f"p99={result.pct(0.99):7.3f} ms  {result.rps:8.0f} req/s  "
                            f"server CPU {result.cpu_us:6.0f} µs/req",
                            flush=True,
                        )
        report(rounds, args.concurrency, peer_names)
    finally:
        for peer in running_peers:
            peers.stop(peer)
        for proc in reversed(procs):
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()


if __name__ == "__main__":
    main()
