"""Where a request's CPU goes: requests through the WSGI application in this process, no server.

Usage: ``.venv/bin/python -m bench.inprocess [--key plain|governed] [--requests 3000] [--threads 1]
[--model gpt-4o-mini] [--stream] [--steps module:attr,...] [--no-steps]``

Starts the mock upstream, prepares the gateway as ``bench.run`` does (a fresh embedded SQLite
database, or ``DATABASE_URL``/``REDIS_URL`` when set; a plain and a governed virtual key), sets
Django up in this process with the worker's own threads (``lifecycle.worker_started``: the usage
writer, the settler), then sends ``--requests`` chat completions straight to
``bifrost_site.wsgi.application`` from ``--threads`` threads after a warm-up. It prints the
process's CPU per request (user and system: the request threads and the writer and settler
threads together, as a worker spends it), the wall time per request, the garbage collector's time
and collections, and the CPU each named step took per request on the thread that ran it.

A step is ``module:attribute`` (``module:Class.method`` for a method), wrapped where it is looked up:
a function another module imported by name is timed as that module's attribute
(``governance.metering.ledger:insert_usage_rows``). Nested steps each count their own callees, so
the figures of a step and of its callees overlap; the wrappers cost about a microsecond a call.
Without a server, the figures leave out what the server and the thread hand-overs cost (the
``bench.run`` figures have them); they are for telling the parts of a request apart, and for
comparing two versions of one part side by side.
"""

from __future__ import annotations

import argparse
import collections
import gc
import importlib
import io
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from typing import Any

from bench import run as bench_run

# The governed path's parts, from admission to the ledger (see ARCHITECTURE.md, "One request").
STEPS = (
    "proxy.accounting:begin",
    "governance.metering.enforcement:admit",
    "governance.metering.counters.leases:prepare",
    "proxy.accounting:finish",
    "governance.metering.enforcement:settle_many",
    "governance.metering.ledger:record_many",
    "governance.metering.ledger:insert_usage_rows",
    "governance.metering.rollups:add",
    "governance.metering.enforcement:_settle_hot",
)


class Steps:
    """Per-step thread CPU (nanoseconds) and calls, from wrappers put in place of the steps."""

    def __init__(self) -> None:
        self.cpu: collections.Counter[str] = collections.Counter()
        self.calls: collections.Counter[str] = collections.Counter()

    def wrap(self, spec: str) -> None:
        module_name, _, path = spec.partition(":")
        if not path:
            raise SystemExit(f"a step is module:attribute, not {spec!r}")
        owner: Any = importlib.import_module(module_name)
        *parents, name = path.split(".")
        for parent in parents:
            owner = getattr(owner, parent)
        original = getattr(owner, name, None)
        if not callable(original):
            raise SystemExit(f"{spec}: no such function")
        setattr(owner, name, self._timed(spec, original))

    def _timed(self, spec: str, original: Callable[..., Any]) -> Callable[..., Any]:
        cpu, calls, clock = self.cpu, self.calls, time.thread_time_ns

        def timed(*args: Any, **kwargs: Any) -> Any:
            started = clock()
            try:
                return original(*args, **kwargs)
            finally:
                cpu[spec] += clock() - started
                calls[spec] += 1

        return timed

    def clear(self) -> None:
        self.cpu.clear()
        self.calls.clear()


