"""The gateway served by granian (``bifrost_site.serve_granian``) keeps what gunicorn's hooks give.

Two workers on the test database, as the gunicorn gateways of ``conftest_enforcement``:

- the OpenAI SDK is answered and its usage row written (the worker's ledger writer runs);
- a stream's chunks reach the client as the upstream produces them, not at its end; a client that
  leaves mid-stream is charged for what was produced (the answer's ``close()`` is called);
- ``/metrics`` sums both workers' figures (the master's metric directory reached the workers);
- the ready line is printed once per start, not again by a worker that replaced a dead one; a
  worker killed is replaced and its live gauges stop counting;
- SIGTERM with requests in flight: each finishes with 200, each has exactly one usage row, and the
  budget counter equals the ledger once the server has exited (the usage queue drained at exit);
- the process environment is not part of the requests' WSGI environ (a ``HTTP_*`` variable would
  otherwise pass for a client header and go upstream);
- clients sending their bodies a byte at a time wait on threads of their own: normal requests are
  still answered; and requests waiting on a slow upstream lend their slots, so they wait together
  rather than ``BIFROST_THREADS`` at a time.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import openai
import pytest
import urllib3
from prometheus_client.mmap_dict import MmapedDict

from tests.proxy.conftest import make_setup
from tests.proxy.conftest_enforcement import (
    GatewayProcess,
    budget_usage,
    chat,
    post,
    settled,
    sigterm_drains_requests_in_flight,
    spend,
    vk_headers,
    wait_until,
)
from tests.site.test_metrics import parse, total

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

READY = b"Bifrost gateway ready:"
LEAKED = "from-the-process-environment"


class GranianProcess(GatewayProcess):
    """granian whatever ``BIFROST_SERVER`` says (the ``GUNICORN_*`` sizes the base class sets are
    the ones it reads too)."""

    server = "granian"


def running(pid: int) -> bool:
    """Not exited (an exited orphan may stay a zombie until its new parent reaps it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _server(directory: Path, **env: str) -> GranianProcess:
    data = directory / "data"
    data.mkdir(exist_ok=True)
    env = {"BIFROST_DATA_DIR": str(data), "HTTP_X_LEAK": LEAKED, **env}
    return GranianProcess(directory / "granian.log", env, workers=2)


@pytest.fixture(scope="module")
def granian(django_db_setup, django_db_blocker, mock_server, tmp_path_factory):
    """One granian gateway for the module's read-only checks."""
    server = _server(tmp_path_factory.mktemp("granian"))
    yield server
    server.stop()


@pytest.fixture
def fresh_granian(django_db_setup, tmp_path):
    """``fresh_granian(**env)``: a granian gateway of this test's own, stopped after it."""
    started: list[GranianProcess] = []

    def start(**env: str) -> GranianProcess:
        started.append(_server(tmp_path, **env))
        return started[-1]

    yield start
    for server in started:
        server.stop()


def test_the_openai_sdk_is_answered_and_its_usage_row_written(granian, mock, price):
    price("gpt-4o-mini", input="0.000001", output="0.001")
    live = make_setup(mock.url, budgets=[{"max_limit": "1", "reset_duration": "1h"}])
    client = openai.OpenAI(api_key=live.value, base_url=f"{granian.url}/v1", max_retries=0)

    answer = client.chat.completions.create(model="gpt-4o-mini", messages=chat()["messages"], max_tokens=4)

    assert answer.choices[0].message.content
    assert answer.usage is not None and answer.usage.completion_tokens == 4
    (row,) = settled(1, vk=live.vk)
    assert (row.status_code, row.completion_tokens, row.model) == (200, 4, "gpt-4o-mini")
    assert budget_usage(live.vk) == spend(live.vk) == row.cost > 0
    # The process environment stays out of the request: nothing of it reached the upstream.
    assert "x-leak" not in mock.stats()["last_headers"]


def test_a_streams_chunks_arrive_as_the_upstream_produces_them(granian, mock):
    live = make_setup(mock.url)
    host, port = granian.url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=20)
    # The mock pauses 400 ms between chunks: five content chunks take at least 1.6 s to produce.
    body = json.dumps(chat("slow-stream-400", max_tokens=5, stream=True)).encode()
    conn.request(
        "POST",
        "/v1/chat/completions",
        body=body,
        headers={"Content-Type": "application/json", **vk_headers(live.value)},
    )
    response = conn.getresponse()
    assert response.status == 200
    arrivals: list[tuple[float, bytes]] = []
    while chunk := response.read1(65536):
        arrivals.append((time.monotonic(), chunk))
    conn.close()

    data = b"".join(chunk for _, chunk in arrivals)
    assert data.count(b'"content":"mock "') == 5 and data.endswith(b"data: [DONE]\n\n"), data
    first = next(at for at, chunk in arrivals if b'"content"' in chunk)
    last = arrivals[-1][0]
    # Buffered until the end, everything would arrive at once.
    assert last - first >= 1.2, [(round(at - first, 2), chunk[:40]) for at, chunk in arrivals]


