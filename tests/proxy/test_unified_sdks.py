"""One API over every provider: the official SDKs of each client format against every provider type.

A live gateway (gunicorn) sits in front of the mock upstream (``bench.mock_upstream``), on which five
providers are registered: ``openai`` (type openai), ``anthropic``, ``gemini``, ``azure`` (per-key
endpoint and deployments) and ``mistral`` (an OpenAI-wire preset with quirks). One virtual key may
use them all. Each client format (the ``openai`` SDK, ``openai.AzureOpenAI``, the ``anthropic``
SDK and ``google-genai``) calls models of every type; the SDK's own models and stream accumulators
parse what the gateway translated, ``GET /_mock/stats`` shows what reached the upstream, and the
ledger (``UsageRecord``) shows what was charged, at the shipped catalog's prices.

The mock's usage is deterministic: prompt tokens = characters of the prompt text // 4 (``PROMPT``:
12 in every format, as the translated request carries the same text), completion tokens = the
request's output cap (+5 with ``thinking``). Words in the model name select behaviours (``tool``,
``parallel-tool``, ``refusal``, ``thinking``, ``fail-400``, ``reset-mid-stream``...).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import anthropic
import openai
import pytest
from google import genai
from google.genai import errors as genai_errors
from google.genai import types

from bench.mock_upstream import (
    ANTHROPIC_SIGNATURE,
    BASE_MODELS,
    GEMINI_MODELS,
    MODELS,
    REASONING_TOKENS,
    REFUSAL,
    THOUGHT,
    TOOL_ARGS,
)
from governance.models import ModelPrice, UsageRecord
from governance.pricing import catalog_rows
from governance.services import provider_create, provider_key_create, virtual_key_create
from tests.proxy.conftest_enforcement import settled

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

# --- shared setup and helpers -------------------------------------------------------------------------

PROMPT = "What is the weather like in Paris today, please?"  # 48 characters: 12 prompt tokens
PROMPT_TOKENS = 12
MESSAGES = [{"role": "user", "content": PROMPT}]
AZURE_API_VERSION = "2024-10-21"
UPSTREAM_KEYS = {
    "openai": "sk-upstream-openai-secret",
    "anthropic": "sk-ant-upstream-secret",
    "gemini": "gemini-upstream-secret",
    "azure": "azure-upstream-secret",
    "mistral": "mistral-upstream-secret",
}
# The model each target is called with, as ``provider/model``; mock words are added as suffixes
# (``model("anthropic", "tool")`` = ``anthropic/claude-3-5-haiku-tool``: unpriced, fine on a VK
# without budgets). The azure key maps ``gpt-4o-mini`` to a deployment of another name.
TARGETS = {
    "openai": "openai/gpt-4o-mini",
    "anthropic": "anthropic/claude-3-5-haiku",
    "gemini": "gemini/gemini-2.5-flash",
    "azure": "azure/gpt-4o",
    "mistral": "mistral/mistral-small",
}
ALL = list(TARGETS)
# Where a JSON chat request for ``TARGETS[target]`` lands on the mock, in the provider's own API.
UPSTREAM_PATHS = {
    "openai": "/v1/chat/completions",
    "anthropic": "/v1/messages",
    "gemini": "/v1beta/models/gemini-2.5-flash:generateContent",
    "azure": "/openai/deployments/gpt-4o/chat/completions",
    "mistral": "/v1/chat/completions",
}
TRANSLATED_FOR_OPENAI = ["anthropic", "gemini"]  # the targets an OpenAI-format client reaches translated
AZURE_DEPLOYMENTS = {"gpt-4o": "gpt-4o", "gpt-4o-mini": "mini-deployment"}
# Mistral refuses ``stream_options`` (the gateway never sends it) and reports usage in its last chunk
# anyway; the mock, like OpenAI, reports a stream's usage only when asked, so a mistral stream through
# it carries no usage and is charged at the gateway's estimate.
STREAM_USAGE_UNREPORTED = {"mistral"}

OPENAI_TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "weather",
            "description": "The weather in a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}, "note": {"type": "string"}},
                "required": ["city"],
            },
        },
    },
    {"type": "function", "function": {"name": "clock", "parameters": {"type": "object", "properties": {}}}},
]
ANTHROPIC_TOOLS = [{"name": t["function"]["name"], "input_schema": t["function"]["parameters"]} for t in OPENAI_TOOLS]
GEMINI_TOOLS = [
    types.Tool(
        function_declarations=[
            types.FunctionDeclaration(name=t["function"]["name"], parameters_json_schema=t["function"]["parameters"])
            for t in OPENAI_TOOLS
        ]
    )
]
NO_AFC = types.AutomaticFunctionCallingConfig(disable=True)


def model(target: str, *words: str) -> str:
    return "-".join((TARGETS[target], *words))


@dataclass
class Live:
    vk: Any
    value: str


@pytest.fixture
def live(gateway, mock) -> Live:
    """The five providers on the mock, the shipped price catalog, and one VK allowed them all
    (``openai`` weighted: an unprefixed model on ``/v1`` or an Azure-style path goes there)."""
    # The tables are emptied between transactional tests: load the catalog again.
    ModelPrice.objects.bulk_create([ModelPrice(**row) for row in catalog_rows()])
    for name in ("openai", "anthropic", "gemini", "mistral"):
        provider = provider_create(name=name, base_url=mock.url, provider_type=name, timeout_seconds=5.0)
        provider_key_create(provider=provider, name="main", value=UPSTREAM_KEYS[name])
    azure = provider_create(name="azure", provider_type="azure", timeout_seconds=5.0)
    provider_key_create(
        provider=azure,
        name="main",
        value=UPSTREAM_KEYS["azure"],
        azure_key_config={"endpoint": mock.url, "api_version": AZURE_API_VERSION, "deployments": AZURE_DEPLOYMENTS},
    )
    configs = [
        {"provider": name, "weight": 1.0 if name == "openai" else None, "allowed_models": ["*"], "key_ids": ["*"]}
        for name in TARGETS
    ]
    vk, value = virtual_key_create(name="unified", provider_configs=configs)
    return Live(vk, value)


def oai(gateway, live: Live) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=live.value, max_retries=0, timeout=15)


def azure_sdk(gateway, **auth: str) -> openai.AzureOpenAI:
    return openai.AzureOpenAI(
        azure_endpoint=gateway.url, api_version=AZURE_API_VERSION, max_retries=0, timeout=15, **auth
    )


def claude(gateway, live: Live) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=f"{gateway.url}/anthropic", api_key=live.value, max_retries=0, timeout=15)


def gem(gateway, live: Live, api_version: str | None = None) -> genai.Client:
    """The SDK calls ``/genai/v1/models/...`` by default (``api_version="v1beta"``: ``/genai/v1beta/...``).
    Keep the client in a variable while it is used: a collected Client closes its HTTP client."""
    options = types.HttpOptions(base_url=f"{gateway.url}/genai", timeout=15_000, api_version=api_version)
    return genai.Client(api_key=live.value, http_options=options)


def gem_config(max_tokens: int, **extra: Any) -> types.GenerateContentConfig:
    return types.GenerateContentConfig(max_output_tokens=max_tokens, automatic_function_calling=NO_AFC, **extra)


def upstream(mock) -> dict[str, Any]:
    """What reached the mock last: ``{"method", "path", "query", "headers", "body"}``."""
    return mock.stats()["last_request"]


def catalog_price(provider: str, name: str) -> tuple[Decimal, Decimal]:
    """(input, output) USD per token of the shipped catalog's row."""
    [row] = [r for r in catalog_rows() if (r["provider"], r["model"]) == (provider, name)]
    return row["input_cost_per_token"], row["output_cost_per_token"]


