"""Anthropic Messages <-> OpenAI Chat Completions (the hub): requests, answers, event streams, errors.

Anthropic clients reach OpenAI-format upstreams through ``request_to_openai``, ``response_from_openai``
and ``StreamFromOpenAI``; OpenAI-format requests reach Anthropic upstreams through
``request_from_openai``, ``response_to_openai`` and ``StreamToOpenAI``. Pure functions over dicts:
no Django, no I/O, payloads are read, never deep-copied (schemas, thinking blocks and tool inputs
are passed on as the same objects).

Decisions where the formats differ:

- Tool-call ids: Anthropic's pattern is ``^[a-zA-Z0-9_-]+$``; OpenAI ids that break it are mapped by
  ``hub.tool_id``, on the assistant's calls and on the tool results alike, so both ends agree.
- Consecutive messages of one role are merged (Anthropic requires alternation); OpenAI's
  consecutive ``tool`` messages become ``tool_result`` blocks of ONE user message, ahead of any user
  text that joins it (Anthropic wants tool results first). Empty text is left out (Anthropic
  rejects empty text blocks), system blocks and tool-result text blocks are joined with a newline,
  assistant text blocks with nothing (citations split a sentence into blocks).
- JSON mode (``response_format``) becomes a forced tool named ``JSON_TOOL`` whose input is the
  answer; the way back turns any ``tool_use`` of that name into message content with finish
  reason ``stop``. The name is therefore reserved: a client tool of that name is refused. Anthropic
  cannot force a tool while thinking, so JSON mode with reasoning is refused too.
- ``max_tokens`` is required by Anthropic: ``DEFAULT_MAX_TOKENS`` when the request has none. A
  thinking budget must stay below it: when it does not, ``max_tokens`` becomes budget +
  max_tokens (the client's figure stays the room for the answer itself).
- ``temperature`` is clamped to ``MAX_TEMPERATURE`` (OpenAI allows 2); thinking drops
  ``temperature`` and ``top_p``, which Anthropic rejects alongside it. Penalties, seed,
  logit_bias and ``top_k`` have no counterpart and are dropped; ``n`` > 1, logprobs, audio,
  built-in (server) tools and remote documents raise ``hub.TranslationError`` naming the field.
- Unsigned reasoning (``reasoning_content`` without ``thinking_blocks``) cannot be sent back to
  Anthropic, which verifies signatures: a request leaves it out; an answer to an Anthropic client
  carries it as a thinking block with an empty signature.
- Also read: OpenAI's legacy ``functions``, ``function_call`` and ``function`` messages (the
  function name stands in for the missing call id), Anthropic's ``output_config.format`` beside the
  beta ``output_format``. ``tool_choice`` and the parallel-call switch are left out when no tools
  go with them (both APIs reject that).
- Streams to Anthropic clients keep Anthropic's block lifecycle (one start and one stop per block,
  dense indices, never interleaved). Tool-call fragments stream straight into their block while
  one call's deltas are contiguous; another call's fragments close the open call only once its
  arguments parse as complete JSON. If they do not, the upstream interleaves parallel calls: the
  open call keeps streaming and every other call is buffered and sent whole (start, one
  ``input_json_delta``, stop) when the stream finishes. A fragment for a call already closed (only
  whitespace can validly follow a complete JSON object, or the upstream interleaved text into an
  unfinished call) is dropped rather than reopening a block.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import Any

from proxy.translate import hub
from proxy.translate.hub import TranslationError, compact

DEFAULT_MAX_TOKENS = 4096
# Anthropic's sampling temperature range is 0..1, OpenAI's 0..2.
MAX_TEMPERATURE = 1.0
# The forced tool that carries a JSON-mode answer (a reserved tool name, see the module docstring).
JSON_TOOL = "json_response"
JSON_TOOL_DESCRIPTION = "Respond with the JSON result"

STOP_TO_FINISH: dict[str, str] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
    "pause_turn": "stop",
}
FINISH_TO_STOP: dict[str, str] = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}
# Error type by HTTP status; other 5xx are api_error, other 4xx invalid_request_error.
ERROR_TYPES: dict[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}
# HTTP status of an in-band stream error by its type (Anthropic's ``error`` event has no status).
ERROR_STATUSES: dict[str, int] = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}
# OpenAI reasoning_effort -> Anthropic thinking budget_tokens.
EFFORT_BUDGETS: dict[str, int] = {"minimal": 1024, "low": 2048, "medium": 8192, "high": 24576}
# Anthropic budget_tokens -> reasoning_effort: the first effort whose bound the budget is below, else "high".
BUDGET_EFFORTS: dict[str, int] = {"low": 4096, "medium": 16384}
TOOL_CHOICE_TO_OPENAI: dict[str, str] = {"auto": "auto", "any": "required", "none": "none"}
TOOL_CHOICE_FROM_OPENAI: dict[str, str] = {"auto": "auto", "required": "any", "none": "none"}
THINKING_TYPES = ("thinking", "redacted_thinking")

Body = dict[str, Any]


# -- small shared pieces ---------------------------------------------------------------------------------


def _error_type(status: int) -> str:
    return ERROR_TYPES.get(status) or ("api_error" if status >= 500 else "invalid_request_error")


def _error_payload(status: int, message: str, type_: str | None = None) -> Body:
    return {"type": "error", "error": {"type": type_ or _error_type(status), "message": message}}


def _no_parameters() -> Body:
    # A fresh object each time: a shared one could be changed through any translated request.
    return {"type": "object", "properties": {}}


def _text_block(text: str) -> Body:
    return {"type": "text", "text": text}


def _joined_text(content: Any, separator: str) -> str:
    """A string, or the text of a list of text blocks joined."""
    if isinstance(content, str):
        return content
    texts = (block.get("text") or "" for block in content or () if block.get("type") == "text")
    return separator.join(texts)


def _message_id(raw: str | None) -> str:
    if not raw:
        # No id to derive one from (a stream that ended before its first chunk).
        return "msg_" + uuid.uuid4().hex[:24]
    return raw if raw.startswith("msg_") else "msg_" + raw


def _stop_reason(finish: str | None, has_tool_calls: bool) -> str:
    # Some upstreams say "stop" after tool calls; Anthropic clients look for tool_use.
    if has_tool_calls and finish in (None, "stop", "tool_calls"):
        return "tool_use"
    return FINISH_TO_STOP.get(finish or "", "end_turn")


def _finish_reason(stop: str | None, has_tool_calls: bool) -> str:
    finish = STOP_TO_FINISH.get(stop or "", "stop")
    # A tool_use stop with no tool call left is a JSON_TOOL answer, now plain content.
    return "stop" if finish == "tool_calls" and not has_tool_calls else finish


def _usage_to_openai(usage: Body) -> Body:
    cached = usage.get("cache_read_input_tokens") or 0
    creation = usage.get("cache_creation_input_tokens") or 0
    details = usage.get("output_tokens_details") or {}
    return hub.usage(
        (usage.get("input_tokens") or 0) + cached + creation,
        usage.get("output_tokens") or 0,
        cached=cached,
        cache_creation=creation,
        reasoning=details.get("thinking_tokens") or 0,
    )


def _usage_from_openai(usage: Body) -> Body:
    details = usage.get("prompt_tokens_details") or {}
    cached = details.get("cached_tokens") or 0
    creation = details.get("cache_creation_tokens") or 0
    return {
        # OpenAI's prompt_tokens include the cache reads and writes, Anthropic's input_tokens do not.
        "input_tokens": max(0, (usage.get("prompt_tokens") or 0) - cached - creation),
        "output_tokens": usage.get("completion_tokens") or 0,
        "cache_read_input_tokens": cached,
        "cache_creation_input_tokens": creation,
    }


# -- request: Anthropic -> OpenAI ------------------------------------------------------------------------


def request_to_openai(body: Body, model: str) -> Body:
    """An Anthropic Messages request as an OpenAI chat request for ``model``."""
    messages: list[Body] = []
    system = body.get("system")
    if system:
        messages.append({"role": "system", "content": _joined_text(system, "\n")})
    for i, message in enumerate(body.get("messages") or ()):
        role = message.get("role")
        if role == "user":
            messages.extend(_user_to_openai(message.get("content"), i))
        elif role == "assistant":
            messages.append(_assistant_to_openai(message.get("content"), f"messages[{i}].content"))
        else:
            raise TranslationError(f"messages[{i}].role", f"unknown role {role!r}")
    out: Body = {"model": model, "messages": messages}
    for key in ("max_tokens", "temperature", "top_p"):
        if body.get(key) is not None:
            out[key] = body[key]
    if body.get("stop_sequences"):
        out["stop"] = body["stop_sequences"]
    user_id = (body.get("metadata") or {}).get("user_id")
    if user_id:
        out["user"] = user_id
    if body.get("stream"):
        out["stream"] = True
        out["stream_options"] = {"include_usage": True}
    _tools_to_openai(body, out)
    effort = _effort(body.get("thinking"))
    if effort:
        out["reasoning_effort"] = effort
    output_format = body.get("output_format") or (body.get("output_config") or {}).get("format")
    if output_format and output_format.get("type") == "json_schema":
        out["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": "output", "schema": output_format.get("schema")},
        }
    return out


def _user_to_openai(content: Any, i: int) -> list[Body]:
    """One user message as OpenAI messages: its tool results first (as ``tool`` messages), then the rest."""
    if isinstance(content, str):
        return [{"role": "user", "content": content}]
    messages: list[Body] = []
    parts: list[Body] = []
    for j, block in enumerate(content or ()):
        if block.get("type") == "tool_result":
            messages.append(_tool_result_to_openai(block))
        else:
            parts.append(_user_part(block, f"messages[{i}].content[{j}]"))
    if parts:
        messages.append({"role": "user", "content": parts})
    return messages


def _tool_result_to_openai(block: Body) -> Body:
    text = _joined_text(block.get("content"), "\n")
    if block.get("is_error"):
        text = "Error: " + text
    return {"role": "tool", "tool_call_id": block.get("tool_use_id") or "", "content": text}


def _user_part(block: Body, where: str) -> Body:
    kind = block.get("type")
    if kind == "text":
        return {"type": "text", "text": block.get("text") or ""}
    if kind == "image":
        return {"type": "image_url", "image_url": {"url": _image_url(block.get("source") or {}, where)}}
    if kind == "document":
        return _document_part(block.get("source") or {}, where)
    raise TranslationError(where, f"{kind!r} content blocks have no OpenAI equivalent")


def _image_url(source: Body, where: str) -> str:
    kind = source.get("type")
    if kind == "base64":
        return f"data:{source.get('media_type') or 'image/png'};base64,{source.get('data') or ''}"
    if kind == "url":
        return str(source.get("url") or "")  # passed on as a URL, never fetched here
    raise TranslationError(f"{where}.source", f"{kind!r} image sources have no OpenAI equivalent")


def _document_part(source: Body, where: str) -> Body:
    kind = source.get("type")
    if kind == "base64":
        data_url = f"data:{source.get('media_type') or 'application/pdf'};base64,{source.get('data') or ''}"
        return {"type": "file", "file": {"filename": "document.pdf", "file_data": data_url}}
    if kind == "text":
        return {"type": "text", "text": source.get("data") or ""}
    # A URL would have to be fetched by the gateway, which never fetches on a client's behalf.
    raise TranslationError(f"{where}.source", f"{kind!r} document sources are not supported: send the PDF as base64")


def _assistant_to_openai(content: Any, where: str | None) -> Body:
    """Anthropic assistant content as an OpenAI assistant message.

    ``where`` names the content in a request, where an unknown block is an error; None marks an
    upstream answer, where unknown blocks are skipped and a ``JSON_TOOL`` call is the answer's text.
    """
    if isinstance(content, str):
        return {"role": "assistant", "content": content}
    texts: list[str] = []
    calls: list[Body] = []
    thinking: list[Body] = []
    for j, block in enumerate(content or ()):
        kind = block.get("type")
        if kind == "text":
            texts.append(block.get("text") or "")
        elif kind == "tool_use":
            if where is None and block.get("name") == JSON_TOOL:
                texts.append(compact(block.get("input") or {}))
            else:
                calls.append(_tool_call_to_openai(block))
        elif kind in THINKING_TYPES:
            thinking.append(block)  # verbatim: the signature must come back unchanged
        elif where is not None:
            raise TranslationError(f"{where}[{j}]", f"{kind!r} content blocks have no OpenAI equivalent")
    message: Body = {"role": "assistant", "content": "".join(texts) if texts or not calls else None}
    if calls:
        message["tool_calls"] = calls
    if thinking:
        message["reasoning_content"] = "".join(b.get("thinking") or "" for b in thinking if b.get("type") == "thinking")
        message["thinking_blocks"] = thinking
    return message


def _tool_call_to_openai(block: Body) -> Body:
    function = {"name": block.get("name") or "", "arguments": compact(block.get("input") or {})}
    return {"id": block.get("id") or "", "type": "function", "function": function}


def _tools_to_openai(body: Body, out: Body) -> None:
    tools: list[Body] = []
    for i, tool in enumerate(body.get("tools") or ()):
        kind = tool.get("type")
        if kind not in (None, "custom"):
            raise TranslationError(
                f"tools[{i}]", f"{kind} is an Anthropic built-in tool, which this provider does not offer"
            )
        function: Body = {"name": tool.get("name") or ""}
        if tool.get("description"):
            function["description"] = tool["description"]
        function["parameters"] = tool.get("input_schema") or _no_parameters()  # the same object, not re-modelled
        tools.append({"type": "function", "function": function})
    if not tools:
        return  # OpenAI rejects tool_choice and parallel_tool_calls without tools
    out["tools"] = tools
    choice = body.get("tool_choice")
    if not choice:
        return
    kind = choice.get("type")
    if kind == "tool":
        out["tool_choice"] = {"type": "function", "function": {"name": choice.get("name") or ""}}
    elif kind in TOOL_CHOICE_TO_OPENAI:
        out["tool_choice"] = TOOL_CHOICE_TO_OPENAI[kind]
    else:
        raise TranslationError("tool_choice", f"unknown tool_choice type {kind!r}")
    if choice.get("disable_parallel_tool_use"):
        out["parallel_tool_calls"] = False


def _effort(thinking: Any) -> str | None:
    if not isinstance(thinking, dict) or thinking.get("type") != "enabled":
        return None
    budget = thinking.get("budget_tokens") or 0
    for effort, bound in BUDGET_EFFORTS.items():
        if budget < bound:
            return effort
    return "high"


# -- request: OpenAI -> Anthropic ------------------------------------------------------------------------


def request_from_openai(body: Body, model: str) -> Body:
    """An OpenAI chat request as an Anthropic Messages request for ``model``."""
    _refuse_unsupported(body)
    system, messages = _messages_from_openai(body.get("messages") or ())
    out: Body = {
        "model": model,
        "messages": messages,
        "max_tokens": body.get("max_completion_tokens") or body.get("max_tokens") or DEFAULT_MAX_TOKENS,
    }
    if system:
        out["system"] = system
    stop = body.get("stop")
    if stop:
        out["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
    if body.get("temperature") is not None:
        out["temperature"] = min(body["temperature"], MAX_TEMPERATURE)
    if body.get("top_p") is not None:
        out["top_p"] = body["top_p"]
    user = body.get("user") or body.get("safety_identifier")
    if user:
        out["metadata"] = {"user_id": user}
    thinking = _thinking(body)
    thinking_on = thinking is not None and thinking.get("type") != "disabled"
    _tools_from_openai(body, out, thinking_on=thinking_on)
    if thinking is not None:
        out["thinking"] = thinking
    if thinking is not None and thinking_on:
        _make_room_for_thinking(thinking, out)
    if body.get("stream"):
        out["stream"] = True
    return out


def _refuse_unsupported(body: Body) -> None:
    n = body.get("n")
    if isinstance(n, int) and n > 1:
        raise TranslationError("n", "Anthropic returns one choice per request: n must be 1")
    if body.get("logprobs"):
        raise TranslationError("logprobs", "Anthropic does not return token log probabilities")
    if body.get("audio") is not None:
        raise TranslationError("audio", "Anthropic does not produce audio output")
    if "audio" in (body.get("modalities") or ()):
        raise TranslationError("modalities", "Anthropic does not produce audio output")


def _messages_from_openai(messages: Any) -> tuple[list[Body], list[Body]]:
    """System blocks (system and developer messages, hoisted in order) and alternating messages."""
    system: list[Body] = []
    out: list[Body] = []
    for i, message in enumerate(messages):
        role = message.get("role")
        if role in ("system", "developer"):
            text = hub.text_of(message.get("content"))
            if text:
                system.append(_text_block(text))
        elif role == "user":
            _append(out, "user", _user_blocks(message.get("content"), i))
        elif role == "assistant":
            _append(out, "assistant", _assistant_blocks(message, i))
        elif role in ("tool", "function"):
            _append_tool_result(out, _tool_result_from_openai(message))
        else:
            raise TranslationError(f"messages[{i}].role", f"unknown role {role!r}")
    return system, out


def _append(messages: list[Body], role: str, blocks: list[Body]) -> None:
    """Add blocks as a message of ``role``, merged into the previous one of the same role."""
    if not blocks:
        return
    if messages and messages[-1]["role"] == role:
        messages[-1]["content"].extend(blocks)
    else:
        messages.append({"role": role, "content": blocks})


def _append_tool_result(messages: list[Body], block: Body) -> None:
    """A tool result joins the open user message after its other tool results (Anthropic wants them first)."""
    if not messages or messages[-1]["role"] != "user":
        messages.append({"role": "user", "content": [block]})
        return
    content = messages[-1]["content"]
    k = 0
    while k < len(content) and content[k].get("type") == "tool_result":
        k += 1
    content.insert(k, block)


def _tool_result_from_openai(message: Body) -> Body:
    # A legacy function message names its function instead of a call id (see _assistant_blocks).
    call_id = message.get("tool_call_id") or message.get("name") or ""
    return {"type": "tool_result", "tool_use_id": hub.tool_id(call_id), "content": hub.text_of(message.get("content"))}


def _user_blocks(content: Any, i: int) -> list[Body]:
    if isinstance(content, str):
        return [_text_block(content)] if content else []
    blocks: list[Body] = []
    for j, part in enumerate(content or ()):
        block = _user_block(part, f"messages[{i}].content[{j}]")
        if block is not None:
            blocks.append(block)
    return blocks


def _user_block(part: Body, where: str) -> Body | None:
    kind = part.get("type")
    if kind == "text":
        text = part.get("text") or ""
        return _text_block(text) if text else None
    if kind == "image_url":
        image = part.get("image_url")
        return _image_block(image.get("url") if isinstance(image, dict) else image, where)
    if kind == "file":
        data = hub.parse_data_url((part.get("file") or {}).get("file_data") or "")
        if data and data[0] == "application/pdf":
            return {"type": "document", "source": {"type": "base64", "media_type": data[0], "data": data[1]}}
        raise TranslationError(where, "Anthropic takes files only as PDF data URLs in file_data")
    raise TranslationError(where, f"{kind!r} content parts have no Anthropic equivalent")


def _image_block(url: Any, where: str) -> Body:
    url = str(url or "")
    if url.startswith(("http://", "https://")):
        return {"type": "image", "source": {"type": "url", "url": url}}  # Anthropic fetches it, not the gateway
    data = hub.parse_data_url(url)
    if data is None:
        raise TranslationError(where, "image_url must be a base64 data URL or an http(s) URL")
    return {"type": "image", "source": {"type": "base64", "media_type": data[0], "data": data[1]}}


def _assistant_blocks(message: Body, i: int) -> list[Body]:
    blocks = list(message.get("thinking_blocks") or ())  # verbatim, first: Anthropic verifies them
    content = message.get("content")
    if isinstance(content, str):
        if content:
            blocks.append(_text_block(content))
    else:
        for part in content or ():
            text = part.get("text") or part.get("refusal") or ""
            if text and part.get("type") in ("text", "refusal"):
                blocks.append(_text_block(text))
    if message.get("refusal"):
        blocks.append(_text_block(message["refusal"]))
    for k, call in enumerate(message.get("tool_calls") or ()):
        function = call.get("function") or {}
        where = f"messages[{i}].tool_calls[{k}].function.arguments"
        blocks.append(_tool_use(call.get("id") or "", function.get("name") or "", function.get("arguments"), where))
    legacy = message.get("function_call")
    if legacy:
        # No call id in the legacy form: the function name stands for it, as on its result.
        name = legacy.get("name") or ""
        blocks.append(_tool_use(name, name, legacy.get("arguments"), f"messages[{i}].function_call.arguments"))
    return blocks


def _tool_use(call_id: str, name: str, arguments: Any, where: str) -> Body:
    return {
        "type": "tool_use",
        "id": hub.tool_id(call_id),
        "name": name,
        "input": hub.arguments_object(arguments, where),
    }


def _tool_definition(function: Body) -> Body:
    tool: Body = {"name": function.get("name") or ""}
    if function.get("description"):
        tool["description"] = function["description"]
    tool["input_schema"] = function.get("parameters") or _no_parameters()  # the same object, not re-modelled
    return tool


def _tools_from_openai(body: Body, out: Body, *, thinking_on: bool) -> None:
    tools: list[Body] = []
    for i, tool in enumerate(body.get("tools") or ()):
        if tool.get("type") != "function":
            raise TranslationError(f"tools[{i}]", f"{tool.get('type')!r} tools have no Anthropic equivalent")
        tools.append(_tool_definition(tool.get("function") or {}))
    tools.extend(_tool_definition(function) for function in body.get("functions") or ())  # legacy form
    for i, tool in enumerate(tools):
        if tool["name"] == JSON_TOOL:
            raise TranslationError(f"tools[{i}]", f"the tool name {JSON_TOOL} is reserved for JSON mode")
    choice = _tool_choice_from_openai(body.get("tool_choice", body.get("function_call")))
    json_schema = _json_schema(body.get("response_format"))
    if json_schema is not None:
        if thinking_on:
            raise TranslationError(
                "response_format", "Anthropic cannot force the JSON answer while thinking: drop reasoning_effort"
            )
        tools.append({"name": JSON_TOOL, "description": JSON_TOOL_DESCRIPTION, "input_schema": json_schema})
        choice = {"type": "tool", "name": JSON_TOOL}
    if not tools:
        return  # Anthropic rejects tool_choice without tools
    out["tools"] = tools
    if body.get("parallel_tool_calls") is False:
        choice = choice or {"type": "auto"}
        if choice["type"] != "none":
            choice["disable_parallel_tool_use"] = True
    if choice:
        out["tool_choice"] = choice


def _tool_choice_from_openai(choice: Any) -> Body | None:
    if choice is None:
        return None
    if isinstance(choice, str) and choice in TOOL_CHOICE_FROM_OPENAI:
        return {"type": TOOL_CHOICE_FROM_OPENAI[choice]}
    if isinstance(choice, dict):
        # {"type": "function", "function": {"name": N}}, or the legacy function_call {"name": N}
        name = (choice.get("function") or {}).get("name") if choice.get("type") == "function" else choice.get("name")
        if name:
            return {"type": "tool", "name": name}
    raise TranslationError("tool_choice", f"unsupported tool_choice {choice!r}")


def _json_schema(response_format: Any) -> Body | None:
    """The schema JSON mode forces (``{"type": "object"}`` for json_object), None without JSON mode."""
    kind = (response_format or {}).get("type")
    if kind in (None, "text"):
        return None
    if kind == "json_object":
        return {"type": "object"}
    if kind == "json_schema":
        return (response_format.get("json_schema") or {}).get("schema") or {"type": "object"}
    raise TranslationError("response_format", f"unsupported response_format type {kind!r}")


def _thinking(body: Body) -> Body | None:
    """The Anthropic thinking config: the body's own ``thinking`` as is, else from reasoning_effort."""
    thinking = body.get("thinking")
    if isinstance(thinking, dict):
        return thinking
    effort = body.get("reasoning_effort")
    if effort is None or effort == "none":
        return None
    if effort not in EFFORT_BUDGETS:
        raise TranslationError("reasoning_effort", f"unknown reasoning_effort {effort!r}")
    return {"type": "enabled", "budget_tokens": EFFORT_BUDGETS[effort]}


