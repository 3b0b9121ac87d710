"""Anthropic Messages <-> OpenAI Chat Completions: requests, answers, both stream directions, errors,
and the official SDKs reading the translated answers and streams (through a mock transport, no network)."""

from __future__ import annotations

import copy
import json
import re
from typing import Any

import anthropic as anthropic_sdk
import httpx2
import openai as openai_sdk
import pytest

from proxy.translate import anthropic as tr
from proxy.translate import hub
from proxy.translate.hub import StreamError, TranslationError

MODEL = "claude-test"
VALID_ID = re.compile(r"^[a-zA-Z0-9_-]+$")


# -- helpers -----------------------------------------------------------------------------------------------


def events(raw: bytes) -> list[tuple[str, dict[str, Any]]]:
    """The (event, data) pairs of Anthropic SSE bytes; every event's data names its own type."""
    out = []
    for frame in raw.decode().split("\n\n"):
        if not frame:
            continue
        event_line, data_line = frame.split("\n")
        assert event_line.startswith("event: ") and data_line.startswith("data: ")
        event, data = event_line[len("event: ") :], json.loads(data_line[len("data: ") :])
        assert data["type"] == event
        out.append((event, data))
    return out


def assert_lifecycle(evs: list[tuple[str, dict[str, Any]]]) -> None:
    """message_start first, message_stop last, one start and stop per block, dense, never interleaved."""
    names = [name for name, _ in evs]
    assert names[0] == "message_start" and names[-1] == "message_stop"
    assert names.count("message_start") == 1 and names.count("message_stop") == 1
    assert names[-2] == "message_delta" and names.count("message_delta") == 1
    open_index = None
    next_index = 0
    for name, data in evs[1:-2]:
        if name == "content_block_start":
            assert open_index is None, "a block started while another was open"
            assert data["index"] == next_index
            open_index = next_index
            next_index += 1
        elif name == "content_block_delta":
            assert data["index"] == open_index
        elif name == "content_block_stop":
            assert data["index"] == open_index
            open_index = None
        else:
            raise AssertionError(f"unexpected event {name} inside the message")
    assert open_index is None


def blocks_of(evs: list[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    """The content blocks a stream describes, accumulated the way a client does (JSON parsed at the stop)."""
    blocks: list[dict[str, Any]] = []
    json_parts: dict[int, str] = {}
    for name, data in evs:
        if name == "content_block_start":
            blocks.append(dict(data["content_block"]))
        elif name == "content_block_delta":
            block, delta = blocks[data["index"]], data["delta"]
            if delta["type"] == "text_delta":
                block["text"] += delta["text"]
            elif delta["type"] == "thinking_delta":
                block["thinking"] += delta["thinking"]
            elif delta["type"] == "signature_delta":
                block["signature"] = delta["signature"]
            elif delta["type"] == "input_json_delta":
                json_parts[data["index"]] = json_parts.get(data["index"], "") + delta["partial_json"]
        elif name == "content_block_stop" and data["index"] in json_parts:
            blocks[data["index"]]["input"] = json.loads(json_parts[data["index"]])
    return blocks


def oai_chunk(delta: dict[str, Any] | None = None, finish: str | None = None, **extra: Any) -> dict[str, Any]:
    choices = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}]
    return {
        "id": "chatcmpl-abc",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "gpt",
        "choices": choices,
        **extra,
    }


def tool_delta(index: int, *, id: str | None = None, name: str | None = None, args: str | None = None) -> dict:
    function: dict[str, Any] = {}
    if name is not None:
        function["name"] = name
    if args is not None:
        function["arguments"] = args
    call: dict[str, Any] = {"index": index, "function": function}
    if id is not None:
        call["id"] = id
        call["type"] = "function"
    return {"tool_calls": [call]}


OPENAI_USAGE = {
    "prompt_tokens": 100,
    "completion_tokens": 20,
    "total_tokens": 120,
    "prompt_tokens_details": {"cached_tokens": 30, "cache_creation_tokens": 10},
}
ANTHROPIC_USAGE = {
    "input_tokens": 60,
    "output_tokens": 20,
    "cache_read_input_tokens": 30,
    "cache_creation_input_tokens": 10,
}


def run_stream(chunks: list[dict[str, Any]]) -> bytes:
    stream = tr.StreamFromOpenAI(MODEL)
    return b"".join(stream.feed(c) for c in chunks) + stream.finish()


def mock_anthropic(content: bytes, content_type: str) -> anthropic_sdk.Anthropic:
    def handler(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(200, headers={"content-type": content_type}, content=content)

    http_client = httpx2.Client(transport=httpx2.MockTransport(handler))
    return anthropic_sdk.Anthropic(api_key="x", base_url="http://test", http_client=http_client, max_retries=0)


# -- request: Anthropic -> OpenAI --------------------------------------------------------------------------


def test_request_to_openai_system_string_and_blocks():
    body = {"max_tokens": 10, "system": "Be brief.", "messages": [{"role": "user", "content": "hi"}]}
    assert tr.request_to_openai(body, "gpt-x") == {
        "model": "gpt-x",
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}],
        "max_tokens": 10,
    }
    body["system"] = [
        {"type": "text", "text": "One.", "cache_control": {"type": "ephemeral"}},
        {"type": "text", "text": "Two."},
    ]
    assert tr.request_to_openai(body, "gpt-x")["messages"][0] == {"role": "system", "content": "One.\nTwo."}


def test_request_to_openai_user_blocks_and_tool_results_first():
    body = {
        "max_tokens": 100,
        "messages": [
            {"role": "user", "content": "weather?"},
            {
                "role": "assistant",
                "content": [
                    {"type": "text", "text": "Checking."},
                    {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {"city": "Paris"}},
                    {"type": "tool_use", "id": "toolu_2", "name": "weather", "input": {"city": "Rome"}},
                ],
            },
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Here:", "cache_control": {"type": "ephemeral"}},
                    {"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny"},
                    {
                        "type": "tool_result",
                        "tool_use_id": "toolu_2",
                        "is_error": True,
                        "content": [{"type": "text", "text": "timeout"}, {"type": "text", "text": "retry later"}],
                    },
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBO"}},
                    {"type": "image", "source": {"type": "url", "url": "https://example.com/a.jpg"}},
                    {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBE"}},
                ],
            },
        ],
    }
    messages = tr.request_to_openai(body, "gpt-x")["messages"]
    assert messages == [
        {"role": "user", "content": "weather?"},
        {
            "role": "assistant",
            "content": "Checking.",
            "tool_calls": [
                {"id": "toolu_1", "type": "function", "function": {"name": "weather", "arguments": '{"city":"Paris"}'}},
                {"id": "toolu_2", "type": "function", "function": {"name": "weather", "arguments": '{"city":"Rome"}'}},
            ],
        },
        {"role": "tool", "tool_call_id": "toolu_1", "content": "sunny"},
        {"role": "tool", "tool_call_id": "toolu_2", "content": "Error: timeout\nretry later"},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Here:"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBO"}},
                {"type": "image_url", "image_url": {"url": "https://example.com/a.jpg"}},
                {"type": "file", "file": {"filename": "document.pdf", "file_data": "data:application/pdf;base64,JVBE"}},
            ],
        },
    ]