def catalog_cost(provider: str, name: str, prompt: int, completion: int) -> Decimal:
    price_in, price_out = catalog_price(provider, name)
    return prompt * price_in + completion * price_out


def one_record(live: Live) -> UsageRecord:
    [record] = settled(1, vk=live.vk)
    return record


def record_facts(record: UsageRecord) -> tuple:
    return (
        record.provider,
        record.model,
        record.request_type,
        record.status_code,
        record.streamed,
        record.prompt_tokens,
        record.completion_tokens,
    )


# --- 1. the openai SDK to every provider type ---------------------------------------------------------


@pytest.mark.parametrize("target", ALL)
def test_openai_sdk_json_chat_reaches_every_provider_type(gateway, mock, live, target):
    reply = oai(gateway, live).chat.completions.create(model=TARGETS[target], messages=MESSAGES, max_tokens=3)

    choice = reply.choices[0]
    assert (choice.message.role, choice.message.content, choice.finish_reason) == (
        "assistant",
        "mock mock mock",
        "length",
    )
    usage = reply.usage
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (PROMPT_TOKENS, 3, PROMPT_TOKENS + 3)
    assert upstream(mock)["path"] == UPSTREAM_PATHS[target]
    name = TARGETS[target].split("/", 1)[1]
    assert record_facts(one_record(live)) == (target, name, "chat_completion", 200, False, PROMPT_TOKENS, 3)


@pytest.mark.parametrize("target", ALL)
def test_openai_sdk_stream_accumulates_one_tool_call(gateway, mock, live, target):
    with oai(gateway, live).chat.completions.stream(
        model=model(target, "tool"), messages=MESSAGES, tools=OPENAI_TOOLS, max_tokens=5
    ) as stream:
        final = stream.get_final_completion()

    choice = final.choices[0]
    assert choice.finish_reason == "tool_calls"
    [call] = choice.message.tool_calls
    assert call.type == "function" and call.id
    assert call.function.name == "weather"
    assert json.loads(call.function.arguments) == TOOL_ARGS[0] == {"city": "Paris", "note": "café ☕ — ok"}
    record = one_record(live)
    assert (record.provider, record.status_code, record.streamed) == (target, 200, True)
    if target in STREAM_USAGE_UNREPORTED:
        assert record.estimated
    else:
        assert (record.prompt_tokens, record.completion_tokens, record.estimated) == (PROMPT_TOKENS, 5, False)


