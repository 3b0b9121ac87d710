"""Gemini <-> OpenAI translation (proxy.translate.gemini): pure functions over dicts, no database,
no network. The last section hands the translated answers and streams to the real ``google-genai``
SDK through an in-memory httpx transport, and records what the SDK calls."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from proxy.translate import gemini, hub

SIG = "c2lnbmF0dXJlLW9uZQ=="  # base64, as Gemini's thought signatures are (the SDK decodes them)
SIG2 = "c2lnbmF0dXJlLXR3bw=="

# A schema the way OpenAI clients write them: $defs, $ref, anyOf, lower-case types, nullables.
COMPLEX_SCHEMA: dict[str, Any] = {
    "type": "object",
    "$defs": {"unit": {"type": "string", "enum": ["c", "f"]}},
    "properties": {
        "city": {"type": "string", "description": "City name"},
        "unit": {"$ref": "#/$defs/unit"},
        "days": {"anyOf": [{"type": "integer", "minimum": 1}, {"type": "null"}]},
        "tags": {"type": "array", "items": {"type": "string"}},
    },
    "required": ["city"],
    "additionalProperties": False,
}


def weather_call_turns() -> list[dict[str, Any]]:
    """A user question, a model turn with two parallel calls (the first signed), and both answers."""
    return [
        {"role": "user", "parts": [{"text": "Weather in Paris and Rome?"}]},
        {
            "role": "model",
            "parts": [
                {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}, "thoughtSignature": SIG},
                {"functionCall": {"name": "get_weather", "args": {"city": "Rome"}}},
            ],
        },
        {
            "role": "user",
            "parts": [
                {"functionResponse": {"name": "get_weather", "response": {"result": "sunny"}}},
                {"functionResponse": {"name": "get_weather", "response": {"temp": 21, "sky": "clear"}}},
            ],
        },
    ]


def sse_payloads(raw: bytes) -> list[dict[str, Any]]:
    """The JSON of each ``data:`` event, checking Gemini's CRLF framing on the way."""
    assert raw.endswith(b"\r\n\r\n")
    events = raw.split(b"\r\n\r\n")[:-1]
    assert all(event.startswith(b"data: ") for event in events)
    return [json.loads(event[len(b"data: ") :]) for event in events]


# -- request: Gemini -> OpenAI ----------------------------------------------------------------


def test_system_instruction_content_becomes_the_first_message():
    body = {
        "systemInstruction": {"role": "user", "parts": [{"text": "Be brief."}, {"text": "Answer in French."}]},
        "contents": [{"role": "user", "parts": [{"text": "Hi"}]}],
    }
    out = gemini.request_to_openai(body, "gpt-4o")
    assert out == {
        "model": "gpt-4o",
        "messages": [
            {"role": "system", "content": "Be brief.\nAnswer in French."},
            {"role": "user", "content": "Hi"},
        ],
    }
    assert "stream" not in out


def test_system_instruction_as_a_string():
    out = gemini.request_to_openai({"systemInstruction": "Be brief.", "contents": [{"parts": [{"text": "Hi"}]}]}, "m")
    assert out["messages"] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]


def test_roles_and_thought_text_of_a_model_turn():
    body = {
        "contents": [
            {"parts": [{"text": "What is 2+2?"}]},  # no role: user
            {
                "role": "model",
                "parts": [{"text": "Adding.", "thought": True}, {"text": "It is "}, {"text": "4."}],
            },
            {"role": "user", "parts": [{"text": "Thanks"}, {"text": "!"}]},
        ]
    }
    assert gemini.request_to_openai(body, "m")["messages"] == [
        {"role": "user", "content": "What is 2+2?"},
        {"role": "assistant", "content": "It is 4.", "reasoning_content": "Adding."},
        {"role": "user", "content": [{"type": "text", "text": "Thanks"}, {"type": "text", "text": "!"}]},
    ]


def test_parallel_calls_get_deterministic_ids_shared_with_their_responses():
    body = {"contents": weather_call_turns()}
    first = gemini.request_to_openai(copy.deepcopy(body), "m")
    second = gemini.request_to_openai(copy.deepcopy(body), "m")
    assert first == second

    assistant, paris, rome = first["messages"][1:]
    calls = assistant["tool_calls"]
    assert assistant["content"] is None
    base0, signature0 = hub.split_signature(calls[0]["id"])
    base1, signature1 = hub.split_signature(calls[1]["id"])
    assert signature0 == SIG and signature1 is None
    assert base0.startswith("call_0_") and base1.startswith("call_1_") and base0 != base1
    assert calls[0]["function"] == {"name": "get_weather", "arguments": '{"city":"Paris"}'}
    assert calls[0]["type"] == "function"
    # Each response carries the exact id of its call (signature included), in order.
    assert paris == {"role": "tool", "tool_call_id": calls[0]["id"], "content": "sunny"}
    assert rome == {"role": "tool", "tool_call_id": calls[1]["id"], "content": '{"temp":21,"sky":"clear"}'}


def test_the_same_call_in_another_turn_gets_another_id():
    turns = weather_call_turns()
    body = {"contents": turns + [{"role": "model", "parts": [turns[1]["parts"][0]]}]}
    messages = gemini.request_to_openai(body, "m")["messages"]
    assert messages[1]["tool_calls"][0]["id"] != messages[4]["tool_calls"][0]["id"]


def test_explicit_call_ids_are_kept_and_responses_find_them_by_id():
    body = {
        "contents": [
            {"role": "user", "parts": [{"text": "go"}]},
            {
                "role": "model",
                "parts": [
                    {"functionCall": {"id": "a1", "name": "f", "args": {}}, "thoughtSignature": SIG},
                    {"functionCall": {"id": "b2", "name": "g", "args": {"x": 1}}},
                ],
            },
            {
                "role": "user",
                "parts": [
                    {"functionResponse": {"id": "b2", "name": "g", "response": {"ok": True}}},
                    {"functionResponse": {"id": "a1", "name": "f", "response": {"result": "done"}}},
                    {"text": "and now?"},
                ],
            },
        ]
    }
    messages = gemini.request_to_openai(body, "m")["messages"]
    assert [call["id"] for call in messages[1]["tool_calls"]] == [f"a1{hub.SIGNATURE_SEPARATOR}{SIG}", "b2"]
    # Tool messages first (OpenAI wants them right after the call), then the turn's other parts.
    assert messages[2:] == [
        {"role": "tool", "tool_call_id": "b2", "content": '{"ok":true}'},
        {"role": "tool", "tool_call_id": f"a1{hub.SIGNATURE_SEPARATOR}{SIG}", "content": "done"},
        {"role": "user", "content": "and now?"},
    ]


def test_a_function_response_without_a_call_is_an_error():
    body = {
        "contents": [
            {"role": "user", "parts": [{"text": "hi"}]},
            {"role": "user", "parts": [{"functionResponse": {"name": "f", "response": {}}}]},
        ]
    }
    with pytest.raises(hub.TranslationError) as caught:
        gemini.request_to_openai(body, "m")
    assert caught.value.param == "contents[1].parts[0].functionResponse"