def test_request_to_openai_only_tool_results_makes_no_user_message():
    body = {
        "max_tokens": 5,
        "messages": [{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": []}]}],
    }
    assert tr.request_to_openai(body, "m")["messages"] == [{"role": "tool", "tool_call_id": "t", "content": ""}]


def test_request_to_openai_document_url_is_refused():
    block = {"type": "document", "source": {"type": "url", "url": "https://example.com/a.pdf"}}
    body = {"max_tokens": 5, "messages": [{"role": "user", "content": [{"type": "text", "text": "x"}, block]}]}
    with pytest.raises(TranslationError) as info:
        tr.request_to_openai(body, "m")
    assert info.value.param == "messages[0].content[1].source"


def test_request_to_openai_thinking_blocks_carried():
    thinking = {"type": "thinking", "thinking": "Let me think.", "signature": "sig=="}
    redacted = {"type": "redacted_thinking", "data": "opaque"}
    body = {
        "max_tokens": 5,
        "messages": [
            {"role": "user", "content": "q"},
            {
                "role": "assistant",
                "content": [thinking, redacted, {"type": "tool_use", "id": "toolu_9", "name": "f", "input": {}}],
            },
        ],
    }
    assistant = tr.request_to_openai(body, "m")["messages"][1]
    assert assistant == {
        "role": "assistant",
        "content": None,
        "tool_calls": [{"id": "toolu_9", "type": "function", "function": {"name": "f", "arguments": "{}"}}],
        "reasoning_content": "Let me think.",
        "thinking_blocks": [thinking, redacted],
    }
    assert assistant["thinking_blocks"][0] is thinking


COMPLEX_SCHEMA = {
    "type": "object",
    "$defs": {"point": {"type": "object", "properties": {"x": {"type": "number"}, "y": {"type": "number"}}}},
    "properties": {
        "target": {"anyOf": [{"$ref": "#/$defs/point"}, {"type": "null"}]},
        "tags": {"type": "array", "items": {"type": "string", "enum": ["a", "b"]}},
    },
    "required": ["target"],
    "additionalProperties": False,
}


def test_request_to_openai_tools_schema_passed_through():
    schema = copy.deepcopy(COMPLEX_SCHEMA)
    body = {
        "max_tokens": 5,
        "messages": [{"role": "user", "content": "go"}],
        "tools": [
            {"name": "aim", "description": "Aim somewhere", "input_schema": schema, "cache_control": {"type": "x"}},
            {"type": "custom", "name": "noop", "input_schema": {"type": "object"}},
        ],
    }
    out = tr.request_to_openai(body, "m")
    assert out["tools"] == [
        {"type": "function", "function": {"name": "aim", "description": "Aim somewhere", "parameters": COMPLEX_SCHEMA}},
        {"type": "function", "function": {"name": "noop", "parameters": {"type": "object"}}},
    ]
    assert out["tools"][0]["function"]["parameters"] is schema
    assert "tool_choice" not in out


@pytest.mark.parametrize("kind", ["web_search_20250305", "bash_20250124", "text_editor_20250728", "computer_20250124"])
def test_request_to_openai_builtin_tools_refused(kind):
    body = {"max_tokens": 5, "messages": [], "tools": [{"name": "f", "input_schema": {}}, {"type": kind, "name": "x"}]}
    with pytest.raises(TranslationError) as info:
        tr.request_to_openai(body, "m")
    assert info.value.param == "tools[1]"
    assert "built-in tool" in info.value.message and kind in info.value.message


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ({"type": "auto"}, {"tool_choice": "auto"}),
        ({"type": "any"}, {"tool_choice": "required"}),
        ({"type": "none"}, {"tool_choice": "none"}),
        ({"type": "tool", "name": "f"}, {"tool_choice": {"type": "function", "function": {"name": "f"}}}),
        (
            {"type": "auto", "disable_parallel_tool_use": True},
            {"tool_choice": "auto", "parallel_tool_calls": False},
        ),
    ],
)
def test_request_to_openai_tool_choice(choice, expected):
    body = {"max_tokens": 5, "messages": [], "tools": [{"name": "f", "input_schema": {}}], "tool_choice": choice}
    out = tr.request_to_openai(body, "m")
    assert {k: out[k] for k in ("tool_choice", "parallel_tool_calls") if k in out} == expected


def test_request_to_openai_parameters():
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    body = {
        "model": "claude-ignored",
        "max_tokens": 300,
        "messages": [{"role": "user", "content": "hi"}],
        "stop_sequences": ["END"],
        "temperature": 0.3,
        "top_p": 0.9,
        "top_k": 40,
        "metadata": {"user_id": "u-1"},
        "stream": True,
        "output_format": {"type": "json_schema", "schema": schema},
    }
    out = tr.request_to_openai(body, "gpt-x")
    assert out == {
        "model": "gpt-x",
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 300,
        "temperature": 0.3,
        "top_p": 0.9,
        "stop": ["END"],
        "user": "u-1",
        "stream": True,
        "stream_options": {"include_usage": True},
        "response_format": {"type": "json_schema", "json_schema": {"name": "output", "schema": schema}},
    }
    assert out["response_format"]["json_schema"]["schema"] is schema


@pytest.mark.parametrize(
    ("budget", "effort"), [(1024, "low"), (4095, "low"), (4096, "medium"), (16383, "medium"), (16384, "high")]
)
def test_request_to_openai_thinking_budget_to_effort(budget, effort):
    body = {"max_tokens": 30000, "messages": [], "thinking": {"type": "enabled", "budget_tokens": budget}}
    assert tr.request_to_openai(body, "m")["reasoning_effort"] == effort


def test_request_to_openai_disabled_thinking_has_no_effort():
    body = {"max_tokens": 5, "messages": [], "thinking": {"type": "disabled"}}
    assert "reasoning_effort" not in tr.request_to_openai(body, "m")


# -- request: OpenAI -> Anthropic --------------------------------------------------------------------------


def test_request_from_openai_hoists_system_and_developer_in_order():
    body = {
        "messages": [
            {"role": "system", "content": "First."},
            {"role": "user", "content": "hi"},
            {"role": "developer", "content": [{"type": "text", "text": "Second."}]},
            {"role": "assistant", "content": "hello"},
            {"role": "system", "content": "Third."},
            {"role": "user", "content": "bye"},
        ],
        "max_tokens": 50,
    }
    assert tr.request_from_openai(body, MODEL) == {
        "model": MODEL,
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "hi"}]},
            {"role": "assistant", "content": [{"type": "text", "text": "hello"}]},
            {"role": "user", "content": [{"type": "text", "text": "bye"}]},
        ],
        "max_tokens": 50,
        "system": [
            {"type": "text", "text": "First."},
            {"type": "text", "text": "Second."},
            {"type": "text", "text": "Third."},
        ],
    }


def test_request_from_openai_without_system_has_no_system():
    assert "system" not in tr.request_from_openai({"messages": [{"role": "user", "content": "x"}]}, MODEL)


def parallel_conversation(first_id: str, second_id: str) -> dict[str, Any]:
    return {
        "messages": [
            {"role": "user", "content": "Weather in Paris and Rome?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": first_id,
                        "type": "function",
                        "function": {"name": "weather", "arguments": '{"city":"Paris"}'},
                    },
                    {
                        "id": second_id,
                        "type": "function",
                        "function": {"name": "weather", "arguments": '{"city":"Rome"}'},
                    },
                ],
            },
            {"role": "tool", "tool_call_id": first_id, "content": "sunny"},
            {"role": "tool", "tool_call_id": second_id, "content": [{"type": "text", "text": "rainy"}]},
            {"role": "user", "content": "Which is warmer?"},
        ]
    }