@pytest.mark.parametrize("target", ALL)
def test_openai_sdk_stream_accumulates_parallel_tool_calls_in_order(gateway, mock, live, target):
    with oai(gateway, live).chat.completions.stream(
        model=model(target, "parallel-tool"), messages=MESSAGES, tools=OPENAI_TOOLS, max_tokens=5
    ) as stream:
        final = stream.get_final_completion()

    choice = final.choices[0]
    assert choice.finish_reason == "tool_calls"
    calls = choice.message.tool_calls
    assert [c.function.name for c in calls] == ["weather", "clock"]
    assert [json.loads(c.function.arguments) for c in calls] == list(TOOL_ARGS)
    assert len({c.id for c in calls}) == 2 and all(c.id for c in calls)
    assert one_record(live).status_code == 200


# What the mock answers for the two tool results below, by the upstream's format (Gemini: the
# compact JSON of each functionResponse.response; a result that is not a JSON object is wrapped).
TOOL_RESULTS = ('{"temp_c": 21}', "12:00")
RESULTS_ANSWER = {
    "openai": 'tool results: {"temp_c": 21} | 12:00',
    "anthropic": 'tool results: {"temp_c": 21} | 12:00',
    "gemini": 'tool results: {"temp_c":21} | {"result":"12:00"}',
}


@pytest.mark.parametrize("target", ALL)
def test_openai_sdk_multi_turn_tool_results_reach_the_upstream_grouped(gateway, mock, live, target):
    client = oai(gateway, live)
    first = client.chat.completions.create(
        model=model(target, "parallel-tool"), messages=MESSAGES, tools=OPENAI_TOOLS, max_tokens=5
    )
    assistant = first.choices[0].message
    assert first.choices[0].finish_reason == "tool_calls"
    calls = assistant.tool_calls
    assert [c.function.name for c in calls] == ["weather", "clock"]
    history = [
        *MESSAGES,
        assistant.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": calls[0].id, "content": TOOL_RESULTS[0]},
        {"role": "tool", "tool_call_id": calls[1].id, "content": TOOL_RESULTS[1]},
    ]

    second = client.chat.completions.create(model=TARGETS[target], messages=history, tools=OPENAI_TOOLS, max_tokens=5)

    wire = {"anthropic": "anthropic", "gemini": "gemini"}.get(target, "openai")
    assert second.choices[0].message.content == RESULTS_ANSWER[wire]
    assert second.choices[0].finish_reason == "stop"
    sent = upstream(mock)["body"]
    if wire == "anthropic":
        *_, turn, results = sent["messages"]
        assert turn["role"] == "assistant" and results["role"] == "user"
        uses = [b for b in turn["content"] if b["type"] == "tool_use"]
        assert [b["id"] for b in uses] == [c.id for c in calls] == ["toolu_mock0", "toolu_mock1"]
        assert [b["input"] for b in uses] == list(TOOL_ARGS)
        # Both results in ONE user message, answering the tool_use ids of the previous turn.
        assert [b["type"] for b in results["content"]] == ["tool_result", "tool_result"]
        assert [b["tool_use_id"] for b in results["content"]] == [b["id"] for b in uses]
        assert [b["content"] for b in results["content"]] == list(TOOL_RESULTS)
    elif wire == "gemini":
        *_, turn, results = sent["contents"]
        assert turn["role"] == "model" and results["role"] == "user"
        assert [p["functionCall"]["name"] for p in turn["parts"]] == ["weather", "clock"]
        assert [p["functionCall"]["args"] for p in turn["parts"]] == list(TOOL_ARGS)
        responses = [p["functionResponse"] for p in results["parts"]]
        assert [r["name"] for r in responses] == ["weather", "clock"]
        assert [r["response"] for r in responses] == [{"temp_c": 21}, {"result": "12:00"}]
    else:
        *_, turn, result0, result1 = sent["messages"]
        sent_ids = [c["id"] for c in turn["tool_calls"]]
        assert [result0["tool_call_id"], result1["tool_call_id"]] == sent_ids
        if target == "mistral":  # ids of exactly nine letters or digits, mapped the same on both turns
            assert all(len(i) == 9 and i.isalnum() for i in sent_ids)
        else:
            assert sent_ids == [c.id for c in calls] == ["call_mock0", "call_mock1"]
    assert [r.status_code for r in settled(2, vk=live.vk)] == [200, 200]


@pytest.mark.parametrize("target", TRANSLATED_FOR_OPENAI)
def test_openai_sdk_refusal_of_a_translated_upstream_ends_with_content_filter(gateway, mock, live, target):
    reply = oai(gateway, live).chat.completions.create(model=model(target, "refusal"), messages=MESSAGES, max_tokens=3)

    choice = reply.choices[0]
    assert choice.finish_reason == "content_filter"
    assert not choice.message.tool_calls
    if target == "anthropic":  # the refusal's text reaches the client
        assert REFUSAL in (choice.message.content, choice.message.refusal)
    else:  # Gemini's candidate blocked with finishReason SAFETY carries no text at all
        assert not choice.message.content
    assert one_record(live).status_code == 200