def _make_room_for_thinking(thinking: Body, out: Body) -> None:
    budget = thinking.get("budget_tokens") or 0
    if out["max_tokens"] <= budget:
        out["max_tokens"] += budget  # budget_tokens must be below max_tokens; keep the answer's room
    out.pop("temperature", None)  # Anthropic rejects sampling parameters with thinking
    out.pop("top_p", None)


# -- answers ---------------------------------------------------------------------------------------------


def response_to_openai(payload: Body, model: str) -> Body:
    """An Anthropic message answer as an OpenAI ``chat.completion``."""
    message = _assistant_to_openai(payload.get("content") or [], None)
    finish = _finish_reason(payload.get("stop_reason"), "tool_calls" in message)
    if payload.get("stop_reason") == "refusal" and isinstance(message.get("content"), str):
        # OpenAI's place for a refusal. (A stream cannot do this: its text has gone out as
        # content before the stop reason arrives; it ends with finish_reason content_filter.)
        message["refusal"], message["content"] = message["content"], None
    return {
        "id": payload.get("id") or "",
        "object": "chat.completion",
        "created": hub.now(),
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": None}],
        "usage": _usage_to_openai(payload.get("usage") or {}),
    }


def response_from_openai(payload: Body, model: str) -> Body:
    """An OpenAI ``chat.completion`` as an Anthropic message answer."""
    choice = (payload.get("choices") or [{}])[0]
    message = choice.get("message") or {}
    content = list(message.get("thinking_blocks") or ())
    if not content and message.get("reasoning_content"):
        content.append({"type": "thinking", "thinking": message["reasoning_content"], "signature": ""})
    text = hub.text_of(message.get("content"))
    if text:
        content.append(_text_block(text))
    refusal = message.get("refusal")
    if refusal:
        content.append(_text_block(refusal))
    calls = message.get("tool_calls") or ()
    content.extend(_tool_use_answer(call, k) for k, call in enumerate(calls))
    return {
        "id": _message_id(payload.get("id")),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": "refusal" if refusal else _stop_reason(choice.get("finish_reason"), bool(calls)),
        "stop_sequence": None,
        "usage": _usage_from_openai(payload.get("usage") or {}),
    }