def test_request_from_openai_parallel_tool_results_in_one_user_message():
    out = tr.request_from_openai(parallel_conversation("call_a", "call_b"), MODEL)
    assert out["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "Weather in Paris and Rome?"}]},
        {
            "role": "assistant",
            "content": [
                {"type": "tool_use", "id": "call_a", "name": "weather", "input": {"city": "Paris"}},
                {"type": "tool_use", "id": "call_b", "name": "weather", "input": {"city": "Rome"}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "call_a", "content": "sunny"},
                {"type": "tool_result", "tool_use_id": "call_b", "content": "rainy"},
                {"type": "text", "text": "Which is warmer?"},
            ],
        },
    ]


def test_request_from_openai_tool_ids_mapped_deterministically_and_consistently():
    bad_first, bad_second = "call:1/weather.paris", "functions.weather:2"
    first = tr.request_from_openai(parallel_conversation(bad_first, bad_second), MODEL)
    second = tr.request_from_openai(parallel_conversation(bad_first, bad_second), MODEL)
    assert first == second
    uses = first["messages"][1]["content"]
    results = first["messages"][2]["content"]
    assert [u["id"] for u in uses] == [r["tool_use_id"] for r in results[:2]]
    assert uses[0]["id"] != uses[1]["id"]
    for use in uses:
        assert VALID_ID.match(use["id"]) and use["id"] not in (bad_first, bad_second)
        assert use["id"] == hub.tool_id(bad_first if use["input"] == {"city": "Paris"} else bad_second)


def test_request_from_openai_tool_result_before_user_text_in_merged_message():
    body = {
        "messages": [
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [{"id": "c1", "function": {"name": "f", "arguments": ""}}],
            },
            {"role": "user", "content": "note"},
            {"role": "tool", "tool_call_id": "c1", "content": "done"},
        ]
    }
    assert tr.request_from_openai(body, MODEL)["messages"][1] == {
        "role": "user",
        "content": [{"type": "tool_result", "tool_use_id": "c1", "content": "done"}, {"type": "text", "text": "note"}],
    }


def test_request_from_openai_legacy_function_messages():
    body = {
        "messages": [
            {"role": "user", "content": "x"},
            {"role": "assistant", "content": None, "function_call": {"name": "lookup", "arguments": '{"q":1}'}},
            {"role": "function", "name": "lookup", "content": "found"},
        ]
    }
    messages = tr.request_from_openai(body, MODEL)["messages"]
    assert messages[1]["content"] == [{"type": "tool_use", "id": "lookup", "name": "lookup", "input": {"q": 1}}]
    assert messages[2]["content"] == [{"type": "tool_result", "tool_use_id": "lookup", "content": "found"}]


def test_request_from_openai_user_parts():
    body = {
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Look:"},
                    {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,/9j/4AAQ", "detail": "high"}},
                    {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
                    {
                        "type": "file",
                        "file": {"filename": "a.pdf", "file_data": "data:application/pdf;base64,JVBERi0x"},
                    },
                ],
            }
        ]
    }
    assert tr.request_from_openai(body, MODEL)["messages"][0]["content"] == [
        {"type": "text", "text": "Look:"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": "/9j/4AAQ"}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.png"}},
        {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0x"}},
    ]


@pytest.mark.parametrize(
    "part",
    [
        {"type": "input_audio", "input_audio": {"data": "AAA", "format": "wav"}},
        {"type": "file", "file": {"file_id": "file-123"}},
        {"type": "file", "file": {"file_data": "data:text/plain;base64,aGk="}},
        {"type": "image_url", "image_url": {"url": "ftp://example.com/a.png"}},
    ],
)
def test_request_from_openai_unsupported_parts_name_the_field(part):
    body = {
        "messages": [
            {"role": "user", "content": "a"},
            {"role": "user", "content": [{"type": "text", "text": "x"}, part]},
        ]
    }
    with pytest.raises(TranslationError) as info:
        tr.request_from_openai(body, MODEL)
    assert info.value.param == "messages[1].content[1]"


def test_request_from_openai_assistant_blocks_order():
    thinking = {"type": "thinking", "thinking": "hmm", "signature": "sig"}
    body = {
        "messages": [
            {"role": "user", "content": "q"},
            {
                "role": "assistant",
                "content": "Calling.",
                "refusal": "Partly refused.",
                "reasoning_content": "hmm",
                "thinking_blocks": [thinking],
                "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": '{"a":[1]}'}}],
            },
        ]
    }
    content = tr.request_from_openai(body, MODEL)["messages"][1]["content"]
    assert content == [
        thinking,
        {"type": "text", "text": "Calling."},
        {"type": "text", "text": "Partly refused."},
        {"type": "tool_use", "id": "c1", "name": "f", "input": {"a": [1]}},
    ]
    assert content[0] is thinking


def test_request_from_openai_unsigned_reasoning_left_out_and_bad_arguments_refused():
    body = {"messages": [{"role": "assistant", "content": "a", "reasoning_content": "unsigned"}]}
    assert tr.request_from_openai(body, MODEL)["messages"] == [
        {"role": "assistant", "content": [{"type": "text", "text": "a"}]}
    ]
    body = {
        "messages": [{"role": "assistant", "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": "[1"}}]}]
    }
    with pytest.raises(TranslationError) as info:
        tr.request_from_openai(body, MODEL)
    assert info.value.param == "messages[0].tool_calls[0].function.arguments"


def test_request_from_openai_merges_consecutive_roles():
    body = {
        "messages": [
            {"role": "user", "content": "a"},
            {"role": "user", "content": [{"type": "text", "text": "b"}]},
            {"role": "assistant", "content": "c"},
            {"role": "assistant", "content": "d"},
        ]
    }
    assert tr.request_from_openai(body, MODEL)["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "c"}, {"type": "text", "text": "d"}]},
    ]


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"n": 2}, "n"),
        ({"logprobs": True}, "logprobs"),
        ({"audio": {"voice": "alloy", "format": "wav"}}, "audio"),
        ({"modalities": ["text", "audio"]}, "modalities"),
        ({"tools": [{"type": "function", "function": {"name": "f"}}, {"type": "web_search"}]}, "tools[1]"),
        ({"tools": [{"type": "function", "function": {"name": tr.JSON_TOOL}}]}, "tools[0]"),
        ({"reasoning_effort": "extreme"}, "reasoning_effort"),
        ({"response_format": {"type": "json_object"}, "reasoning_effort": "low"}, "response_format"),
        ({"tool_choice": {"type": "allowed_tools"}}, "tool_choice"),
    ],
)
def test_request_from_openai_unsupported(extra, param):
    with pytest.raises(TranslationError) as info:
        tr.request_from_openai({"messages": [{"role": "user", "content": "x"}], **extra}, MODEL)
    assert info.value.param == param
    if param == "n":
        assert info.value.message == "n: Anthropic returns one choice per request: n must be 1"


def test_request_from_openai_n_one_is_fine():
    assert tr.request_from_openai({"messages": [], "n": 1}, MODEL)["max_tokens"] == tr.DEFAULT_MAX_TOKENS


@pytest.mark.parametrize(
    ("limits", "expected"),
    [
        ({}, 4096),
        ({"max_tokens": 100}, 100),
        ({"max_completion_tokens": 200}, 200),
        ({"max_completion_tokens": 200, "max_tokens": 100}, 200),
    ],
)
def test_request_from_openai_max_tokens(limits, expected):
    assert tr.DEFAULT_MAX_TOKENS == 4096
    assert tr.request_from_openai({"messages": [], **limits}, MODEL)["max_tokens"] == expected


