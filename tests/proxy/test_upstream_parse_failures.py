"""An upstream answer the client cannot parse is a 502 that costs nothing, releases its
reservation, still counts the request it made, and writes its usage row.

The upstream is a raw socket server (``Scripted``) sending exactly the bytes under test.
"""

from __future__ import annotations

from decimal import Decimal

import pytest

from governance.metering.live import budget_usage, rate_limit_usage
from governance.models import Budget, ModelPrice, RateLimit, UsageRecord
from tests.proxy.conftest import make_setup
from tests.proxy.test_http1 import Scripted, reply

pytestmark = pytest.mark.django_db

CHAT = "/v1/chat/completions"
BODY = b'{"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}}'
CHUNKED = b"%x\r\n%s\r\n0\r\n\r\n" % (len(BODY), BODY)
BROKEN_HEADS = {
    "content-length-and-chunked": (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 10\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n" + CHUNKED,
        "answer has both Content-Length and Transfer-Encoding",
    ),
    "chunked-and-content-length": (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: %d\r\n\r\n" % len(CHUNKED) + CHUNKED,
        "answer has both Content-Length and Transfer-Encoding",
    ),
    "bad-content-length": (b"HTTP/1.1 200 OK\r\nContent-Length: 1, 2\r\n\r\n" + BODY, "invalid Content-Length"),
    "bad-status-line": (b"HTTP/1.1 2000 OK\r\n\r\n", "malformed status line"),
}


@pytest.fixture
def upstream():
    servers: list[Scripted] = []

    def start(answer: bytes) -> Scripted:
        servers.append(Scripted(reply(answer, keep=False)))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def governed_setup(server: Scripted):
    ModelPrice.objects.create(
        provider="openai", model="gpt-4o-mini", input_cost_per_token=Decimal("0.001"), output_cost_per_token="0.002"
    )
    return make_setup(
        f"http://127.0.0.1:{server.port}",
        budgets=[{"max_limit": 10, "reset_duration": "1d"}],
        rate_limit={
            "request_max_limit": 100,
            "request_reset_duration": "1h",
            "token_max_limit": 100000,
            "token_reset_duration": "1h",
        },
    )


def chat(stream: bool) -> dict:
    return {
        "model": "openai/gpt-4o-mini",
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 50,
        "stream": stream,
    }


def assert_settled_as_a_failed_reached_attempt(setup, status: int) -> None:
    record = UsageRecord.objects.get()
    assert (record.virtual_key_id, record.provider, record.model) == (setup.vk.pk, "openai", "gpt-4o-mini")
    assert (record.status_code, record.cost, record.total_tokens) == (status, 0, 0)
    budget = Budget.objects.get(virtual_key=setup.vk)
    limit = RateLimit.objects.get(virtual_key=setup.vk)
    # The worst-case reservation ($0.1 + prompt, 50+ tokens) is released: nothing is spent...
    assert budget.current_usage == 0
    assert budget_usage([budget.pk])[str(budget.pk)] == 0
    live = rate_limit_usage([limit.pk])[str(limit.pk)]
    assert live.tokens.usage == 0 and limit.token_current_usage == 0
    # ...but the upstream was reached, so the attempt counts one request.
    assert live.requests.usage == 1 and limit.request_current_usage == 1


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize("case", list(BROKEN_HEADS))
def test_a_broken_answer_head_is_502_and_settles_as_a_failed_attempt(call, upstream, case, stream):
    answer, problem = BROKEN_HEADS[case]
    setup = governed_setup(upstream(answer))
    response = call(CHAT, chat(stream), {"x-bf-vk": setup.value})
    assert response.status == 502
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {
        "is_bifrost_error": False,
        "status_code": 502,
        "error": {"message": f"upstream provider 'openai' failed: {problem}"},
        "extra_fields": {},
    }
    assert_settled_as_a_failed_reached_attempt(setup, 502)


def test_a_body_that_breaks_off_mid_stream_is_settled_the_same_way(call, upstream):
    head = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
    setup = governed_setup(upstream(head + b"zz\r\n"))
    response = call(CHAT, chat(True), {"x-bf-vk": setup.value})
    assert response.status == 200  # the head was fine: the failure is told in-band
    assert b"broke off the stream (UpstreamError)" in response.body
    assert_settled_as_a_failed_reached_attempt(setup, 502)