def _tool_use_answer(call: Body, k: int) -> Body:
    function = call.get("function") or {}
    try:
        arguments = hub.arguments_object(function.get("arguments"), "arguments")
    except TranslationError:
        arguments = {}  # the model wrote broken JSON: the answer still has to be delivered
    return {
        "type": "tool_use",
        "id": hub.tool_id(call.get("id") or f"call_{k}"),
        "name": function.get("name") or "",
        "input": arguments,
    }


def error_body(status: int, message: str, type_: str | None = None) -> bytes:
    """An Anthropic error answer; the type follows the status unless given."""
    return compact(_error_payload(status, message, type_)).encode()


def models_page(ids: list[str]) -> Body:
    """Anthropic's ``GET /v1/models`` answer listing ``ids``."""
    data = [{"type": "model", "id": i, "display_name": i, "created_at": "1970-01-01T00:00:00Z"} for i in ids]
    return {
        "data": data,
        "has_more": False,
        "first_id": ids[0] if ids else None,
        "last_id": ids[-1] if ids else None,
    }


def count_tokens_answer(tokens: int) -> Body:
    return {"input_tokens": tokens}


# -- stream: Anthropic events -> OpenAI chunks -----------------------------------------------------------


class StreamToOpenAI:
    """Anthropic upstream SSE events as OpenAI ``chat.completion.chunk`` dicts."""

    def __init__(self, model: str) -> None:
        self.model = model
        self.created = hub.now()
        self.id = ""
        self._usage: Body = {}
        # content block index -> tool-call index (counting tool calls only), None for JSON_TOOL
        self._tools: dict[int, int | None] = {}
        self._tool_count = 0
        self._stopped = False
        self._handlers: dict[str, Callable[[Body], list[Body]]] = {
            "message_start": self._message_start,
            "content_block_start": self._block_start,
            "content_block_delta": self._block_delta,
            "message_delta": self._message_delta,
            "message_stop": self._message_stop,
            "error": self._error,
        }

    def feed(self, event: str | None, data: Body) -> list[Body]:
        handler = self._handlers.get(event or data.get("type") or "")
        return handler(data) if handler else []  # ping, content_block_stop, unknown events

    def finish(self) -> list[Body]:
        if self._stopped:
            return []
        raise hub.StreamError(502, "the upstream stream ended before its message_stop event")

    def _chunk(self, delta: Body, finish: str | None = None) -> Body:
        return hub.chunk(self.id, self.model, self.created, delta, finish)

    def _message_start(self, data: Body) -> list[Body]:
        message = data.get("message") or {}
        self.id = message.get("id") or ""
        self._usage = {k: v for k, v in (message.get("usage") or {}).items() if v is not None}
        return [self._chunk({"role": "assistant", "content": ""})]

    def _block_start(self, data: Body) -> list[Body]:
        block = data.get("content_block") or {}
        kind = block.get("type")
        if kind == "text":
            return [self._chunk({"content": block["text"]})] if block.get("text") else []
        if kind == "thinking":
            return [self._chunk({"reasoning_content": block.get("thinking") or ""})]
        if kind == "redacted_thinking":
            return [self._chunk({"thinking_blocks": [block]})]
        if kind == "tool_use":
            return self._tool_start(data.get("index", 0), block)
        return []

    def _tool_start(self, index: int, block: Body) -> list[Body]:
        arguments = compact(block["input"]) if block.get("input") else ""
        if block.get("name") == JSON_TOOL:
            self._tools[index] = None
            return [self._chunk({"content": arguments})] if arguments else []
        k = self._tools[index] = self._tool_count
        self._tool_count += 1
        function = {"name": block.get("name") or "", "arguments": arguments}
        call = {"index": k, "id": block.get("id") or "", "type": "function", "function": function}
        return [self._chunk({"tool_calls": [call]})]

    def _block_delta(self, data: Body) -> list[Body]:
        delta = data.get("delta") or {}
        kind = delta.get("type")
        if kind == "text_delta":
            return [self._chunk({"content": delta.get("text") or ""})]
        if kind == "thinking_delta":
            return [self._chunk({"reasoning_content": delta.get("thinking") or ""})]
        if kind == "signature_delta":
            block = {"type": "thinking", "thinking": "", "signature": delta.get("signature") or ""}
            return [self._chunk({"thinking_blocks": [block]})]
        if kind == "input_json_delta":
            return self._arguments(data.get("index", 0), delta.get("partial_json") or "")
        return []  # citations_delta and future delta types

    def _arguments(self, index: int, partial: str) -> list[Body]:
        if not partial or index not in self._tools:
            return []
        k = self._tools[index]
        if k is None:
            return [self._chunk({"content": partial})]  # the JSON-mode answer, as text
        return [self._chunk({"tool_calls": [{"index": k, "function": {"arguments": partial}}]})]

    def _message_delta(self, data: Body) -> list[Body]:
        # Figures on message_delta are cumulative totals: they replace message_start's, never add.
        self._usage.update((k, v) for k, v in (data.get("usage") or {}).items() if v is not None)
        stop = (data.get("delta") or {}).get("stop_reason")
        return [self._chunk({}, _finish_reason(stop, self._tool_count > 0))]

    def _message_stop(self, data: Body) -> list[Body]:
        self._stopped = True
        return [hub.usage_chunk(self.id, self.model, self.created, _usage_to_openai(self._usage))]

    def _error(self, data: Body) -> list[Body]:
        error = data.get("error") or {}
        type_ = error.get("type") or "api_error"
        raise hub.StreamError(ERROR_STATUSES.get(type_, 500), error.get("message") or type_, type_)