def test_openai_sdk_refusal_of_an_anthropic_upstream_is_message_refusal(gateway, mock, live):
    reply = oai(gateway, live).chat.completions.create(
        model=model("anthropic", "refusal"), messages=MESSAGES, max_tokens=3
    )

    assert one_record(live).status_code == 200
    message = reply.choices[0].message
    assert (message.refusal, message.content) == (REFUSAL, None)
    # Streamed, Anthropic says "refusal" only in its last event, after the text went out as content:
    # the stream ends with finish_reason content_filter.
    chunks = list(
        oai(gateway, live).chat.completions.create(
            model=model("anthropic", "refusal"), messages=MESSAGES, max_tokens=3, stream=True
        )
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == REFUSAL
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "content_filter"
    assert len(settled(2, vk=live.vk)) == 2


@pytest.mark.parametrize("target", ["openai", "anthropic", "gemini", "azure"])
@pytest.mark.parametrize("include_usage", [True, False])
def test_openai_sdk_stream_has_a_usage_chunk_only_when_asked(gateway, mock, live, target, include_usage):
    options = {"stream_options": {"include_usage": True}} if include_usage else {}
    stream = oai(gateway, live).chat.completions.create(
        model=TARGETS[target], messages=MESSAGES, max_tokens=4, stream=True, **options
    )
    chunks = list(stream)

    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices).split() == ["mock"] * 4
    usage_only = [c for c in chunks if not c.choices and c.usage is not None]
    if include_usage:
        assert len(usage_only) == 1 and chunks[-1] is usage_only[0]
        usage = chunks[-1].usage
        assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (PROMPT_TOKENS, 4, 16)
    else:
        assert usage_only == []
        assert all(c.usage is None for c in chunks)
    record = one_record(live)
    assert (record.streamed, record.prompt_tokens, record.completion_tokens, record.estimated) == (
        True,
        PROMPT_TOKENS,
        4,
        False,
    )


def test_openai_sdk_stream_of_an_azure_provider_has_choices_in_every_chunk(gateway, mock, live):
    stream = oai(gateway, live).chat.completions.create(
        model=TARGETS["azure"], messages=MESSAGES, max_tokens=3, stream=True
    )
    chunks = list(stream)

    assert one_record(live).status_code == 200
    assert [c.choices[0].delta.content for c in chunks] == ["mock "] * 3


# --- 2. Azure: the AzureOpenAI SDK in front, an Azure provider behind ----------------------------------


@pytest.mark.parametrize("auth", ["api_key", "azure_ad_token"])
def test_azure_sdk_carries_the_vk_as_api_key_or_as_a_bearer_token(gateway, mock, live, auth):
    # api_key=VK is sent as ``api-key: VK`` (the README's form), azure_ad_token=VK as ``Authorization: Bearer``.
    client = azure_sdk(gateway, **{auth: live.value})

    reply = client.chat.completions.create(model=TARGETS["anthropic"], messages=MESSAGES, max_tokens=2)

    assert reply.choices[0].message.content == "mock mock"
    sent = upstream(mock)
    assert (sent["path"], sent["headers"]["x-api-key"]) == ("/v1/messages", UPSTREAM_KEYS["anthropic"])
    assert live.value not in json.dumps(sent)
    assert record_facts(one_record(live))[:4] == ("anthropic", "claude-3-5-haiku", "chat_completion", 200)


@pytest.mark.parametrize("target", TRANSLATED_FOR_OPENAI)
def test_azure_sdk_reaches_a_translated_provider_json_and_streamed(gateway, mock, live, target):
    client = azure_sdk(gateway, api_key=live.value)

    reply = client.chat.completions.create(model=TARGETS[target], messages=MESSAGES, max_tokens=2)
    assert upstream(mock)["path"] == UPSTREAM_PATHS[target]
    with client.chat.completions.stream(
        model=model(target, "tool"), messages=MESSAGES, tools=OPENAI_TOOLS, max_tokens=3
    ) as stream:
        final = stream.get_final_completion()

    assert reply.choices[0].message.content == "mock mock"
    assert reply.usage.prompt_tokens == PROMPT_TOKENS
    [call] = final.choices[0].message.tool_calls
    assert (call.function.name, json.loads(call.function.arguments)) == ("weather", TOOL_ARGS[0])
    records = settled(2, vk=live.vk)
    assert [(r.provider, r.request_type, r.streamed, r.status_code) for r in records] == [
        (target, "chat_completion", False, 200),
        (target, "chat_completion", True, 200),
    ]


def test_azure_sdk_bare_deployment_name_goes_to_the_weighted_provider(gateway, mock, live):
    client = azure_sdk(gateway, api_key=live.value)

    reply = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, max_tokens=2)

    assert reply.choices[0].message.content == "mock mock"
    sent = upstream(mock)
    assert (sent["path"], sent["body"]["model"]) == ("/v1/chat/completions", "gpt-4o-mini")
    assert record_facts(one_record(live)) == (
        "openai",
        "gpt-4o-mini",
        "chat_completion",
        200,
        False,
        PROMPT_TOKENS,
        2,
    )


@pytest.mark.parametrize(("name", "deployment"), [("gpt-4o", "gpt-4o"), ("gpt-4o-mini", "mini-deployment")])
def test_azure_upstream_gets_its_deployment_path_api_version_and_api_key(gateway, mock, live, name, deployment):
    reply = oai(gateway, live).chat.completions.create(model=f"azure/{name}", messages=MESSAGES, max_tokens=2)

    assert reply.choices[0].message.content == "mock mock"
    sent = upstream(mock)
    assert sent["path"] == f"/openai/deployments/{deployment}/chat/completions"
    assert f"api-version={AZURE_API_VERSION}" in sent["query"].split("&")
    assert sent["headers"]["api-key"] == UPSTREAM_KEYS["azure"]
    assert "authorization" not in sent["headers"]
    assert live.value not in json.dumps(sent)
    assert record_facts(one_record(live))[:4] == ("azure", name, "chat_completion", 200)


