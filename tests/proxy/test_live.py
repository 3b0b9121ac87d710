"""The official SDKs against a live gateway (gunicorn subprocess) with the mock upstream behind it."""

from __future__ import annotations

import socket
import time

import anthropic
import openai
import pytest
import urllib3

from governance.models import UsageRecord
from tests.proxy.conftest import make_setup, wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

MESSAGES = [{"role": "user", "content": "Say hello, please."}]


@pytest.fixture
def live(gateway, mock):
    return make_setup(mock.url)


def oai(gateway, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=key, max_retries=0, timeout=10)


def rows(expected: int, vk=None) -> list[UsageRecord]:
    """This test's usage rows, once ``expected`` have been written (the gateway writes them off the request path)."""
    queryset = UsageRecord.objects.order_by("created_at")
    if vk is not None:
        queryset = queryset.filter(virtual_key=vk)
    return wait_for(lambda: list(queryset.all()) if queryset.count() >= expected else None) or []


def test_openai_sdk_chat(gateway, live):
    reply = oai(gateway, live.value).chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, max_tokens=4)
    assert reply.choices[0].message.content == "mock mock mock mock"
    assert reply.usage.completion_tokens == 4
    [row] = rows(1, live.vk)
    assert (row.provider, row.model, row.status_code, row.completion_tokens) == ("openai", "gpt-4o-mini", 200, 4)
    assert row.virtual_key_id == live.vk.pk


def test_openai_sdk_streaming_hides_the_usage_chunk_it_did_not_ask_for(gateway, live):
    stream = oai(gateway, live.value).chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES, max_tokens=5, stream=True
    )
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "mock " * 5
    assert all(c.choices for c in chunks) and all(c.usage is None for c in chunks)
    [row] = rows(1, live.vk)
    assert row.streamed and row.completion_tokens == 5 and row.prompt_tokens == 4 and row.status_code == 200


def test_openai_sdk_streaming_keeps_usage_when_asked(gateway, live):
    stream = oai(gateway, live.value).chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES, max_tokens=2, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    assert chunks[-1].usage.completion_tokens == 2 and chunks[-1].choices == []


def test_openai_sdk_embeddings_and_responses(gateway, live):
    client = oai(gateway, live.value)
    embedding = client.embeddings.create(model="text-embedding-3-small", input=["a b c d e f g h"])
    assert len(embedding.data[0].embedding) == 4 and embedding.usage.prompt_tokens == 3
    response = client.responses.create(model="gpt-4o", input="Tell me something", max_output_tokens=3)
    assert response.output_text == "mock mock mock" and response.usage.output_tokens == 3
    assert {(r.request_type, r.status_code) for r in rows(2, live.vk)} == {("embedding", 200), ("responses", 200)}


def test_anthropic_sdk_messages_and_stream(gateway, live):
    client = anthropic.Anthropic(base_url=f"{gateway.url}/anthropic", api_key=live.value, max_retries=0, timeout=10)
    message = client.messages.create(model="claude-test-model", max_tokens=3, messages=MESSAGES)
    assert message.content[0].text == "mock mock mock" and message.usage.output_tokens == 3
    with client.messages.stream(model="claude-test-model", max_tokens=4, messages=MESSAGES) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "mock " * 4 and final.usage.output_tokens == 4
    recorded = rows(2, live.vk)
    assert [(r.provider, r.streamed, r.completion_tokens) for r in recorded] == [
        ("anthropic", False, 3),
        ("anthropic", True, 4),
    ]


def test_sdk_error_bodies_are_readable(gateway, live):
    with pytest.raises(openai.BadRequestError) as exc:
        oai(gateway, live.value).embeddings.create(model="anthropic/x", input="hello")
    assert "provider 'anthropic' speaks the anthropic API" in str(exc.value)
    with pytest.raises(openai.AuthenticationError):
        oai(gateway, "sk-bf-unknown").chat.completions.create(model="gpt-4o", messages=MESSAGES)


def test_fallback_through_the_sdk(gateway, live):
    reply = oai(gateway, live.value).chat.completions.create(
        model="openai/fail-500", messages=MESSAGES, max_tokens=1, extra_body={"fallbacks": ["openai/gpt-4o"]}
    )
    assert reply.model == "gpt-4o"
    assert sorted((r.model, r.status_code) for r in rows(2, live.vk)) == [("fail-500", 500), ("gpt-4o", 200)]