# -- stream: OpenAI chunks -> Anthropic events -----------------------------------------------------------


class _ToolCall:
    """One OpenAI tool call of a stream: its fragments so far and its Anthropic block, if started."""

    __slots__ = ("index", "id", "name", "parts", "block", "done")

    def __init__(self, index: int) -> None:
        self.index = index
        self.id = ""
        self.name = ""
        self.parts: list[str] = []
        self.block: int | None = None
        self.done = False


def _is_json(parts: list[str]) -> bool:
    try:
        json.loads("".join(parts))
    except ValueError:
        return False
    return True


class StreamFromOpenAI:
    """OpenAI chunks as Anthropic SSE events, in Anthropic's content block lifecycle."""

    def __init__(self, model: str) -> None:
        self.model = model
        self._started = False
        self._ended = False
        self._next_block = 0
        self._open: str | None = None  # the open block's kind: text, thinking, tool, redacted
        self._open_call: _ToolCall | None = None
        self._signed = False  # the open thinking block got its signature: more reasoning is a new block
        self._calls: dict[int, _ToolCall] = {}
        self._interleaved = False  # the upstream interleaves parallel calls: the others wait for the end
        self._finish: str | None = None
        self._refused = False
        self._usage: Body = {}

    def feed(self, chunk: Body) -> bytes:
        if self._ended:
            return b""
        out: list[bytes] = []
        if not self._started:
            self._message_start(chunk.get("id"), out)
        if chunk.get("usage"):
            self._usage = chunk["usage"]  # OpenAI sends it last, after the finish reason
        for choice in chunk.get("choices") or ():
            self._delta(choice.get("delta") or {}, out)
            if choice.get("finish_reason"):
                self._finish = choice["finish_reason"]
        return b"".join(out)

    def finish(self) -> bytes:
        if self._ended:
            return b""
        out: list[bytes] = []
        if not self._started:
            self._message_start(None, out)
        self._close(out)
        for index in sorted(self._calls):
            call = self._calls[index]
            if call.block is None:  # buffered: sent whole now
                self._start_call(call, out)
                self._close(out)
        stop = "refusal" if self._refused else _stop_reason(self._finish, bool(self._calls))
        delta = {"stop_reason": stop, "stop_sequence": None}
        out.append(self._event({"type": "message_delta", "delta": delta, "usage": _usage_from_openai(self._usage)}))
        out.append(self._event({"type": "message_stop"}))
        self._ended = True
        return b"".join(out)

    def error(self, status: int, message: str) -> bytes:
        if self._ended:
            return b""
        self._ended = True
        return self._event(_error_payload(status, message))

    @staticmethod
    def _event(payload: Body) -> bytes:
        return hub.sse(payload, event=payload["type"])

    def _message_start(self, chunk_id: str | None, out: list[bytes]) -> None:
        self._started = True
        message: Body = {
            "id": _message_id(chunk_id),
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 0, "output_tokens": 0},
        }
        out.append(self._event({"type": "message_start", "message": message}))

    def _delta(self, delta: Body, out: list[bytes]) -> None:
        if delta.get("reasoning_content"):
            self._thinking(delta["reasoning_content"], out)
        for block in delta.get("thinking_blocks") or ():
            self._thinking_block(block, out)
        if delta.get("content"):
            self._text(delta["content"], out)
        if delta.get("refusal"):
            self._refused = True
            self._text(delta["refusal"], out)
        for call in delta.get("tool_calls") or ():
            self._tool_call(call, out)

    # blocks

    def _open_block(self, kind: str, block: Body, out: list[bytes]) -> int:
        self._close(out)
        index = self._next_block
        self._next_block += 1
        self._open = kind
        out.append(self._event({"type": "content_block_start", "index": index, "content_block": block}))
        return index

    def _close(self, out: list[bytes]) -> None:
        if self._open is None:
            return
        out.append(self._event({"type": "content_block_stop", "index": self._next_block - 1}))
        if self._open_call is not None:
            self._open_call.done = True
            self._open_call = None
        self._open = None
        self._signed = False

    def _block_delta(self, delta: Body, out: list[bytes]) -> None:
        out.append(self._event({"type": "content_block_delta", "index": self._next_block - 1, "delta": delta}))

    def _text(self, text: str, out: list[bytes]) -> None:
        if self._open != "text":
            self._open_block("text", {"type": "text", "text": ""}, out)
        self._block_delta({"type": "text_delta", "text": text}, out)

    def _thinking(self, text: str, out: list[bytes]) -> None:
        if self._open != "thinking" or self._signed:
            self._open_block("thinking", {"type": "thinking", "thinking": "", "signature": ""}, out)
        self._block_delta({"type": "thinking_delta", "thinking": text}, out)

    def _thinking_block(self, block: Body, out: list[bytes]) -> None:
        if block.get("type") == "redacted_thinking":
            self._open_block("redacted", block, out)
            self._close(out)
            return
        signature = block.get("signature")
        if not signature:
            return  # its text came as reasoning_content
        if self._open != "thinking" or self._signed:
            self._open_block("thinking", {"type": "thinking", "thinking": "", "signature": ""}, out)
            if block.get("thinking"):  # an upstream that sends the text only in the block
                self._block_delta({"type": "thinking_delta", "thinking": block["thinking"]}, out)
        self._block_delta({"type": "signature_delta", "signature": signature}, out)
        self._signed = True

    # tool calls

    def _tool_call(self, delta: Body, out: list[bytes]) -> None:
        call = self._call(delta)
        function = delta.get("function") or {}
        if not call.id and delta.get("id"):
            call.id = delta["id"]
        if not call.name and function.get("name"):
            call.name = function["name"]
        fragment = function.get("arguments") or ""
        if call.done:
            return  # see the module docstring: never reopen a closed block
        if call is self._open_call:
            if fragment:
                call.parts.append(fragment)
                self._block_delta({"type": "input_json_delta", "partial_json": fragment}, out)
            return
        if fragment:
            call.parts.append(fragment)
        if call.name and self._may_start_call():
            self._start_call(call, out)

    def _call(self, delta: Body) -> _ToolCall:
        index = delta.get("index")
        if not isinstance(index, int):
            # Some OpenAI-compatible upstreams leave out the index: a new id is a new call.
            known = {c.id: i for i, c in self._calls.items()}
            call_id = delta.get("id")
            if call_id in known:
                index = known[call_id]
            else:
                index = len(self._calls) if call_id or not self._calls else max(self._calls)
        call = self._calls.get(index)
        if call is None:
            call = self._calls[index] = _ToolCall(index)
        return call

    def _may_start_call(self) -> bool:
        """Whether another call may take over from the open one: only once its arguments are complete."""
        if self._interleaved:
            return False
        if self._open_call is None or _is_json(self._open_call.parts):
            return True
        self._interleaved = True
        return False

    def _start_call(self, call: _ToolCall, out: list[bytes]) -> None:
        block = {"type": "tool_use", "id": hub.tool_id(call.id or f"call_{call.index}"), "name": call.name, "input": {}}
        call.block = self._open_block("tool", block, out)
        self._open_call = call
        if call.parts:
            self._block_delta({"type": "input_json_delta", "partial_json": "".join(call.parts)}, out)