def test_images_pdf_and_audio_of_a_user_turn():
    body = {
        "contents": [
            {
                "role": "user",
                "parts": [
                    {"text": "Look"},
                    {"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo="}},
                    {"inline_data": {"mime_type": "image/jpeg", "data": "/9j/4AA="}},  # the SDK's spelling
                    {"fileData": {"mimeType": "image/webp", "fileUri": "https://example.com/cat.webp"}},
                    {"fileData": {"file_uri": "https://example.com/dog.png"}},  # media type from the extension
                    {"inlineData": {"mimeType": "application/pdf", "data": "JVBERi0="}},
                    {"inlineData": {"mimeType": "audio/wav", "data": "UklGRg=="}},
                ],
            }
        ]
    }
    assert gemini.request_to_openai(body, "m")["messages"][0]["content"] == [
        {"type": "text", "text": "Look"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
        {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,/9j/4AA="}},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.webp"}},
        {"type": "image_url", "image_url": {"url": "https://example.com/dog.png"}},
        {"type": "file", "file": {"filename": "document.pdf", "file_data": "data:application/pdf;base64,JVBERi0="}},
        {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}},
    ]


@pytest.mark.parametrize(
    ("part", "param"),
    [
        ({"inlineData": {"mimeType": "video/mp4", "data": "AAAA"}}, "contents[0].parts[1].inlineData"),
        (
            {"fileData": {"mimeType": "application/pdf", "fileUri": "https://x.test/a.pdf"}},
            "contents[0].parts[1].fileData",
        ),
        ({"fileData": {"mimeType": "image/png", "fileUri": "gs://bucket/a.png"}}, "contents[0].parts[1].fileData"),
        (
            {
                "fileData": {
                    "mimeType": "image/png",
                    "fileUri": "https://generativelanguage.googleapis.com/v1beta/files/abc123",
                }
            },
            "contents[0].parts[1].fileData",
        ),
        ({"executableCode": {"language": "PYTHON", "code": "1"}}, "contents[0].parts[1].executableCode"),
    ],
)
def test_media_and_parts_that_cannot_be_passed_on(part, param):
    body = {"contents": [{"role": "user", "parts": [{"text": "x"}, part]}]}
    with pytest.raises(hub.TranslationError) as caught:
        gemini.request_to_openai(body, "m")
    assert caught.value.param == param


def test_function_declarations_pass_their_schema_through_unchanged():
    gemini_schema = {"type": "OBJECT", "properties": {"q": {"type": "STRING"}}, "required": ["q"]}
    body = {
        "contents": [{"parts": [{"text": "x"}]}],
        "tools": [
            {
                "functionDeclarations": [
                    {"name": "weather", "description": "Weather", "parametersJsonSchema": COMPLEX_SCHEMA},
                    {"name": "search", "parameters": gemini_schema},
                    {"name": "now"},
                ]
            },
            {"function_declarations": [{"name": "snake", "parameters_json_schema": COMPLEX_SCHEMA}]},
        ],
    }
    tools = gemini.request_to_openai(body, "m")["tools"]
    assert tools == [
        {"type": "function", "function": {"name": "weather", "description": "Weather", "parameters": COMPLEX_SCHEMA}},
        {"type": "function", "function": {"name": "search", "parameters": gemini_schema}},
        {"type": "function", "function": {"name": "now"}},
        {"type": "function", "function": {"name": "snake", "parameters": COMPLEX_SCHEMA}},
    ]
    assert tools[0]["function"]["parameters"] is COMPLEX_SCHEMA
    assert tools[1]["function"]["parameters"] is gemini_schema  # upper-case types are not converted
    assert gemini_schema["type"] == "OBJECT"


@pytest.mark.parametrize(
    "key", ["googleSearch", "googleSearchRetrieval", "codeExecution", "urlContext", "googleMaps", "fileSearch", "x"]
)
def test_built_in_tools_are_a_translation_error(key):
    body = {"contents": [{"parts": [{"text": "x"}]}], "tools": [{key: {}}, {"functionDeclarations": [{"name": "f"}]}]}
    with pytest.raises(hub.TranslationError) as caught:
        gemini.request_to_openai(body, "m")
    assert caught.value.param == f"tools[0].{key}"
    assert "is a Gemini built-in tool, which this provider does not offer" in caught.value.message


def test_built_in_tool_error_names_its_index():
    body = {"contents": [], "tools": [{"functionDeclarations": [{"name": "f"}]}, {"computerUse": {}}]}
    with pytest.raises(hub.TranslationError, match=r"tools\[1\]\.computerUse"):
        gemini.request_to_openai(body, "m")


@pytest.mark.parametrize(
    ("config", "choice"),
    [
        ({"mode": "AUTO"}, "auto"),
        ({"mode": "ANY"}, "required"),
        ({"mode": "ANY", "allowedFunctionNames": ["f"]}, {"type": "function", "function": {"name": "f"}}),
        ({"mode": "ANY", "allowed_function_names": ["f"]}, {"type": "function", "function": {"name": "f"}}),
        ({"mode": "ANY", "allowedFunctionNames": ["f", "g"]}, "required"),
        ({"mode": "NONE"}, "none"),
        ({"mode": "VALIDATED"}, "auto"),
    ],
)
def test_function_calling_config_becomes_tool_choice(config, choice):
    body = {
        "contents": [],
        "tools": [{"functionDeclarations": [{"name": "f"}, {"name": "g"}]}],
        "toolConfig": {"functionCallingConfig": config},
    }
    assert gemini.request_to_openai(body, "m")["tool_choice"] == choice


def test_tool_config_without_tools_sets_no_tool_choice():
    body = {"contents": [], "toolConfig": {"functionCallingConfig": {"mode": "ANY"}}}
    assert "tool_choice" not in gemini.request_to_openai(body, "m")


def test_generation_config():
    body = {
        "contents": [],
        "safetySettings": [{"category": "HARM_CATEGORY_HATE_SPEECH", "threshold": "BLOCK_NONE"}],
        "generationConfig": {
            "maxOutputTokens": 256,
            "temperature": 0.3,
            "topP": 0.9,
            "topK": 40,
            "stopSequences": ["END", "STOP"],
            "candidateCount": 2,
            "seed": 7,
            "presencePenalty": 0.1,
            "frequencyPenalty": 0.2,
        },
    }
    assert gemini.request_to_openai(body, "m") == {
        "model": "m",
        "messages": [],
        "max_tokens": 256,
        "temperature": 0.3,
        "top_p": 0.9,
        "stop": ["END", "STOP"],
        "n": 2,
        "seed": 7,
        "presence_penalty": 0.1,
        "frequency_penalty": 0.2,
    }


def test_json_mode_and_json_schema_to_openai():
    def fmt(config: dict[str, Any]) -> Any:
        return gemini.request_to_openai({"contents": [], "generationConfig": config}, "m").get("response_format")

    assert fmt({"responseMimeType": "application/json"}) == {"type": "json_object"}
    assert fmt({"responseMimeType": "text/plain"}) is None
    json_schema = fmt({"responseMimeType": "application/json", "responseJsonSchema": COMPLEX_SCHEMA})
    assert json_schema == {"type": "json_schema", "json_schema": {"name": "output", "schema": COMPLEX_SCHEMA}}
    assert json_schema["json_schema"]["schema"] is COMPLEX_SCHEMA
    legacy = {"type": "OBJECT", "properties": {"a": {"type": "STRING"}}}
    assert fmt({"responseMimeType": "application/json", "responseSchema": legacy})["json_schema"]["schema"] is legacy