def test_request_from_openai_parameters():
    body = {
        "model": "gpt-ignored",
        "messages": [{"role": "user", "content": "x"}],
        "max_tokens": 10,
        "stop": "END",
        "temperature": 1.7,
        "top_p": 0.5,
        "frequency_penalty": 0.1,
        "presence_penalty": 0.2,
        "seed": 7,
        "logit_bias": {"1": 2},
        "stream": True,
        "stream_options": {"include_usage": True},
        "parallel_tool_calls": False,
        "user": "alice",
        "store": True,
    }
    assert tr.request_from_openai(body, MODEL) == {
        "model": MODEL,
        "messages": [{"role": "user", "content": [{"type": "text", "text": "x"}]}],
        "max_tokens": 10,
        "stop_sequences": ["END"],
        "temperature": 1.0,
        "top_p": 0.5,
        "metadata": {"user_id": "alice"},
        "stream": True,
    }
    body.update(stop=["a", "b"], temperature=0.2)
    out = tr.request_from_openai(body, MODEL)
    assert out["stop_sequences"] == ["a", "b"] and out["temperature"] == 0.2


def test_request_from_openai_tools_schema_passed_through():
    schema = copy.deepcopy(COMPLEX_SCHEMA)
    body = {
        "messages": [{"role": "user", "content": "x"}],
        "tools": [
            {
                "type": "function",
                "function": {"name": "aim", "description": "Aim", "parameters": schema, "strict": True},
            },
            {"type": "function", "function": {"name": "ping"}},
        ],
    }
    out = tr.request_from_openai(body, MODEL)
    assert out["tools"] == [
        {"name": "aim", "description": "Aim", "input_schema": COMPLEX_SCHEMA},
        {"name": "ping", "input_schema": {"type": "object", "properties": {}}},
    ]
    assert out["tools"][0]["input_schema"] is schema
    assert "tool_choice" not in out


TOOLS = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ({"tool_choice": "auto"}, {"type": "auto"}),
        ({"tool_choice": "required"}, {"type": "any"}),
        ({"tool_choice": "none"}, {"type": "none"}),
        ({"tool_choice": {"type": "function", "function": {"name": "f"}}}, {"type": "tool", "name": "f"}),
        ({"parallel_tool_calls": False}, {"type": "auto", "disable_parallel_tool_use": True}),
        ({"tool_choice": "required", "parallel_tool_calls": False}, {"type": "any", "disable_parallel_tool_use": True}),
        ({"tool_choice": "none", "parallel_tool_calls": False}, {"type": "none"}),
        ({"parallel_tool_calls": True}, None),
    ],
)
def test_request_from_openai_tool_choice(extra, expected):
    out = tr.request_from_openai({"messages": [], "tools": TOOLS, **extra}, MODEL)
    assert out.get("tool_choice") == expected


def test_request_from_openai_tool_choice_without_tools_left_out():
    out = tr.request_from_openai({"messages": [], "tool_choice": "required", "parallel_tool_calls": False}, MODEL)
    assert "tool_choice" not in out and "tools" not in out


def test_request_from_openai_json_object_forces_the_json_tool():
    out = tr.request_from_openai({"messages": [], "response_format": {"type": "json_object"}}, MODEL)
    assert tr.JSON_TOOL == "json_response"
    assert out["tools"] == [
        {"name": "json_response", "description": "Respond with the JSON result", "input_schema": {"type": "object"}}
    ]
    assert out["tool_choice"] == {"type": "tool", "name": "json_response"}


def test_request_from_openai_json_schema_forces_the_json_tool_with_the_schema():
    schema = copy.deepcopy(COMPLEX_SCHEMA)
    response_format = {"type": "json_schema", "json_schema": {"name": "aim", "schema": schema, "strict": True}}
    out = tr.request_from_openai({"messages": [], "tools": TOOLS, "response_format": response_format}, MODEL)
    assert out["tools"][1] == {
        "name": tr.JSON_TOOL,
        "description": "Respond with the JSON result",
        "input_schema": COMPLEX_SCHEMA,
    }
    assert out["tools"][1]["input_schema"] is schema
    assert out["tool_choice"] == {"type": "tool", "name": tr.JSON_TOOL}
    plain = tr.request_from_openai({"messages": [], "response_format": {"type": "text"}}, MODEL)
    assert "tools" not in plain


@pytest.mark.parametrize(("effort", "budget"), [("minimal", 1024), ("low", 2048), ("medium", 8192), ("high", 24576)])
def test_request_from_openai_reasoning_effort_to_thinking(effort, budget):
    body = {"messages": [], "reasoning_effort": effort, "max_tokens": 30000, "temperature": 0.5, "top_p": 0.9}
    out = tr.request_from_openai(body, MODEL)
    assert out["thinking"] == {"type": "enabled", "budget_tokens": budget}
    assert out["max_tokens"] == 30000
    assert "temperature" not in out and "top_p" not in out


def test_request_from_openai_thinking_budget_stays_below_max_tokens():
    out = tr.request_from_openai({"messages": [], "reasoning_effort": "medium", "max_tokens": 1000}, MODEL)
    assert out["max_tokens"] == 8192 + 1000
    out = tr.request_from_openai({"messages": [], "reasoning_effort": "minimal", "max_tokens": 1024}, MODEL)
    assert out["max_tokens"] == 2048
    out = tr.request_from_openai({"messages": [], "reasoning_effort": "high"}, MODEL)
    assert out["max_tokens"] == 24576 + tr.DEFAULT_MAX_TOKENS
    assert "thinking" not in tr.request_from_openai({"messages": [], "reasoning_effort": "none"}, MODEL)


def test_request_from_openai_thinking_object_passed_through():
    thinking = {"type": "enabled", "budget_tokens": 5000}
    out = tr.request_from_openai({"messages": [], "thinking": thinking, "reasoning_effort": "high"}, MODEL)
    assert out["thinking"] is thinking
    assert out["max_tokens"] == 5000 + tr.DEFAULT_MAX_TOKENS
    disabled = {"type": "disabled"}
    out = tr.request_from_openai({"messages": [], "thinking": disabled, "temperature": 0.4}, MODEL)
    assert out["thinking"] is disabled and out["temperature"] == 0.4


def test_thinking_blocks_round_trip_to_the_next_turn():
    """An Anthropic answer's thinking blocks, through the hub, come back verbatim on the next request."""
    thinking = {"type": "thinking", "thinking": "Need the tool.", "signature": "EqQBCkYIARgCIkD"}
    answer = {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "content": [thinking, {"type": "tool_use", "id": "toolu_01", "name": "f", "input": {"x": 1}}],
        "stop_reason": "tool_use",
        "usage": {"input_tokens": 5, "output_tokens": 9},
    }
    message = tr.response_to_openai(answer, "gpt-view")["choices"][0]["message"]
    body = {
        "messages": [
            {"role": "user", "content": "go"},
            message,
            {"role": "tool", "tool_call_id": "toolu_01", "content": "ok"},
        ],
        "reasoning_effort": "low",
    }
    out = tr.request_from_openai(body, MODEL)
    assert out["messages"][1]["content"] == answer["content"]
    assert out["messages"][2]["content"] == [{"type": "tool_result", "tool_use_id": "toolu_01", "content": "ok"}]


