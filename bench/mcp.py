"""Benchmark: the MCP gateway (``/mcp``) against calling the same upstream MCP server directly.

Usage: ``.venv/bin/python -m bench.mcp [--calls 300] [--rounds 3]``

Starts the project's test MCP server (``tests/mcp/servers/http_server.py --many``: streamable HTTP,
stateful, 27 tools) and the gateway under the project's ``gunicorn.conf.py`` on a fresh embedded
SQLite database in a temporary directory. The upstream is registered three times as MCP clients
(``s1``, ``s2``, ``s3``, ``tools_to_execute ["*"]``), so a virtual key allowed on all three sees
81 tools. Two keys: ``plain`` (VK MCP configs only) and ``governed`` (also a budget and a rate
limit too large to trip, so admission, settlement and the ledger row run on every tool call).

Measured sequentially (c=1), ``--calls`` calls per target and round, in interleaved rounds:

- ``sdk call``: ``tools/call`` through the official ``mcp`` SDK client (one session per target,
  reused): ``echo`` on the upstream directly, ``s1_echo`` on the gateway with ``x-bf-vk``; the
  difference is what the gateway adds to a tool call as an MCP client sees it;
- ``raw list``: ``tools/list`` on the gateway as raw JSON-RPC POSTs over one keep-alive
  connection (``http.client``: the gateway's time, not the SDK's);
- ``raw call``: ``tools/call`` as raw JSON-RPC POSTs, to the upstream (after its ``initialize``,
  with its ``Mcp-Session-Id``; it answers in SSE) and to the gateway.

Every answer is checked (status, no JSON-RPC error, the echoed text, 81 tools listed). The report
gives p50/p99 per target, the gateway's server CPU per request (gunicorn master + workers, from
``/proc``; its own calls to the upstream included), and medians over the rounds of the added
latency (each difference taken within a round).
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

from bench.run import GUNICORN, HOST, PYTHON, ROOT, cpu_seconds, free_port, start

CLIENTS = ("s1", "s2", "s3")
UPSTREAM_TOOLS = 27  # echo, add, slow, fail, image, headers, pid + t01..t20 (--many)
PROTOCOL_VERSION = "2025-06-18"
WARMUP_CALLS = 20

SETUP = """
import django, os
django.setup()
from governance.services import mcp_client_create, virtual_key_create
for name in ("s1", "s2", "s3"):
    mcp_client_create(name=name, connection_type="http", connection_string=os.environ["BENCH_MCP_UPSTREAM"],
                      tools_to_execute=["*"])