@pytest.mark.parametrize(
    ("thinking", "effort"),
    [
        ({"thinkingBudget": 0}, None),
        ({"thinkingBudget": 1}, "low"),
        ({"thinkingBudget": 2047}, "low"),
        ({"thinkingBudget": 2048}, "medium"),
        ({"thinkingBudget": 16383}, "medium"),
        ({"thinkingBudget": 16384}, "high"),
        ({"thinkingBudget": 32768, "includeThoughts": True}, "high"),
        ({"thinkingBudget": -1}, "medium"),
        ({"thinking_budget": 1024, "include_thoughts": True}, "low"),  # as the SDK sends it
        ({"thinkingLevel": "low"}, "low"),
        ({"thinkingLevel": "high"}, "high"),
        ({"thinking_level": "LOW"}, "low"),
        ({"includeThoughts": True}, None),
    ],
)
def test_thinking_config_becomes_reasoning_effort(thinking, effort):
    out = gemini.request_to_openai({"contents": [], "generationConfig": {"thinkingConfig": thinking}}, "m")
    assert out.get("reasoning_effort") == effort


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"cachedContent": "cachedContents/abc"}, "cachedContent"),
        ({"generationConfig": {"responseModalities": ["TEXT", "IMAGE"]}}, "generationConfig.responseModalities"),
        ({"generationConfig": {"responseMimeType": "text/x.enum"}}, "generationConfig.responseMimeType"),
    ],
)
def test_requests_an_openai_model_cannot_serve(body, param):
    with pytest.raises(hub.TranslationError) as caught:
        gemini.request_to_openai({"contents": [], **body}, "m")
    assert caught.value.param == param


# -- request: OpenAI -> Gemini ----------------------------------------------------------------


def test_system_and_developer_messages_are_hoisted_in_order():
    body = {
        "model": "gemini-2.5-flash",
        "stream": True,
        "stream_options": {"include_usage": True},
        "user": "u1",
        "logit_bias": {"1": 2},
        "parallel_tool_calls": True,
        "messages": [
            {"role": "system", "content": "First."},
            {"role": "user", "content": "Hi"},
            {"role": "developer", "content": [{"type": "text", "text": "Second."}]},
            {"role": "user", "content": "Again"},
        ],
    }
    assert gemini.request_from_openai(body, "gemini-2.5-flash") == {
        "contents": [{"role": "user", "parts": [{"text": "Hi"}, {"text": "Again"}]}],
        "systemInstruction": {"parts": [{"text": "First."}, {"text": "Second."}]},
    }


def test_user_content_parts():
    body = {
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Look"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo=", "detail": "low"}},
                    {"type": "image_url", "image_url": {"url": "https://example.com/a/cat.png?size=2"}},
                    {"type": "image_url", "image_url": {"url": "https://example.com/render"}},
                    {
                        "type": "file",
                        "file": {"filename": "a.pdf", "file_data": "data:application/pdf;base64,JVBERi0="},
                    },
                    {"type": "input_audio", "input_audio": {"data": "SUQz", "format": "mp3"}},
                ],
            }
        ]
    }
    assert gemini.request_from_openai(body, "m")["contents"][0]["parts"] == [
        {"text": "Look"},
        {"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo="}},
        {"fileData": {"mimeType": "image/png", "fileUri": "https://example.com/a/cat.png?size=2"}},
        {"fileData": {"mimeType": "image/jpeg", "fileUri": "https://example.com/render"}},
        {"inlineData": {"mimeType": "application/pdf", "data": "JVBERi0="}},
        {"inlineData": {"mimeType": "audio/mp3", "data": "SUQz"}},
    ]


@pytest.mark.parametrize(
    "part",
    [
        {"type": "refusal", "refusal": "no"},
        {"type": "file", "file": {"file_id": "file-123"}},
        {"type": "image_url", "image_url": {"url": "ftp://x/y.png"}},
    ],
)
def test_user_parts_gemini_cannot_take(part):
    body = {
        "messages": [
            {"role": "system", "content": "s"},
            {"role": "user", "content": [{"type": "text", "text": "a"}, part]},
        ]
    }
    with pytest.raises(hub.TranslationError) as caught:
        gemini.request_from_openai(body, "m")
    assert caught.value.param == "messages[1].content[1]"


def test_tool_turns_signatures_and_grouped_results():
    signed = hub.join_signature("call_a", SIG)
    body = {
        "messages": [
            {"role": "user", "content": "Weather in Paris and Rome?"},
            {
                "role": "assistant",
                "content": None,
                "reasoning_content": "I should call the tool twice.",
                "tool_calls": [
                    {
                        "id": signed,
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                    },
                    {"id": "call_b", "type": "function", "function": {"name": "get_time", "arguments": ""}},
                ],
            },
            {"role": "tool", "tool_call_id": "call_b", "content": "noon"},
            {"role": "tool", "tool_call_id": signed, "content": '{"temp": 21}'},
            {"role": "assistant", "content": "Sunny, 21."},
            {"role": "user", "content": "Thanks"},
        ]
    }
    assert gemini.request_from_openai(body, "m")["contents"] == [
        {"role": "user", "parts": [{"text": "Weather in Paris and Rome?"}]},
        {
            "role": "model",
            "parts": [
                {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}, "thoughtSignature": SIG},
                {"functionCall": {"name": "get_time", "args": {}}},
            ],
        },
        {
            "role": "user",
            "parts": [
                {"functionResponse": {"name": "get_time", "response": {"result": "noon"}}},
                {"functionResponse": {"name": "get_weather", "response": {"temp": 21}}},
            ],
        },
        {"role": "model", "parts": [{"text": "Sunny, 21."}]},
        {"role": "user", "parts": [{"text": "Thanks"}]},
    ]


def test_first_call_without_signature_gets_none():
    body = {
        "messages": [
            {"role": "user", "content": "x"},
            {
                "role": "assistant",
                "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}],
            },
        ]
    }
    assert gemini.request_from_openai(body, "m")["contents"][1] == {
        "role": "model",
        "parts": [{"functionCall": {"name": "f", "args": {}}}],
    }


def test_tool_result_for_an_unknown_call_is_an_error():
    body = {
        "messages": [
            {"role": "user", "content": "x"},
            {
                "role": "assistant",
                "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}],
            },
            {"role": "tool", "tool_call_id": "c2", "content": "?"},
        ]
    }
    with pytest.raises(hub.TranslationError) as caught:
        gemini.request_from_openai(body, "m")
    assert caught.value.param == "messages[2].tool_call_id"


def test_tool_result_json_array_and_list_content_become_result_text():
    body = {
        "messages": [
            {
                "role": "assistant",
                "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}],
            },
            {"role": "tool", "tool_call_id": "c1", "content": [{"type": "text", "text": "[1, 2]"}]},
        ]
    }
    assert gemini.request_from_openai(body, "m")["contents"][1]["parts"] == [
        {"functionResponse": {"name": "f", "response": {"result": "[1, 2]"}}}
    ]


def test_gemini_history_round_trips_through_openai_with_its_signatures():
    body = {"contents": weather_call_turns()}
    back = gemini.request_from_openai(gemini.request_to_openai(body, "m"), "m")
    assert back["contents"] == [
        {"role": "user", "parts": [{"text": "Weather in Paris and Rome?"}]},
        {
            "role": "model",
            "parts": [
                {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}, "thoughtSignature": SIG},
                {"functionCall": {"name": "get_weather", "args": {"city": "Rome"}}},
            ],
        },
        {
            "role": "user",
            "parts": [
                {"functionResponse": {"name": "get_weather", "response": {"result": "sunny"}}},
                {"functionResponse": {"name": "get_weather", "response": {"temp": 21, "sky": "clear"}}},
            ],
        },
    ]


