"""The mock upstream (``bench.mock_upstream``) against the official SDKs pointed STRAIGHT at it.

The gateway's format translation is tested against the mock for every upstream type (OpenAI,
Azure OpenAI, Anthropic, Gemini), so the mock itself must be right first: each SDK parses its
answers with its own models and stream accumulators (an ill-formed stream fails there), and a
raw socket checks the byte-level traps (a UTF-8 character split across two HTTP chunks).
"""

from __future__ import annotations

import json
import socket

import anthropic
import openai
import pytest
import urllib3
from google import genai
from google.genai import errors as genai_errors
from google.genai import types

from bench.mock_upstream import GEMINI_SIGNATURE, REFUSAL, TOOL_ARGS, serve_in_thread

PROMPT = "What is the weather like in Paris today, please?"  # 48 characters: 12 prompt tokens
TOKENS = 12
OPENAI_TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    },
    {"type": "function", "function": {"name": "clock", "parameters": {"type": "object", "properties": {}}}},
]
ANTHROPIC_TOOLS = [
    {"name": "weather", "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}},
    {"name": "clock", "input_schema": {"type": "object", "properties": {}}},
]
GEMINI_TOOLS = [
    types.Tool(
        function_declarations=[
            types.FunctionDeclaration(
                name="weather", parameters={"type": "object", "properties": {"city": {"type": "string"}}}
            ),
            types.FunctionDeclaration(name="clock", parameters={"type": "object", "properties": {}}),
        ]
    )
]
NO_AFC = types.AutomaticFunctionCallingConfig(disable=True)


@pytest.fixture(scope="module")
def port() -> int:
    return serve_in_thread()


@pytest.fixture(scope="module")
def base(port) -> str:
    return f"http://127.0.0.1:{port}"


@pytest.fixture(scope="module")
def http():
    return urllib3.PoolManager()


@pytest.fixture
def last_request(base, http):
    """What the mock received last (``GET /_mock/stats``)."""

    def _last() -> dict:
        return json.loads(http.request("GET", f"{base}/_mock/stats").data)["last_request"]

    return _last


@pytest.fixture(scope="module")
def oai(base):
    return openai.OpenAI(base_url=f"{base}/v1", api_key="k", max_retries=0)


@pytest.fixture(scope="module")
def azure(base):
    return openai.AzureOpenAI(azure_endpoint=base, api_key="k", api_version="2024-10-21", max_retries=0)


@pytest.fixture(scope="module")
def claude(base):
    return anthropic.Anthropic(base_url=base, api_key="k", max_retries=0)


@pytest.fixture(scope="module")
def gemini(base):
    return genai.Client(api_key="k", http_options=types.HttpOptions(base_url=base))


def user(text: str = PROMPT) -> list[dict]:
    return [{"role": "user", "content": text}]


def raw_chunks(port: int, method: str, path: str, body=None, headers: dict | None = None) -> tuple[int, list[bytes]]:
    """One request on a fresh socket; the status and the HTTP chunks of the answer as sent
    (a ``Content-Length`` body is one chunk)."""
    data = json.dumps(body).encode() if body is not None else b""
    lines = [f"{method} {path} HTTP/1.1", "Host: mock", "Connection: close", f"Content-Length: {len(data)}"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + data)
        received = b""
        while block := sock.recv(65536):
            received += block
    head, _, rest = received.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    if b"transfer-encoding: chunked" not in head.lower():
        return status, [rest]
    chunks = []
    while True:
        size_line, _, rest = rest.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            return status, chunks
        chunks.append(rest[:size])
        rest = rest[size + 2 :]


def assert_a_character_is_split(chunks: list[bytes]) -> None:
    """Some HTTP chunk ends inside a multi-byte UTF-8 character, and the whole body is valid UTF-8."""
    broken = []
    for chunk in chunks:
        try:
            chunk.decode()
        except UnicodeDecodeError:
            broken.append(chunk)
    assert broken, "no HTTP chunk ends inside a UTF-8 character"
    b"".join(chunks).decode()


# --- OpenAI ------------------------------------------------------------------------------------------


def test_openai_chat_json_and_echo(oai, last_request):
    answer = oai.chat.completions.create(model="gpt-4o-echo", messages=user(), max_tokens=3)
    assert answer.choices[0].message.content == "mock mock mock"
    assert answer.choices[0].finish_reason == "length"
    assert (answer.usage.prompt_tokens, answer.usage.completion_tokens, answer.usage.total_tokens) == (TOKENS, 3, 15)
    echo = answer.model_extra["echo"]
    assert echo["path"] == "/v1/chat/completions" and echo["query"] == ""
    assert echo["headers"]["authorization"] == "Bearer k" and echo["body"]["messages"] == user()
    seen = last_request()
    assert (seen["method"], seen["path"], seen["body"]["model"]) == ("POST", "/v1/chat/completions", "gpt-4o-echo")


def test_openai_stream_one_tool_call(oai):
    with oai.chat.completions.stream(model="gpt-4o-tool", messages=user(), tools=OPENAI_TOOLS) as stream:
        pieces = [e.arguments_delta for e in stream if e.type == "tool_calls.function.arguments.delta"]
        final = stream.get_final_completion()
    choice = final.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    [call] = choice.message.tool_calls
    assert (call.id, call.type, call.function.name) == ("call_mock0", "function", "weather")
    assert json.loads(call.function.arguments) == TOOL_ARGS[0] == {"city": "Paris", "note": "café ☕ — ok"}
    assert len(pieces) >= 3 and "".join(pieces) == call.function.arguments


@pytest.mark.parametrize(
    ("tools", "names"), [(OPENAI_TOOLS, ["weather", "clock"]), (OPENAI_TOOLS[:1], ["weather"] * 2)]
)
def test_openai_stream_parallel_tool_calls(oai, tools, names):
    with oai.chat.completions.stream(model="gpt-4o-parallel-tool", messages=user(), tools=tools) as stream:
        final = stream.get_final_completion()
    calls = final.choices[0].message.tool_calls
    assert [c.function.name for c in calls] == names and [c.id for c in calls] == ["call_mock0", "call_mock1"]
    assert [json.loads(c.function.arguments) for c in calls] == list(TOOL_ARGS)
    assert TOOL_ARGS[1] == {"city": "Tokyo", "note": "東京"}


def test_openai_stream_tool_whole_sends_each_call_in_one_chunk(oai):
    model = "gpt-4o-parallel-tool-whole"
    with oai.chat.completions.stream(model=model, messages=user(), tools=OPENAI_TOOLS) as stream:
        pieces = [e.arguments_delta for e in stream if e.type == "tool_calls.function.arguments.delta"]
        final = stream.get_final_completion()
    calls = final.choices[0].message.tool_calls
    assert pieces == [c.function.arguments for c in calls]
    assert [json.loads(c.function.arguments) for c in calls] == list(TOOL_ARGS)


def test_openai_tool_call_json(oai):
    answer = oai.chat.completions.create(model="gpt-4o-tool", messages=user(), tools=OPENAI_TOOLS)
    [call] = answer.choices[0].message.tool_calls
    assert answer.choices[0].finish_reason == "tool_calls" and call.function.name == "weather"
    assert json.loads(call.function.arguments) == TOOL_ARGS[0]


def test_openai_tool_word_without_tools_is_plain_text(oai):
    answer = oai.chat.completions.create(model="gpt-4o-tool", messages=user(), max_tokens=2)
    assert answer.choices[0].message.content == "mock mock" and answer.choices[0].message.tool_calls is None


def test_openai_tool_stream_splits_a_character_across_http_chunks(port):
    body = {"model": "gpt-4o-parallel-tool", "messages": user(), "tools": OPENAI_TOOLS, "stream": True}
    status, chunks = raw_chunks(port, "POST", "/v1/chat/completions", body, {"Authorization": "Bearer k"})
    assert status == 200
    assert_a_character_is_split(chunks)
    assert chunks[-1] == b"data: [DONE]\n\n"


def test_openai_tool_results_come_back_as_text(oai):
    messages = user() + [
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "call_a", "type": "function", "function": {"name": "weather", "arguments": "{}"}},
                {"id": "call_b", "type": "function", "function": {"name": "clock", "arguments": "{}"}},
            ],
        },
        {"role": "tool", "tool_call_id": "call_a", "content": "sunny, 21 °C"},
        {"role": "tool", "tool_call_id": "call_b", "content": [{"type": "text", "text": "12:00"}]},
    ]
    answer = oai.chat.completions.create(model="gpt-4o-tool", messages=messages, tools=OPENAI_TOOLS)
    assert answer.choices[0].message.content == "tool results: sunny, 21 °C | 12:00"
    assert answer.choices[0].finish_reason == "stop" and answer.choices[0].message.tool_calls is None
    with oai.chat.completions.stream(model="gpt-4o-tool", messages=messages, tools=OPENAI_TOOLS) as stream:
        final = stream.get_final_completion()
    assert final.choices[0].message.content == "tool results: sunny, 21 °C | 12:00"