# -- answers -----------------------------------------------------------------------------------------------


def test_response_to_openai():
    payload = {
        "id": "msg_01",
        "type": "message",
        "role": "assistant",
        "model": "claude-upstream",
        "content": [
            {"type": "thinking", "thinking": "Plan.", "signature": "s1"},
            {"type": "text", "text": "Hello "},
            {"type": "server_tool_use", "id": "srv", "name": "web_search", "input": {}},
            {"type": "text", "text": "world."},
            {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {"a": 1}},
        ],
        "stop_reason": "tool_use",
        "stop_sequence": None,
        "usage": {
            "input_tokens": 60,
            "output_tokens": 20,
            "cache_read_input_tokens": 30,
            "cache_creation_input_tokens": 10,
            "output_tokens_details": {"thinking_tokens": 4},
        },
    }
    out = tr.response_to_openai(payload, "my-model")
    assert isinstance(out.pop("created"), int)
    assert out == {
        "id": "msg_01",
        "object": "chat.completion",
        "model": "my-model",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": "Hello world.",
                    "tool_calls": [
                        {"id": "toolu_1", "type": "function", "function": {"name": "f", "arguments": '{"a":1}'}}
                    ],
                    "reasoning_content": "Plan.",
                    "thinking_blocks": [{"type": "thinking", "thinking": "Plan.", "signature": "s1"}],
                },
                "finish_reason": "tool_calls",
                "logprobs": None,
            }
        ],
        "usage": {
            "prompt_tokens": 100,
            "completion_tokens": 20,
            "total_tokens": 120,
            "prompt_tokens_details": {"cached_tokens": 30, "cache_creation_tokens": 10},
            "completion_tokens_details": {"reasoning_tokens": 4},
        },
    }


def test_response_to_openai_tool_calls_only_has_null_content():
    payload = {"content": [{"type": "tool_use", "id": "t", "name": "f", "input": {}}], "stop_reason": "tool_use"}
    message = tr.response_to_openai(payload, "m")["choices"][0]["message"]
    assert message["content"] is None


@pytest.mark.parametrize(
    ("stop", "finish"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("refusal", "content_filter"),
        ("pause_turn", "stop"),
        ("model_context_window_exceeded", "stop"),
        (None, "stop"),
    ],
)
def test_response_to_openai_stop_reasons(stop, finish):
    out = tr.response_to_openai({"content": [{"type": "text", "text": "x"}], "stop_reason": stop}, "m")
    assert out["choices"][0]["finish_reason"] == finish


def test_response_to_openai_json_tool_becomes_content():
    payload = {
        "id": "msg_j",
        "content": [{"type": "tool_use", "id": "toolu_j", "name": tr.JSON_TOOL, "input": {"answer": 42, "ok": True}}],
        "stop_reason": "tool_use",
        "usage": {"input_tokens": 3, "output_tokens": 4},
    }
    choice = tr.response_to_openai(payload, "m")["choices"][0]
    assert choice["message"] == {"role": "assistant", "content": '{"answer":42,"ok":true}'}
    assert choice["finish_reason"] == "stop"


def test_response_to_openai_never_crashes_on_missing_fields():
    out = tr.response_to_openai({}, "m")
    assert out["id"] == "" and out["choices"][0]["message"] == {"role": "assistant", "content": ""}
    assert out["choices"][0]["finish_reason"] == "stop"
    assert out["usage"]["prompt_tokens"] == 0 and out["usage"]["completion_tokens"] == 0
    out = tr.response_to_openai({"content": [{"type": "mystery"}, {}], "usage": {"cache_read_input_tokens": None}}, "m")
    assert out["choices"][0]["message"]["content"] == ""


def test_response_from_openai():
    payload = {
        "id": "chatcmpl-9",
        "object": "chat.completion",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": "Let me check.",
                    "reasoning_content": "thinking aloud",
                    "tool_calls": [
                        {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": '{"x":1}'}},
                        {"id": "call.2", "type": "function", "function": {"name": "g", "arguments": "{broken"}},
                    ],
                },
                "finish_reason": "stop",
            }
        ],
        "usage": OPENAI_USAGE,
    }
    assert tr.response_from_openai(payload, MODEL) == {
        "id": "msg_chatcmpl-9",
        "type": "message",
        "role": "assistant",
        "model": MODEL,
        "content": [
            {"type": "thinking", "thinking": "thinking aloud", "signature": ""},
            {"type": "text", "text": "Let me check."},
            {"type": "tool_use", "id": "call_1", "name": "f", "input": {"x": 1}},
            {"type": "tool_use", "id": hub.tool_id("call.2"), "name": "g", "input": {}},
        ],
        "stop_reason": "tool_use",
        "stop_sequence": None,
        "usage": ANTHROPIC_USAGE,
    }


def test_response_from_openai_thinking_blocks_and_id_prefix():
    blocks = [{"type": "thinking", "thinking": "a", "signature": "s"}, {"type": "redacted_thinking", "data": "d"}]
    payload = {
        "id": "msg_keep",
        "choices": [{"message": {"content": "x", "reasoning_content": "a", "thinking_blocks": blocks}}],
    }
    out = tr.response_from_openai(payload, MODEL)
    assert out["id"] == "msg_keep"
    assert out["content"] == [*blocks, {"type": "text", "text": "x"}]
    assert out["stop_reason"] == "end_turn"
    assert out["usage"] == {
        "input_tokens": 0,
        "output_tokens": 0,
        "cache_read_input_tokens": 0,
        "cache_creation_input_tokens": 0,
    }


@pytest.mark.parametrize(
    ("finish", "stop"),
    [
        ("stop", "end_turn"),
        ("length", "max_tokens"),
        ("tool_calls", "tool_use"),
        ("content_filter", "refusal"),
        ("something_new", "end_turn"),
        (None, "end_turn"),
    ],
)
def test_response_from_openai_finish_reasons(finish, stop):
    payload = {"id": "c", "choices": [{"message": {"content": "x"}, "finish_reason": finish}]}
    assert tr.response_from_openai(payload, MODEL)["stop_reason"] == stop


def test_response_from_openai_refusal_and_cache_never_negative():
    payload = {
        "id": "c",
        "choices": [{"message": {"content": None, "refusal": "I can't help with that."}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 1, "prompt_tokens_details": {"cached_tokens": 9}},
    }
    out = tr.response_from_openai(payload, MODEL)
    assert out["content"] == [{"type": "text", "text": "I can't help with that."}]
    assert out["stop_reason"] == "refusal"
    assert out["usage"]["input_tokens"] == 0 and out["usage"]["cache_read_input_tokens"] == 9


def test_usage_round_trip_is_not_double_counted():
    usage = tr.response_to_openai({"usage": ANTHROPIC_USAGE}, "m")["usage"]
    back = tr.response_from_openai({"id": "x", "choices": [{"message": {"content": "a"}}], "usage": usage}, MODEL)
    assert back["usage"] == ANTHROPIC_USAGE


# -- errors, models, token counts ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "type_"),
    [
        (400, "invalid_request_error"),
        (401, "authentication_error"),
        (403, "permission_error"),
        (404, "not_found_error"),
        (413, "request_too_large"),
        (429, "rate_limit_error"),
        (500, "api_error"),
        (529, "overloaded_error"),
        (502, "api_error"),
        (503, "api_error"),
        (409, "invalid_request_error"),
        (422, "invalid_request_error"),
    ],
)
def test_error_body(status, type_):
    assert json.loads(tr.error_body(status, "nope")) == {"type": "error", "error": {"type": type_, "message": "nope"}}


