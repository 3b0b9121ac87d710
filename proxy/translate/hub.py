"""What the format modules share: the error for untranslatable requests, tool-call id mapping,
the OpenAI chunk and usage shapes, and SSE encoding."""

from __future__ import annotations

import hashlib
import json
import re
import time
from typing import Any

compact = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


def utf8(json_text: str) -> bytes:
    """JSON text as UTF-8 bytes. An upstream's JSON may escape a lone UTF-16 surrogate
    (``\\ud800``): no character, so UTF-8 cannot carry it, and ``compact`` (which leaves
    characters unescaped) hands it on raw. It goes back out as that same escape: in JSON a
    surrogate can only stand inside a string, where the escape is valid, so the client reads what
    the upstream sent (as a passed-through answer would) instead of the request failing."""
    return json_text.encode("utf-8", "backslashreplace")


def compact_bytes(payload: Any) -> bytes:
    """``compact(payload)`` as UTF-8 (``utf8``)."""
    return utf8(compact(payload))


# A Gemini thought signature travels inside the tool-call id, so any client carries it to the
# next turn without knowing about it: ``<id>__sig__<signature>``.
SIGNATURE_SEPARATOR = "__sig__"
FINISH_REASONS = ("stop", "length", "tool_calls", "content_filter")


class TranslationError(Exception):
    """A request that cannot be expressed in the target format; answered 400 naming ``param``."""

    def __init__(self, param: str, message: str) -> None:
        super().__init__(f"{param}: {message}")
        self.param = param
        self.reason = message
        self.message = f"{param}: {message}"


def tool_id(original: str, *, pattern: str = r"[A-Za-z0-9_-]{1,64}", prefix: str = "call_", length: int = 24) -> str:
    """``original`` when it matches ``pattern``, else ``prefix`` + a digest of it: deterministic,
    so the id a client sends back on the next turn maps to the same value again."""
    if re.fullmatch(pattern, original):
        return original
    digest = hashlib.sha256(original.encode("utf-8", "surrogatepass")).hexdigest()  # an upstream's id may hold one
    return prefix + digest[: max(1, length - len(prefix))]


def split_signature(call_id: str) -> tuple[str, str | None]:
    """A tool-call id and the Gemini thought signature riding in it, if any."""
    base, sep, signature = call_id.partition(SIGNATURE_SEPARATOR)
    return (base, signature) if sep and signature else (call_id, None)


def join_signature(call_id: str, signature: str | None) -> str:
    return f"{call_id}{SIGNATURE_SEPARATOR}{signature}" if signature else call_id


def usage(
    prompt: int, completion: int, *, cached: int = 0, reasoning: int = 0, cache_creation: int = 0
) -> dict[str, Any]:
    """An OpenAI usage object; ``prompt`` already includes ``cached`` and ``cache_creation``."""
    out: dict[str, Any] = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }
    details: dict[str, int] = {"cached_tokens": cached}
    if cache_creation:
        details["cache_creation_tokens"] = cache_creation
    out["prompt_tokens_details"] = details
    out["completion_tokens_details"] = {"reasoning_tokens": reasoning}
    return out


def chunk(chunk_id: str, model: str, created: int, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    """One ``chat.completion.chunk`` with a single choice."""
    return {
        "id": chunk_id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }


def usage_chunk(chunk_id: str, model: str, created: int, usage_object: dict[str, Any]) -> dict[str, Any]:
    """The final usage-only chunk (``choices`` empty), as ``stream_options.include_usage`` asks."""
    return {
        "id": chunk_id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [],
        "usage": usage_object,
    }


def now() -> int:
    return int(time.time())


def sse(payload: Any, event: str | None = None) -> bytes:
    data = payload if isinstance(payload, str) else compact(payload)
    return (f"event: {event}\n" if event else "").encode() + b"data: " + utf8(data) + b"\n\n"


def text_of(content: Any) -> str:
    """The text of an OpenAI message's ``content`` (a string or a list of parts)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = (part for part in content if isinstance(part, dict) and part.get("type") == "text")
        return "".join(str(part.get("text", "")) for part in parts)
    return ""


def parse_data_url(url: str) -> tuple[str, str] | None:
    """``(media_type, base64 data)`` of a ``data:<type>;base64,<data>`` URL, else None."""
    match = re.match(r"data:([^;,]+);base64,(.*)", url, re.DOTALL)
    return (match.group(1), match.group(2)) if match else None


def arguments_object(arguments: Any, where: str) -> dict[str, Any]:
    """A tool call's ``arguments`` (a JSON string in OpenAI's format) as an object."""
    if isinstance(arguments, dict):
        return arguments
    if arguments in (None, ""):
        return {}
    try:
        value = json.loads(arguments)
    except (TypeError, ValueError):
        raise TranslationError(where, "tool call arguments must be a JSON object") from None
    if not isinstance(value, dict):
        raise TranslationError(where, "tool call arguments must be a JSON object")
    return value


class StreamError(Exception):
    """An upstream stream reported an error in-band (Anthropic's ``error`` event, a Gemini
    ``error`` object): the translated stream ends with an error event in the client's format."""

    def __init__(self, status: int, message: str, type_: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type_ = type_