def _raw_stream(gateway, live, model: str, max_tokens: int):
    http = urllib3.PoolManager()
    body = {"model": model, "messages": MESSAGES, "max_tokens": max_tokens, "stream": True}
    return http.request(
        "POST",
        f"{gateway.url}/v1/chat/completions",
        json=body,
        headers={"Authorization": f"Bearer {live.value}"},
        preload_content=False,
    )


def test_streaming_is_not_buffered(gateway, live, mock):
    answer = _raw_stream(gateway, live, "openai/slow-stream-300", 5)
    assert answer.status == 200 and answer.headers["content-type"].startswith("text/event-stream")
    chunks = answer.read_chunked()
    first = next(chunks)
    assert b"mock" in first
    stats = mock.stats()
    # The client holds the first chunk while the upstream has not yet sent its last one.
    assert stats["streams_started"] == 1 and stats["streams_finished"] == 0
    rest = b"".join(chunks)
    assert rest.endswith(b"data: [DONE]\n\n") and b'"choices":[]' not in rest
    assert wait_for(lambda: mock.stats()["streams_finished"] == 1)


def test_client_disconnect_mid_stream_still_records_usage(gateway, live, mock):
    sock = socket.create_connection(("127.0.0.1", int(gateway.url.rsplit(":", 1)[1])))
    body = (
        b'{"model": "openai/slow-stream-100", "max_tokens": 40, "stream": true, '
        b'"messages": [{"role": "user", "content": "Say hello, please."}]}'
    )
    sock.sendall(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + f"Authorization: Bearer {live.value}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    received = b""
    while received.count(b"mock") < 3:
        received += sock.recv(65536)
    sock.close()
    [row] = rows(1, live.vk)
    assert row.status_code == 499 and row.streamed
    assert 3 <= row.completion_tokens < 40 and row.prompt_tokens > 0
    served = mock.stats()
    assert served["streams_finished"] == 0
    assert row.completion_tokens <= served["completion_tokens"]


def test_a_new_user_registers_a_provider_through_the_api_then_chats(gateway, mock, alice_token):
    http = urllib3.PoolManager()
    admin = {"Authorization": f"Bearer {alice_token}"}
    created = http.request(
        "POST",
        f"{gateway.url}/api/providers",
        headers=admin,
        json={
            "provider": "openai",
            "api_format": "openai",
            "network_config": {"base_url": mock.url, "default_request_timeout_in_seconds": 5, "extra_headers": {}},
        },
    )
    assert created.status == 200, created.data
    key = http.request(
        "POST",
        f"{gateway.url}/api/providers/openai/keys",
        headers=admin,
        json={"name": "k1", "value": "sk-live-upstream-0001", "models": ["*"], "weight": 1.0, "enabled": True},
    )
    assert key.status == 200 and key.json()["key"]["value"] == "…0001"
    from governance.services import virtual_key_create

    _, value = virtual_key_create(
        name="newcomer",
        provider_configs=[{"provider": "openai", "weight": 1, "allowed_models": ["*"], "key_ids": ["*"]}],
    )
    client = oai(gateway, value)
    assert client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, max_tokens=1).choices
    assert (
        "".join(
            c.choices[0].delta.content or ""
            for c in client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, max_tokens=2, stream=True)
        )
        == "mock mock "
    )
    assert mock.stats()["last_headers"]["authorization"] == "Bearer sk-live-upstream-0001"


def test_gateway_answers_within_the_timeout_when_the_upstream_hangs(gateway, mock):
    s = make_setup(mock.url)
    from governance.services import provider_update

    provider_update(provider=s.openai, timeout_seconds=0.5)
    started = time.monotonic()
    with pytest.raises(openai.APIStatusError) as exc:
        oai(gateway, s.value).chat.completions.create(model="openai/hang", messages=MESSAGES)
    assert exc.value.status_code == 504 and time.monotonic() - started < 3


def test_the_server_prints_one_ready_line_with_its_admin_url(gateway):
    def ready_lines() -> list[str]:
        return [line for line in gateway.log.read_text().splitlines() if "Bifrost gateway ready:" in line]

    wait_for(ready_lines, timeout=60)  # a worker boots in seconds on a busy machine
    time.sleep(0.5)  # both workers are up by now: still one line
    ready = ready_lines()
    assert len(ready) == 1, ready  # the first worker says it; the other stays quiet
    assert f"inference at {gateway.url}/v1 (OpenAI SDK base_url)" in ready[0]
    assert f"admin at {gateway.url}/admin/" in ready[0]