def test_error_body_explicit_type():
    body = tr.error_body(402, "pay up", "billing_error")
    assert body == b'{"type":"error","error":{"type":"billing_error","message":"pay up"}}'


def test_models_page_and_count_tokens():
    assert tr.models_page(["a", "b"]) == {
        "data": [
            {"type": "model", "id": "a", "display_name": "a", "created_at": "1970-01-01T00:00:00Z"},
            {"type": "model", "id": "b", "display_name": "b", "created_at": "1970-01-01T00:00:00Z"},
        ],
        "has_more": False,
        "first_id": "a",
        "last_id": "b",
    }
    assert tr.models_page([]) == {"data": [], "has_more": False, "first_id": None, "last_id": None}
    assert tr.count_tokens_answer(17) == {"input_tokens": 17}


# -- stream: Anthropic events -> OpenAI chunks -------------------------------------------------------------


ANTHROPIC_EVENTS: list[dict[str, Any]] = [
    {
        "type": "message_start",
        "message": {
            "id": "msg_s1",
            "type": "message",
            "role": "assistant",
            "model": "claude-upstream",
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {
                "input_tokens": 50,
                "output_tokens": 1,
                "cache_read_input_tokens": 30,
                "cache_creation_input_tokens": 10,
            },
        },
    },
    {"type": "ping"},
    {"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": "", "signature": ""}},
    {"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "Two cities"}},
    {"type": "content_block_delta", "index": 0, "delta": {"type": "signature_delta", "signature": "sig=="}},
    {"type": "content_block_stop", "index": 0},
    {"type": "content_block_start", "index": 1, "content_block": {"type": "text", "text": ""}},
    {"type": "content_block_delta", "index": 1, "delta": {"type": "text_delta", "text": "Checking both."}},
    {"type": "content_block_stop", "index": 1},
    {
        "type": "content_block_start",
        "index": 2,
        "content_block": {"type": "tool_use", "id": "toolu_a", "name": "weather", "input": {}},
    },
    {"type": "content_block_delta", "index": 2, "delta": {"type": "input_json_delta", "partial_json": ""}},
    {"type": "content_block_delta", "index": 2, "delta": {"type": "input_json_delta", "partial_json": '{"city":'}},
    {"type": "content_block_delta", "index": 2, "delta": {"type": "input_json_delta", "partial_json": ' "Paris"}'}},
    {"type": "content_block_stop", "index": 2},
    {
        "type": "content_block_start",
        "index": 3,
        "content_block": {"type": "tool_use", "id": "toolu_b", "name": "weather", "input": {}},
    },
    {
        "type": "content_block_delta",
        "index": 3,
        "delta": {"type": "input_json_delta", "partial_json": '{"city":"Rome"}'},
    },
    {"type": "content_block_stop", "index": 3},
    {
        "type": "message_delta",
        "delta": {"type": "message_delta", "stop_reason": "tool_use", "stop_sequence": None},
        "usage": {
            "output_tokens": 42,
            "input_tokens": 60,
            "cache_read_input_tokens": 30,
            "cache_creation_input_tokens": None,
        },
    },
    {"type": "message_stop"},
]


def test_stream_to_openai_realistic_sequence():
    stream = tr.StreamToOpenAI("gpt-view")
    chunks = [c for event in ANTHROPIC_EVENTS for c in stream.feed(event["type"], event)]
    assert stream.finish() == []
    assert {c["id"] for c in chunks} == {"msg_s1"}
    assert {c["created"] for c in chunks} == {stream.created}
    assert {c["model"] for c in chunks} == {"gpt-view"}
    assert [c["choices"][0]["delta"] if c["choices"] else None for c in chunks] == [
        {"role": "assistant", "content": ""},
        {"reasoning_content": ""},
        {"reasoning_content": "Two cities"},
        {"thinking_blocks": [{"type": "thinking", "thinking": "", "signature": "sig=="}]},
        {"content": "Checking both."},
        {
            "tool_calls": [
                {"index": 0, "id": "toolu_a", "type": "function", "function": {"name": "weather", "arguments": ""}}
            ]
        },
        {"tool_calls": [{"index": 0, "function": {"arguments": '{"city":'}}]},
        {"tool_calls": [{"index": 0, "function": {"arguments": ' "Paris"}'}}]},
        {
            "tool_calls": [
                {"index": 1, "id": "toolu_b", "type": "function", "function": {"name": "weather", "arguments": ""}}
            ]
        },
        {"tool_calls": [{"index": 1, "function": {"arguments": '{"city":"Rome"}'}}]},
        {},
        None,
    ]
    assert [c["choices"][0]["finish_reason"] for c in chunks[:-1]] == [None] * 10 + ["tool_calls"]
    # message_delta's input figures replace message_start's (50 -> 60), never added to them.
    assert chunks[-1]["usage"] == hub.usage(100, 42, cached=30, cache_creation=10)


def test_stream_to_openai_event_name_from_data_and_redacted_thinking():
    stream = tr.StreamToOpenAI("m")
    stream.feed(None, {"type": "message_start", "message": {"id": "msg_r", "usage": {"input_tokens": 1}}})
    block = {"type": "redacted_thinking", "data": "opaque"}
    out = stream.feed(None, {"type": "content_block_start", "index": 0, "content_block": block})
    assert out[0]["choices"][0]["delta"] == {"thinking_blocks": [block]}
    assert stream.feed("content_block_stop", {"type": "content_block_stop", "index": 0}) == []


def test_stream_to_openai_json_tool_streams_as_content():
    stream = tr.StreamToOpenAI("m")
    sequence = [
        {"type": "message_start", "message": {"id": "msg_j", "usage": {"input_tokens": 9, "output_tokens": 1}}},
        {
            "type": "content_block_start",
            "index": 0,
            "content_block": {"type": "tool_use", "id": "toolu_j", "name": tr.JSON_TOOL, "input": {}},
        },
        {"type": "content_block_delta", "index": 0, "delta": {"type": "input_json_delta", "partial_json": '{"a"'}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "input_json_delta", "partial_json": ": 1}"}},
        {"type": "content_block_stop", "index": 0},
        {"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 5}},
        {"type": "message_stop"},
    ]
    chunks = [c for event in sequence for c in stream.feed(event["type"], event)]
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    assert deltas == [{"role": "assistant", "content": ""}, {"content": '{"a"'}, {"content": ": 1}"}, {}]
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["usage"] == hub.usage(9, 5)


@pytest.mark.parametrize(
    ("type_", "status"),
    [("overloaded_error", 529), ("rate_limit_error", 429), ("api_error", 500), ("invalid_request_error", 400)],
)
def test_stream_to_openai_error_event(type_, status):
    stream = tr.StreamToOpenAI("m")
    stream.feed("message_start", ANTHROPIC_EVENTS[0])
    with pytest.raises(StreamError) as info:
        stream.feed("error", {"type": "error", "error": {"type": type_, "message": "Overloaded"}})
    assert (info.value.status, info.value.message) == (status, "Overloaded")


def test_stream_to_openai_ended_without_message_stop():
    stream = tr.StreamToOpenAI("m")
    stream.feed("message_start", ANTHROPIC_EVENTS[0])
    assert stream.feed("ping", {"type": "ping"}) == []
    with pytest.raises(StreamError) as info:
        stream.finish()
    assert info.value.status == 502
    assert info.value.message == "the upstream stream ended before its message_stop event"


