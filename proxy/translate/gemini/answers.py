"""Answers both ways, error bodies, the models page and the count, and the usage, finish-reason and error
mapping the streams share."""

from __future__ import annotations

from typing import Any

from proxy.translate import hub
from proxy.translate.gemini.calls import _digest, _gemini_call_part, _openai_call
from proxy.translate.gemini.fields import _dict, _get, _list
from proxy.translate.gemini.tables import (
    _BLOCKED,
    _CANONICAL_STATUSES,
    _MODEL_METHODS,
    ERROR_STATUSES,
    FINISH_FROM_OPENAI,
    FINISH_TO_OPENAI,
)

# -- shared with the streams ------------------------------------------------------------------


def _finish_to_openai(reason: Any) -> str:
    return FINISH_TO_OPENAI.get(reason, "stop") if isinstance(reason, str) else "stop"


def _error_object(status: int, message: str, type_: str | None = None) -> dict[str, Any]:
    if type_ in _CANONICAL_STATUSES:
        name = type_
    else:
        name = ERROR_STATUSES.get(status) or ("INTERNAL" if status >= 500 else "INVALID_ARGUMENT")
    return {"error": {"code": status, "message": message, "status": name}}


def _usage_to_openai(metadata: Any) -> dict[str, Any]:
    meta = _dict(metadata)
    prompt = int(meta.get("promptTokenCount") or 0) + int(meta.get("toolUsePromptTokenCount") or 0)
    thoughts = int(meta.get("thoughtsTokenCount") or 0)
    completion = int(meta.get("candidatesTokenCount") or 0) + thoughts
    cached = int(meta.get("cachedContentTokenCount") or 0)
    return hub.usage(prompt, completion, cached=cached, reasoning=thoughts)


def _usage_from_openai(usage: Any) -> dict[str, Any]:
    use = _dict(usage)
    prompt = int(use.get("prompt_tokens") or 0)
    completion = int(use.get("completion_tokens") or 0)
    reasoning = int(_dict(use.get("completion_tokens_details")).get("reasoning_tokens") or 0)
    cached = int(_dict(use.get("prompt_tokens_details")).get("cached_tokens") or 0)
    out: dict[str, Any] = {
        "promptTokenCount": prompt,
        "candidatesTokenCount": max(completion - reasoning, 0),
        "totalTokenCount": int(use.get("total_tokens") or prompt + completion),
    }
    if reasoning > 0:
        out["thoughtsTokenCount"] = reasoning
    if cached > 0:
        out["cachedContentTokenCount"] = cached
    return out


# -- response: Gemini -> OpenAI ---------------------------------------------------------------


def _choice(candidate: dict[str, Any], position: int, scope: str) -> dict[str, Any]:
    index = candidate.get("index")
    index = index if isinstance(index, int) else position
    texts: list[str] = []
    thoughts: list[str] = []
    calls: list[dict[str, Any]] = []
    for part in _list(_dict(candidate.get("content")).get("parts")):
        if not isinstance(part, dict):
            continue
        call = _get(part, "functionCall")
        if isinstance(call, dict):
            calls.append(_openai_call(call, f"{scope}:{index}", len(calls), _get(part, "thoughtSignature")))
        elif isinstance(part.get("text"), str):
            (thoughts if part.get("thought") else texts).append(part["text"])
        # Any other part (inline media, code execution, metadata) has no place in a chat message.
    message: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts or not calls else None}
    if thoughts:
        message["reasoning_content"] = "".join(thoughts)
    if calls:
        message["tool_calls"] = calls
    finish = "tool_calls" if calls else _finish_to_openai(candidate.get("finishReason"))
    return {"index": index, "message": message, "finish_reason": finish, "logprobs": None}


def response_to_openai(payload: dict[str, Any], model: str) -> dict[str, Any]:
    """A GenerateContentResponse as an OpenAI ``chat.completion``."""
    response_id = payload.get("responseId") or "chatcmpl-gemini-" + _digest(hub.compact(payload), 24)
    candidates = [c for c in _list(payload.get("candidates")) if isinstance(c, dict)]
    choices = [_choice(candidate, k, str(payload.get("responseId") or "")) for k, candidate in enumerate(candidates)]
    if not choices:
        reason = _dict(payload.get("promptFeedback")).get("blockReason")
        message: dict[str, Any] = {"role": "assistant", "content": None if reason else ""}
        if reason:
            message["refusal"] = _BLOCKED.format(reason)
        finish = "content_filter" if reason else "stop"
        choices = [{"index": 0, "message": message, "finish_reason": finish, "logprobs": None}]
    return {
        "id": response_id,
        "object": "chat.completion",
        "created": hub.now(),
        "model": model,
        "choices": choices,
        "usage": _usage_to_openai(payload.get("usageMetadata")),
    }


# -- response: OpenAI -> Gemini ---------------------------------------------------------------


def response_from_openai(payload: dict[str, Any], model: str) -> dict[str, Any]:
    """An OpenAI ``chat.completion`` as a GenerateContentResponse."""
    candidates: list[dict[str, Any]] = []
    for position, choice in enumerate(_list(payload.get("choices"))):
        choice = _dict(choice)
        message = _dict(choice.get("message"))
        parts: list[dict[str, Any]] = []
        if message.get("reasoning_content"):
            parts.append({"text": str(message["reasoning_content"]), "thought": True})
        text = hub.text_of(message.get("content"))
        if text:
            parts.append({"text": text})
        finish = FINISH_FROM_OPENAI.get(str(choice.get("finish_reason")), "STOP")
        if message.get("refusal"):
            parts.append({"text": str(message["refusal"])})
            finish = "SAFETY"
        for call in _list(message.get("tool_calls")):
            function = _dict(_dict(call).get("function"))
            parts.append(
                _gemini_call_part(str(call.get("id") or ""), str(function.get("name") or ""), function.get("arguments"))
            )
        legacy = message.get("function_call")
        if isinstance(legacy, dict):
            parts.append(_gemini_call_part("", str(legacy.get("name") or ""), legacy.get("arguments")))
        index = choice.get("index")
        candidates.append(
            {
                "content": {"role": "model", "parts": parts},
                "finishReason": finish,
                "index": index if isinstance(index, int) else position,
            }
        )
    return {
        "candidates": candidates,
        "usageMetadata": _usage_from_openai(payload.get("usage")),
        "modelVersion": model,
        "responseId": str(payload.get("id") or ""),
    }


def error_body(status: int, message: str, type_: str | None = None) -> bytes:
    """A Gemini error answer: ``{"error": {"code", "message", "status"}}``."""
    return hub.compact_bytes(_error_object(status, message, type_))


def model_entry(model_id: str) -> dict[str, Any]:
    """One entry of ``GET /v1beta/models``; an id with a "/" stays whole after "models/"."""
    return {
        "name": f"models/{model_id}",
        "baseModelId": model_id,
        "version": "001",
        "displayName": model_id,
        "supportedGenerationMethods": list(_MODEL_METHODS),
    }


def models_page(ids: list[str]) -> dict[str, Any]:
    return {"models": [model_entry(model_id) for model_id in ids]}


def count_tokens_answer(tokens: int) -> dict[str, Any]:
    return {"totalTokens": tokens}