def test_openai_refusal_json_and_stream(oai):
    answer = oai.chat.completions.create(model="gpt-4o-refusal", messages=user())
    message = answer.choices[0].message
    assert (message.refusal, message.content, answer.choices[0].finish_reason) == (REFUSAL, None, "stop")
    with oai.chat.completions.stream(model="gpt-4o-refusal", messages=user()) as stream:
        deltas = [e.delta for e in stream if e.type == "refusal.delta"]
        final = stream.get_final_completion()
    assert final.choices[0].message.refusal == REFUSAL and final.choices[0].message.content is None
    assert len(deltas) > 1 and "".join(deltas) == REFUSAL


def test_openai_cached_and_reasoning_usage(oai):
    answer = oai.chat.completions.create(model="gpt-4o-cached", messages=user(), max_tokens=4)
    assert answer.usage.prompt_tokens_details.cached_tokens == TOKENS // 2
    answer = oai.chat.completions.create(model="o3-thinking", messages=user(), max_tokens=4)
    assert answer.usage.completion_tokens == 9 and answer.usage.completion_tokens_details.reasoning_tokens == 5
    assert answer.choices[0].message.content == "mock mock mock mock"
    with oai.chat.completions.stream(
        model="o3-thinking-cached-tool",
        messages=user(),
        tools=OPENAI_TOOLS,
        max_tokens=4,
        stream_options={"include_usage": True},
    ) as stream:
        final = stream.get_final_completion()
    usage = final.usage
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (TOKENS, 9, TOKENS + 9)
    assert usage.prompt_tokens_details.cached_tokens == TOKENS // 2
    assert usage.completion_tokens_details.reasoning_tokens == 5