configs = [{"mcp_client_name": name, "tools_to_execute": ["*"]} for name in ("s1", "s2", "s3")]
vk, value = virtual_key_create(name="bench-mcp", mcp_configs=configs)
# A budget and a rate limit too large to trip: full enforcement runs on every tool call.
governed, governed_value = virtual_key_create(
    name="bench-mcp-governed",
    mcp_configs=configs,
    budgets=[{"max_limit": "1000000", "reset_duration": "1d"}],
    rate_limit={"request_max_limit": 1000000000, "request_reset_duration": "1h",
                "token_max_limit": 1000000000000, "token_reset_duration": "1h"},
)
print(value, governed_value)
"""


@dataclass
class Result:
    latencies: list[float] = field(default_factory=list)
    cpu_us: float = 0.0

    def pct(self, p: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(len(ordered) * p))] * 1000


# --- the SDK client ------------------------------------------------------------------------------


class SdkSession:
    """One SDK ``ClientSession`` kept open on its own: ``call`` runs one ``tools/call``."""

    def __init__(self, url: str, headers: dict[str, str] | None = None) -> None:
        self.url, self.headers = url, headers
        self.session: ClientSession | None = None
        self._stop = asyncio.Event()
        self._ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def open(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._own())
        await self._ready.wait()
        if self.session is None:
            await self._task  # raises what went wrong
        await self.session.list_tools()  # the SDK caches output schemas: both sides validate alike

    async def _own(self) -> None:
        try:
            async with create_mcp_http_client(headers=self.headers) as client:
                async with streamable_http_client(self.url, http_client=client) as (read, write):
                    async with ClientSession(read, write) as session:
                        await session.initialize()
                        self.session = session
                        self._ready.set()
                        await self._stop.wait()
        finally:
            self._ready.set()

    async def close(self) -> None:
        self._stop.set()
        if self._task is not None:
            await asyncio.wait({self._task}, timeout=10)

    async def call(self, tool: str, text: str) -> None:
        assert self.session is not None
        result = await self.session.call_tool(tool, {"text": text})
        if result.is_error or not result.content or getattr(result.content[0], "text", None) != text:
            raise SystemExit(f"{self.url} {tool}: unexpected result {result!r}")


# --- raw JSON-RPC over http.client ---------------------------------------------------------------


def rpc_body(number: int, method: str, params: dict[str, Any]) -> bytes:
    return json.dumps({"jsonrpc": "2.0", "id": number, "method": method, "params": params}).encode()


def sse_message(data: bytes) -> dict[str, Any]:
    """The JSON-RPC message of a (one-event) SSE answer, or the JSON answer itself."""
    text = data.decode()
    if text.lstrip().startswith("{"):
        return json.loads(text)
    lines = [line[5:].strip() for line in text.splitlines() if line.startswith("data:")]
    return json.loads("".join(line for line in lines if line))


class RawClient:
    """JSON-RPC POSTs on one keep-alive ``http.client`` connection (``reconnect`` for a fresh one)."""

    def __init__(self, port: int, path: str, headers: dict[str, str]) -> None:
        self.port, self.path = port, path
        self.headers = {
            "Content-Type": "application/json",
            "Accept": "application/json, text/event-stream",
            **headers,
        }
        self.conn: http.client.HTTPConnection | None = None
        self.number = 0

    def reconnect(self) -> None:
        if self.conn is not None:
            self.conn.close()
        self.conn = http.client.HTTPConnection(HOST, self.port, timeout=30)

    def post(self, method: str, params: dict[str, Any], *, notify: bool = False) -> tuple[dict[str, Any], Any]:
        if self.conn is None:
            self.reconnect()
        assert self.conn is not None
        self.number += 1
        if notify:
            body = json.dumps({"jsonrpc": "2.0", "method": method, "params": params}).encode()
        else:
            body = rpc_body(self.number, method, params)
        self.conn.request("POST", self.path, body, self.headers)
        response = self.conn.getresponse()
        data = response.read()
        if notify:
            if response.status not in (200, 202):
                raise SystemExit(f"{method} on port {self.port}: HTTP {response.status}")
            return {}, response
        if response.status != 200:
            raise SystemExit(f"{method} on port {self.port}: HTTP {response.status}: {data[:300]!r}")
        message = sse_message(data)
        if "error" in message:
            raise SystemExit(f"{method} on port {self.port}: {message['error']}")
        return message["result"], response

    def call(self, tool: str, text: str) -> None:
        result, _ = self.post("tools/call", {"name": tool, "arguments": {"text": text}})
        if result.get("isError") or result["content"][0].get("text") != text:
            raise SystemExit(f"raw {tool} on port {self.port}: unexpected result {result!r}")

    def list(self) -> None:
        result, _ = self.post("tools/list", {})
        if len(result["tools"]) != UPSTREAM_TOOLS * len(CLIENTS):
            raise SystemExit(f"tools/list on port {self.port}: {len(result['tools'])} tools")


def upstream_session(port: int) -> dict[str, str]:
    """``initialize`` the stateful upstream by hand: the headers its later requests need."""
    client = RawClient(port, "/mcp", {})
    params = {
        "protocolVersion": PROTOCOL_VERSION,
        "capabilities": {},
        "clientInfo": {"name": "bench-raw", "version": "1.0"},
    }
    _, response = client.post("initialize", params)
    headers = {"Mcp-Session-Id": response.getheader("mcp-session-id"), "Mcp-Protocol-Version": PROTOCOL_VERSION}
    client.headers.update(headers)
    client.post("notifications/initialized", {}, notify=True)
    client.conn.close()
    return headers


# --- measuring -----------------------------------------------------------------------------------


async def measure_async(call: Callable[[str], Awaitable[None]], calls: int, proc: subprocess.Popen | None) -> Result:
    for number in range(WARMUP_CALLS):
        await call(f"warm-{number}")
    result = Result()
    cpu_before = cpu_seconds(proc) if proc else 0.0
    for number in range(calls):
        started = time.perf_counter()
        await call(f"hello-{number}")
        result.latencies.append(time.perf_counter() - started)
    if proc:
        result.cpu_us = (cpu_seconds(proc) - cpu_before) / calls * 1e6
    return result


def measure_sync(call: Callable[[], None], calls: int, proc: subprocess.Popen | None) -> Result:
    for _ in range(WARMUP_CALLS):
        call()
    result = Result()
    cpu_before = cpu_seconds(proc) if proc else 0.0
    for _ in range(calls):
        started = time.perf_counter()
        call()
        result.latencies.append(time.perf_counter() - started)
    if proc:
        result.cpu_us = (cpu_seconds(proc) - cpu_before) / calls * 1e6
    return result


def warm_gateway(port: int, keys: list[str]) -> None:
    """Open every worker's upstream sessions and tool lists: several connections at once, so that
    both gunicorn workers take some (the first list or call in a worker connects upstream)."""
    errors: list[BaseException] = []

    def one(key: str) -> None:
        try:
            client = RawClient(port, "/mcp", {"x-bf-vk": key})
            for _ in range(3):
                client.list()
                for name in CLIENTS:
                    client.call(f"{name}_echo", "warm")
            client.conn.close()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    for _ in range(2):
        threads = [threading.Thread(target=one, args=(key,)) for key in keys for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    if errors:
        raise errors[0]


def median(values: list[float]) -> float:
    return statistics.median(values)


def report(rounds: dict[str, list[Result]]) -> None:
    def p(name: str, q: float) -> list[float]:
        return [r.pct(q) for r in rounds[name]]

    def med(name: str, q: float) -> float:
        return median(p(name, q))

    def added(name: str, base: str, q: float) -> float:
        return median([a - b for a, b in zip(p(name, q), p(base, q), strict=True)])

    def cpu(name: str) -> float:
        return median([r.cpu_us for r in rounds[name]])

    print(f"\nmedians over {len(rounds['sdk call direct'])} interleaved rounds (c=1)")
    print(
        f"SDK tools/call: direct p50 {med('sdk call direct', 0.5):.3f} ms p99 {med('sdk call direct', 0.99):.3f} ms; "
        f"gateway p50 {med('sdk call gateway', 0.5):.3f} ms p99 {med('sdk call gateway', 0.99):.3f} ms"
    )
    for variant, name in (("plain VK", "sdk call gateway"), ("governed VK", "sdk call governed")):
        print(
            f"SDK tools/call, {variant}: the gateway adds p50 {added(name, 'sdk call direct', 0.5):.3f} ms "
            f"(target <= 2 ms), p99 {added(name, 'sdk call direct', 0.99):.3f} ms; "
            f"gateway CPU {cpu(name):.0f} µs/call"
        )
    print(
        f"governance (budget + rate limit) adds to a tool call p50 "
        f"{added('sdk call governed', 'sdk call gateway', 0.5):.3f} ms, p99 "
        f"{added('sdk call governed', 'sdk call gateway', 0.99):.3f} ms"
    )
    for variant, name in (("plain VK", "raw list gateway"), ("governed VK", "raw list governed")):
        print(
            f"raw tools/list ({len(CLIENTS)} clients x {UPSTREAM_TOOLS} tools), {variant}: p50 {med(name, 0.5):.3f} ms "
            f"(target <= 5 ms), p99 {med(name, 0.99):.3f} ms; gateway CPU {cpu(name):.0f} µs/list"
        )
    for variant, name in (("plain VK", "raw call gateway"), ("governed VK", "raw call governed")):
        print(
            f"raw tools/call, {variant}: the gateway adds p50 {added(name, 'raw call direct', 0.5):.3f} ms, "
            f"p99 {added(name, 'raw call direct', 0.99):.3f} ms over raw direct "
            f"(p50 {med('raw call direct', 0.5):.3f} ms); gateway CPU {cpu(name):.0f} µs/call"
        )


async def run_rounds(
    args: argparse.Namespace, up_port: int, gw_port: int, gw: subprocess.Popen, keys: list[str]
) -> dict[str, list[Result]]:
    vk, governed_vk = keys
    up_url, gw_url = f"http://{HOST}:{up_port}/mcp", f"http://{HOST}:{gw_port}/mcp"
    sessions = {
        "direct": SdkSession(up_url),
        "gateway": SdkSession(gw_url, {"x-bf-vk": vk}),
        "governed": SdkSession(gw_url, {"x-bf-vk": governed_vk}),
    }
    for session in sessions.values():
        await session.open()
    raw_up_headers = upstream_session(up_port)
    raw = {
        "direct": RawClient(up_port, "/mcp", raw_up_headers),
        "gateway": RawClient(gw_port, "/mcp", {"x-bf-vk": vk}),
        "governed": RawClient(gw_port, "/mcp", {"x-bf-vk": governed_vk}),
    }
    rounds: dict[str, list[Result]] = {}

    def keep(round_number: int, name: str, result: Result, proc: subprocess.Popen | None) -> None:
        rounds.setdefault(name, []).append(result)
        cpu = f"  gateway CPU {result.cpu_us:6.0f} µs/req" if proc else ""
        print(
            f"round {round_number} {name:18} p50={result.pct(0.5):7.3f} ms p99={result.pct(0.99):7.3f} ms{cpu}",
            flush=True,
        )

    try:
        for round_number in range(1, args.rounds + 1):
            # Interleaved: a slow spell on this shared machine hits every target, not just one.
            for name, session in sessions.items():
                tool = "echo" if name == "direct" else "s1_echo"
                proc = None if name == "direct" else gw

                async def call(text: str, session: SdkSession = session, tool: str = tool) -> None:
                    await session.call(tool, text)

                keep(round_number, f"sdk call {name}", await measure_async(call, args.calls, proc), proc)
            for name in ("gateway", "governed"):
                client = raw[name]
                client.reconnect()  # a fresh connection per measurement (gunicorn keeps idle ones 5 s)
                keep(round_number, f"raw list {name}", measure_sync(client.list, args.calls, gw), gw)
            for name, client in raw.items():
                tool = "echo" if name == "direct" else "s1_echo"
                proc = None if name == "direct" else gw
                client.reconnect()
                keep(
                    round_number,
                    f"raw call {name}",
                    measure_sync(lambda client=client, tool=tool: client.call(tool, "hello"), args.calls, proc),
                    proc,
                )
    finally:
        for session in sessions.values():
            await session.close()
    return rounds


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=300, help="measured calls per target and round")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; medians are reported")
    args = parser.parse_args()

    up_port, gw_port = free_port(), free_port()
    data_dir = tempfile.mkdtemp(prefix="bifrost-bench-mcp-")
    base_env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    gw_env = {
        **base_env,
        "BIFROST_DATA_DIR": data_dir,
        "BENCH_MCP_UPSTREAM": f"http://{HOST}:{up_port}/mcp",
        "DJANGO_SETTINGS_MODULE": "bifrost_site.settings",
        "BIFROST_LOG_LEVEL": "WARNING",
    }
    procs: list[subprocess.Popen] = []
    try:
        procs.append(
            start([PYTHON, "-m", "tests.mcp.servers.http_server", "--port", str(up_port), "--many"], base_env, up_port)
        )
        subprocess.run([PYTHON, "manage.py", "migrate", "-v", "0"], cwd=ROOT, env=gw_env, check=True)
        keys = (
            subprocess.run([PYTHON, "-c", SETUP], cwd=ROOT, env=gw_env, check=True, capture_output=True, text=True)
            .stdout.strip()
            .splitlines()[-1]
            .split()
        )
        gw = start(
            [GUNICORN, "-c", "gunicorn.conf.py", "bifrost_site.wsgi:application"],
            {**gw_env, "BIFROST_BIND": f"{HOST}:{gw_port}"},
            gw_port,
        )
        procs.append(gw)
        warm_gateway(gw_port, keys)
        rounds = asyncio.run(run_rounds(args, up_port, gw_port, gw, keys))
        report(rounds)
    finally:
        for proc in reversed(procs):
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()


if __name__ == "__main__":
    main()