def test_a_client_leaving_mid_stream_is_charged_for_what_it_was_sent(granian, mock):
    live = make_setup(mock.url)
    sock = socket.create_connection(("127.0.0.1", int(granian.url.rsplit(":", 1)[1])), timeout=20)
    body = json.dumps(chat("slow-stream-100", max_tokens=40, stream=True)).encode()
    sock.sendall(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + f"Authorization: Bearer {live.value}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    received = b""
    while received.count(b"mock ") < 3:
        received += sock.recv(65536)
    sock.close()

    # granian closes the answer's iterable when it cannot send the next chunk: the gateway records it.
    (row,) = settled(1, vk=live.vk)
    assert row.status_code == 499 and row.streamed
    assert 3 <= row.completion_tokens < 40 and row.prompt_tokens > 0
    assert mock.stats()["streams_finished"] == 0


def _worker_sums(directory: Path, name: str, vk_name: str) -> dict[str, float]:
    """Per worker file: the sum of ``name``'s samples labelled with the key ``vk_name``."""
    sums = {}
    for path in directory.glob("counter_*.db"):
        mapped = MmapedDict(str(path), read_mode=True)
        try:
            values = mapped.read_all_values()
            sums[path.name] = sum(v for key, v, _ in values if f'"{name}"' in key and f'"{vk_name}"' in key)
        finally:
            mapped.close()
    return sums


def test_metrics_sum_both_workers(granian, mock):
    live = make_setup(mock.url, name="granian-metrics")
    count = 16
    client = openai.OpenAI(
        api_key=live.value,
        base_url=f"{granian.url}/v1",
        max_retries=0,
        # A connection per request: the kernel spreads them over both workers' sockets.
        default_headers={"Connection": "close"},
    )
    for _ in range(count):
        client.chat.completions.create(model="gpt-4o-mini", messages=chat()["messages"], max_tokens=2)

    def scraped() -> dict | None:
        samples = parse(urllib3.request("GET", f"{granian.url}/metrics", timeout=10).data.decode())
        done = total(samples, "bifrost_success_requests_total", virtual_key_name="granian-metrics") == count
        return samples if done else None

    samples = wait_until(scraped, timeout=15, what="the workers' figures adding up to the traffic sent")
    (directory,) = (Path(granian.log.parent) / "data" / "metrics").iterdir()
    per_worker = _worker_sums(directory, "bifrost_success_requests_total", "granian-metrics")
    assert len(per_worker) == 2 and all(value > 0 for value in per_worker.values()), per_worker
    assert sum(per_worker.values()) == total(
        samples, "bifrost_success_requests_total", virtual_key_name="granian-metrics"
    )


def test_the_ready_line_is_printed_once_and_a_killed_worker_is_replaced(fresh_granian, mock):
    server = fresh_granian()
    live = make_setup(mock.url)
    assert server.log.read_bytes().count(READY) == 1
    first = server.worker_pids()
    assert len(first) == 2
    directory = next((server.log.parent / "data" / "metrics").iterdir())
    victim = min(first)
    wait_until(lambda: (directory / f"gauge_livesum_{victim}.db").exists(), what="the worker's live gauges")

    os.kill(victim, signal.SIGKILL)
    wait_until(lambda: server.started() == 3, timeout=60, what="a worker replacing the killed one")

    now = server.worker_pids()
    assert victim not in now and len(now) == 2
    # Its live gauges no longer count (as gunicorn's child_exit does); its counters stay.
    wait_until(lambda: not (directory / f"gauge_livesum_{victim}.db").exists(), what="the dead worker marked")
    assert (directory / f"counter_{victim}.db").exists()
    replies = [post(server.url, chat(), vk=live.value) for _ in range(6)]
    assert [reply.status for reply in replies] == [200] * 6
    assert server.log.read_bytes().count(READY) == 1

    # A master killed outright: its workers stop rather than serve on as orphans.
    server.proc.kill()
    server.proc.wait(5)
    wait_until(lambda: not any(map(running, now)), timeout=20, what="the workers gone")
    assert b"is gone: stopping worker" in server.log.read_bytes()


def test_sigterm_lets_requests_in_flight_finish_and_keeps_their_usage(fresh_granian, mock, price):
    server = sigterm_drains_requests_in_flight(
        mock, price, lambda: fresh_granian(BIFROST_WORKERS="2", BIFROST_THREADS="8")
    )
    log = server.log.read_text()
    assert "Stopped worker-1" in log and "Stopped worker-2" in log and "Killing" not in log


def test_slow_bodies_wait_on_threads_of_their_own_and_slow_upstreams_do_not_hold_slots(fresh_granian, mock):
    server = fresh_granian(BIFROST_THREADS="2", BIFROST_WAITING_THREADS="16")
    live = make_setup(mock.url)
    slow = []
    for _ in range(10):  # more than the 2 x 2 threads that run requests
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        sock.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Authorization: Bearer {live.value}\r\nContent-Length: 500\r\n\r\n{{".encode()
        )
        slow.append(sock)
    try:
        time.sleep(0.5)  # every one of them is in a thread, waiting for the rest of its body
        started = time.monotonic()
        replies = [post(server.url, chat(), vk=live.value) for _ in range(4)]
        assert [reply.status for reply in replies] == [200] * 4
        assert time.monotonic() - started < 5

        # Sixteen requests whose upstream takes 500 ms: each lends its slot while it waits, so they
        # wait together; with the 2 x 2 slots held through the wait they would take 2 s at least.
        started = time.monotonic()
        with ThreadPoolExecutor(16) as pool:
            statuses = list(pool.map(lambda _: post(server.url, chat("slow-500"), vk=live.value).status, range(16)))
        assert statuses == [200] * 16
        assert time.monotonic() - started < 1.5
    finally:
        for sock in slow:
            sock.close()