def test_openai_models_list(oai):
    ids = [m.id for m in oai.models.list()]
    assert "gpt-4o" in ids and "claude-3-5-haiku-latest" in ids and "gemini-2.5-flash" in ids
    assert oai.models.retrieve("gpt-4o-mini").id == "gpt-4o-mini"


# --- Azure OpenAI ------------------------------------------------------------------------------------


def test_azure_json_answers_with_the_deployment(azure, last_request):
    answer = azure.chat.completions.create(model="gpt-4o", messages=user(), max_tokens=2)
    assert answer.model == "gpt-4o" and answer.choices[0].message.content == "mock mock"
    assert answer.model_extra["prompt_filter_results"][0]["prompt_index"] == 0
    seen = last_request()
    assert seen["path"] == "/openai/deployments/gpt-4o/chat/completions"
    assert seen["query"] == "api-version=2024-10-21"
    assert seen["headers"]["api-key"] == "k" and "authorization" not in seen["headers"]


def test_azure_stream_starts_with_the_prompt_filter_chunk(azure):
    chunks = list(azure.chat.completions.create(model="gpt-4o", messages=user(), max_tokens=2, stream=True))
    first = chunks[0]
    assert first.choices == [] and first.id == "" and first.model == ""
    assert first.model_extra["prompt_filter_results"] == [{"prompt_index": 0, "content_filter_results": {}}]
    assert "".join(c.choices[0].delta.content or "" for c in chunks[1:]) == "mock mock "
    # The SDK's accumulator takes the filter chunk too (a plain answer ends with "length").
    with pytest.raises(openai.LengthFinishReasonError) as raised:
        with azure.chat.completions.stream(model="gpt-4o", messages=user(), max_tokens=2) as stream:
            stream.get_final_completion()
    assert raised.value.completion.choices[0].message.content == "mock mock "
    with azure.chat.completions.stream(model="gpt-4o-mini-tool", messages=user(), tools=OPENAI_TOOLS) as stream:
        final = stream.get_final_completion()
    [call] = final.choices[0].message.tool_calls
    assert final.model == "gpt-4o-mini-tool" and json.loads(call.function.arguments) == TOOL_ARGS[0]