def test_function_tools_pass_their_schema_through_unchanged():
    body = {
        "messages": [{"role": "user", "content": "x"}],
        "tools": [
            {
                "type": "function",
                "function": {"name": "weather", "description": "Weather", "parameters": COMPLEX_SCHEMA},
            },
            {"type": "function", "function": {"name": "now"}},
        ],
    }
    tools = gemini.request_from_openai(body, "m")["tools"]
    assert tools == [
        {
            "functionDeclarations": [
                {"name": "weather", "description": "Weather", "parametersJsonSchema": COMPLEX_SCHEMA},
                {"name": "now"},
            ]
        }
    ]
    assert tools[0]["functionDeclarations"][0]["parametersJsonSchema"] is COMPLEX_SCHEMA


def test_non_function_tools_are_an_error():
    body = {"messages": [], "tools": [{"type": "function", "function": {"name": "f"}}, {"type": "web_search"}]}
    with pytest.raises(hub.TranslationError) as caught:
        gemini.request_from_openai(body, "m")
    assert caught.value.param == "tools[1]"


@pytest.mark.parametrize(
    ("choice", "config"),
    [
        ("auto", {"mode": "AUTO"}),
        ("required", {"mode": "ANY"}),
        ("none", {"mode": "NONE"}),
        ({"type": "function", "function": {"name": "f"}}, {"mode": "ANY", "allowedFunctionNames": ["f"]}),
    ],
)
def test_tool_choice_becomes_function_calling_config(choice, config):
    body = {"messages": [], "tools": [{"type": "function", "function": {"name": "f"}}], "tool_choice": choice}
    assert gemini.request_from_openai(body, "m")["toolConfig"] == {"functionCallingConfig": config}


def test_generation_config_from_openai():
    body = {
        "messages": [],
        "max_tokens": 100,
        "max_completion_tokens": 300,
        "temperature": 0.5,
        "top_p": 0.8,
        "stop": "END",
        "n": 2,
        "seed": 3,
        "presence_penalty": 0.4,
        "frequency_penalty": 0.6,
    }
    assert gemini.request_from_openai(body, "m")["generationConfig"] == {
        "maxOutputTokens": 300,
        "temperature": 0.5,
        "topP": 0.8,
        "stopSequences": ["END"],
        "candidateCount": 2,
        "seed": 3,
        "presencePenalty": 0.4,
        "frequencyPenalty": 0.6,
    }
    config = gemini.request_from_openai({"messages": [], "max_tokens": 100, "stop": ["a", "b"]}, "m")[
        "generationConfig"
    ]
    assert config == {"maxOutputTokens": 100, "stopSequences": ["a", "b"]}
    assert "generationConfig" not in gemini.request_from_openai({"messages": [], "stream": True}, "m")


def test_response_format_from_openai():
    def config(response_format: dict[str, Any]) -> Any:
        return gemini.request_from_openai({"messages": [], "response_format": response_format}, "m").get(
            "generationConfig"
        )

    assert config({"type": "json_object"}) == {"responseMimeType": "application/json"}
    assert config({"type": "text"}) is None
    out = config({"type": "json_schema", "json_schema": {"name": "w", "strict": True, "schema": COMPLEX_SCHEMA}})
    assert out == {"responseMimeType": "application/json", "responseJsonSchema": COMPLEX_SCHEMA}
    assert out["responseJsonSchema"] is COMPLEX_SCHEMA


@pytest.mark.parametrize(
    ("effort", "thinking"),
    [
        ("minimal", {"thinkingBudget": 0}),
        ("low", {"thinkingBudget": 1024, "includeThoughts": True}),
        ("medium", {"thinkingBudget": 8192, "includeThoughts": True}),
        ("high", {"thinkingBudget": 24576, "includeThoughts": True}),
    ],
)
def test_reasoning_effort_becomes_a_thinking_budget(effort, thinking):
    out = gemini.request_from_openai({"messages": [], "reasoning_effort": effort}, "m")
    assert out["generationConfig"] == {"thinkingConfig": thinking}


def test_logprobs_are_an_error():
    with pytest.raises(hub.TranslationError) as caught:
        gemini.request_from_openai({"messages": [], "logprobs": True}, "m")
    assert caught.value.param == "logprobs"


def test_unparsable_tool_call_arguments_in_a_request_are_an_error():
    body = {
        "messages": [{"role": "assistant", "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": "{"}}]}]
    }
    with pytest.raises(hub.TranslationError) as caught:
        gemini.request_from_openai(body, "m")
    assert caught.value.param == "messages[0].tool_calls[0].function.arguments"


# -- response: Gemini -> OpenAI ---------------------------------------------------------------


def gemini_answer(**overrides: Any) -> dict[str, Any]:
    answer: dict[str, Any] = {
        "candidates": [
            {
                "content": {
                    "role": "model",
                    "parts": [
                        {"text": "Thinking about it.", "thought": True},
                        {"text": "Checking "},
                        {"text": "both."},
                        {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}, "thoughtSignature": SIG},
                        {"functionCall": {"name": "get_weather", "args": {"city": "Rome"}}},
                        {"executableCode": {"language": "PYTHON", "code": "print(1)"}},  # ignored, no crash
                    ],
                },
                "finishReason": "STOP",
                "index": 0,
            }
        ],
        "usageMetadata": {
            "promptTokenCount": 100,
            "cachedContentTokenCount": 40,
            "toolUsePromptTokenCount": 5,
            "candidatesTokenCount": 20,
            "thoughtsTokenCount": 30,
            "totalTokenCount": 155,
        },
        "modelVersion": "gemini-2.5-flash",
        "responseId": "resp-1",
    }
    answer.update(overrides)
    return answer


def test_response_to_openai():
    out = gemini.response_to_openai(gemini_answer(), "gemini-2.5-flash")
    assert out["id"] == "resp-1"
    assert out["object"] == "chat.completion"
    assert isinstance(out["created"], int)
    assert out["model"] == "gemini-2.5-flash"
    [choice] = out["choices"]
    assert choice["index"] == 0
    assert choice["finish_reason"] == "tool_calls"  # Gemini said STOP
    message = choice["message"]
    assert message["role"] == "assistant"
    assert message["content"] == "Checking both."
    assert message["reasoning_content"] == "Thinking about it."
    paris, rome = message["tool_calls"]
    assert hub.split_signature(paris["id"])[1] == SIG
    assert hub.split_signature(rome["id"]) == (rome["id"], None)
    assert paris["id"].startswith("call_0_") and rome["id"].startswith("call_1_")
    assert paris["function"] == {"name": "get_weather", "arguments": '{"city":"Paris"}'}
    assert rome["type"] == "function"
    assert out["usage"] == {
        "prompt_tokens": 105,
        "completion_tokens": 50,
        "total_tokens": 155,
        "prompt_tokens_details": {"cached_tokens": 40},
        "completion_tokens_details": {"reasoning_tokens": 30},
    }


def test_response_ids_are_deterministic():
    first = gemini.response_to_openai(gemini_answer(), "m")
    second = gemini.response_to_openai(gemini_answer(), "m")
    assert first["choices"][0]["message"]["tool_calls"] == second["choices"][0]["message"]["tool_calls"]
    anonymous = gemini_answer()
    del anonymous["responseId"]
    one, two = (gemini.response_to_openai(copy.deepcopy(anonymous), "m") for _ in range(2))
    assert one["id"] == two["id"] and one["id"].startswith("chatcmpl-gemini")
    assert one["choices"][0]["message"]["tool_calls"] == two["choices"][0]["message"]["tool_calls"]