# --- 3. the anthropic SDK to every provider type -------------------------------------------------------


@pytest.mark.parametrize("target", ALL)
def test_anthropic_sdk_messages_create_reaches_every_provider_type(gateway, mock, live, target):
    message = claude(gateway, live).messages.create(model=TARGETS[target], max_tokens=3, messages=MESSAGES)

    assert message.type == "message" and message.role == "assistant"
    assert [(b.type, b.text) for b in message.content] == [("text", "mock mock mock")]
    assert message.stop_reason == "max_tokens"
    assert (message.usage.input_tokens, message.usage.output_tokens) == (PROMPT_TOKENS, 3)
    assert upstream(mock)["path"] == UPSTREAM_PATHS[target]
    name = TARGETS[target].split("/", 1)[1]
    assert record_facts(one_record(live)) == (target, name, "messages", 200, False, PROMPT_TOKENS, 3)


@pytest.mark.parametrize("target", ALL)
def test_anthropic_sdk_stream_accumulates_a_tool_use_block(gateway, mock, live, target):
    with claude(gateway, live).messages.stream(
        model=model(target, "tool"), max_tokens=5, messages=MESSAGES, tools=ANTHROPIC_TOOLS
    ) as stream:
        final = stream.get_final_message()

    assert final.stop_reason == "tool_use"
    [block] = [b for b in final.content if b.type == "tool_use"]
    assert (block.name, block.input) == ("weather", TOOL_ARGS[0])
    assert block.id
    record = one_record(live)
    assert (record.provider, record.request_type, record.streamed) == (target, "messages", True)
    if target in STREAM_USAGE_UNREPORTED:
        assert record.estimated
    else:
        assert (final.usage.input_tokens, final.usage.output_tokens) == (PROMPT_TOKENS, 5)
        assert (record.prompt_tokens, record.completion_tokens, record.estimated) == (PROMPT_TOKENS, 5, False)


@pytest.mark.parametrize("target", ALL)
def test_anthropic_sdk_parallel_tool_use_blocks(gateway, mock, live, target):
    client = claude(gateway, live)
    with client.messages.stream(
        model=model(target, "parallel-tool"), max_tokens=5, messages=MESSAGES, tools=ANTHROPIC_TOOLS
    ) as stream:
        streamed = stream.get_final_message()
    whole = client.messages.create(
        model=model(target, "parallel-tool"), max_tokens=5, messages=MESSAGES, tools=ANTHROPIC_TOOLS
    )

    for message in (streamed, whole):
        assert message.stop_reason == "tool_use"
        uses = [b for b in message.content if b.type == "tool_use"]
        assert [(b.name, b.input) for b in uses] == [("weather", TOOL_ARGS[0]), ("clock", TOOL_ARGS[1])]
        assert len({b.id for b in uses}) == 2
    assert [r.streamed for r in settled(2, vk=live.vk)] == [True, False]


def test_anthropic_sdk_multi_turn_tool_results_become_tool_messages_upstream(gateway, mock, live):
    client = claude(gateway, live)
    first = client.messages.create(
        model=model("openai", "parallel-tool"), max_tokens=5, messages=MESSAGES, tools=ANTHROPIC_TOOLS
    )
    uses = [b for b in first.content if b.type == "tool_use"]
    history = [
        *MESSAGES,
        {"role": "assistant", "content": first.content},  # the SDK serialises its own blocks
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": uses[0].id, "content": TOOL_RESULTS[0]},
                {"type": "tool_result", "tool_use_id": uses[1].id, "content": TOOL_RESULTS[1]},
            ],
        },
    ]

    second = client.messages.create(model=TARGETS["openai"], max_tokens=5, messages=history, tools=ANTHROPIC_TOOLS)

    assert [(b.type, b.text) for b in second.content] == [("text", RESULTS_ANSWER["openai"])]
    assert second.stop_reason == "end_turn"
    *_, turn, result0, result1 = upstream(mock)["body"]["messages"]
    assert [c["id"] for c in turn["tool_calls"]] == [b.id for b in uses]
    assert [(result0["role"], result0["tool_call_id"]), (result1["role"], result1["tool_call_id"])] == [
        ("tool", uses[0].id),
        ("tool", uses[1].id),
    ]
    assert [(r.request_type, r.status_code) for r in settled(2, vk=live.vk)] == [("messages", 200)] * 2


def test_anthropic_sdk_thinking_of_an_openai_model_counts_reasoning_tokens_only(gateway, mock, live):
    message = claude(gateway, live).messages.create(model=model("openai", "thinking"), max_tokens=3, messages=MESSAGES)

    assert [b.type for b in message.content] == ["text"]
    assert message.usage.output_tokens == 3 + REASONING_TOKENS
    assert one_record(live).completion_tokens == 3 + REASONING_TOKENS


