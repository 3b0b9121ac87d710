"""Answers both ways, error bodies, the models page and the count, and the usage, stop-reason, message-id
and error mapping the streams share."""

from __future__ import annotations

import uuid

from proxy.translate import hub
from proxy.translate.anthropic.requests import _assistant_to_openai, _text_block
from proxy.translate.anthropic.tables import ERROR_TYPES, FINISH_TO_STOP, STOP_TO_FINISH, Body
from proxy.translate.hub import TranslationError

# -- shared with the streams -----------------------------------------------------------------------------


def _error_type(status: int) -> str:
    return ERROR_TYPES.get(status) or ("api_error" if status >= 500 else "invalid_request_error")


def _error_payload(status: int, message: str, type_: str | None = None) -> Body:
    return {"type": "error", "error": {"type": type_ or _error_type(status), "message": message}}


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
    return hub.compact_bytes(_error_payload(status, message, type_))


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