def test_explicit_call_ids_in_a_response_are_kept():
    answer = {"candidates": [{"content": {"parts": [{"functionCall": {"id": "fc-9", "name": "f"}}]}}]}
    [call] = gemini.response_to_openai(answer, "m")["choices"][0]["message"]["tool_calls"]
    assert call == {"id": "fc-9", "type": "function", "function": {"name": "f", "arguments": "{}"}}


@pytest.mark.parametrize(
    ("reason", "finish"),
    [
        ("STOP", "stop"),
        ("MAX_TOKENS", "length"),
        ("SAFETY", "content_filter"),
        ("RECITATION", "content_filter"),
        ("BLOCKLIST", "content_filter"),
        ("PROHIBITED_CONTENT", "content_filter"),
        ("SPII", "content_filter"),
        ("IMAGE_SAFETY", "content_filter"),
        ("LANGUAGE", "content_filter"),
        ("MALFORMED_FUNCTION_CALL", "stop"),
        ("OTHER", "stop"),
        ("SOMETHING_NEW", "stop"),
        (None, "stop"),
    ],
)
def test_finish_reasons_to_openai(reason, finish):
    candidate: dict[str, Any] = {"content": {"role": "model", "parts": [{"text": "x"}]}}
    if reason:
        candidate["finishReason"] = reason
    assert gemini.response_to_openai({"candidates": [candidate]}, "m")["choices"][0]["finish_reason"] == finish


def test_blocked_prompt_becomes_a_refusal():
    answer = {"promptFeedback": {"blockReason": "SAFETY"}, "usageMetadata": {"promptTokenCount": 7}}
    out = gemini.response_to_openai(answer, "m")
    assert out["choices"] == [
        {
            "index": 0,
            "message": {"role": "assistant", "content": None, "refusal": "The prompt was blocked: SAFETY"},
            "finish_reason": "content_filter",
            "logprobs": None,
        }
    ]
    assert out["usage"]["prompt_tokens"] == 7 and out["usage"]["completion_tokens"] == 0


def test_several_candidates_and_missing_fields():
    answer = {
        "candidates": [
            {"content": {"parts": [{"text": "a"}]}, "finishReason": "STOP"},
            {"content": {"parts": [{"text": "b"}, {"inlineData": {"mimeType": "image/png", "data": "x"}}]}, "index": 1},
            {"finishReason": "SAFETY", "index": 2},
        ]
    }
    out = gemini.response_to_openai(answer, "m")
    assert [(c["index"], c["message"]["content"], c["finish_reason"]) for c in out["choices"]] == [
        (0, "a", "stop"),
        (1, "b", "stop"),
        (2, "", "content_filter"),
    ]
    assert out["usage"] == hub.usage(0, 0)


# -- response: OpenAI -> Gemini ---------------------------------------------------------------


def openai_answer(**message: Any) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": "gpt-4o",
        "choices": [{"index": 0, "message": {"role": "assistant", **message}, "finish_reason": "tool_calls"}],
        "usage": {
            "prompt_tokens": 120,
            "completion_tokens": 50,
            "total_tokens": 170,
            "prompt_tokens_details": {"cached_tokens": 100},
            "completion_tokens_details": {"reasoning_tokens": 30},
        },
    }


def test_response_from_openai():
    payload = openai_answer(
        content="Checking.",
        reasoning_content="Two calls.",
        tool_calls=[
            {
                "id": hub.join_signature("call_a", SIG),
                "type": "function",
                "function": {"name": "f", "arguments": '{"x":1}'},
            },
            {"id": "call_b", "type": "function", "function": {"name": "g", "arguments": "{not json"}},
        ],
    )
    assert gemini.response_from_openai(payload, "gpt-4o") == {
        "candidates": [
            {
                "content": {
                    "role": "model",
                    "parts": [
                        {"text": "Two calls.", "thought": True},
                        {"text": "Checking."},
                        {"functionCall": {"name": "f", "args": {"x": 1}, "id": "call_a"}, "thoughtSignature": SIG},
                        {"functionCall": {"name": "g", "args": {}, "id": "call_b"}},
                    ],
                },
                "finishReason": "STOP",
                "index": 0,
            }
        ],
        "usageMetadata": {
            "promptTokenCount": 120,
            "candidatesTokenCount": 20,
            "totalTokenCount": 170,
            "thoughtsTokenCount": 30,
            "cachedContentTokenCount": 100,
        },
        "modelVersion": "gpt-4o",
        "responseId": "chatcmpl-1",
    }


@pytest.mark.parametrize(
    ("finish", "reason"),
    [("stop", "STOP"), ("length", "MAX_TOKENS"), ("tool_calls", "STOP"), ("content_filter", "SAFETY"), ("odd", "STOP")],
)
def test_finish_reasons_from_openai(finish, reason):
    payload = openai_answer(content="x")
    payload["choices"][0]["finish_reason"] = finish
    assert gemini.response_from_openai(payload, "m")["candidates"][0]["finishReason"] == reason


def test_refusal_from_openai():
    payload = openai_answer(content=None, refusal="I can't help with that.")
    payload["choices"][0]["finish_reason"] = "stop"
    candidate = gemini.response_from_openai(payload, "m")["candidates"][0]
    assert candidate["content"]["parts"] == [{"text": "I can't help with that."}]
    assert candidate["finishReason"] == "SAFETY"


def test_usage_without_details_from_openai():
    payload = openai_answer(content="x")
    payload["usage"] = {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}
    assert gemini.response_from_openai(payload, "m")["usageMetadata"] == {
        "promptTokenCount": 3,
        "candidatesTokenCount": 4,
        "totalTokenCount": 7,
    }


def test_gemini_answer_round_trips_through_openai():
    back = gemini.response_from_openai(gemini.response_to_openai(gemini_answer(), "m"), "m")
    parts = back["candidates"][0]["content"]["parts"]
    assert parts[0] == {"text": "Thinking about it.", "thought": True}
    assert parts[1] == {"text": "Checking both."}
    assert parts[2]["thoughtSignature"] == SIG and parts[2]["functionCall"]["args"] == {"city": "Paris"}
    assert "thoughtSignature" not in parts[3]
    assert back["usageMetadata"] == {
        "promptTokenCount": 105,
        "candidatesTokenCount": 20,
        "totalTokenCount": 155,
        "thoughtsTokenCount": 30,
        "cachedContentTokenCount": 40,
    }


# -- streams: Gemini -> OpenAI ----------------------------------------------------------------


def frame(parts: list[dict[str, Any]] | None = None, finish: str | None = None, **extra: Any) -> dict[str, Any]:
    candidate: dict[str, Any] = {"content": {"role": "model", "parts": parts or []}, "index": 0}
    if finish:
        candidate["finishReason"] = finish
    return {"candidates": [candidate], "modelVersion": "gemini-2.5-flash", "responseId": "r1", **extra}