@pytest.mark.parametrize(("target", "signature"), [("anthropic", ANTHROPIC_SIGNATURE), ("gemini", "")])
def test_anthropic_sdk_thinking_block_streamed(gateway, mock, live, target, signature):
    with claude(gateway, live).messages.stream(
        model=model(target, "thinking"), max_tokens=3, messages=MESSAGES
    ) as stream:
        final = stream.get_final_message()

    thinking, text = final.content
    assert (thinking.type, thinking.thinking, thinking.signature) == ("thinking", THOUGHT, signature)
    assert (text.type, text.text.split()) == ("text", ["mock"] * 3)
    assert one_record(live).completion_tokens == 3 + REASONING_TOKENS


def test_anthropic_sdk_count_tokens_is_estimated_for_openai_and_passed_through_for_anthropic(gateway, mock, live):
    from proxy.translate import anthropic as anthropic_format
    from proxy.usage import estimate_prompt_tokens

    client = claude(gateway, live)
    body = {"model": TARGETS["openai"], "messages": MESSAGES}
    estimated = client.messages.count_tokens(**body)
    assert upstream(mock) is None  # the gateway answered it
    counted = client.messages.count_tokens(model=TARGETS["anthropic"], messages=MESSAGES)

    expected = estimate_prompt_tokens(anthropic_format.request_to_openai(body, TARGETS["openai"]))
    assert estimated.input_tokens == expected > PROMPT_TOKENS
    assert counted.input_tokens == PROMPT_TOKENS
    assert upstream(mock)["path"] == "/v1/messages/count_tokens"
    assert UsageRecord.objects.count() == 0  # counting is free


def expected_model_ids() -> set[str]:
    return (
        {f"openai/{m}" for m in MODELS}
        | {f"mistral/{m}" for m in MODELS}
        | {f"anthropic/{m}" for m in BASE_MODELS}
        | {f"gemini/{m}" for m in GEMINI_MODELS}
        | {f"azure/{m}" for m in AZURE_DEPLOYMENTS}
    )


def test_anthropic_sdk_models_list_names_provider_slash_model(gateway, mock, live):
    page = claude(gateway, live).models.list()

    ids = [m.id for m in page.data]
    assert set(ids) == expected_model_ids() and len(ids) == len(set(ids))
    assert all(m.type == "model" for m in page.data)


# --- 4. google-genai to every provider type -----------------------------------------------------------

GENAI_TARGETS = {"openai": TARGETS["openai"], "anthropic": TARGETS["anthropic"], "gemini": "gemini-2.5-flash"}


@pytest.mark.parametrize("target", list(GENAI_TARGETS))
@pytest.mark.parametrize("api_version", ["v1", "v1beta"])
def test_genai_generate_content(gateway, mock, live, target, api_version):
    client = gem(gateway, live, api_version)
    response = client.models.generate_content(model=GENAI_TARGETS[target], contents=PROMPT, config=gem_config(3))

    assert response.text == "mock mock mock"
    assert response.candidates[0].finish_reason == types.FinishReason.MAX_TOKENS
    meta = response.usage_metadata
    assert (meta.prompt_token_count, meta.candidates_token_count, meta.total_token_count) == (PROMPT_TOKENS, 3, 15)
    assert upstream(mock)["path"] == UPSTREAM_PATHS[target]
    record = one_record(live)
    assert record_facts(record) == (
        target,
        "gemini-2.5-flash" if target == "gemini" else TARGETS[target].split("/")[1],
        "generate_content",
        200,
        False,
        PROMPT_TOKENS,
        3,
    )


@pytest.mark.parametrize("target", list(GENAI_TARGETS))
def test_genai_generate_content_stream(gateway, mock, live, target):
    client = gem(gateway, live)
    chunks = list(
        client.models.generate_content_stream(model=GENAI_TARGETS[target], contents=PROMPT, config=gem_config(4))
    )

    assert "".join(c.text or "" for c in chunks).split() == ["mock"] * 4
    assert chunks[-1].candidates[0].finish_reason == types.FinishReason.MAX_TOKENS
    assert chunks[-1].usage_metadata.candidates_token_count == 4
    record = one_record(live)
    assert (record.provider, record.request_type, record.streamed, record.completion_tokens) == (
        target,
        "generate_content",
        True,
        4,
    )


@pytest.mark.parametrize("target", list(GENAI_TARGETS))
@pytest.mark.parametrize("words", ["tool", "parallel-tool"])
def test_genai_function_calling(gateway, mock, live, target, words):
    name = f"{GENAI_TARGETS[target]}-{words}"
    client = gem(gateway, live)

    response = client.models.generate_content(model=name, contents=PROMPT, config=gem_config(5, tools=GEMINI_TOOLS))
    chunks = list(
        client.models.generate_content_stream(model=name, contents=PROMPT, config=gem_config(5, tools=GEMINI_TOOLS))
    )

    expected = [("weather", TOOL_ARGS[0]), ("clock", TOOL_ARGS[1])][: 2 if words == "parallel-tool" else 1]
    assert [(c.name, c.args) for c in response.function_calls] == expected
    assert [(c.name, c.args) for chunk in chunks for c in chunk.function_calls or ()] == expected
    assert [(r.streamed, r.status_code) for r in settled(2, vk=live.vk)] == [(False, 200), (True, 200)]