def test_openai_sdk_accumulates_stream_to_openai_output():
    stream = tr.StreamToOpenAI("gpt-view")
    chunks = [c for event in ANTHROPIC_EVENTS for c in stream.feed(event["type"], event)]
    raw = b"".join(hub.sse(c) for c in chunks) + b"data: [DONE]\n\n"

    def handler(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(200, headers={"content-type": "text/event-stream"}, content=raw)

    client = openai_sdk.OpenAI(
        api_key="x", base_url="http://test/v1", http_client=httpx2.Client(transport=httpx2.MockTransport(handler))
    )
    with client.chat.completions.stream(model="gpt-view", messages=[{"role": "user", "content": "hi"}]) as s:
        completion = s.get_final_completion()
    message = completion.choices[0].message
    assert message.content == "Checking both."
    assert [(c.id, c.function.name, c.function.arguments) for c in message.tool_calls] == [
        ("toolu_a", "weather", '{"city": "Paris"}'),
        ("toolu_b", "weather", '{"city":"Rome"}'),
    ]
    assert completion.choices[0].finish_reason == "tool_calls"
    assert completion.usage.prompt_tokens == 100 and completion.usage.completion_tokens == 42


# -- stream: OpenAI chunks -> Anthropic events -------------------------------------------------------------


def test_stream_from_openai_text_exact_events():
    raw = run_stream(
        [
            oai_chunk({"role": "assistant", "content": ""}),
            oai_chunk({"content": "Hel"}),
            oai_chunk({"content": "lo", "some_new_field": 1}),
            oai_chunk({}, "stop"),
            oai_chunk(None, usage=OPENAI_USAGE),
        ]
    )
    assert events(raw) == [
        (
            "message_start",
            {
                "type": "message_start",
                "message": {
                    "id": "msg_chatcmpl-abc",
                    "type": "message",
                    "role": "assistant",
                    "model": MODEL,
                    "content": [],
                    "stop_reason": None,
                    "stop_sequence": None,
                    "usage": {"input_tokens": 0, "output_tokens": 0},
                },
            },
        ),
        (
            "content_block_start",
            {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        ),
        (
            "content_block_delta",
            {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hel"}},
        ),
        (
            "content_block_delta",
            {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "lo"}},
        ),
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        (
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                "usage": ANTHROPIC_USAGE,
            },
        ),
        ("message_stop", {"type": "message_stop"}),
    ]


def test_stream_from_openai_name_only_first_delta_then_arguments_across_chunks():
    raw = run_stream(
        [
            oai_chunk({"role": "assistant", "content": None}),
            oai_chunk(tool_delta(0, id="call_1", name="weather", args="")),
            oai_chunk(tool_delta(0, args='{"ci')),
            oai_chunk(tool_delta(0, args='ty": "Pa')),
            oai_chunk(tool_delta(0, args='ris"}')),
            oai_chunk({}, "tool_calls"),
        ]
    )
    evs = events(raw)
    assert_lifecycle(evs)
    assert evs[1][1]["content_block"] == {"type": "tool_use", "id": "call_1", "name": "weather", "input": {}}
    assert [d["delta"]["partial_json"] for n, d in evs if n == "content_block_delta"] == ['{"ci', 'ty": "Pa', 'ris"}']
    assert blocks_of(evs) == [{"type": "tool_use", "id": "call_1", "name": "weather", "input": {"city": "Paris"}}]
    assert evs[-2][1]["delta"]["stop_reason"] == "tool_use"


def test_stream_from_openai_whole_call_in_one_chunk_and_bad_id_mapped():
    raw = run_stream([oai_chunk(tool_delta(0, id="fc:1/x", name="f", args='{"a": 1}'), "stop")])
    evs = events(raw)
    assert_lifecycle(evs)
    assert [n for n, _ in evs] == [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert blocks_of(evs) == [{"type": "tool_use", "id": hub.tool_id("fc:1/x"), "name": "f", "input": {"a": 1}}]
    # finish_reason said "stop", but the answer holds a tool call: Anthropic clients look for tool_use.
    assert evs[-2][1]["delta"]["stop_reason"] == "tool_use"


def test_stream_from_openai_parallel_calls_contiguous_are_streamed():
    raw = run_stream(
        [
            oai_chunk(tool_delta(0, id="call_a", name="weather", args="")),
            oai_chunk(tool_delta(0, args='{"city":')),
            oai_chunk(tool_delta(0, args='"Paris"}')),
            oai_chunk(tool_delta(1, id="call_b", name="weather", args="")),
            oai_chunk(tool_delta(1, args='{"city":"Rome"}')),
            oai_chunk(tool_delta(0, args="\n")),  # after a closed call's complete JSON: dropped, never reopened
            oai_chunk({}, "tool_calls"),
        ]
    )
    evs = events(raw)
    assert_lifecycle(evs)
    assert [(n, d.get("delta", {}).get("partial_json")) for n, d in evs[1:-2]] == [
        ("content_block_start", None),
        ("content_block_delta", '{"city":'),
        ("content_block_delta", '"Paris"}'),
        ("content_block_stop", None),
        ("content_block_start", None),
        ("content_block_delta", '{"city":"Rome"}'),
        ("content_block_stop", None),
    ]
    assert blocks_of(evs) == [
        {"type": "tool_use", "id": "call_a", "name": "weather", "input": {"city": "Paris"}},
        {"type": "tool_use", "id": "call_b", "name": "weather", "input": {"city": "Rome"}},
    ]


def test_stream_from_openai_parallel_calls_interleaved_are_buffered():
    raw = run_stream(
        [
            oai_chunk(tool_delta(0, id="call_a", name="weather", args='{"city":')),
            oai_chunk(tool_delta(1, id="call_b", name="time", args='{"zone":')),
            oai_chunk(tool_delta(0, args='"Paris"}')),
            oai_chunk(tool_delta(2, id="call_c", name="news", args="{}")),
            oai_chunk(tool_delta(1, args='"CET"}')),
            oai_chunk({}, "tool_calls"),
        ]
    )
    evs = events(raw)
    assert_lifecycle(evs)
    assert blocks_of(evs) == [
        {"type": "tool_use", "id": "call_a", "name": "weather", "input": {"city": "Paris"}},
        {"type": "tool_use", "id": "call_b", "name": "time", "input": {"zone": "CET"}},
        {"type": "tool_use", "id": "call_c", "name": "news", "input": {}},
    ]
    # the buffered calls come whole: start, one input_json_delta, stop
    tail = [(n, d.get("delta", {}).get("partial_json")) for n, d in evs[1:-2]][4:]
    assert tail == [
        ("content_block_start", None),
        ("content_block_delta", '{"zone":"CET"}'),
        ("content_block_stop", None),
        ("content_block_start", None),
        ("content_block_delta", "{}"),
        ("content_block_stop", None),
    ]


def test_stream_from_openai_headers_first_then_arguments():
    raw = run_stream(
        [
            oai_chunk(
                {
                    "tool_calls": [
                        tool_delta(0, id="c0", name="a", args="")["tool_calls"][0],
                        tool_delta(1, id="c1", name="b", args="")["tool_calls"][0],
                    ]
                }
            ),
            oai_chunk(tool_delta(0, args='{"x":1}')),
            oai_chunk(tool_delta(1, args='{"y":2}')),
            oai_chunk(tool_delta(0, args=" ")),  # the first call is still the open block: streamed on
            oai_chunk({}, "tool_calls"),
        ]
    )
    evs = events(raw)
    assert_lifecycle(evs)
    assert blocks_of(evs) == [
        {"type": "tool_use", "id": "c0", "name": "a", "input": {"x": 1}},
        {"type": "tool_use", "id": "c1", "name": "b", "input": {"y": 2}},
    ]


def test_stream_from_openai_call_without_name_waits_for_it():
    raw = run_stream(
        [
            oai_chunk(tool_delta(0, id="c0", args="")),
            oai_chunk(tool_delta(0, name="late", args='{"k":')),
            oai_chunk(tool_delta(0, args="true}")),
        ]
    )
    evs = events(raw)
    assert_lifecycle(evs)
    assert blocks_of(evs) == [{"type": "tool_use", "id": "c0", "name": "late", "input": {"k": True}}]


def test_stream_from_openai_reasoning_then_text_then_tools():
    raw = run_stream(
        [
            oai_chunk({"role": "assistant", "reasoning_content": "Let me "}),
            oai_chunk({"reasoning_content": "think."}),
            oai_chunk({"thinking_blocks": [{"type": "thinking", "thinking": "", "signature": "sig1"}]}),
            oai_chunk({"thinking_blocks": [{"type": "redacted_thinking", "data": "opaque"}]}),
            oai_chunk({"content": "I'll call it."}),
            oai_chunk(tool_delta(0, id="call_1", name="f", args='{"q":"x"}')),
            oai_chunk(tool_delta(1, id="call_2", name="g", args="{}")),
            oai_chunk({}, "tool_calls"),
            oai_chunk(None, usage=OPENAI_USAGE),
        ]
    )
    evs = events(raw)
    assert_lifecycle(evs)
    assert blocks_of(evs) == [
        {"type": "thinking", "thinking": "Let me think.", "signature": "sig1"},
        {"type": "redacted_thinking", "data": "opaque"},
        {"type": "text", "text": "I'll call it."},
        {"type": "tool_use", "id": "call_1", "name": "f", "input": {"q": "x"}},
        {"type": "tool_use", "id": "call_2", "name": "g", "input": {}},
    ]
    assert evs[-2][1]["usage"] == ANTHROPIC_USAGE


def test_stream_from_openai_reasoning_after_signature_starts_a_new_thinking_block():
    raw = run_stream(
        [
            oai_chunk({"reasoning_content": "one", "thinking_blocks": [{"type": "thinking", "signature": "s1"}]}),
            oai_chunk({"reasoning_content": "two"}),
            oai_chunk({"thinking_blocks": [{"type": "thinking", "thinking": "two", "signature": "s2"}]}),
            oai_chunk({"thinking_blocks": [{"type": "thinking", "thinking": "three", "signature": "s3"}]}),
        ]
    )
    evs = events(raw)
    assert_lifecycle(evs)
    assert blocks_of(evs) == [
        {"type": "thinking", "thinking": "one", "signature": "s1"},
        {"type": "thinking", "thinking": "two", "signature": "s2"},
        {"type": "thinking", "thinking": "three", "signature": "s3"},
    ]


def test_stream_from_openai_refusal():
    evs = events(run_stream([oai_chunk({"refusal": "No."}), oai_chunk({}, "stop")]))
    assert_lifecycle(evs)
    assert blocks_of(evs) == [{"type": "text", "text": "No."}]
    assert evs[-2][1]["delta"]["stop_reason"] == "refusal"


@pytest.mark.parametrize(
    ("finish", "stop"), [("length", "max_tokens"), ("content_filter", "refusal"), ("odd", "end_turn")]
)
def test_stream_from_openai_finish_reasons(finish, stop):
    evs = events(run_stream([oai_chunk({"content": "x"}, finish)]))
    assert evs[-2][1]["delta"] == {"stop_reason": stop, "stop_sequence": None}


def test_stream_from_openai_finish_without_chunks():
    stream = tr.StreamFromOpenAI(MODEL)
    evs = events(stream.finish())
    assert [n for n, _ in evs] == ["message_start", "message_delta", "message_stop"]
    assert evs[0][1]["message"]["id"].startswith("msg_")
    assert stream.finish() == b"" and stream.feed(oai_chunk({"content": "late"})) == b""


def test_stream_from_openai_error_ends_the_stream():
    stream = tr.StreamFromOpenAI(MODEL)
    stream.feed(oai_chunk({"content": "partial"}))
    assert stream.error(529, "Overloaded") == (
        b'event: error\ndata: {"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}\n\n'
    )
    assert stream.feed(oai_chunk({"content": "more"})) == b""
    assert stream.finish() == b"" and stream.error(500, "again") == b""


# -- the official Anthropic SDK as the client --------------------------------------------------------------


def test_anthropic_sdk_accumulates_stream_from_openai():
    raw = run_stream(
        [
            oai_chunk({"role": "assistant", "reasoning_content": "Both cities."}),
            oai_chunk({"thinking_blocks": [{"type": "thinking", "thinking": "", "signature": "sig=="}]}),
            oai_chunk({"content": "Checking"}),
            oai_chunk({"content": " now."}),
            oai_chunk(tool_delta(0, id="call_a", name="weather", args="")),
            oai_chunk(tool_delta(0, args='{"city":')),
            oai_chunk(tool_delta(1, id="call:b", name="weather", args='{"ci')),
            oai_chunk(tool_delta(0, args='"Paris"}')),
            oai_chunk(tool_delta(1, args='ty":"Rome","days":[1,2]}')),
            oai_chunk({}, "tool_calls"),
            oai_chunk(None, usage=OPENAI_USAGE),
        ]
    )
    client = mock_anthropic(raw, "text/event-stream")
    with client.messages.stream(model=MODEL, max_tokens=100, messages=[{"role": "user", "content": "hi"}]) as stream:
        message = stream.get_final_message()
    assert message.id == "msg_chatcmpl-abc"
    assert [block.to_dict() for block in message.content] == [
        {"type": "thinking", "thinking": "Both cities.", "signature": "sig=="},
        {"type": "text", "text": "Checking now."},
        {"type": "tool_use", "id": "call_a", "name": "weather", "input": {"city": "Paris"}},
        {"type": "tool_use", "id": hub.tool_id("call:b"), "name": "weather", "input": {"city": "Rome", "days": [1, 2]}},
    ]
    assert message.stop_reason == "tool_use"
    assert message.usage.input_tokens == 60 and message.usage.output_tokens == 20
    assert message.usage.cache_read_input_tokens == 30 and message.usage.cache_creation_input_tokens == 10


def test_anthropic_sdk_reads_a_json_answer():
    payload = {
        "id": "chatcmpl-json",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": '{"answer": 42}'}, "finish_reason": "stop"}
        ],
        "usage": {"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17},
    }
    client = mock_anthropic(hub.compact(tr.response_from_openai(payload, MODEL)).encode(), "application/json")
    message = client.messages.create(model=MODEL, max_tokens=100, messages=[{"role": "user", "content": "json"}])
    assert message.id == "msg_chatcmpl-json" and message.model == MODEL
    assert [block.to_dict() for block in message.content] == [{"type": "text", "text": '{"answer": 42}'}]
    assert json.loads(message.content[0].text) == {"answer": 42}
    assert message.stop_reason == "end_turn"
    assert (message.usage.input_tokens, message.usage.output_tokens) == (12, 5)
