"""The proxy across formats, in this process: provider-type quirks, translation seams, errors in the
client's format, translated streams, usage, accounting on the client's body, token counts, model lists
and the Azure-style inbound route. What reached the upstream is read from the mock's ``last_request``."""

from __future__ import annotations

import base64
import json
import re
import socket
import time
from dataclasses import dataclass
from decimal import Decimal
from itertools import count
from urllib.parse import unquote

import pytest

from bench.mock_upstream import BASE_MODELS, GEMINI_MODELS, MODELS
from governance.keys import VK_REQUIRED
from governance.models import ModelPrice, UsageRecord
from governance.services import provider_create, provider_key_create, provider_update, virtual_key_create
from proxy.routing import ROUTES, find
from proxy.translate import anthropic as anthropic_format
from proxy.translate import gemini as gemini_format
from proxy.usage import estimate_prompt_tokens
from tests.proxy.conftest import Answer, Mock, send
from tests.proxy.test_http1 import Scripted

pytestmark = pytest.mark.django_db

CHAT = "/v1/chat/completions"
MESSAGES_PATH = "/anthropic/v1/messages"
COUNT_TOKENS = "/anthropic/v1/messages/count_tokens"
PROMPT = "x" * 40  # 10 prompt tokens at the mock
KEYS = {
    "openai": "sk-upstream-openai-secret",
    "anthropic": "sk-ant-upstream-secret",
    "gemini": "gm-upstream-gemini-secret",
}
_names = count()


# --- fixtures and helpers -------------------------------------------------------------------------


def add_provider(url: str, name: str, provider_type: str | None = None, key: str | None = None, **key_options):
    provider = provider_create(name=name, base_url=url, provider_type=provider_type, timeout_seconds=2.0)
    provider_key_create(provider=provider, name="main", value=key or f"sk-{name}-upstream-secret", **key_options)
    return provider


def config(provider: str, weight: float | None = None, allowed: tuple[str, ...] = ("*",)) -> dict:
    return {"provider": provider, "weight": weight, "allowed_models": list(allowed), "key_ids": ["*"]}


def make_vk(*configs: dict, **options) -> str:
    _, value = virtual_key_create(name=f"vk-{next(_names)}", provider_configs=list(configs), **options)
    return value


@dataclass
class World:
    mock: Mock
    value: str
    openai: object
    anthropic: object
    gemini: object


@pytest.fixture
def world(mock) -> World:
    """Providers ``openai``, ``anthropic`` and ``gemini`` on the mock; a VK allowed all three (weighted: openai)."""
    providers = {name: add_provider(mock.url, name, key=KEYS[name]) for name in KEYS}
    value = make_vk(config("openai", 1.0), config("anthropic"), config("gemini"))
    return World(mock, value, **providers)


def oai(value: str) -> dict[str, str]:
    return {"x-bf-vk": value}


def ant(value: str) -> dict[str, str]:
    return {"x-api-key": value}


def goog(value: str) -> dict[str, str]:
    return {"x-goog-api-key": value}


def chat(model: str, **extra) -> dict:
    return {"model": model, "messages": [{"role": "user", "content": PROMPT}], "max_tokens": 3, **extra}


def message(model: str, **extra) -> dict:
    return {"model": model, "max_tokens": 3, "messages": [{"role": "user", "content": PROMPT}], **extra}


def contents(**extra) -> dict:
    return {"contents": [{"role": "user", "parts": [{"text": PROMPT}]}], **extra}


def genai(model: str, action: str = "generateContent") -> str:
    return f"/genai/v1beta/models/{model}:{action}"


def last(mock: Mock) -> dict | None:
    return mock.stats()["last_request"]


def price(provider: str, model: str, output: str = "0.001", input: str = "0") -> None:
    ModelPrice.objects.create(
        provider=provider, model=model, input_cost_per_token=Decimal(input), output_cost_per_token=Decimal(output)
    )


def events(body: bytes) -> list:
    """The ``data:`` payloads of an SSE body (LF framed), ``"[DONE]"`` kept as the string."""
    out = []
    for block in body.split(b"\n\n"):
        for line in block.split(b"\n"):
            if line.startswith(b"data: "):
                data = line[6:]
                out.append("[DONE]" if data == b"[DONE]" else json.loads(data))
    return out


def openai_text(chunks: list) -> str:
    return "".join(
        choice["delta"].get("content") or ""
        for chunk in chunks
        if isinstance(chunk, dict)
        for choice in chunk.get("choices") or ()
    )


def as_server(url: str, body=None, headers: dict[str, str] | None = None, method: str = "POST") -> Answer:
    """A request as a real WSGI server hands it over (gunicorn, waitress):
    the query in ``QUERY_STRING`` and ``PATH_INFO`` percent-decoded. (The ``call`` fixture passes its
    path verbatim as ``PATH_INFO``, so a query or ``%2F`` there would reach the router as is.)"""
    path, _, query = url.partition("?")
    raw = json.dumps(body).encode() if body is not None else b""
    return send(unquote(path), raw, headers, method, query=query)


@pytest.fixture
def upstream_script():
    """``upstream_script(chunks)``: a TCP upstream answering 200 ``text/event-stream`` with ``chunks``,
    each sent on its own after a pause (so each is a separate read on the proxy's side), then closing."""
    servers: list[Scripted] = []

    def make(chunks: list[bytes], pause: float = 0.05) -> str:
        def script(sock: socket.socket, request: bytes) -> bool:
            sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n")
            for chunk in chunks:
                time.sleep(pause)
                sock.sendall(chunk)
            return False

        servers.append(Scripted(script))
        return f"http://127.0.0.1:{servers[-1].port}"

    yield make
    for server in servers:
        server.close()


