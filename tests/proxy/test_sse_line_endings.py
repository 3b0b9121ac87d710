"""The SSE scanner reads usage whatever the line endings (CRLF, LF, CR) and wherever reads split them."""

from __future__ import annotations

import socket
import time

import pytest

from governance.models import UsageRecord
from proxy.usage import SseScanner
from tests.proxy.conftest import make_setup
from tests.proxy.test_http1 import Scripted

CONTENT = b'data: {"choices":[{"index":0,"delta":{"content":"hi"}}]}'
USAGE = b'data: {"choices":[],"usage":{"prompt_tokens":11,"completion_tokens":7,"total_tokens":18}}'
DONE = b"data: [DONE]"
EXPECTED = CONTENT + b"\n\n" + DONE + b"\n\n"  # the usage chunk the proxy asked for is removed


def stream(eol: bytes) -> bytes:
    return b"".join(event + eol + eol for event in (CONTENT, USAGE, DONE))


def scan(pieces: list[bytes]) -> tuple[bytes, SseScanner]:
    scanner = SseScanner(strip_usage_chunk=True)
    out = b"".join(scanner.feed(piece) for piece in pieces) + scanner.flush()
    return out, scanner


def assert_usage_read(scanner: SseScanner) -> None:
    assert scanner.seen_usage
    usage = scanner.usage
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (11, 7, 18)
    assert scanner.content_events == 1


def test_crlf_split_between_cr_and_lf_keeps_the_events_apart():
    first = CONTENT + b"\r\n\r"
    out, scanner = scan([first, b"\n" + USAGE + b"\r\n\r\n" + DONE + b"\r\n\r\n"])
    assert out == EXPECTED
    assert_usage_read(scanner)


@pytest.mark.parametrize("eol", [b"\r\n", b"\n", b"\r"], ids=["crlf", "lf", "cr"])
def test_every_split_point_gives_the_same_events_and_usage(eol):
    data = stream(eol)
    for cut in range(1, len(data)):
        out, scanner = scan([data[:cut], data[cut:]])
        assert out == EXPECTED, cut
        assert_usage_read(scanner)


@pytest.mark.parametrize("eol", [b"\r\n", b"\r"], ids=["crlf", "cr"])
def test_byte_by_byte_reads(eol):
    data = stream(eol)
    out, scanner = scan([data[i : i + 1] for i in range(len(data))])
    assert out == EXPECTED
    assert_usage_read(scanner)


@pytest.mark.django_db
def test_through_the_proxy_a_crlf_split_across_tcp_reads_still_charges_the_reported_usage(call):
    def script(sock: socket.socket, request: bytes) -> bool:
        sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n")
        sock.sendall(CONTENT + b"\r\n\r")
        time.sleep(0.1)  # a separate read on the proxy's side
        sock.sendall(b"\n" + USAGE + b"\r\n\r\n" + DONE + b"\r\n\r\n")
        return False

    server = Scripted(script)
    try:
        setup = make_setup(f"http://127.0.0.1:{server.port}")
        body = {"model": "openai/gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "stream": True}
        answer = call("/v1/chat/completions", body, {"x-bf-vk": setup.value})
    finally:
        server.close()
    assert answer.status == 200
    assert answer.headers["content-type"] == "text/event-stream"
    assert answer.body == EXPECTED
    record = UsageRecord.objects.get()
    assert (record.status_code, record.streamed) == (200, True)
    assert (record.prompt_tokens, record.completion_tokens, record.total_tokens) == (11, 7, 18)
