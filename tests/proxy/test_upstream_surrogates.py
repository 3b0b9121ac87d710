"""An upstream answer whose JSON escapes a lone UTF-16 surrogate (``\\ud800``: no character, so no
UTF-8 text can carry it) reaches the client as that same escape, translated or passed through, in
valid UTF-8, and is charged like any other: JSON answers, streams and upstream errors, for
clients of every format. (A client's body naming one is refused with a 400 before anything is
sent: ``test_money_holes``.)"""

from __future__ import annotations

import json

import pytest

from governance.models import UsageRecord
from tests.proxy.conftest import make_setup, send, wait_for
from tests.proxy.test_http1 import Scripted, reply

pytestmark = pytest.mark.django_db(transaction=True)

LONE = b"\\ud800"  # as the upstream's JSON spells it, and as the client must get it
TEXT = b"bad " + LONE + b" text"
PROMPT = [{"role": "user", "content": "hi"}]


def events(*payloads: bytes, named: tuple[str, ...] = ()) -> bytes:
    """SSE frames of raw JSON payloads (with their event names, for Anthropic)."""
    names = named or ("",) * len(payloads)
    return b"".join(
        (f"event: {name}\n".encode() if name else b"") + b"data: " + payload + b"\n\n"
        for name, payload in zip(names, payloads, strict=True)
    )


OPENAI = {
    "json": b'{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"gpt-4o","choices":[{"index":0,'
    b'"message":{"role":"assistant","content":"' + TEXT + b'"},"finish_reason":"stop"}],'
    b'"usage":{"prompt_tokens":10,"completion_tokens":5,"total_tokens":15}}',
    "stream": events(
        b'{"id":"c1","object":"chat.completion.chunk","created":1,"model":"gpt-4o","choices":[{"index":0,'
        b'"delta":{"role":"assistant","content":"' + TEXT + b'"},"finish_reason":null}]}',
        b'{"id":"c1","object":"chat.completion.chunk","created":1,"model":"gpt-4o","choices":[{"index":0,'
        b'"delta":{},"finish_reason":"stop"}]}',
        b'{"id":"c1","object":"chat.completion.chunk","created":1,"model":"gpt-4o","choices":[],'
        b'"usage":{"prompt_tokens":10,"completion_tokens":5,"total_tokens":15}}',
        b"[DONE]",
    ),
    "error": b'{"error":{"message":"bad ' + LONE + b' input","type":"invalid_request_error","code":null}}',
}
ANTHROPIC = {
    "json": b'{"id":"msg_1","type":"message","role":"assistant","model":"claude-x","content":[{"type":"text",'
    b'"text":"' + TEXT + b'"}],"stop_reason":"end_turn","usage":{"input_tokens":10,"output_tokens":5}}',
    "stream": events(
        b'{"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant","model":"claude-x",'
        b'"content":[],"usage":{"input_tokens":10,"output_tokens":1}}}',
        b'{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}',
        b'{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"' + TEXT + b'"}}',
        b'{"type":"content_block_stop","index":0}',
        b'{"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":5}}',
        b'{"type":"message_stop"}',
        named=(
            "message_start",
            "content_block_start",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop",
        ),
    ),
    "error": b'{"type":"error","error":{"type":"invalid_request_error","message":"bad ' + LONE + b' input"}}',
}
UPSTREAMS = {"openai": OPENAI, "anthropic": ANTHROPIC}


def request(client: str, model: str, stream: bool, key: str) -> tuple[str, bytes, dict[str, str]]:
    """Path, body and key header of a chat request in the client's format."""
    if client == "openai":
        body = {"model": model, "messages": PROMPT, "max_tokens": 8, **({"stream": True} if stream else {})}
        return "/v1/chat/completions", json.dumps(body).encode(), {"Authorization": f"Bearer {key}"}
    if client == "anthropic":
        body = {"model": model, "max_tokens": 8, "messages": PROMPT, **({"stream": True} if stream else {})}
        return "/anthropic/v1/messages", json.dumps(body).encode(), {"x-api-key": key}
    action = "streamGenerateContent" if stream else "generateContent"
    body = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}
    return f"/genai/v1beta/models/{model}:{action}", json.dumps(body).encode(), {"x-goog-api-key": key}


def answering(status: int, content_type: str, body: bytes):
    head = f"HTTP/1.1 {status} X\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n\r\n"
    return reply(head.encode() + body)


# (client format, upstream provider): three translations and one passthrough.
PAIRS = [("openai", "anthropic"), ("anthropic", "openai"), ("gemini", "openai"), ("openai", "openai")]


@pytest.fixture
def through():
    servers: list[Scripted] = []

    def run(client: str, provider: str, kind: str):
        status, content_type = (400, "application/json") if kind == "error" else (200, "application/json")
        if kind == "stream":
            content_type = "text/event-stream"
        upstream = Scripted(answering(status, content_type, UPSTREAMS[provider][kind]))
        servers.append(upstream)
        setup = make_setup(f"http://127.0.0.1:{upstream.port}")
        model = f"{provider}/{'claude-x' if provider == 'anthropic' else 'gpt-4o'}"
        path, body, headers = request(client, model, kind == "stream", setup.value)
        return send(path, body, headers)

    yield run
    for server in servers:
        server.close()


@pytest.mark.parametrize(("client", "provider"), PAIRS)
def test_a_json_answer_keeps_the_escape_and_is_charged(through, client, provider):
    answer = through(client, provider, "json")

    assert answer.status == 200, answer.body[:500]
    assert TEXT in answer.body.decode("utf-8").encode()  # valid UTF-8, the escape as the upstream wrote it
    json.loads(answer.body)
    row = wait_for(lambda: UsageRecord.objects.first())
    assert (row.status_code, row.prompt_tokens, row.completion_tokens, row.estimated) == (200, 10, 5, False)


@pytest.mark.parametrize(("client", "provider"), PAIRS)
def test_a_stream_keeps_the_escape_to_its_end_and_is_charged(through, client, provider):
    answer = through(client, provider, "stream")

    assert answer.status == 200
    text = answer.body.decode("utf-8")
    assert TEXT.decode() in text
    assert "broke off" not in text and "upstream_error" not in text
    for line in text.splitlines():
        if line.startswith("data: ") and line != "data: [DONE]":
            json.loads(line[len("data: ") :])  # every event is JSON a client can read
    row = wait_for(lambda: UsageRecord.objects.first())
    assert (row.status_code, row.prompt_tokens, row.completion_tokens, row.streamed) == (200, 10, 5, True)


@pytest.mark.parametrize(("client", "provider"), PAIRS)
def test_an_upstream_error_keeps_the_escape_and_is_answered_with_its_status(through, client, provider):
    answer = through(client, provider, "error")

    assert answer.status == 400, answer.body[:500]
    assert b"bad " + LONE + b" input" in answer.body.decode("utf-8").encode()
    json.loads(answer.body)
    row = wait_for(lambda: UsageRecord.objects.first())
    assert row.status_code == 400 and "input" in row.error_message and "\ud800" not in row.error_message