def test_genai_function_response_turn_reaches_an_anthropic_upstream_grouped(gateway, mock, live):
    client = gem(gateway, live)
    config = gem_config(5, tools=GEMINI_TOOLS)
    first = client.models.generate_content(model=model("anthropic", "parallel-tool"), contents=PROMPT, config=config)
    calls = first.function_calls
    contents = [
        types.Content(role="user", parts=[types.Part(text=PROMPT)]),
        first.candidates[0].content,
        types.Content(
            role="user",
            parts=[
                types.Part.from_function_response(name=calls[0].name, response={"temp_c": 21}),
                types.Part.from_function_response(name=calls[1].name, response={"result": "12:00"}),
            ],
        ),
    ]

    second = client.models.generate_content(model=TARGETS["anthropic"], contents=contents, config=config)

    assert second.text == 'tool results: {"temp_c":21} | 12:00'
    *_, turn, results = upstream(mock)["body"]["messages"]
    uses = [b for b in turn["content"] if b["type"] == "tool_use"]
    assert [b["name"] for b in uses] == ["weather", "clock"]
    assert [b["type"] for b in results["content"]] == ["tool_result", "tool_result"]
    assert [b["tool_use_id"] for b in results["content"]] == [b["id"] for b in uses]
    assert [(r.request_type, r.status_code) for r in settled(2, vk=live.vk)] == [("generate_content", 200)] * 2


@pytest.mark.parametrize("target", ["openai", "gemini"])
def test_genai_count_tokens(gateway, mock, live, target):
    from proxy.translate import gemini as gemini_format
    from proxy.usage import estimate_prompt_tokens

    client = gem(gateway, live)
    response = client.models.count_tokens(model=GENAI_TARGETS[target], contents=PROMPT)

    if target == "gemini":
        assert response.total_tokens == PROMPT_TOKENS
        assert upstream(mock)["path"] == "/v1beta/models/gemini-2.5-flash:countTokens"
    else:
        body = {"contents": [{"role": "user", "parts": [{"text": PROMPT}]}]}
        expected = estimate_prompt_tokens(gemini_format.request_to_openai(body, TARGETS["openai"]))
        assert response.total_tokens == expected
        assert upstream(mock) is None
    assert UsageRecord.objects.count() == 0


def test_genai_models_list(gateway, mock, live):
    client = gem(gateway, live)
    listed = list(client.models.list())

    assert {m.name.removeprefix("models/") for m in listed} == expected_model_ids()
    flash = next(m for m in listed if m.name == "models/gemini/gemini-2.5-flash")
    assert "generateContent" in flash.supported_actions
    # GET /genai/v1beta/models/{model}: a bare Gemini name is the gemini provider's, others are provider/model.
    beta = gem(gateway, live, "v1beta")
    assert beta.models.get(model="gemini-2.5-flash").name == "models/gemini/gemini-2.5-flash"
    assert beta.models.get(model="openai/gpt-4o").name == "models/openai/gpt-4o"


# --- 5. fallback across formats -------------------------------------------------------------------------


@pytest.mark.parametrize("status", [500, 429])
def test_openai_sdk_falls_back_to_an_anthropic_model_after_an_upstream_failure(gateway, mock, live, status):
    fallback = "claude-3-5-haiku-latest"

    reply = oai(gateway, live).chat.completions.create(
        model=f"openai/gpt-4o-fail-{status}",
        messages=MESSAGES,
        max_tokens=3,
        extra_body={"fallbacks": [f"anthropic/{fallback}"]},
    )

    assert reply.choices[0].message.content == "mock mock mock"
    assert reply.model_extra["extra_fields"]["provider"] == "anthropic"
    assert upstream(mock)["path"] == "/v1/messages"
    failed, answered = settled(2, vk=live.vk)
    assert (failed.provider, failed.model, failed.status_code, failed.cost) == (
        "openai",
        f"gpt-4o-fail-{status}",
        status,
        Decimal(0),
    )
    assert record_facts(answered) == ("anthropic", fallback, "chat_completion", 200, False, PROMPT_TOKENS, 3)
    # claude-3-5-haiku-latest is priced by the catalog's claude-3-5-haiku row.
    assert answered.cost == catalog_cost("anthropic", "claude-3-5-haiku", PROMPT_TOKENS, 3) == Decimal("0.0000216")


# --- 6. costs at the catalog's prices, whatever the client's format -------------------------------------


def _call(client: str, gateway, live: Live, name: str, max_tokens: int, stream: bool) -> None:
    if client == "openai":
        sdk = oai(gateway, live)
        if stream:
            list(sdk.chat.completions.create(model=name, messages=MESSAGES, max_tokens=max_tokens, stream=True))
        else:
            sdk.chat.completions.create(model=name, messages=MESSAGES, max_tokens=max_tokens)
    elif client == "anthropic":
        sdk_a = claude(gateway, live)
        if stream:
            with sdk_a.messages.stream(model=name, max_tokens=max_tokens, messages=MESSAGES) as events:
                events.get_final_message()
        else:
            sdk_a.messages.create(model=name, max_tokens=max_tokens, messages=MESSAGES)
    else:
        sdk_g = gem(gateway, live)
        if stream:
            list(sdk_g.models.generate_content_stream(model=name, contents=PROMPT, config=gem_config(max_tokens)))
        else:
            sdk_g.models.generate_content(model=name, contents=PROMPT, config=gem_config(max_tokens))