class CollectorTime:
    """The garbage collector's time and collections per generation (``gc.callbacks``)."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.collections = [0, 0, 0]
        self._started = 0.0
        gc.callbacks.append(self._callback)

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.seconds += time.perf_counter() - self._started
            self.collections[info["generation"]] += 1

    def clear(self) -> None:
        self.seconds, self.collections = 0.0, [0, 0, 0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--key", choices=("plain", "governed"), default="governed")
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--model", default="gpt-4o-mini", help="anthropic/claude-3-5-haiku-latest: translated")
    parser.add_argument("--stream", action="store_true")
    parser.add_argument("--steps", default=",".join(STEPS), help="module:attribute,... to time")
    parser.add_argument("--no-steps", action="store_true", help="time no step (the wrappers cost ~1 µs a call)")
    args = parser.parse_args()
    if args.requests < args.threads or args.threads < 1:
        raise SystemExit("--requests must be at least --threads, and --threads at least 1")

    port = bench_run.free_port()
    base_env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    mock = bench_run.start([bench_run.PYTHON, "-m", "bench.mock_upstream", "--port", str(port)], base_env, port)
    data_dir = ""
    try:
        env, plain_key, governed_key = bench_run.prepare_gateway(f"http://{bench_run.HOST}:{port}")
        data_dir = env["BIFROST_DATA_DIR"]
        os.environ.update(env)
        measure(args, plain_key if args.key == "plain" else governed_key)
    finally:
        if data_dir:
            shutil.rmtree(data_dir, ignore_errors=True)
        mock.terminate()
        try:
            mock.wait(10)
        except subprocess.TimeoutExpired:
            mock.kill()


def measure(args: argparse.Namespace, key: str) -> None:
    import django

    django.setup()
    from bifrost_site import lifecycle
    from bifrost_site.wsgi import application

    lifecycle.worker_started(True, [], say=lambda _: None)
    steps = Steps()
    for spec in [] if args.no_steps else filter(None, args.steps.split(",")):
        steps.wrap(spec.strip())
    raw = bench_run.body(args.stream, args.model)

    def one() -> None:
        environ = {
            "REQUEST_METHOD": "POST",
            "PATH_INFO": "/v1/chat/completions",
            "QUERY_STRING": "",
            "CONTENT_LENGTH": str(len(raw)),
            "CONTENT_TYPE": "application/json",
            "HTTP_AUTHORIZATION": f"Bearer {key}",
            "REMOTE_ADDR": "127.0.0.1",
            "SERVER_NAME": bench_run.HOST,
            "SERVER_PORT": "80",
            "wsgi.url_scheme": "http",
            "wsgi.input": io.BytesIO(raw),
        }
        status: list[str] = []

        def start_response(
            line: str, headers: list[tuple[str, str]], exc_info: Any = None
        ) -> Callable[[bytes], object]:
            status.append(line)
            return lambda data: None  # the WSGI write() callable: the gateway never uses it

        body = application(environ, start_response)
        try:
            answer = b"".join(body)
        finally:
            close = getattr(body, "close", None)
            if close is not None:
                close()
        if not status or not status[0].startswith("200"):
            raise SystemExit(f"the gateway answered {status[:1]}: {answer[:300]!r}")

    def loop(count: int) -> None:
        for _ in range(count):
            one()

    def run(count: int) -> None:
        share, extra = divmod(count, args.threads)
        pool = [threading.Thread(target=loop, args=(share + (i < extra),)) for i in range(args.threads)]
        for thread in pool:
            thread.start()
        for thread in pool:
            thread.join()

    collector = CollectorTime()
    try:
        run(min(300, args.requests))  # warm-up: caches, connections, the counters' first rebuild
        time.sleep(0.5)  # the warm-up's last batches written
        steps.clear()
        collector.clear()
        cpu, wall, times = time.process_time(), time.perf_counter(), os.times()
        run(args.requests)
        time.sleep(0.3)  # the last batches written (their CPU is the requests')
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        after = os.times()
    finally:
        lifecycle.worker_stopping(10)
    per = 1e6 / args.requests
    print(
        f"{args.key} {args.model}{' SSE' if args.stream else ''}, {args.requests} requests on "
        f"{args.threads} thread(s): CPU {cpu * per:.0f} µs/request (user {(after.user - times.user) * per:.0f}, "
        f"system {(after.system - times.system) * per:.0f}), wall {wall * per:.0f} µs/request"
    )
    print(f"  garbage collector: {collector.seconds * per:.1f} µs/request, collections {collector.collections}")
    for spec in steps.calls:
        print(f"  {spec}: {steps.cpu[spec] / 1000 / args.requests:.1f} µs/request ({steps.calls[spec]} calls)")


if __name__ == "__main__":
    main()