def test_azure_embeddings_models_and_deployments(azure, base, http, last_request):
    answer = azure.embeddings.create(model="text-embedding-3-small", input=["a", "b"])
    assert len(answer.data) == 2 and answer.model == "text-embedding-3-small"
    assert last_request()["path"] == "/openai/deployments/text-embedding-3-small/embeddings"
    assert "gpt-4o" in [m.id for m in azure.models.list()]
    deployments = http.request("GET", f"{base}/openai/deployments?api-version=2024-10-21", headers={"api-key": "k"})
    assert [(d["id"], d["model"]) for d in json.loads(deployments.data)["data"]] == [
        ("gpt-4o", "gpt-4o"),
        ("gpt-4o-mini", "gpt-4o-mini"),
    ]


def test_azure_without_api_version_is_404_and_without_key_401(base):
    no_version = openai.OpenAI(
        base_url=f"{base}/openai/deployments/gpt-4o", api_key="k", default_headers={"api-key": "k"}, max_retries=0
    )
    with pytest.raises(openai.NotFoundError) as raised:
        no_version.chat.completions.create(model="gpt-4o", messages=user())
    assert raised.value.body == {"code": "404", "message": "Resource not found"}
    no_key = openai.OpenAI(
        base_url=f"{base}/openai/deployments/gpt-4o",
        api_key="k",
        default_query={"api-version": "2024-10-21"},
        max_retries=0,
    )
    with pytest.raises(openai.AuthenticationError) as raised:
        no_key.chat.completions.create(model="gpt-4o", messages=user())
    assert raised.value.body["code"] == "401" and raised.value.body["message"].startswith("Access denied")


def test_azure_failure_words_answer_in_the_error_shape(azure):
    with pytest.raises(openai.RateLimitError) as raised:
        azure.chat.completions.create(model="gpt-4o-fail-429", messages=user())
    assert raised.value.body["code"] == "429" and raised.value.response.headers["retry-after"] == "1"


# --- Anthropic ---------------------------------------------------------------------------------------


def test_anthropic_messages_json_and_echo(claude):
    message = claude.messages.create(model="claude-3-5-haiku-echo", max_tokens=3, messages=user())
    assert [b.type for b in message.content] == ["text"] and message.content[0].text == "mock mock mock"
    assert message.stop_reason == "max_tokens"
    assert (message.usage.input_tokens, message.usage.output_tokens) == (TOKENS, 3)
    echo = message.model_extra["echo"]
    assert echo["path"] == "/v1/messages" and echo["body"]["messages"] == user()
    assert echo["headers"]["anthropic-version"]


def test_anthropic_stream_one_tool_call(claude):
    with claude.messages.stream(model="claude-tool", max_tokens=10, messages=user(), tools=ANTHROPIC_TOOLS) as stream:
        partials = [e.partial_json for e in stream if e.type == "input_json"]
        message = stream.get_final_message()
    [block] = message.content
    assert (block.type, block.id, block.name, block.input) == ("tool_use", "toolu_mock0", "weather", TOOL_ARGS[0])
    assert message.stop_reason == "tool_use" and len(partials) >= 3


def test_anthropic_stream_parallel_tool_calls(claude):
    with claude.messages.stream(
        model="claude-parallel-tool", max_tokens=10, messages=user(), tools=ANTHROPIC_TOOLS
    ) as stream:
        message = stream.get_final_message()
    assert [(b.id, b.name, b.input) for b in message.content] == [
        ("toolu_mock0", "weather", TOOL_ARGS[0]),
        ("toolu_mock1", "clock", TOOL_ARGS[1]),
    ]
    json_message = claude.messages.create(
        model="claude-parallel-tool", max_tokens=10, messages=user(), tools=ANTHROPIC_TOOLS[:1]
    )
    assert [(b.name, b.input) for b in json_message.content] == [("weather", TOOL_ARGS[0]), ("weather", TOOL_ARGS[1])]