def deltas(chunks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [c["choices"][0]["delta"] for c in chunks if c["choices"]]


def test_stream_to_openai_text_and_thoughts():
    stream = gemini.StreamToOpenAI("gemini-2.5-flash")
    chunks = stream.feed(None, frame([{"text": "Hmm.", "thought": True}], usageMetadata={"promptTokenCount": 9}))
    chunks += stream.feed(None, frame([{"text": "Hello"}]))
    usage = {"promptTokenCount": 9, "candidatesTokenCount": 2, "thoughtsTokenCount": 3, "totalTokenCount": 14}
    chunks += stream.feed(None, frame([{"text": " world"}], "STOP", usageMetadata=usage))
    tail = stream.finish()
    assert deltas(chunks) == [
        {"role": "assistant", "content": ""},
        {"reasoning_content": "Hmm."},
        {"content": "Hello"},
        {"content": " world"},
    ]
    assert all(c["id"] == "r1" and c["model"] == "gemini-2.5-flash" for c in chunks + tail)
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert all(c["choices"][0]["finish_reason"] is None for c in chunks)
    finish_chunk, usage_chunk = tail
    assert finish_chunk["choices"] == [{"index": 0, "delta": {}, "finish_reason": "stop"}]
    assert usage_chunk["choices"] == []
    assert usage_chunk["usage"] == hub.usage(9, 5, reasoning=3)


def test_stream_to_openai_tool_calls_then_stop_in_its_own_frame():
    stream = gemini.StreamToOpenAI("m")
    chunks = stream.feed(None, frame([{"text": "Checking."}]))
    chunks += stream.feed(
        None,
        frame(
            [
                {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}, "thoughtSignature": SIG},
                {"functionCall": {"name": "get_weather", "args": {"city": "Rome"}}},
            ]
        ),
    )
    chunks += stream.feed(None, frame([{"functionCall": {"id": "x9", "name": "get_time", "args": {}}}]))
    chunks += stream.feed(None, frame([{"text": ""}], "STOP", usageMetadata={"promptTokenCount": 5}))
    tail = stream.finish()
    calls = [d["tool_calls"][0] for d in deltas(chunks) if "tool_calls" in d]
    assert [c["index"] for c in calls] == [0, 1, 2]
    assert [c["function"] for c in calls] == [
        {"name": "get_weather", "arguments": '{"city":"Paris"}'},
        {"name": "get_weather", "arguments": '{"city":"Rome"}'},
        {"name": "get_time", "arguments": "{}"},
    ]
    assert calls[2]["id"] == "x9" and all(c["type"] == "function" for c in calls)
    assert hub.split_signature(calls[0]["id"])[1] == SIG
    # The same ids as the whole answer would get.
    whole = gemini.response_to_openai(
        frame(
            [
                {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}, "thoughtSignature": SIG},
                {"functionCall": {"name": "get_weather", "args": {"city": "Rome"}}},
            ]
        ),
        "m",
    )
    assert [c["id"] for c in whole["choices"][0]["message"]["tool_calls"]] == [calls[0]["id"], calls[1]["id"]]
    assert tail[0]["choices"][0]["finish_reason"] == "tool_calls"


@pytest.mark.parametrize(
    ("reason", "finish"), [("SAFETY", "content_filter"), ("MAX_TOKENS", "length"), ("NEW", "stop")]
)
def test_stream_to_openai_finish_reasons(reason, finish):
    stream = gemini.StreamToOpenAI("m")
    stream.feed(None, frame([{"text": "x"}], reason))
    assert stream.finish()[0]["choices"][0]["finish_reason"] == finish


def test_stream_to_openai_blocked_prompt():
    stream = gemini.StreamToOpenAI("m")
    chunks = stream.feed(None, {"promptFeedback": {"blockReason": "PROHIBITED_CONTENT"}, "responseId": "r"})
    assert deltas(chunks) == [
        {"role": "assistant", "content": ""},
        {"refusal": "The prompt was blocked: PROHIBITED_CONTENT"},
    ]
    assert stream.finish()[0]["choices"][0]["finish_reason"] == "content_filter"


def test_stream_to_openai_error_event():
    stream = gemini.StreamToOpenAI("m")
    stream.feed(None, frame([{"text": "x"}]))
    with pytest.raises(hub.StreamError) as caught:
        stream.feed(None, {"error": {"code": 429, "message": "Resource exhausted", "status": "RESOURCE_EXHAUSTED"}})
    assert (caught.value.status, caught.value.message, caught.value.type_) == (
        429,
        "Resource exhausted",
        "RESOURCE_EXHAUSTED",
    )


def test_stream_to_openai_that_ends_without_a_finish_reason():
    stream = gemini.StreamToOpenAI("m")
    stream.feed(None, frame([{"text": "cut"}]))
    with pytest.raises(hub.StreamError) as caught:
        stream.finish()
    assert (caught.value.status, caught.value.message) == (502, "the upstream stream ended before its finish reason")
    with pytest.raises(hub.StreamError):
        gemini.StreamToOpenAI("m").finish()


# -- streams: OpenAI -> Gemini ----------------------------------------------------------------


def openai_chunk(delta: dict[str, Any] | None = None, finish: str | None = None, **extra: Any) -> dict[str, Any]:
    choices = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}]
    return {
        "id": "chatcmpl-7",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "gpt-4o",
        "choices": choices,
        **extra,
    }


OPENAI_USAGE = {
    "prompt_tokens": 10,
    "completion_tokens": 8,
    "total_tokens": 18,
    "completion_tokens_details": {"reasoning_tokens": 3},
}


def test_stream_from_openai_text():
    stream = gemini.StreamFromOpenAI("gpt-4o")
    raw = stream.feed(openai_chunk({"role": "assistant", "content": ""}))
    assert raw == b""
    raw += stream.feed(openai_chunk({"reasoning_content": "Hmm."}))
    raw += stream.feed(openai_chunk({"content": "Hello"}))
    raw += stream.feed(openai_chunk({"content": " world"}))
    raw += stream.feed(openai_chunk({}, "stop"))
    raw += stream.feed(openai_chunk(None, usage=OPENAI_USAGE))
    raw += stream.finish()
    assert stream.finish() == b""
    assert sse_payloads(raw) == [
        {
            "candidates": [{"content": {"role": "model", "parts": [{"text": "Hmm.", "thought": True}]}, "index": 0}],
            "modelVersion": "gpt-4o",
            "responseId": "chatcmpl-7",
        },
        {
            "candidates": [{"content": {"role": "model", "parts": [{"text": "Hello"}]}, "index": 0}],
            "modelVersion": "gpt-4o",
            "responseId": "chatcmpl-7",
        },
        {
            "candidates": [{"content": {"role": "model", "parts": [{"text": " world"}]}, "index": 0}],
            "modelVersion": "gpt-4o",
            "responseId": "chatcmpl-7",
        },
        {
            "candidates": [{"content": {"role": "model", "parts": []}, "finishReason": "STOP", "index": 0}],
            "usageMetadata": {
                "promptTokenCount": 10,
                "candidatesTokenCount": 5,
                "totalTokenCount": 18,
                "thoughtsTokenCount": 3,
            },
            "modelVersion": "gpt-4o",
            "responseId": "chatcmpl-7",
        },
    ]


