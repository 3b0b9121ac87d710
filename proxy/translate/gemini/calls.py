"""Function calls both ways (with their thought signatures), and the ids of calls that came without one."""

from __future__ import annotations

import hashlib
from typing import Any

from proxy.translate import hub


def _digest(text: str, length: int = 16) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:length]


def _call_id(scope: str, position: int, name: str) -> str:
    """The id of a function call that came without one: the same call always gets the same id."""
    return f"call_{position}_{_digest(f'{scope}:{position}:{name}')}"


def _openai_call(call: dict[str, Any], scope: str, position: int, signature: Any) -> dict[str, Any]:
    """A Gemini functionCall (+ its part's thought signature) as an OpenAI tool call."""
    name = str(call.get("name") or "")
    call_id = call.get("id") or _call_id(scope, position, name)
    args = call.get("args")
    return {
        "id": hub.join_signature(str(call_id), signature if isinstance(signature, str) else None),
        "type": "function",
        "function": {"name": name, "arguments": hub.compact(args if isinstance(args, dict) else {})},
    }


def _gemini_call_part(call_id: str, name: str, arguments: Any) -> dict[str, Any]:
    """An OpenAI tool call as a Gemini functionCall part for a client (unparsable arguments -> {})."""
    try:
        args = hub.arguments_object(arguments, "arguments")
    except hub.TranslationError:
        args = {}
    base, signature = hub.split_signature(call_id)
    call: dict[str, Any] = {"name": name, "args": args}
    if base:
        call["id"] = base
    part: dict[str, Any] = {"functionCall": call}
    if signature:
        part["thoughtSignature"] = signature
    return part