REQUEST_TYPES = {"openai": "chat_completion", "anthropic": "messages", "genai": "generate_content"}


@pytest.mark.parametrize(
    ("client", "name", "provider", "price_row", "stream"),
    [
        ("anthropic", "openai/gpt-4o", "openai", ("openai", "gpt-4o"), False),
        ("genai", "azure/gpt-4o", "azure", ("openai", "gpt-4o"), False),
        ("openai", "anthropic/claude-sonnet-4-5", "anthropic", ("anthropic", "claude-sonnet-4-5"), False),
        ("anthropic", "gemini/gemini-2.5-flash", "gemini", ("gemini", "gemini-2.5-flash"), False),
        ("genai", "anthropic/claude-sonnet-4-5", "anthropic", ("anthropic", "claude-sonnet-4-5"), True),
        ("openai", "gemini/gemini-2.5-flash", "gemini", ("gemini", "gemini-2.5-flash"), True),
        ("anthropic", "azure/gpt-4o", "azure", ("openai", "gpt-4o"), True),
    ],
)
def test_cost_lands_at_the_catalog_price_of_the_upstream_model(
    gateway, mock, live, client, name, provider, price_row, stream
):
    _call(client, gateway, live, name, 7, stream)

    record = one_record(live)
    assert record_facts(record) == (
        provider,
        name.split("/", 1)[1],
        REQUEST_TYPES[client],
        200,
        stream,
        PROMPT_TOKENS,
        7,
    )
    assert record.priced and not record.estimated
    assert record.cost == catalog_cost(*price_row, PROMPT_TOKENS, 7) > 0


# --- 7. errors in the client's format -------------------------------------------------------------------


@pytest.mark.parametrize("target", TRANSLATED_FOR_OPENAI)
def test_openai_sdk_upstream_400_is_a_bad_request_error(gateway, mock, live, target):
    with pytest.raises(openai.BadRequestError) as exc:
        oai(gateway, live).chat.completions.create(model=model(target, "fail-400"), messages=MESSAGES, max_tokens=2)

    assert exc.value.status_code == 400
    assert exc.value.body["message"] == "mock upstream failure 400"
    record = one_record(live)
    assert (record.provider, record.status_code, record.cost) == (target, 400, Decimal(0))


@pytest.mark.parametrize("target", ["openai", "gemini"])
def test_anthropic_sdk_upstream_400_is_an_anthropic_error_body(gateway, mock, live, target):
    with pytest.raises(anthropic.BadRequestError) as exc:
        claude(gateway, live).messages.create(model=model(target, "fail-400"), max_tokens=2, messages=MESSAGES)

    assert exc.value.status_code == 400
    body = exc.value.body
    assert body["type"] == "error"
    assert body["error"] == {"type": "invalid_request_error", "message": "mock upstream failure 400"}
    assert one_record(live).status_code == 400


@pytest.mark.parametrize("target", ["openai", "anthropic"])
def test_genai_upstream_400_is_a_client_error(gateway, mock, live, target):
    client = gem(gateway, live)
    with pytest.raises(genai_errors.ClientError) as exc:
        client.models.generate_content(model=model(target, "fail-400"), contents=PROMPT, config=gem_config(2))

    assert exc.value.code == 400
    assert exc.value.status == "INVALID_ARGUMENT"
    assert exc.value.message == "mock upstream failure 400"
    assert one_record(live).status_code == 400


def test_openai_sdk_translated_stream_broken_off_raises_api_error(gateway, mock, live):
    stream = oai(gateway, live).chat.completions.create(
        model=model("anthropic", "reset-mid-stream"), messages=MESSAGES, max_tokens=6, stream=True
    )

    with pytest.raises(openai.APIError) as exc:
        list(stream)

    assert "upstream provider 'anthropic' broke off the stream" in exc.value.message
    record = one_record(live)
    assert (record.status_code, record.streamed) == (502, True)


def test_anthropic_sdk_translated_stream_broken_off_raises_on_the_error_event(gateway, mock, live):
    with pytest.raises(anthropic.APIStatusError) as exc:
        with claude(gateway, live).messages.stream(
            model=model("openai", "reset-mid-stream"), max_tokens=6, messages=MESSAGES
        ) as stream:
            stream.get_final_message()

    assert exc.value.body["type"] == "error"
    assert "upstream provider 'openai' broke off the stream" in exc.value.body["error"]["message"]
    record = one_record(live)
    assert (record.status_code, record.streamed) == (502, True)


def test_genai_translated_stream_broken_off_raises_api_error(gateway, mock, live):
    client = gem(gateway, live)
    with pytest.raises(genai_errors.APIError) as exc:
        list(
            client.models.generate_content_stream(
                model=model("openai", "reset-mid-stream"), contents=PROMPT, config=gem_config(6)
            )
        )

    assert exc.value.code == 502
    assert "upstream provider 'openai' broke off the stream" in exc.value.message
    record = one_record(live)
    assert (record.status_code, record.streamed) == (502, True)