def test_stream_from_openai_tool_calls_are_sent_whole():
    signed = hub.join_signature("call_a", SIG)
    stream = gemini.StreamFromOpenAI("gpt-4o")
    first = stream.feed(
        openai_chunk(
            {"tool_calls": [{"index": 0, "id": signed, "type": "function", "function": {"name": "f", "arguments": ""}}]}
        )
    )
    first += stream.feed(openai_chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"city":'}}]}))
    first += stream.feed(openai_chunk({"tool_calls": [{"index": 0, "function": {"arguments": '"Paris"}'}}]}))
    assert first == b""  # nothing until the call is complete
    second = stream.feed(
        openai_chunk({"tool_calls": [{"index": 1, "id": "call_b", "function": {"name": "g", "arguments": "{}"}}]})
    )
    assert sse_payloads(second)[0]["candidates"][0]["content"]["parts"] == [
        {"functionCall": {"name": "f", "args": {"city": "Paris"}, "id": "call_a"}, "thoughtSignature": SIG}
    ]
    third = stream.feed(openai_chunk({}, "tool_calls"))
    assert sse_payloads(third)[0]["candidates"][0]["content"]["parts"] == [
        {"functionCall": {"name": "g", "args": {}, "id": "call_b"}}
    ]
    [last] = sse_payloads(stream.finish())
    assert last["candidates"] == [{"content": {"role": "model", "parts": []}, "finishReason": "STOP", "index": 0}]
    assert "usageMetadata" not in last  # the upstream sent none


def test_stream_from_openai_pending_call_goes_out_with_finish():
    stream = gemini.StreamFromOpenAI("m")
    assert (
        stream.feed(
            openai_chunk({"tool_calls": [{"index": 0, "id": "c", "function": {"name": "f", "arguments": "{}"}}]})
        )
        == b""
    )
    [last] = sse_payloads(stream.finish())
    assert last["candidates"][0]["content"]["parts"] == [{"functionCall": {"name": "f", "args": {}, "id": "c"}}]
    assert last["candidates"][0]["finishReason"] == "STOP"


@pytest.mark.parametrize(("finish", "reason"), [("length", "MAX_TOKENS"), ("content_filter", "SAFETY")])
def test_stream_from_openai_finish_reasons(finish, reason):
    stream = gemini.StreamFromOpenAI("m")
    stream.feed(openai_chunk({"content": "x"}, finish))
    assert sse_payloads(stream.finish())[0]["candidates"][0]["finishReason"] == reason


def test_stream_from_openai_error():
    stream = gemini.StreamFromOpenAI("m")
    raw = stream.error(503, "upstream unavailable")
    assert raw == b'data: {"error":{"code":503,"message":"upstream unavailable","status":"UNAVAILABLE"}}\r\n\r\n'
    assert stream.feed(openai_chunk({"content": "late"})) == b"" and stream.finish() == b""


# -- errors, models, token counts -------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "name"),
    [
        (400, "INVALID_ARGUMENT"),
        (401, "UNAUTHENTICATED"),
        (402, "FAILED_PRECONDITION"),
        (403, "PERMISSION_DENIED"),
        (404, "NOT_FOUND"),
        (409, "ABORTED"),
        (413, "INVALID_ARGUMENT"),
        (418, "INVALID_ARGUMENT"),
        (429, "RESOURCE_EXHAUSTED"),
        (499, "CANCELLED"),
        (500, "INTERNAL"),
        (501, "INTERNAL"),
        (502, "UNAVAILABLE"),
        (503, "UNAVAILABLE"),
        (504, "DEADLINE_EXCEEDED"),
    ],
)
def test_error_body(status, name):
    assert json.loads(gemini.error_body(status, "why")) == {"error": {"code": status, "message": "why", "status": name}}


def test_error_body_keeps_an_upstream_gemini_status():
    assert json.loads(gemini.error_body(400, "x", "FAILED_PRECONDITION"))["error"]["status"] == "FAILED_PRECONDITION"
    assert json.loads(gemini.error_body(400, "x", "invalid_request_error"))["error"]["status"] == "INVALID_ARGUMENT"


def test_models_and_token_counts():
    entry = {
        "name": "models/openai/gpt-4o",
        "baseModelId": "openai/gpt-4o",
        "version": "001",
        "displayName": "openai/gpt-4o",
        "supportedGenerationMethods": ["generateContent", "streamGenerateContent", "countTokens"],
    }
    assert gemini.model_entry("openai/gpt-4o") == entry
    assert gemini.models_page(["openai/gpt-4o", "gemini-2.5-flash"])["models"][0] == entry
    assert gemini.models_page([]) == {"models": []}
    assert gemini.count_tokens_answer(42) == {"totalTokens": 42}


# -- the real google-genai SDK ----------------------------------------------------------------


genai = pytest.importorskip("google.genai")
httpx = pytest.importorskip("httpx2")  # the SDK's default backend; plain httpx is not installed
from google.genai import errors as genai_errors  # noqa: E402
from google.genai import types as genai_types  # noqa: E402


class Recorder:
    """An in-memory Gemini server: answers every request with ``reply`` and keeps the requests."""

    def __init__(self, reply: Any) -> None:
        self.reply = reply
        self.requests: list[Any] = []

    def __call__(self, request: Any) -> Any:
        self.requests.append(request)
        status, content, content_type = self.reply(request)
        return httpx.Response(status, content=content, headers={"content-type": content_type})


def sdk_client(recorder: Recorder, **options: Any) -> Any:
    http_options = genai_types.HttpOptions(
        httpx_client=httpx.Client(transport=httpx.MockTransport(recorder)), **options
    )
    return genai.Client(api_key="test-key", http_options=http_options)


def json_reply(payload: Any, status: int = 200) -> Any:
    return lambda request: (
        status,
        payload if isinstance(payload, bytes) else json.dumps(payload).encode(),
        "application/json",
    )


def test_sdk_reads_a_translated_answer():
    payload = openai_answer(
        content="Checking.",
        reasoning_content="Two calls.",
        tool_calls=[
            {
                "id": hub.join_signature("call_a", SIG),
                "type": "function",
                "function": {"name": "f", "arguments": '{"x":1}'},
            },
            {"id": "call_b", "type": "function", "function": {"name": "g", "arguments": "{}"}},
        ],
    )
    recorder = Recorder(json_reply(gemini.response_from_openai(payload, "gpt-4o")))
    response = sdk_client(recorder, base_url="http://test").models.generate_content(model="gpt-4o", contents="hi")
    assert response.text == "Checking."  # thought parts are left out of .text
    assert [(c.id, c.name, c.args) for c in response.function_calls] == [("call_a", "f", {"x": 1}), ("call_b", "g", {})]
    parts = response.candidates[0].content.parts
    assert parts[0].thought is True
    assert parts[2].thought_signature == b"signature-one"
    assert response.candidates[0].finish_reason == genai_types.FinishReason.STOP
    usage = response.usage_metadata
    assert (usage.prompt_token_count, usage.candidates_token_count, usage.thoughts_token_count) == (120, 20, 30)
    assert (usage.total_token_count, usage.cached_content_token_count) == (170, 100)
    assert response.response_id == "chatcmpl-1" and response.model_version == "gpt-4o"


def test_sdk_reads_a_translated_stream():
    stream = gemini.StreamFromOpenAI("gpt-4o")
    raw = stream.feed(openai_chunk({"role": "assistant", "content": ""}))
    raw += stream.feed(openai_chunk({"reasoning_content": "Hmm."}))
    for piece in ("Hel", "lo ", "world"):
        raw += stream.feed(openai_chunk({"content": piece}))
    raw += stream.feed(
        openai_chunk({"tool_calls": [{"index": 0, "id": hub.join_signature("call_a", SIG), "function": {"name": "f"}}]})
    )
    raw += stream.feed(openai_chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"x": 1}'}}]}))
    raw += stream.feed(openai_chunk({}, "tool_calls"))
    raw += stream.feed(openai_chunk(None, usage=OPENAI_USAGE))
    raw += stream.finish()
    recorder = Recorder(lambda request: (200, raw, "text/event-stream"))
    chunks = list(
        sdk_client(recorder, base_url="http://test").models.generate_content_stream(model="gpt-4o", contents="hi")
    )
    assert "".join(c.text or "" for c in chunks) == "Hello world"
    calls = [call for c in chunks for call in c.function_calls or []]
    assert [(c.id, c.name, c.args) for c in calls] == [("call_a", "f", {"x": 1})]
    assert chunks[-1].candidates[0].finish_reason == genai_types.FinishReason.STOP
    usage = chunks[-1].usage_metadata
    assert (usage.prompt_token_count, usage.candidates_token_count, usage.thoughts_token_count) == (10, 5, 3)
    assert recorder.requests[0].url.path.endswith(":streamGenerateContent")
    assert recorder.requests[0].url.params["alt"] == "sse"