def test_anthropic_tool_stream_splits_a_character_across_http_chunks(port):
    body = {"model": "claude-tool", "max_tokens": 5, "messages": user(), "tools": ANTHROPIC_TOOLS, "stream": True}
    status, chunks = raw_chunks(port, "POST", "/v1/messages", body, {"x-api-key": "k", "anthropic-version": "x"})
    assert status == 200
    assert_a_character_is_split(chunks)


def test_anthropic_thinking(claude):
    with claude.messages.stream(model="claude-thinking", max_tokens=3, messages=user()) as stream:
        kinds = [e.delta.type for e in stream if e.type == "content_block_delta"]
        message = stream.get_final_message()
    thinking, text = message.content
    assert (thinking.type, thinking.thinking, thinking.signature) == ("thinking", "Let me think.", "sig-mock")
    assert text.text == "mock mock mock " and message.usage.output_tokens == 8
    assert kinds[:2] == ["thinking_delta", "signature_delta"]
    json_message = claude.messages.create(model="claude-thinking", max_tokens=3, messages=user())
    assert [b.type for b in json_message.content] == ["thinking", "text"] and json_message.usage.output_tokens == 8


def test_anthropic_cached_usage_and_repeated_input_figures(claude):
    expected = (TOKENS - TOKENS // 2 - 3, TOKENS // 2, 3)
    message = claude.messages.create(model="claude-cached", max_tokens=2, messages=user())
    usage = message.usage
    assert (usage.input_tokens, usage.cache_read_input_tokens, usage.cache_creation_input_tokens) == expected
    with claude.messages.stream(model="claude-cached", max_tokens=2, messages=user()) as stream:
        events = list(stream)
        message = stream.get_final_message()
    start = next(e for e in events if e.type == "message_start").message.usage
    delta = next(e for e in events if e.type == "message_delta").usage
    for usage in (start, delta, message.usage):
        assert (usage.input_tokens, usage.cache_read_input_tokens, usage.cache_creation_input_tokens) == expected
    assert (start.output_tokens, delta.output_tokens, message.usage.output_tokens) == (1, 2, 2)


def test_anthropic_refusal(claude):
    message = claude.messages.create(model="claude-refusal", max_tokens=5, messages=user())
    assert message.stop_reason == "refusal" and message.content[0].text == REFUSAL
    with claude.messages.stream(model="claude-refusal", max_tokens=5, messages=user()) as stream:
        message = stream.get_final_message()
    assert message.stop_reason == "refusal" and message.content[0].text == REFUSAL


def test_anthropic_tool_results_come_back_as_text(claude):
    messages = user() + [
        {
            "role": "assistant",
            "content": [
                {"type": "tool_use", "id": "toolu_a", "name": "weather", "input": {}},
                {"type": "tool_use", "id": "toolu_b", "name": "clock", "input": {}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_a", "content": "sunny"},
                {"type": "tool_result", "tool_use_id": "toolu_b", "content": [{"type": "text", "text": "12:00"}]},
            ],
        },
    ]
    message = claude.messages.create(model="claude-tool", max_tokens=5, messages=messages, tools=ANTHROPIC_TOOLS)
    assert message.content[0].text == "tool results: sunny | 12:00" and message.stop_reason == "end_turn"


def test_anthropic_count_tokens_and_models(claude, last_request):
    assert claude.messages.count_tokens(model="claude-x", messages=user(), system="x" * 8).input_tokens == TOKENS + 2
    assert last_request()["path"] == "/v1/messages/count_tokens"
    models = list(claude.models.list())
    assert models[0].type == "model" and "claude-3-5-sonnet-latest" in [m.id for m in models]
    assert claude.models.retrieve("claude-3-5-haiku-latest").display_name == "claude-3-5-haiku-latest"


# --- Gemini ------------------------------------------------------------------------------------------


def test_gemini_generate_content_text(gemini, last_request):
    config = types.GenerateContentConfig(max_output_tokens=3, system_instruction="x" * 8)
    answer = gemini.models.generate_content(model="gemini-2.5-flash", contents=PROMPT, config=config)
    assert answer.text == "mock mock mock" and answer.candidates[0].finish_reason == types.FinishReason.MAX_TOKENS
    usage = answer.usage_metadata
    assert (usage.prompt_token_count, usage.candidates_token_count, usage.total_token_count) == (TOKENS + 2, 3, 17)
    assert answer.model_version == "gemini-2.5-flash" and answer.response_id
    seen = last_request()
    assert seen["path"] == "/v1/models/gemini-2.5-flash:generateContent" and seen["query"] == ""
    assert seen["headers"]["x-goog-api-key"] == "k"
    assert seen["body"]["generationConfig"]["maxOutputTokens"] == 3


def test_gemini_under_v1beta(base, last_request):
    client = genai.Client(api_key="k", http_options=types.HttpOptions(base_url=base, api_version="v1beta"))
    answer = client.models.generate_content(model="gemini-2.0-flash", contents="hi there")
    assert answer.text.startswith("mock")
    assert last_request()["path"] == "/v1beta/models/gemini-2.0-flash:generateContent"
    chunks = list(client.models.generate_content_stream(model="gemini-2.0-flash", contents="hi there"))
    assert len(chunks) == 16
    seen = last_request()
    assert (seen["path"], seen["query"]) == ("/v1beta/models/gemini-2.0-flash:streamGenerateContent", "alt=sse")
    assert len(list(client.models.list())) == 3 and last_request()["path"] == "/v1beta/models"


def test_gemini_echo_and_key_in_the_query(port):
    path = "/v1beta/models/gemini-2.5-pro-echo:generateContent?key=abc"
    body = {"contents": [{"role": "user", "parts": [{"text": PROMPT}]}]}
    status, [data] = raw_chunks(port, "POST", path, body)
    assert status == 200
    echo = json.loads(data)["echo"]
    assert (echo["path"], echo["query"], echo["body"]) == (
        "/v1beta/models/gemini-2.5-pro-echo:generateContent",
        "key=abc",
        body,
    )


def test_gemini_function_calls_with_thought_signature(gemini):
    config = types.GenerateContentConfig(tools=GEMINI_TOOLS, automatic_function_calling=NO_AFC)
    answer = gemini.models.generate_content(
        model="gemini-2.5-pro-parallel-tool-thinking", contents=PROMPT, config=config
    )
    thought, first, second = answer.candidates[0].content.parts
    assert thought.thought is True and thought.text == "Let me think."
    assert first.thought_signature == b"sig-mock" and second.thought_signature is None
    assert GEMINI_SIGNATURE == "c2lnLW1vY2s="
    assert [(c.name, c.args, c.id) for c in answer.function_calls] == [
        ("weather", TOOL_ARGS[0], None),
        ("clock", TOOL_ARGS[1], None),
    ]
    assert answer.candidates[0].finish_reason == types.FinishReason.STOP
    assert answer.usage_metadata.thoughts_token_count == 5


def test_gemini_stream_text_and_usage(gemini):
    config = types.GenerateContentConfig(max_output_tokens=4)
    chunks = list(gemini.models.generate_content_stream(model="gemini-2.5-flash", contents=PROMPT, config=config))
    assert "".join(c.text for c in chunks) == "mock " * 4 and len(chunks) == 4
    assert [c.usage_metadata.candidates_token_count for c in chunks] == [1, 2, 3, 4]
    assert chunks[-1].candidates[0].finish_reason == types.FinishReason.MAX_TOKENS
    assert chunks[-1].usage_metadata.total_token_count == TOKENS + 4


def test_gemini_stream_function_calls(gemini, last_request):
    config = types.GenerateContentConfig(tools=GEMINI_TOOLS, automatic_function_calling=NO_AFC)
    chunks = list(
        gemini.models.generate_content_stream(
            model="gemini-2.5-flash-parallel-tool-thinking", contents=PROMPT, config=config
        )
    )
    assert last_request()["query"] == "alt=sse"
    calls = [call for chunk in chunks for call in chunk.function_calls or []]
    assert [(c.name, c.args) for c in calls] == [("weather", TOOL_ARGS[0]), ("clock", TOOL_ARGS[1])]
    assert chunks[0].candidates[0].content.parts[0].thought is True
    assert chunks[1].candidates[0].content.parts[0].thought_signature == b"sig-mock"
    last = chunks[-1].candidates[0]
    assert last.finish_reason == types.FinishReason.STOP and not last.content.parts
    assert all(c.candidates[0].finish_reason is None for c in chunks[:-1])
    assert chunks[-1].usage_metadata.thoughts_token_count == 5


def test_gemini_stream_splits_a_character_across_http_chunks(port):
    body = {"contents": [{"parts": [{"text": PROMPT}]}], "tools": [{"functionDeclarations": [{"name": "weather"}]}]}
    path = "/v1beta/models/gemini-2.5-flash-tool:streamGenerateContent?alt=sse"
    status, chunks = raw_chunks(port, "POST", path, body, {"x-goog-api-key": "k"})
    assert status == 200
    assert_a_character_is_split(chunks)
    body_bytes = b"".join(chunks)
    assert body_bytes.endswith(b"\r\n\r\n")
    events = body_bytes.split(b"\r\n\r\n")[:-1]
    assert len(events) == 2 and all(event.startswith(b"data: {") for event in events)


def test_gemini_cached_refusal_and_tool_results(gemini):
    answer = gemini.models.generate_content(model="gemini-2.5-flash-cached", contents=PROMPT)
    assert answer.usage_metadata.cached_content_token_count == TOKENS // 2
    assert answer.usage_metadata.prompt_token_count == TOKENS
    answer = gemini.models.generate_content(model="gemini-2.5-flash-refusal", contents=PROMPT)
    assert answer.candidates[0].finish_reason == types.FinishReason.SAFETY and answer.candidates[0].content is None
    contents = [
        types.Content(role="user", parts=[types.Part(text=PROMPT)]),
        types.Content(role="model", parts=[types.Part(function_call=types.FunctionCall(name="weather", args={}))]),
        types.Content(
            role="user",
            parts=[
                types.Part(function_response=types.FunctionResponse(name="weather", response={"sky": "sunny"})),
                types.Part(function_response=types.FunctionResponse(name="clock", response={"time": "12:00"})),
            ],
        ),
    ]
    config = types.GenerateContentConfig(tools=GEMINI_TOOLS, automatic_function_calling=NO_AFC)
    answer = gemini.models.generate_content(model="gemini-2.5-flash-tool", contents=contents, config=config)
    assert answer.text == 'tool results: {"sky":"sunny"} | {"time":"12:00"}'
    assert answer.candidates[0].finish_reason == types.FinishReason.STOP


def test_gemini_count_tokens_and_models(gemini):
    assert gemini.models.count_tokens(model="gemini-2.5-flash", contents=PROMPT).total_tokens == TOKENS
    names = [m.name for m in gemini.models.list()]
    assert names == ["models/gemini-2.5-flash", "models/gemini-2.5-pro", "models/gemini-2.0-flash"]
    model = gemini.models.get(model="gemini-2.5-pro")
    assert model.name == "models/gemini-2.5-pro" and "generateContent" in model.supported_actions


def test_gemini_without_a_key_is_401(base):
    client = genai.Client(api_key="k", http_options=types.HttpOptions(base_url=base, headers={"x-goog-api-key": ""}))
    with pytest.raises(genai_errors.APIError) as raised:
        client.models.generate_content(model="gemini-2.5-flash", contents="hi")
    assert raised.value.code == 401 and raised.value.status == "UNAUTHENTICATED"


def test_gemini_failure_words_answer_in_the_error_shape(port):
    body = {"contents": [{"parts": [{"text": "hi"}]}]}
    path = "/v1beta/models/gemini-2.5-flash-fail-429:generateContent"
    status, [data] = raw_chunks(port, "POST", path, body, {"x-goog-api-key": "k"})
    assert status == 429
    assert json.loads(data)["error"] == {
        "code": 429,
        "message": "mock upstream failure 429",
        "status": "RESOURCE_EXHAUSTED",
    }