# --- 1. quirks of the provider types ---------------------------------------------------------------


@pytest.fixture
def mistral(mock) -> str:
    add_provider(mock.url, "mistral", "mistral")
    return make_vk(config("mistral"))


def test_mistral_gets_max_tokens_for_max_completion_tokens(call, mock, mistral):
    body = {"model": "mistral/mistral-large", "messages": [{"role": "user", "content": PROMPT}]}
    answer = call(CHAT, {**body, "max_completion_tokens": 7}, oai(mistral))

    assert answer.status == 200, answer.body
    sent = last(mock)["body"]
    assert sent["max_tokens"] == 7 and "max_completion_tokens" not in sent
    assert answer.json()["usage"]["completion_tokens"] == 7
    row = UsageRecord.objects.get()
    assert (row.provider, row.model, row.completion_tokens, row.status_code) == ("mistral", "mistral-large", 7, 200)


def test_mistral_stream_is_sent_without_stream_options(call, mock, mistral):
    body = chat("mistral/mistral-large", stream=True, stream_options={"include_usage": True})
    answer = call(CHAT, body, oai(mistral))

    assert answer.status == 200 and answer.headers["content-type"] == "text/event-stream"
    sent = last(mock)["body"]
    assert sent["stream"] is True and "stream_options" not in sent
    assert openai_text(events(answer.body)) == "mock " * 3 and events(answer.body)[-1] == "[DONE]"
    row = UsageRecord.objects.get()
    assert row.streamed and row.status_code == 200 and row.provider == "mistral"