def test_sdk_reads_a_translated_stream_error():
    stream = gemini.StreamFromOpenAI("gpt-4o")
    raw = stream.feed(openai_chunk({"content": "partial"})) + stream.error(500, "upstream broke")
    recorder = Recorder(lambda request: (200, raw, "text/event-stream"))
    chunks = sdk_client(recorder, base_url="http://test").models.generate_content_stream(model="gpt-4o", contents="hi")
    with pytest.raises(genai_errors.APIError) as caught:
        for _ in chunks:
            pass
    assert (caught.value.code, caught.value.status, caught.value.message) == (500, "INTERNAL", "upstream broke")


def test_sdk_reads_an_error_body():
    recorder = Recorder(json_reply(gemini.error_body(404, "no such model"), status=404))
    with pytest.raises(genai_errors.ClientError) as caught:
        sdk_client(recorder, base_url="http://test").models.generate_content(model="nope", contents="hi")
    assert (caught.value.code, caught.value.status, caught.value.message) == (404, "NOT_FOUND", "no such model")


def test_sdk_reads_a_models_page_and_a_token_count():
    def reply(request: Any) -> Any:
        if request.url.path.endswith(":countTokens"):
            return 200, json.dumps(gemini.count_tokens_answer(12)).encode(), "application/json"
        return 200, json.dumps(gemini.models_page(["openai/gpt-4o", "gemini-2.5-flash"])).encode(), "application/json"

    recorder = Recorder(reply)
    client = sdk_client(recorder, base_url="http://test")
    models = list(client.models.list())
    assert [(m.name, m.display_name, m.version) for m in models] == [
        ("models/openai/gpt-4o", "openai/gpt-4o", "001"),
        ("models/gemini-2.5-flash", "gemini-2.5-flash", "001"),
    ]
    assert models[0].supported_actions == ["generateContent", "streamGenerateContent", "countTokens"]
    assert client.models.count_tokens(model="gpt-4o", contents="hi").total_tokens == 12
    assert [(r.method, r.url.path) for r in recorder.requests] == [
        ("GET", "/v1/models"),
        ("POST", "/v1/models/gpt-4o:countTokens"),
    ]


def test_what_the_sdk_calls_by_default(monkeypatch):
    """google-genai 3.6.1 calls the v1 API by default (not v1beta), puts the key in the
    x-goog-api-key header (never the query), and sends the model in the path only."""
    monkeypatch.delenv("GOOGLE_GENAI_API_VERSION", raising=False)
    recorder = Recorder(json_reply({"candidates": [{"content": {"parts": [{"text": "ok"}]}, "finishReason": "STOP"}]}))
    assert sdk_client(recorder).models.generate_content(model="gemini-2.5-flash", contents="hi").text == "ok"
    sdk_client(recorder, base_url="http://test").models.generate_content(model="models/gemini-2.5-flash", contents="hi")
    sdk_client(recorder, base_url="http://test", api_version="v1beta").models.generate_content(
        model="openai/gpt-4o", contents="hi"
    )
    default, custom, beta = recorder.requests
    assert str(default.url) == "https://generativelanguage.googleapis.com/v1/models/gemini-2.5-flash:generateContent"
    assert str(custom.url) == "http://test/v1/models/gemini-2.5-flash:generateContent"
    assert str(beta.url) == "http://test/v1beta/models/openai/gpt-4o:generateContent"
    for request in recorder.requests:
        assert request.method == "POST"
        assert request.headers["x-goog-api-key"] == "test-key"
        assert request.headers["content-type"] == "application/json"
        assert "key" not in request.url.params
        assert request.headers["user-agent"].startswith("google-genai-sdk/")
        assert request.headers["x-goog-api-client"].startswith("google-genai-sdk/")
        assert json.loads(request.content) == {"contents": [{"parts": [{"text": "hi"}], "role": "user"}]}


def test_sdk_request_body_translates_to_openai():
    """The SDK's real wire format (snake_case inside some nested objects) translates fully."""
    recorder = Recorder(json_reply({"candidates": [{"content": {"parts": [{"text": "ok"}]}, "finishReason": "STOP"}]}))
    client = sdk_client(recorder, base_url="http://test")
    contents = [
        genai_types.Content(
            role="user",
            parts=[
                genai_types.Part.from_text(text="Look"),
                genai_types.Part.from_bytes(data=b"png", mime_type="image/png"),
            ],
        ),
        genai_types.Content(
            role="model",
            parts=[
                genai_types.Part(
                    function_call=genai_types.FunctionCall(name="f", args={"a": 1}), thought_signature=b"sig"
                )
            ],
        ),
        genai_types.Content(
            role="user", parts=[genai_types.Part.from_function_response(name="f", response={"result": "ok"})]
        ),
    ]
    config = genai_types.GenerateContentConfig(
        system_instruction="Be brief.",
        temperature=0.2,
        max_output_tokens=64,
        stop_sequences=["END"],
        response_mime_type="application/json",
        response_json_schema=COMPLEX_SCHEMA,
        thinking_config=genai_types.ThinkingConfig(thinking_budget=4096, include_thoughts=True),
        tools=[
            genai_types.Tool(
                function_declarations=[genai_types.FunctionDeclaration(name="f", parameters_json_schema=COMPLEX_SCHEMA)]
            )
        ],
        tool_config=genai_types.ToolConfig(
            function_calling_config=genai_types.FunctionCallingConfig(mode="ANY", allowed_function_names=["f"])
        ),
    )
    client.models.generate_content(model="gpt-4o", contents=contents, config=config)
    out = gemini.request_to_openai(json.loads(recorder.requests[0].content), "gpt-4o")
    call_id = out["messages"][2]["tool_calls"][0]["id"]
    assert hub.split_signature(call_id)[1] == "c2ln"  # base64 of b"sig"
    assert out == {
        "model": "gpt-4o",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Look"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,cG5n"}},
                ],
            },
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [{"id": call_id, "type": "function", "function": {"name": "f", "arguments": '{"a":1}'}}],
            },
            {"role": "tool", "tool_call_id": call_id, "content": "ok"},
        ],
        "tools": [{"type": "function", "function": {"name": "f", "parameters": COMPLEX_SCHEMA}}],
        "tool_choice": {"type": "function", "function": {"name": "f"}},
        "max_tokens": 64,
        "temperature": 0.2,
        "stop": ["END"],
        "response_format": {"type": "json_schema", "json_schema": {"name": "output", "schema": COMPLEX_SCHEMA}},
        "reasoning_effort": "medium",
    }


def test_sdk_builtin_tool_request_is_refused_by_name():
    recorder = Recorder(json_reply({"candidates": []}))
    config = genai_types.GenerateContentConfig(tools=[genai_types.Tool(google_search=genai_types.GoogleSearch())])
    sdk_client(recorder, base_url="http://test").models.generate_content(model="m", contents="hi", config=config)
    with pytest.raises(hub.TranslationError) as caught:
        gemini.request_to_openai(json.loads(recorder.requests[0].content), "m")
    assert caught.value.param == "tools[0].googleSearch"