def test_mistral_required_tool_choice_becomes_any(call, mock, mistral):
    tools = [{"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}]
    answer = call(CHAT, chat("mistral/mistral-large", tools=tools, tool_choice="required"), oai(mistral))

    assert answer.status == 200
    sent = last(mock)["body"]
    assert sent["tool_choice"] == "any" and sent["tools"] == tools


def test_mistral_tool_call_ids_become_the_same_nine_alphanumerics_on_every_turn(call, mock, mistral):
    history = [
        {"role": "user", "content": "weather in Paris?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "call_abc123XYZ", "type": "function", "function": {"name": "weather", "arguments": "{}"}}
            ],
        },
        {"role": "tool", "tool_call_id": "call_abc123XYZ", "content": "sunny"},
    ]
    body = {"model": "mistral/mistral-large", "messages": history, "max_tokens": 5}
    seen = []
    for _ in range(2):
        answer = call(CHAT, body, oai(mistral))
        assert answer.status == 200, answer.body
        assert answer.json()["choices"][0]["message"]["content"] == "tool results: sunny"
        sent = last(mock)["body"]["messages"]
        call_id, result_id = sent[1]["tool_calls"][0]["id"], sent[2]["tool_call_id"]
        assert call_id == result_id and re.fullmatch(r"[A-Za-z0-9]{9}", call_id)
        seen.append(call_id)
    assert seen[0] == seen[1] != "call_abc123XYZ"
    assert body["messages"][1]["tool_calls"][0]["id"] == "call_abc123XYZ"  # the client's body is not changed


def test_groq_gets_max_completion_tokens_for_max_tokens(call, mock):
    add_provider(mock.url, "groq", "groq")
    answer = call(CHAT, chat("groq/llama-3.3-70b", max_tokens=6), oai(make_vk(config("groq"))))

    assert answer.status == 200
    sent = last(mock)["body"]
    assert sent["max_completion_tokens"] == 6 and "max_tokens" not in sent
    assert UsageRecord.objects.get().completion_tokens == 6


def test_ollama_object_tool_choice_becomes_required_with_only_that_tool(call, mock):
    add_provider(mock.url, "ollama", "ollama")
    tools = [
        {"type": "function", "function": {"name": name, "parameters": {"type": "object", "properties": {}}}}
        for name in ("a", "b")
    ]
    choice = {"type": "function", "function": {"name": "b"}}
    answer = call(CHAT, chat("ollama/llama3-tool", tools=tools, tool_choice=choice), oai(make_vk(config("ollama"))))

    assert answer.status == 200, answer.body
    sent = last(mock)["body"]
    assert sent["tools"] == [tools[1]] and sent["tool_choice"] == "required"
    assert answer.json()["choices"][0]["message"]["tool_calls"][0]["function"]["name"] == "b"


def test_openai_type_gets_the_body_unchanged(call, world):
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    body = chat("openai/gpt-4o", temperature=0.5, user="u-1", tools=tools, tool_choice="required", seed=7)
    answer = call(CHAT, body, oai(world.value))

    assert answer.status == 200
    request = last(world.mock)
    assert request["path"] == "/v1/chat/completions"
    assert request["body"] == {**body, "model": "gpt-4o"}  # max_tokens stays max_tokens
    assert request["headers"]["authorization"] == f"Bearer {KEYS['openai']}"


@pytest.mark.parametrize(
    ("api_version", "model", "deployment"),
    [
        (None, "gpt-4o", "prod-gpt4o"),
        ("2025-01-01-preview", "gpt-4o", "prod-gpt4o"),
        (None, "gpt-4o-mini", "gpt-4o-mini"),  # not in the map: the model names the deployment
    ],
)
def test_azure_upstream_gets_deployment_path_api_version_and_api_key(call, mock, api_version, model, deployment):
    azure = provider_create(name="azure", provider_type="azure", timeout_seconds=2.0)
    azure_config = {"endpoint": mock.url, "deployments": {"gpt-4o": "prod-gpt4o"}}
    if api_version:
        azure_config["api_version"] = api_version
    provider_key_create(provider=azure, name="main", value="az-upstream-secret", azure_key_config=azure_config)
    value = make_vk(config("azure"))
    answer = call(CHAT, chat(f"azure/{model}"), {"x-bf-vk": value, "Authorization": f"Bearer {value}"})

    assert answer.status == 200, answer.body
    assert answer.json()["extra_fields"]["provider"] == "azure"
    request = last(mock)
    assert request["path"] == f"/openai/deployments/{deployment}/chat/completions"
    assert request["query"] == f"api-version={api_version or '2024-10-21'}"
    assert request["headers"]["api-key"] == "az-upstream-secret"
    assert "authorization" not in request["headers"]
    assert request["body"]["model"] == model
    assert not any(value in v for v in request["headers"].values())
    row = UsageRecord.objects.get()
    assert (row.provider, row.model, row.status_code, row.prompt_tokens, row.completion_tokens) == (
        "azure",
        model,
        200,
        10,
        3,
    )


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
def test_gemini_upstream_gets_model_path_its_key_and_never_the_vk(call, world, stream):
    vk = world.value
    headers = {"x-bf-vk": vk, "Authorization": f"Bearer {vk}", "x-api-key": vk, "x-goog-api-key": vk}
    answer = call(CHAT, chat("gemini/gemini-2.5-flash", stream=stream), headers)

    assert answer.status == 200, answer.body
    request = last(world.mock)
    if stream:
        assert request["path"] == "/v1beta/models/gemini-2.5-flash:streamGenerateContent"
        assert request["query"] == "alt=sse"
        assert openai_text(events(answer.body)) == "mock " * 3
    else:
        assert request["path"] == "/v1beta/models/gemini-2.5-flash:generateContent"
        assert request["query"] == ""
        assert answer.json()["choices"][0]["message"]["content"] == "mock mock mock"
    assert request["headers"]["x-goog-api-key"] == KEYS["gemini"]
    assert "authorization" not in request["headers"] and "x-api-key" not in request["headers"]
    assert not any(vk in value for value in request["headers"].values())
    assert "model" not in request["body"] and request["body"]["generationConfig"]["maxOutputTokens"] == 3
    row = UsageRecord.objects.get()
    assert (row.provider, row.model, row.prompt_tokens, row.completion_tokens, row.streamed) == (
        "gemini",
        "gemini-2.5-flash",
        10,
        3,
        stream,
    )


# --- 2. translation seams --------------------------------------------------------------------------


def test_a_request_to_anthropic_without_a_cap_sends_the_gateway_default(call, world, settings):
    settings.GOVERNANCE_DEFAULT_MAX_TOKENS = 77  # not Anthropic's own DEFAULT_MAX_TOKENS (4096)
    body = {"model": "anthropic/claude-3-5-haiku-latest", "messages": [{"role": "user", "content": PROMPT}]}
    answer = call(CHAT, body, oai(world.value))

    assert answer.status == 200, answer.body
    assert last(world.mock)["body"]["max_tokens"] == 77
    assert UsageRecord.objects.get().completion_tokens == 77


def test_system_and_developer_messages_become_anthropic_system_in_order(call, world):
    messages = [
        {"role": "system", "content": "S1"},
        {"role": "developer", "content": [{"type": "text", "text": "D1"}]},
        {"role": "user", "content": PROMPT},
        {"role": "assistant", "content": "ok"},
        {"role": "developer", "content": "D2"},
        {"role": "user", "content": "again"},
    ]
    answer = call(CHAT, {"model": "anthropic/claude-3-5-haiku-latest", "messages": messages}, oai(world.value))

    assert answer.status == 200
    sent = last(world.mock)["body"]
    assert sent["system"] == [{"type": "text", "text": t} for t in ("S1", "D1", "D2")]
    assert [m["role"] for m in sent["messages"]] == ["user", "assistant", "user"]


SCHEMA = {
    "type": "object",
    "$defs": {"Unit": {"type": "string", "enum": ["C", "F"]}, "Point": {"type": "array", "items": {"type": "number"}}},
    "properties": {
        "city": {"type": "string", "description": "ça, 東京"},
        "unit": {"anyOf": [{"$ref": "#/$defs/Unit"}, {"type": "null"}], "default": None},
        "where": {"$ref": "#/$defs/Point"},
        "tags": {"type": "object", "additionalProperties": {"type": "integer", "minimum": 0}},
    },
    "required": ["city"],
    "additionalProperties": False,
}


@pytest.mark.parametrize("target", ["anthropic/claude-3-5-haiku-latest", "gemini/gemini-2.5-flash"])
def test_a_tool_schema_arrives_unchanged(call, world, target):
    tools = [{"type": "function", "function": {"name": "weather", "description": "d", "parameters": SCHEMA}}]
    answer = call(CHAT, chat(target, tools=tools), oai(world.value))

    assert answer.status == 200, answer.body
    sent = last(world.mock)["body"]
    if target.startswith("anthropic"):
        assert sent["tools"] == [{"name": "weather", "description": "d", "input_schema": SCHEMA}]
    else:
        declaration = sent["tools"][0]["functionDeclarations"][0]
        assert declaration["parametersJsonSchema"] == SCHEMA


def test_n_above_one_to_anthropic_is_400_naming_n_and_nothing_is_sent(call, world):
    answer = call(CHAT, chat("anthropic/claude-3-5-haiku-latest", n=2), oai(world.value))

    assert answer.status == 400
    assert answer.json()["error"]["message"].startswith("n: ")
    assert last(world.mock) is None
    assert UsageRecord.objects.attempts().count() == 0


def test_a_gemini_built_in_tool_to_anthropic_is_400_in_gemini_shape(call, world):
    body = contents(tools=[{"googleSearch": {}}])
    answer = call(genai("anthropic/claude-3-5-haiku-latest"), body, goog(world.value))

    assert answer.status == 400
    error = answer.json()["error"]
    assert (error["code"], error["status"]) == (400, "INVALID_ARGUMENT")
    assert "tools[0].googleSearch" in error["message"]
    assert last(world.mock) is None and UsageRecord.objects.attempts().count() == 0


def test_a_gemini_candidate_count_refused_by_anthropic_names_the_gemini_field(call, world):
    body = contents(generationConfig={"candidateCount": 2, "maxOutputTokens": 5})
    answer = call(genai("anthropic/claude-3-5-haiku-latest"), body, goog(world.value))

    assert answer.status == 400
    assert last(world.mock) is None
    assert "generationConfig.candidateCount" in answer.json()["error"]["message"]


def test_embeddings_to_an_anthropic_model_are_400(call, world):
    body = {"model": "anthropic/claude-3-5-haiku-latest", "input": "hello"}
    answer = call("/v1/embeddings", body, oai(world.value))

    assert answer.status == 400 and "speaks the anthropic API" in answer.json()["error"]["message"]
    assert last(world.mock) is None and UsageRecord.objects.attempts().count() == 0


# --- 3. errors in the client's format --------------------------------------------------------------

GATEWAY_ERRORS = {
    401: ("virtual_key_required", "UNAUTHENTICATED"),
    403: ("model_blocked", "PERMISSION_DENIED"),
    402: ("budget_exceeded", "FAILED_PRECONDITION"),
}


def _refused_headers(status: int, provider: str, allowed_model: str, headers) -> dict[str, str]:
    """The client headers that get ``status`` for a request to ``provider``: no VK (401), a VK whose
    config allows only ``allowed_model`` (403 for another), a VK whose budget is below the reservation
    of ``allowed_model`` at 100 output tokens (402)."""
    if status == 401:
        return {}
    if status == 403:
        return headers(make_vk(config(provider, allowed=(allowed_model,))))
    price(provider, allowed_model)
    return headers(make_vk(config(provider), budgets=[{"max_limit": Decimal("0.05"), "reset_duration": "1d"}]))


@pytest.mark.parametrize("status", sorted(GATEWAY_ERRORS))
def test_gateway_errors_on_the_anthropic_route_are_anthropic_errors(call, world, status):
    headers = _refused_headers(status, "anthropic", "claude-3-5-haiku-latest", ant)
    model = "claude-3-opus-latest" if status == 403 else "claude-3-5-haiku-latest"
    answer = call(MESSAGES_PATH, message(model, max_tokens=100), headers)

    assert answer.status == status
    body = answer.json()
    assert body["type"] == "error" and body["status_code"] == status
    assert body["error"]["type"] == GATEWAY_ERRORS[status][0]
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    if status == 401:
        assert body["error"]["message"] == VK_REQUIRED
    if status == 403:
        assert "claude-3-opus-latest" in body["error"]["message"]
    assert last(world.mock) is None and UsageRecord.objects.attempts().count() == 0


@pytest.mark.parametrize("status", sorted(GATEWAY_ERRORS))
def test_gateway_errors_on_the_genai_route_are_gemini_errors(call, world, status):
    headers = _refused_headers(status, "gemini", "gemini-2.5-flash", goog)
    model = "gemini-2.5-pro" if status == 403 else "gemini-2.5-flash"
    body = contents(generationConfig={"maxOutputTokens": 100})
    answer = call(genai(model), body, headers)

    assert answer.status == status
    error = answer.json()["error"]
    assert (error["code"], error["status"]) == (status, GATEWAY_ERRORS[status][1])
    assert isinstance(error["message"], str) and error["message"]
    if status == 403:
        assert "gemini-2.5-pro" in error["message"]
    assert last(world.mock) is None and UsageRecord.objects.attempts().count() == 0


@pytest.mark.parametrize(
    ("path", "model", "status", "shape"),
    [
        (MESSAGES_PATH, "openai/gpt-fail-429", 429, ("anthropic", "rate_limit_error")),
        (MESSAGES_PATH, "gemini/gemini-fail-400", 400, ("anthropic", "invalid_request_error")),
        ("genai", "anthropic/claude-fail-400", 400, ("gemini", "INVALID_ARGUMENT")),
        ("genai", "openai/gpt-fail-429", 429, ("gemini", "RESOURCE_EXHAUSTED")),
        (CHAT, "anthropic/claude-fail-429", 429, ("openai", None)),
        (CHAT, "gemini/gemini-fail-400", 400, ("openai", None)),
    ],
)
def test_upstream_errors_through_translation_keep_status_and_message(call, world, path, model, status, shape):
    if path == "genai":
        answer = call(genai(model), contents(), goog(world.value))
    elif path == MESSAGES_PATH:
        answer = call(path, message(model), ant(world.value))
    else:
        answer = call(path, chat(model), oai(world.value))

    assert answer.status == status
    body = answer.json()
    expected = f"mock upstream failure {status}"
    client, kind = shape
    if client == "anthropic":
        assert body["type"] == "error" and body["error"] == {"type": kind, "message": expected}
    elif client == "gemini":
        assert body["error"] == {"code": status, "message": expected, "status": kind}
    else:
        assert body["error"]["message"] == expected
    if status == 429 and not model.startswith("anthropic/"):  # the mock's Anthropic errors have no Retry-After
        assert answer.headers.get("retry-after") == "1"
    row = UsageRecord.objects.get()
    assert (row.model, row.status_code, row.prompt_tokens, row.completion_tokens) == (model.split("/")[1], status, 0, 0)


@pytest.mark.parametrize(
    ("path", "model", "fallback"),
    [
        (MESSAGES_PATH, "openai/gpt-fail-429", "gemini/gemini-2.5-flash"),
        ("genai", "anthropic/claude-fail-429", "openai/gpt-4o"),
        (CHAT, "gemini/gemini-fail-429", "anthropic/claude-3-5-haiku-latest"),
    ],
)
def test_a_429_falls_back_to_a_provider_of_another_format(call, world, path, model, fallback):
    if path == "genai":
        answer = call(genai(model), contents(fallbacks=[fallback]), goog(world.value))
    elif path == MESSAGES_PATH:
        answer = call(path, message(model, fallbacks=[fallback]), ant(world.value))
    else:
        answer = call(path, chat(model, fallbacks=[fallback]), oai(world.value))

    assert answer.status == 200, answer.body
    body = answer.json()
    if path == "genai":
        assert body["candidates"][0]["content"]["parts"][0]["text"].startswith("mock")
    elif path == MESSAGES_PATH:
        assert body["type"] == "message" and body["content"][0]["text"] == "mock mock mock"
    else:
        assert body["choices"][0]["message"]["content"] == "mock mock mock"
    assert "fallbacks" not in last(world.mock)["body"]
    rows = sorted(UsageRecord.objects.values_list("provider", "model", "status_code"))
    assert rows == sorted([(*model.split("/"), 429), (*fallback.split("/"), 200)])


# --- 4. streams --------------------------------------------------------------------------------------


@pytest.mark.parametrize("model", ["anthropic/claude-3-5-haiku-latest", "gemini/gemini-2.5-flash"])
def test_a_translated_stream_reaches_an_openai_client(call, world, model):
    body = chat(model, stream=True, stream_options={"include_usage": True})
    answer = call(CHAT, body, oai(world.value))

    assert answer.status == 200 and answer.headers["content-type"] == "text/event-stream"
    chunks = events(answer.body)
    assert chunks[-1] == "[DONE]"
    assert all(c["object"] == "chat.completion.chunk" for c in chunks[:-1])
    assert openai_text(chunks) == "mock " * 3
    finishes = [ch["finish_reason"] for c in chunks[:-1] for ch in c["choices"] if ch["finish_reason"]]
    assert finishes == ["length"]
    usage = chunks[-2]
    assert usage["choices"] == [] and usage["usage"]["prompt_tokens"] == 10
    assert usage["usage"]["completion_tokens"] == 3
    row = UsageRecord.objects.get()
    assert (row.prompt_tokens, row.completion_tokens, row.status_code, row.streamed, row.estimated) == (
        10,
        3,
        200,
        True,
        False,
    )


def anthropic_event(payload: dict) -> bytes:
    return f"event: {payload['type']}\ndata: {json.dumps(payload)}\n\n".encode()


MESSAGE_START = {
    "type": "message_start",
    "message": {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "claude-3-5-haiku-latest",
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {"input_tokens": 9, "output_tokens": 1},
    },
}
BLOCK_START = {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}
BLOCK_DELTA = {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hello"}}
CUT_SHORT = [anthropic_event(e) for e in (MESSAGE_START, BLOCK_START, BLOCK_DELTA)]


def test_an_anthropic_stream_without_message_stop_ends_in_an_error_event(call, world, upstream_script):
    provider_update(provider=world.anthropic, base_url=upstream_script(CUT_SHORT))
    body = chat("anthropic/claude-3-5-haiku-latest", stream=True)
    answer = call(CHAT, body, oai(world.value))

    assert answer.status == 200
    chunks = events(answer.body)
    assert openai_text(chunks) == "Hello"
    assert "[DONE]" not in chunks  # never a silent, normal-looking end
    error = chunks[-1]["error"]
    assert error["code"] == 502 and "message_stop" in error["message"]
    row = UsageRecord.objects.get()
    assert (row.status_code, row.streamed, row.estimated) == (502, True, True)
    assert row.completion_tokens >= 1 and row.prompt_tokens > 0


def test_garbage_stream_chunks_do_not_cross_a_translation_and_an_empty_stream_is_an_error(call, world):
    """``mock_chunks`` is no OpenAI field: translated to Anthropic it is dropped, so the mock replays
    an empty 200 stream, which must end in an error event all the same (and cost nothing)."""
    chunks = [base64.b64encode(c).decode() for c in CUT_SHORT]
    body = chat("anthropic/garbage-stream", stream=True, mock_chunks=chunks)
    answer = call(CHAT, body, oai(world.value))

    assert answer.status == 200
    assert "mock_chunks" not in last(world.mock)["body"]
    assert [list(c) for c in events(answer.body)] == [["error"]]
    row = UsageRecord.objects.get()
    assert (row.status_code, row.streamed, row.cost, row.completion_tokens) == (502, True, 0, 0)


def test_an_anthropic_error_event_mid_stream_becomes_the_clients_error_event(call, world, upstream_script):
    overloaded = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    provider_update(provider=world.anthropic, base_url=upstream_script([*CUT_SHORT, anthropic_event(overloaded)]))
    answer = call(CHAT, chat("anthropic/claude-3-5-haiku-latest", stream=True), oai(world.value))

    assert answer.status == 200
    chunks = events(answer.body)
    assert openai_text(chunks) == "Hello" and "[DONE]" not in chunks
    assert chunks[-1] == {
        "error": {"message": "upstream provider 'anthropic': Overloaded", "type": "upstream_error", "code": 529}
    }
    row = UsageRecord.objects.get()
    assert row.status_code == 502 and row.estimated and row.streamed


def _gemini_frame(text: str, usage: dict, finish: str | None = None) -> dict:
    candidate: dict = {"content": {"role": "model", "parts": [{"text": text}]}, "index": 0}
    if finish:
        candidate["finishReason"] = finish
    return {"candidates": [candidate], "usageMetadata": usage, "modelVersion": "gemini-2.5-flash", "responseId": "r1"}


GEMINI_FINAL_USAGE = {
    "promptTokenCount": 12,
    "candidatesTokenCount": 4,
    "thoughtsTokenCount": 3,
    "cachedContentTokenCount": 5,
    "toolUsePromptTokenCount": 2,
    "totalTokenCount": 21,
}


def gemini_crlf_chunks() -> list[bytes]:
    """Two Gemini SSE events framed with CRLF, cut between the CR and LF of the first event's blank
    line and inside the UTF-8 bytes of '東'."""
    first = _gemini_frame("café ", {"promptTokenCount": 12, "candidatesTokenCount": 1, "totalTokenCount": 13})
    second = _gemini_frame("東京", GEMINI_FINAL_USAGE, "STOP")
    raw = b"".join(b"data: " + json.dumps(f, ensure_ascii=False).encode() + b"\r\n\r\n" for f in (first, second))
    cr = raw.index(b"\r\n\r\n") + 3  # after "\r\n\r"
    char = raw.index("東".encode()) + 1  # inside the character
    pieces = [raw[:cr], raw[cr:char], raw[char:]]
    assert pieces[0].endswith(b"\r") and pieces[1].startswith(b"\n")
    return pieces


@pytest.mark.parametrize("source", ["mock", "scripted"])
def test_a_crlf_gemini_stream_split_across_reads_passes_through_and_is_charged_exactly(
    call, world, upstream_script, source
):
    chunks = gemini_crlf_chunks()
    body = contents(generationConfig={"maxOutputTokens": 8})
    if source == "mock":  # the mock replays the chunks as HTTP chunks (the reads may coalesce)
        model = "gemini-garbage-stream"
        body["mock_chunks"] = [base64.b64encode(c).decode() for c in chunks]
    else:  # a separate read on the proxy's side for each piece
        model = "gemini-2.5-flash"
        provider_update(provider=world.gemini, base_url=upstream_script(chunks))
    answer = call(genai(model, "streamGenerateContent"), body, goog(world.value))

    assert answer.status == 200 and answer.headers["content-type"] == "text/event-stream"
    # The same events byte for byte; the relay writes every line ending as LF (proxy.sse).
    assert answer.body == b"".join(chunks).replace(b"\r\n", b"\n")
    assert "東京" in answer.body.decode()
    row = UsageRecord.objects.get()
    assert (row.prompt_tokens, row.completion_tokens, row.cached_tokens, row.total_tokens) == (14, 7, 5, 21)
    assert (row.status_code, row.streamed, row.estimated, row.request_type) == (200, True, False, "generate_content")


def test_a_crlf_gemini_stream_split_across_reads_is_translated_for_an_openai_client(call, world, upstream_script):
    provider_update(provider=world.gemini, base_url=upstream_script(gemini_crlf_chunks()))
    body = chat("gemini/gemini-2.5-flash", stream=True, stream_options={"include_usage": True})
    answer = call(CHAT, body, oai(world.value))

    assert answer.status == 200
    chunks = events(answer.body)
    assert openai_text(chunks) == "café 東京" and chunks[-1] == "[DONE]"
    usage = chunks[-2]["usage"]
    assert (usage["prompt_tokens"], usage["completion_tokens"]) == (14, 7)
    assert usage["prompt_tokens_details"]["cached_tokens"] == 5
    row = UsageRecord.objects.get()
    assert (row.prompt_tokens, row.completion_tokens, row.cached_tokens) == (14, 7, 5)
    assert (row.status_code, row.streamed, row.estimated) == (200, True, False)


# --- 5. usage ----------------------------------------------------------------------------------------


def test_gemini_passthrough_usage_metadata_with_cache_and_thoughts(call, world):
    body = {"contents": [{"role": "user", "parts": [{"text": "y" * 80}]}], "generationConfig": {"maxOutputTokens": 6}}
    answer = call(genai("gemini-2.5-flash-cached-thinking"), body, goog(world.value))

    assert answer.status == 200, answer.body
    payload = answer.json()
    assert "extra_fields" not in payload
    meta = payload["usageMetadata"]
    assert (meta["promptTokenCount"], meta["candidatesTokenCount"]) == (20, 6)
    assert (meta["thoughtsTokenCount"], meta["cachedContentTokenCount"]) == (5, 10)
    row = UsageRecord.objects.get()
    assert (row.provider, row.model) == ("gemini", "gemini-2.5-flash-cached-thinking")
    assert (row.prompt_tokens, row.completion_tokens, row.cached_tokens, row.total_tokens) == (20, 11, 10, 31)
    assert not row.estimated and not row.streamed


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
def test_anthropic_cache_figures_reach_an_openai_client_once(call, world, stream):
    # 80 characters: 20 prompt tokens = 7 input + 10 cache reads + 3 cache writes at the mock.
    body = {
        "model": "anthropic/claude-cached",
        "messages": [{"role": "user", "content": "z" * 80}],
        "max_tokens": 4,
    }
    if stream:
        body |= {"stream": True, "stream_options": {"include_usage": True}}
    answer = call(CHAT, body, oai(world.value))

    assert answer.status == 200, answer.body
    usage = events(answer.body)[-2]["usage"] if stream else answer.json()["usage"]
    assert (usage["prompt_tokens"], usage["completion_tokens"], usage["total_tokens"]) == (20, 4, 24)
    assert usage["prompt_tokens_details"]["cached_tokens"] == 10
    row = UsageRecord.objects.get()
    assert (row.prompt_tokens, row.completion_tokens, row.cached_tokens, row.total_tokens) == (20, 4, 10, 24)
    assert row.streamed is stream and not row.estimated


# --- 6. accounting on the client's body ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "provider", "priced"),
    [("gemini-2.5-flash", "gemini", "gemini-2.5-flash"), ("openai/gpt-4o-mini", "openai", "gpt-4o-mini")],
    ids=["passthrough", "translated"],
)
def test_a_gemini_request_reserves_its_max_output_tokens(call, world, model, provider, priced):
    price(provider, priced)  # $0.001 per output token, input free: the reservation is the output cap
    value = make_vk(config(provider), budgets=[{"max_limit": Decimal("0.05"), "reset_duration": "1d"}])

    def ask(config_: dict | None) -> Answer:
        body = contents(generationConfig=config_) if config_ else contents()
        return call(genai(model), body, goog(value))

    for refused in (None, {"maxOutputTokens": 51}, {"maxOutputTokens": 25, "candidateCount": 3}):
        answer = ask(refused)  # default cap (4096), 51 tokens, 3 x 25 tokens: all above $0.05
        assert answer.status == 402, (refused, answer.body)
        error = answer.json()["error"]
        assert (error["code"], error["status"]) == (402, "FAILED_PRECONDITION")
    assert last(world.mock) is None and UsageRecord.objects.attempts().count() == 0

    answer = ask({"maxOutputTokens": 50})  # exactly $0.05
    assert answer.status == 200, answer.body
    row = UsageRecord.objects.attempts().get()
    assert row.completion_tokens == 50 and row.cost == Decimal("0.05")


# --- 7. token counts and model lists -------------------------------------------------------------------


def test_count_tokens_for_an_openai_model_is_the_gateways_estimate(call, world):
    body = {
        "model": "openai/gpt-4o",
        "system": "Be brief.",
        "messages": [{"role": "user", "content": "hello " * 50}],
        "tools": [{"name": "weather", "description": "w", "input_schema": SCHEMA}],
    }
    answer = call(COUNT_TOKENS, body, ant(world.value))

    assert answer.status == 200, answer.body
    expected = estimate_prompt_tokens(anthropic_format.request_to_openai(body, "openai/gpt-4o"))
    assert answer.json() == {"input_tokens": expected} and expected > 75
    assert last(world.mock) is None
    assert UsageRecord.objects.attempts().count() == 0


def test_count_tokens_for_an_anthropic_model_passes_through(call, world):
    body = {"model": "claude-3-5-haiku-latest", "messages": [{"role": "user", "content": "q" * 48}]}
    answer = call(COUNT_TOKENS, body, ant(world.value))

    assert answer.status == 200
    assert answer.json() == {"input_tokens": 12}
    request = last(world.mock)
    assert request["path"] == "/v1/messages/count_tokens" and request["body"] == body
    assert request["headers"]["x-api-key"] == KEYS["anthropic"]
    assert UsageRecord.objects.attempts().count() == 0


def test_gemini_count_tokens_for_an_openai_model_is_the_gateways_estimate(call, world):
    body = {"contents": [{"role": "user", "parts": [{"text": "hello " * 50}]}]}
    answer = call(genai("openai/gpt-4o", "countTokens"), body, goog(world.value))

    assert answer.status == 200
    expected = estimate_prompt_tokens(gemini_format.request_to_openai(body, "openai/gpt-4o"))
    assert answer.json() == {"totalTokens": expected} and expected > 75
    assert last(world.mock) is None and UsageRecord.objects.attempts().count() == 0


def test_gemini_count_tokens_in_the_generate_content_request_form(call, world):
    inner = {"model": "models/gpt-4o", "contents": [{"role": "user", "parts": [{"text": "hello " * 50}]}]}
    answer = call(genai("openai/gpt-4o", "countTokens"), {"generateContentRequest": inner}, goog(world.value))

    assert answer.status == 200
    assert answer.json()["totalTokens"] >= 75


def test_genai_model_list_names_every_allowed_providers_models(call, world):
    add_provider(world.mock.url, "groq", "groq")  # configured, but not allowed to this VK
    answer = call("/genai/v1beta/models", None, goog(world.value), method="GET")

    assert answer.status == 200
    names = [m["name"] for m in answer.json()["models"]]
    expected = [f"models/anthropic/{m}" for m in BASE_MODELS]
    expected += [f"models/gemini/{m}" for m in GEMINI_MODELS] + [f"models/openai/{m}" for m in MODELS]
    assert names == expected
    entry = answer.json()["models"][0]
    assert "generateContent" in entry["supportedGenerationMethods"]


@pytest.mark.parametrize(
    ("path", "name"),
    [("gemini-2.5-flash", "models/gemini/gemini-2.5-flash"), ("openai/gpt-4o", "models/openai/gpt-4o")],
)
def test_genai_one_model(call, world, path, name):
    for version in ("v1beta", "v1"):
        answer = call(f"/genai/{version}/models/{path}", None, goog(world.value), method="GET")
        assert answer.status == 200, answer.body
        assert answer.json()["name"] == name


def test_genai_unknown_model_is_404_in_gemini_shape(call, world):
    answer = call("/genai/v1beta/models/no-such-model", None, goog(world.value), method="GET")

    assert answer.status == 404
    error = answer.json()["error"]
    assert (error["code"], error["status"]) == (404, "NOT_FOUND") and "no-such-model" in error["message"]


def test_anthropic_model_list_is_in_anthropics_shape(call, world):
    answer = call("/anthropic/v1/models", None, ant(world.value), method="GET")

    assert answer.status == 200
    body = answer.json()
    ids = [m["id"] for m in body["data"]]
    assert "anthropic/claude-3-5-haiku-latest" in ids and "gemini/gemini-2.5-flash" in ids and "openai/gpt-4o" in ids
    assert all(m["type"] == "model" and m["display_name"] == m["id"] and m["created_at"] for m in body["data"])
    assert (body["has_more"], body["first_id"], body["last_id"]) == (False, ids[0], ids[-1])


def test_v1_models_follow_the_vks_allowed_models(call, world):
    value = make_vk(
        config("openai", 1.0, allowed=("gpt-4o", "gpt-4o-mini", "not-offered")),
        config("anthropic", allowed=("claude-3-5-haiku-latest",)),
    )
    answer = call("/v1/models", None, oai(value), method="GET")

    assert answer.status == 200
    ids = [m["id"] for m in answer.json()["data"]]
    assert ids == ["anthropic/claude-3-5-haiku-latest", "openai/gpt-4o", "openai/gpt-4o-mini"]


@pytest.mark.parametrize("fault", ["hang", "refused"])
def test_a_provider_that_cannot_list_is_listed_from_its_configured_names(call, world, settings, fault):
    settings.PROXY_MODELS_LIST_TIMEOUT_SECONDS = 0.3
    listener = socket.create_server(("127.0.0.1", 0))  # accepts connections (backlog), never answers
    port = listener.getsockname()[1]
    if fault == "refused":
        listener.close()
    try:
        stuck = provider_create(name="stuck", base_url=f"http://127.0.0.1:{port}", timeout_seconds=5.0)
        provider_key_create(provider=stuck, name="k", value="sk-stuck", models=["stuck-a", "stuck-b"])
        value = make_vk(config("openai", 1.0, allowed=("gpt-4o",)), config("stuck"))
        started = time.monotonic()
        answer = call("/v1/models", None, oai(value), method="GET")
        elapsed = time.monotonic() - started
    finally:
        listener.close()

    assert answer.status == 200
    assert [m["id"] for m in answer.json()["data"]] == ["openai/gpt-4o", "stuck/stuck-a", "stuck/stuck-b"]
    assert elapsed < 0.3 + 1.0


# --- 8. Azure-style inbound ---------------------------------------------------------------------------


def test_azure_inbound_path_carries_a_provider_prefixed_deployment(world):
    # As a server hands it over: PATH_INFO "/openai/deployments/openai/gpt-4o/chat/completions".
    assert find("/openai/deployments/openai/gpt-4o/chat/completions") == (ROUTES[CHAT], "openai/gpt-4o")
    url = "/openai/deployments/openai%2Fgpt-4o/chat/completions?api-version=2024-10-21"
    body = {"messages": [{"role": "user", "content": PROMPT}], "max_tokens": 3}
    answer = as_server(url, body, oai(world.value))

    assert answer.status == 200, answer.body
    extra = answer.json()["extra_fields"]
    assert (extra["provider"], extra["resolved_model_used"]) == ("openai", "gpt-4o")
    request = last(world.mock)
    assert request["path"] == "/v1/chat/completions" and request["body"]["model"] == "gpt-4o"
    row = UsageRecord.objects.get()
    assert (row.provider, row.model, row.request_type, row.status_code) == ("openai", "gpt-4o", "chat_completion", 200)


def test_azure_inbound_unprefixed_deployment_uses_the_vks_weighted_config(call, mock):
    add_provider(mock.url, "anthropic", key=KEYS["anthropic"])
    add_provider(mock.url, "openai", key=KEYS["openai"])
    value = make_vk(config("anthropic", 1.0), config("openai"))  # weighted: anthropic only
    body = {"messages": [{"role": "user", "content": PROMPT}], "max_tokens": 3}
    answer = call("/openai/deployments/claude-3-5-haiku-latest/chat/completions", body, oai(value))

    assert answer.status == 200, answer.body
    assert answer.json()["object"] == "chat.completion"
    assert answer.json()["choices"][0]["message"]["content"] == "mock mock mock"
    assert answer.json()["extra_fields"]["provider"] == "anthropic"
    assert last(mock)["path"] == "/v1/messages"
    row = UsageRecord.objects.get()
    assert (row.provider, row.model, row.status_code) == ("anthropic", "claude-3-5-haiku-latest", 200)


def test_azure_inbound_accepts_the_vk_in_the_api_key_header_as_azure_sdks_send_it(world):
    url = "/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21"
    body = {"messages": [{"role": "user", "content": PROMPT}], "max_tokens": 3}
    answer = as_server(url, body, {"api-key": world.value})

    assert answer.status == 200, answer.body
    assert "api-key" not in last(world.mock)["headers"]
