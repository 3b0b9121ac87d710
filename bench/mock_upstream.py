"""A fast fake LLM provider for the tests and the benchmark (never a real provider).

Speaks enough of four APIs for the official SDKs (``openai``, ``anthropic``, ``google-genai``):

- OpenAI: ``POST /v1/chat/completions``, ``/v1/completions``, ``/v1/embeddings``, ``/v1/responses``
  (JSON and SSE), ``GET /v1/models`` and ``GET /v1/models/{id}`` (the ``/v1`` prefix is optional);
- Azure OpenAI: ``POST /openai/deployments/{deployment}/chat/completions`` (and ``/completions``,
  ``/embeddings``) ``?api-version=...``, ``GET /openai/models?api-version=...`` and
  ``GET /openai/deployments?api-version=...`` (deployments ``gpt-4o`` and ``gpt-4o-mini``; any
  deployment name is served). A missing ``api-version`` query parameter is answered 404
  ``{"error":{"code":"404","message":"Resource not found"}}`` (checked first, as Azure routes),
  a missing ``api-key`` header 401 ``{"error":{"code":"401","message":"Access denied ..."}}``.
  Answers are OpenAI's with ``model`` = the deployment name (the words below are read from it)
  and ``prompt_filter_results``; a stream's FIRST chunk is Azure's prompt-filter chunk
  (``"choices":[]``, ``"id":""``, ``"model":""``, ``"created":0``).
- Anthropic: ``POST /v1/messages`` (JSON and SSE with ``message_start`` ... ``message_stop``),
  ``POST /v1/messages/count_tokens`` (``{"input_tokens": n}``); ``GET /v1/models`` (and
  ``/v1/models/{id}``) answer in Anthropic's shape when the request has an ``anthropic-version``
  header (the ``anthropic`` SDK 2.x sends its key as ``Authorization: Bearer``), or an
  ``x-api-key`` header and no ``authorization`` header.
- Gemini (Google AI Studio REST, camelCase), under ``/v1beta`` and ``/v1`` alike:
  ``POST /v1beta/models/{model}:generateContent`` (JSON), ``:streamGenerateContent?alt=sse``
  (SSE, each event ``data: {...}\\r\\n\\r\\n`` is a GenerateContentResponse chunk with
  ``usageMetadata`` on every chunk, cumulative, ``finishReason`` on the last one, ``modelVersion``
  and ``responseId``; without ``alt=sse`` the chunks come as one JSON array),
  ``:countTokens`` (``{"totalTokens": n}``), ``GET /v1beta/models`` (the ``gemini-*`` models of
  ``MODELS``, with ``supportedGenerationMethods``) and ``GET /v1beta/models/{model}``. The key
  comes in ``x-goog-api-key`` or ``?key=``; without one: 401
  ``{"error":{"code":401,"message":...,"status":"UNAUTHENTICATED"}}``. ``GET /v1/models`` is
  Gemini's list when the request carries such a key. Errors are Gemini-shaped (``status``
  ``INVALID_ARGUMENT``, ``NOT_FOUND``, ``RESOURCE_EXHAUSTED``, ``INTERNAL``).

Usage is deterministic: prompt tokens = characters of the prompt text // 4 (at least 1): OpenAI
``messages`` / ``input`` / ``prompt``, Anthropic ``messages`` and ``system``, Gemini
``contents[].parts[].text`` and ``systemInstruction``; completion tokens = ``max_tokens`` /
``max_completion_tokens`` / ``max_output_tokens`` / ``generationConfig.maxOutputTokens`` (default
16) whatever the answer holds (text, tool calls, a refusal), plus 5 with ``thinking``. A plain
text answer is that many ``mock`` words; a streamed one sends one word per chunk.

Behaviours are chosen by words in the model name (Azure: the deployment; Gemini: the model in
the path), so a test selects them per request. Failure modes, in every format:
``fail-500``, ``fail-429``, ``fail-400`` (an error in the route's format; 429 with
``Retry-After: 1``), ``hang`` (never answers), ``slow-<ms>`` (waits before the headers),
``slow-stream`` / ``slow-stream-<ms>`` (pauses between chunks, 300 ms by default), ``reset``
(drops the connection without an answer), ``reset-mid-stream`` (drops it after two chunks),
``garbage-stream`` (answers 200 ``text/event-stream`` whose body is exactly the chunks listed
(base64) in the request body's ``mock_chunks``, one HTTP chunk each, then ends the body, or drops
the connection when ``mock_abort`` is true: fuzz tests send truncated or garbage events byte for
byte) and ``no-usage`` (an OpenAI JSON chat answer without its ``usage`` object).

Content words, in all three formats (OpenAI incl. Azure, Anthropic, Gemini), JSON and SSE:

- ``tool``: when the request offers tools (OpenAI ``tools[].function``, Anthropic ``tools``,
  Gemini ``tools[].functionDeclarations``) and its last message is not a tool result, the answer
  is one call of the first tool with arguments ``TOOL_ARGS[0]`` = ``{"city": "Paris", "note":
  "café ☕ — ok"}`` (non-ASCII on purpose; answers are UTF-8, not ``\\u`` escapes); finish
  ``tool_calls`` / ``tool_use`` / ``STOP``. ``parallel-tool``: two calls (the first two tools,
  or the first one twice), the second with ``TOOL_ARGS[1]`` = ``{"city": "Tokyo", "note":
  "東京"}``. Ids: ``call_mock0``, ``call_mock1`` (OpenAI), ``toolu_mock0``... (Anthropic), none
  (Gemini). Streams: OpenAI sends a name-only first delta per call (id, type, name, arguments
  ``""``), then the arguments in 4 pieces; Anthropic a ``tool_use`` content_block_start (input
  ``{}``), ``input_json_delta`` pieces and content_block_stop per call; Gemini each
  ``functionCall`` whole in one frame, then a SEPARATE final frame with ``finishReason: "STOP"``
  and no parts. In every format, for each call, the SSE bytes of one event are written as two
  HTTP chunks split inside a multi-byte UTF-8 character, with a 5 ms pause between them, so a
  gateway that decodes each network read on its own breaks. ``tool-whole`` (OpenAI): each call
  arrives complete (id, name, arguments) in one chunk.
- the request's LAST message is a tool result (OpenAI: trailing ``role: tool`` messages;
  Anthropic: a user message with ``tool_result`` blocks; Gemini: ``functionResponse`` parts), any
  model: the answer is the text ``tool results: `` + the results joined by `` | `` (OpenAI and
  Anthropic: each result's text content; Gemini: the compact JSON of each ``response``), finish
  ``stop`` / ``end_turn`` / ``STOP``, so multi-turn tests see what the gateway forwarded.
- ``refusal``: OpenAI: ``message.refusal`` "I can't help with that." and ``content`` null, finish
  ``stop`` (streamed as ``delta.refusal`` pieces); Anthropic: ``stop_reason`` ``refusal`` with a
  text block "I can't help with that."; Gemini: a candidate without content, ``finishReason``
  ``SAFETY``.
- ``cached``: OpenAI ``prompt_tokens_details.cached_tokens`` = half the prompt tokens; Anthropic
  ``cache_read_input_tokens`` = half, ``cache_creation_input_tokens`` = 3 (at most the rest),
  ``input_tokens`` = the rest (the three add up to the prompt count); Gemini
  ``cachedContentTokenCount`` = half (included in ``promptTokenCount``).
- ``thinking``: 5 reasoning tokens on top of the completion tokens. OpenAI:
  ``completion_tokens_details.reasoning_tokens`` = 5, included in ``completion_tokens``;
  Anthropic: a ``thinking`` block ("Let me think.", ``signature`` "sig-mock") before the rest,
  streamed as ``thinking_delta`` + ``signature_delta``, counted in ``output_tokens``; Gemini: a
  ``{"text": "Let me think.", "thought": true}`` part first, ``thoughtsTokenCount`` = 5 (not in
  ``candidatesTokenCount``, in ``totalTokenCount``) and, with ``tool``, ``thoughtSignature``
  ``GEMINI_SIGNATURE`` on the first ``functionCall`` part.
- ``echo``: a JSON answer (OpenAI, Azure, Anthropic, Gemini) carries the request under a
  top-level ``echo``: ``{"path", "query", "headers", "body"}`` (``query`` the raw query string;
  the ``google-genai`` SDK drops unknown fields, so read it raw or use ``last_request``).

Anthropic streams: ``message_start`` carries the input figures (and ``output_tokens`` 1),
``message_delta`` carries the final ``output_tokens`` AND repeats the input figures, as Anthropic
does, so a gateway that adds the two counts double.

A request header ``x-mock-answer-bytes: N`` makes a non-streamed OpenAI chat (or legacy
completion) answer's text N bytes of ``m`` (its usage unchanged): memory checks send a large
answer through the gateway with it (``bench/soak.py``).

``GET /_mock/stats`` reports what was served (requests by path and model, statuses, tokens,
streams started/finished, ``last_headers`` and ``last_request``: ``{"method", "path", "query",
"headers", "body"}`` of the last request other than ``/_mock/*``, the body as parsed JSON or
null); ``POST /_mock/reset`` zeroes it. Fault tests compare the gateway's ledger with these
counts; translation tests read what reached the upstream.

It is an asyncio server with a tiny HTTP/1.1 parser (keep-alive, ``Content-Length`` bodies) so
that one core answers far more requests per second than the gateway forwards: the benchmark
must measure the gateway, not the mock (the plain OpenAI chat path stays the shortest one). Run
it with ``python -m bench.mock_upstream --port N``, or in a background thread with
:func:`serve_in_thread`.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import re
import struct
import threading
import time
from collections import Counter
from typing import Any
from urllib.parse import parse_qs, unquote

GEMINI_MODELS = ("gemini-2.5-flash", "gemini-2.5-pro", "gemini-2.0-flash")
BASE_MODELS = ("gpt-4o", "gpt-4o-mini", "text-embedding-3-small", "claude-3-5-sonnet-latest", "claude-3-5-haiku-latest")
MODELS = BASE_MODELS + GEMINI_MODELS
AZURE_DEPLOYMENTS = ("gpt-4o", "gpt-4o-mini")
REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found", 411: "Length Required"}
REASONS |= {429: "Too Many Requests", 500: "Internal Server Error"}

TOOL_ARGS = ({"city": "Paris", "note": "café ☕ — ok"}, {"city": "Tokyo", "note": "東京"})
REFUSAL = "I can't help with that."
THOUGHT = "Let me think."
ANTHROPIC_SIGNATURE = "sig-mock"
GEMINI_SIGNATURE = "c2lnLW1vY2s="
REASONING_TOKENS = 5
FLUSH_PAUSE = 0.005  # between the two halves of a character split across HTTP chunks


class Stats:
    """Counters of what the mock served (only touched from the event loop thread)."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.requests = 0
        self.by_path: Counter[str] = Counter()
        self.by_model: Counter[str] = Counter()
        self.by_status: Counter[int] = Counter()
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.streams_started = 0
        self.streams_finished = 0
        self.last_headers: dict[str, str] = {}
        self.last_request: Request | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "by_path": dict(self.by_path),
            "by_model": dict(self.by_model),
            "by_status": {str(k): v for k, v in self.by_status.items()},
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "streams_started": self.streams_started,
            "streams_finished": self.streams_finished,
            "last_headers": self.last_headers,
            "last_request": _request_record(self.last_request),
        }


def _request_record(req: Request | None) -> dict[str, Any] | None:
    if req is None:
        return None
    try:
        body = json.loads(req.body) if req.body else None
    except ValueError:
        body = None
    return {"method": req.method, "path": req.path, "query": req.query, "headers": req.headers, "body": body}


STATS = Stats()


def _text_of(value: Any) -> str:
    """All prompt text in a messages list / input / content blocks, for deterministic token counts."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "".join(_text_of(item) for item in value)
    if isinstance(value, dict):
        return _text_of(value.get("content", "")) + _text_of(value.get("text", ""))
    return ""


def prompt_tokens_of(body: dict[str, Any]) -> int:
    text = _text_of(body.get("messages", [])) + _text_of(body.get("system", ""))
    text += _text_of(body.get("input", "")) + _text_of(body.get("prompt", ""))
    return max(1, len(text) // 4)


def completion_tokens_of(body: dict[str, Any]) -> int:
    for field in ("max_tokens", "max_completion_tokens", "max_output_tokens"):
        value = body.get(field)
        if isinstance(value, int) and value > 0:
            return value
    return 16


def _gemini_parts_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if not isinstance(content, dict) or not isinstance(content.get("parts"), list):
        return ""
    return "".join(p["text"] for p in content["parts"] if isinstance(p, dict) and isinstance(p.get("text"), str))


def gemini_prompt_tokens_of(body: dict[str, Any]) -> int:
    contents = body.get("contents")
    text = "".join(_gemini_parts_text(c) for c in contents) if isinstance(contents, list) else ""
    text += _gemini_parts_text(body.get("systemInstruction") or body.get("system_instruction"))
    return max(1, len(text) // 4)


def gemini_completion_tokens_of(body: dict[str, Any]) -> int:
    config = body.get("generationConfig")
    value = config.get("maxOutputTokens") if isinstance(config, dict) else None
    return value if isinstance(value, int) and value > 0 else 16


def _delay_ms(model: str, word: str, default: int) -> int | None:
    match = re.search(rf"(?:^|[^a-z]){word}(?:-(\d+))?(?:$|[^a-z0-9-])", model)
    if not match:
        return None
    return int(match.group(1)) if match.group(1) else default


class Request:
    __slots__ = ("method", "path", "headers", "body", "query")

    def __init__(self, method: str, path: str, headers: dict[str, str], body: bytes, query: str = "") -> None:
        self.method, self.path, self.headers, self.body, self.query = method, path, headers, body, query

    def param(self, name: str) -> str:
        """One query parameter ("" when absent)."""
        values = parse_qs(self.query).get(name) if self.query else None
        return values[0] if values else ""


async def _read_request(reader: asyncio.StreamReader) -> Request | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
        return None
    lines = head.decode("latin-1").split("\r\n")
    method, target, _ = lines[0].split(" ", 2)
    headers = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0") or 0)
    body = await reader.readexactly(length) if length else b""
    path, _, query = target.partition("?")
    return Request(method, path, headers, body, query)


def _head(status: int, content_type: str, length: int | None, extra: dict[str, str] | None = None) -> bytes:
    lines = [f"HTTP/1.1 {status} {REASONS.get(status, 'Status')}", f"Content-Type: {content_type}"]
    lines.append(f"Content-Length: {length}" if length is not None else "Transfer-Encoding: chunked")
    for name, value in (extra or {}).items():
        lines.append(f"{name}: {value}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _json(status: int, payload: Any, extra: dict[str, str] | None = None) -> bytes:
    data = json.dumps(payload, separators=(",", ":")).encode()
    return _head(status, "application/json", len(data), extra) + data


_dumps_utf8 = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


def _json_utf8(status: int, payload: Any) -> bytes:
    """A JSON answer in raw UTF-8 (as the providers send non-ASCII text), not ``\\u`` escapes."""
    data = _dumps_utf8(payload).encode()
    return _head(status, "application/json; charset=utf-8", len(data)) + data


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def _openai_error(status: int, message: str, type_: str) -> bytes:
    extra = {"Retry-After": "1"} if status == 429 else None
    return _json(status, {"error": {"message": message, "type": type_, "code": None, "param": None}}, extra)


def _anthropic_error(status: int, message: str, type_: str) -> bytes:
    return _json(status, {"type": "error", "error": {"type": type_, "message": message}})


GEMINI_STATUS = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 404: "NOT_FOUND", 429: "RESOURCE_EXHAUSTED"}
GEMINI_STATUS |= {500: "INTERNAL"}


def _gemini_error(status: int, message: str, type_: str = "") -> bytes:
    extra = {"Retry-After": "1"} if status == 429 else None
    payload = {"error": {"code": status, "message": message, "status": GEMINI_STATUS.get(status, "UNKNOWN")}}
    return _json(status, payload, extra)


def _azure_error(status: int, message: str, type_: str = "") -> bytes:
    extra = {"Retry-After": "1"} if status == 429 else None
    return _json(status, {"error": {"code": str(status), "message": message}}, extra)


AZURE_401 = (
    "Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a valid key "
    "for an active subscription and use a correct regional API endpoint for your resource."
)


class Flush(bytes):
    """An HTTP chunk after which the stream is flushed and paused (the first half of a split)."""


class Answer:
    """What to send back: a whole JSON body, or SSE events (one HTTP chunk each) with their token
    counts. ``extra`` completion tokens are counted when a stream ends (the streamed ``mock``
    words are counted one per chunk); ``split`` when some events are :class:`Flush` halves."""

    def __init__(
        self,
        whole: bytes | None = None,
        events: list[bytes] | None = None,
        tokens: tuple[int, int] = (0, 0),
        extra: int = 0,
        split: bool = False,
    ):
        self.whole, self.events, self.tokens, self.extra, self.split = whole, events, tokens, extra, split


def _special_stream(events: list[bytes], prompt: int, completion: int) -> Answer:
    """An answer whose streamed chunks are not all one ``mock`` word each."""
    words = sum(1 for event in events if b"mock " in event)
    split = any(event.__class__ is Flush for event in events)
    return Answer(events=events, tokens=(prompt, completion), extra=completion - words, split=split)


def _usage_openai(prompt: int, completion: int, cached: int) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached},
    }


def _sse(payload: Any, event: str | None = None) -> bytes:
    data = payload if isinstance(payload, str) else json.dumps(payload, separators=(",", ":"))
    return (f"event: {event}\n" if event else "").encode() + f"data: {data}\n\n".encode()


def _sse_utf8(payload: Any, event: str | None = None) -> bytes:
    return (f"event: {event}\n" if event else "").encode() + b"data: " + _dumps_utf8(payload).encode() + b"\n\n"


def _split_mid_char(event: bytes) -> list[bytes]:
    """``event`` as two HTTP chunks cut inside its first multi-byte UTF-8 character."""
    for index, byte in enumerate(event):
        if byte >= 0xC0:  # the lead byte of a multi-byte character
            return [Flush(event[: index + 1]), event[index + 1 :]]
    return [event]


def _pieces(text: str, count: int = 4) -> list[str]:
    size = max(1, -(-len(text) // count))
    return [text[i : i + size] for i in range(0, len(text), size)]


def _arguments(args: dict[str, Any]) -> str:
    return json.dumps(args, ensure_ascii=False)


# --- what to answer, whatever the format ------------------------------------------------------------


def _plan(model: str, tools: list[str], results: list[str] | None) -> tuple[str, Any]:
    """``("results", text)``, ``("tools", [(name, args), ...])``, ``("refusal", text)`` or ``("text", None)``."""
    if results is not None:
        return "results", "tool results: " + " | ".join(results)
    if "tool" in model and tools:
        if "parallel-tool" in model:
            return "tools", [(tools[0], TOOL_ARGS[0]), (tools[1] if len(tools) > 1 else tools[0], TOOL_ARGS[1])]
        return "tools", [(tools[0], TOOL_ARGS[0])]
    if "refusal" in model:
        return "refusal", REFUSAL
    return "text", None


def _names(items: Any) -> list[str]:
    return [item["name"] for item in items if isinstance(item, dict) and isinstance(item.get("name"), str)]


def _openai_tools(body: dict[str, Any]) -> list[str]:
    tools = body.get("tools")
    if not isinstance(tools, list):
        return []
    return _names(t["function"] if isinstance(t, dict) and isinstance(t.get("function"), dict) else t for t in tools)


def _openai_results(body: dict[str, Any]) -> list[str] | None:
    messages = body.get("messages")
    results: list[str] = []
    for message in reversed(messages if isinstance(messages, list) else []):
        if not isinstance(message, dict) or message.get("role") != "tool":
            break
        results.append(_text_of(message.get("content", "")))
    return results[::-1] or None


def _anthropic_tools(body: dict[str, Any]) -> list[str]:
    tools = body.get("tools")
    return _names(tools) if isinstance(tools, list) else []


def _anthropic_results(body: dict[str, Any]) -> list[str] | None:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages or not isinstance(messages[-1], dict):
        return None
    last = messages[-1]
    if last.get("role") != "user" or not isinstance(last.get("content"), list):
        return None
    blocks = [b for b in last["content"] if isinstance(b, dict) and b.get("type") == "tool_result"]
    return [_text_of(b.get("content", "")) for b in blocks] or None


def _gemini_tools(body: dict[str, Any]) -> list[str]:
    names: list[str] = []
    for tool in body.get("tools") or []:
        if isinstance(tool, dict) and isinstance(tool.get("functionDeclarations"), list):
            names += _names(tool["functionDeclarations"])
    return names


def _gemini_results(body: dict[str, Any]) -> list[str] | None:
    contents = body.get("contents")
    if not isinstance(contents, list) or not contents or not isinstance(contents[-1], dict):
        return None
    parts = contents[-1].get("parts")
    responses = [p["functionResponse"] for p in parts or [] if isinstance(p, dict) and "functionResponse" in p]
    return [_dumps_utf8(r.get("response") if isinstance(r, dict) else r) for r in responses] or None


def _echo(req: Request | None, body: Any) -> dict[str, Any]:
    if req is None:
        return {"path": None, "query": "", "headers": {}, "body": body}
    return {"path": req.path, "query": req.query, "headers": req.headers, "body": body}


# --- OpenAI (and Azure) -----------------------------------------------------------------------------

AZURE_FILTER = [{"prompt_index": 0, "content_filter_results": {}}]
AZURE_FILTER_EVENT = _sse(
    {"choices": [], "created": 0, "id": "", "model": "", "object": "", "prompt_filter_results": AZURE_FILTER}
)


def _answer_bytes(req: Request | None) -> int:
    """``x-mock-answer-bytes: N``: the size a non-streamed chat answer's text must have (0: as usual)."""
    value = req.headers.get("x-mock-answer-bytes", "") if req is not None else ""
    return int(value) if value.isdigit() else 0


def answer_chat(req: Request | None, body: dict[str, Any], model: str, legacy: bool, azure: bool = False) -> Answer:
    if not legacy:
        messages = body.get("messages")
        last = messages[-1] if messages.__class__ is list and messages else None
        if (
            "tool" in model
            or "refusal" in model
            or "thinking" in model
            or (last.__class__ is dict and last.get("role") == "tool")
        ):
            return _answer_chat_special(req, body, model, azure)
    prompt, completion = prompt_tokens_of(body), completion_tokens_of(body)
    cached = prompt // 2 if "cached" in model else 0
    rid, created = f"chatcmpl-mock{STATS.requests}", int(time.time())
    kind = "text_completion" if legacy else "chat.completion"
    if not body.get("stream"):
        size = _answer_bytes(req)
        text = "m" * size if size else " ".join(["mock"] * completion)
        choice: dict[str, Any] = {"index": 0, "finish_reason": "length", "logprobs": None}
        if legacy:
            choice["text"] = text
        else:
            choice["message"] = {"role": "assistant", "content": text, "refusal": None}
        payload: dict[str, Any] = {
            "id": rid,
            "object": kind,
            "created": created,
            "model": model,
            "choices": [choice],
            "usage": _usage_openai(prompt, completion, cached),
        }
        if azure:
            payload["prompt_filter_results"] = AZURE_FILTER
        if "echo" in model:
            payload["echo"] = _echo(req, body)
        if "no-usage" in model:  # an upstream that does not report usage
            del payload["usage"]
        return Answer(whole=_json(200, payload), tokens=(prompt, completion))
    kind = "text_completion" if legacy else "chat.completion.chunk"
    include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
    events = [AZURE_FILTER_EVENT] if azure else []
    for index in range(completion):
        if legacy:
            choice = {"index": 0, "text": "mock ", "finish_reason": None, "logprobs": None}
        else:
            delta = {"content": "mock "} if index else {"role": "assistant", "content": "mock "}
            choice = {"index": 0, "delta": delta, "finish_reason": None, "logprobs": None}
        if index == completion - 1:
            choice["finish_reason"] = "length"
        chunk: dict[str, Any] = {"id": rid, "object": kind, "created": created, "model": model, "choices": [choice]}
        if include_usage:
            chunk["usage"] = None
        events.append(_sse(chunk))
    if include_usage:
        usage_chunk = {"id": rid, "object": kind, "created": created, "model": model, "choices": []}
        usage_chunk["usage"] = _usage_openai(prompt, completion, cached)
        events.append(_sse(usage_chunk))
    events.append(b"data: [DONE]\n\n")
    return Answer(events=events, tokens=(prompt, completion))


def _answer_chat_special(req: Request | None, body: dict[str, Any], model: str, azure: bool) -> Answer:
    """A chat answer with tool calls, tool results, a refusal or reasoning tokens."""
    prompt, completion = prompt_tokens_of(body), completion_tokens_of(body)
    reasoning = REASONING_TOKENS if "thinking" in model else 0
    usage = _usage_openai(prompt, completion + reasoning, prompt // 2 if "cached" in model else 0)
    if reasoning:
        usage["completion_tokens_details"] = {"reasoning_tokens": reasoning}
    kind, value = _plan(model, _openai_tools(body), _openai_results(body))
    rid, created = f"chatcmpl-mock{STATS.requests}", int(time.time())
    message: dict[str, Any] = {"role": "assistant", "content": None, "refusal": None}
    finish = "stop"
    if kind == "text":
        message["content"], finish = " ".join(["mock"] * completion), "length"
    elif kind == "results":
        message["content"] = value
    elif kind == "refusal":
        message["refusal"] = value
    else:
        finish = "tool_calls"
        message["tool_calls"] = [
            {"id": f"call_mock{i}", "type": "function", "function": {"name": name, "arguments": _arguments(args)}}
            for i, (name, args) in enumerate(value)
        ]
    tokens = (prompt, completion + reasoning)
    if not body.get("stream"):
        payload: dict[str, Any] = {
            "id": rid,
            "object": "chat.completion",
            "created": created,
            "model": model,
            "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": None}],
            "usage": usage,
        }
        if azure:
            payload["prompt_filter_results"] = AZURE_FILTER
        if "echo" in model:
            payload["echo"] = _echo(req, body)
        if "no-usage" in model:
            del payload["usage"]
        return Answer(whole=_json_utf8(200, payload), tokens=tokens)
    include_usage = bool((body.get("stream_options") or {}).get("include_usage"))

    def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}
        out: dict[str, Any] = {
            "id": rid,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [choice],
        }
        if include_usage:
            out["usage"] = None
        return _sse_utf8(out)

    events = [AZURE_FILTER_EVENT] if azure else []
    if kind == "text":
        for index in range(completion):
            delta = {"content": "mock "} if index else {"role": "assistant", "content": "mock "}
            events.append(chunk(delta, "length" if index == completion - 1 else None))
    elif kind == "results":
        events += [chunk({"role": "assistant", "content": value}), chunk({}, "stop")]
    elif kind == "refusal":
        pieces = _pieces(value, 3)
        events.append(chunk({"role": "assistant", "content": None, "refusal": pieces[0]}))
        events += [chunk({"refusal": piece}) for piece in pieces[1:]]
        events.append(chunk({}, "stop"))
    else:
        whole = "tool-whole" in model
        for index, call in enumerate(message["tool_calls"]):
            head: dict[str, Any] = {"role": "assistant", "content": None} if index == 0 else {}
            function = call["function"]
            start = {"index": index, "id": call["id"], "type": "function"}
            if whole:
                events.append(chunk({**head, "tool_calls": [{**start, "function": function}]}))
                continue
            named = {**start, "function": {"name": function["name"], "arguments": ""}}
            events.append(chunk({**head, "tool_calls": [named]}))
            pieces = [
                chunk({"tool_calls": [{"index": index, "function": {"arguments": piece}}]})
                for piece in _pieces(function["arguments"])
            ]
            events += _split_first_non_ascii(pieces)
        events.append(chunk({}, "tool_calls"))
    if include_usage:
        usage_chunk = {"id": rid, "object": "chat.completion.chunk", "created": created, "model": model}
        events.append(_sse_utf8({**usage_chunk, "choices": [], "usage": usage}))
    events.append(b"data: [DONE]\n\n")
    return _special_stream(events, *tokens)


def _split_first_non_ascii(events: list[bytes]) -> list[bytes]:
    """``events`` with the first one holding a multi-byte character split inside it."""
    for index, event in enumerate(events):
        if max(event) >= 0xC0:
            return events[:index] + _split_mid_char(event) + events[index + 1 :]
    return events


def answer_embeddings(body: dict[str, Any], model: str) -> Answer:
    inputs = body.get("input", "")
    inputs = inputs if isinstance(inputs, list) else [inputs]
    prompt = prompt_tokens_of(body)
    data = []
    for index, _ in enumerate(inputs):
        vector = [0.1 * (index + 1), 0.2, 0.3, 0.4]
        if body.get("encoding_format") == "base64":
            embedding: Any = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
        else:
            embedding = vector
        data.append({"object": "embedding", "index": index, "embedding": embedding})
    payload = {
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": prompt, "total_tokens": prompt},
    }
    return Answer(whole=_json(200, payload), tokens=(prompt, 0))


def answer_responses(body: dict[str, Any], model: str) -> Answer:
    prompt, completion = prompt_tokens_of(body), completion_tokens_of(body)
    text = " ".join(["mock"] * completion)
    usage = {
        "input_tokens": prompt,
        "output_tokens": completion,
        "total_tokens": prompt + completion,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens_details": {"reasoning_tokens": 0},
    }
    message = {
        "type": "message",
        "id": "msg_mock",
        "status": "completed",
        "role": "assistant",
        "content": [{"type": "output_text", "text": text, "annotations": []}],
    }
    response = {
        "id": f"resp_mock{STATS.requests}",
        "object": "response",
        "created_at": int(time.time()),
        "status": "completed",
        "model": model,
        "output": [message],
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
        "usage": usage,
    }
    if not body.get("stream"):
        return Answer(whole=_json(200, response), tokens=(prompt, completion))
    events = [_sse({"type": "response.created", "response": {**response, "status": "in_progress", "output": []}})]
    for index in range(completion):
        delta = {"type": "response.output_text.delta", "item_id": "msg_mock", "output_index": 0}
        events.append(_sse({**delta, "content_index": 0, "delta": "mock ", "sequence_number": index + 1}))
    events.append(_sse({"type": "response.completed", "response": response}))
    return Answer(events=events, tokens=(prompt, completion))


# --- Anthropic --------------------------------------------------------------------------------------


def _anthropic_usage(prompt: int, output: int, cached: bool) -> dict[str, int]:
    read = prompt // 2 if cached else 0
    creation = min(3, prompt - read) if cached else 0
    return {
        "input_tokens": prompt - read - creation,
        "output_tokens": output,
        "cache_read_input_tokens": read,
        "cache_creation_input_tokens": creation,
    }


def answer_messages(body: dict[str, Any], model: str, req: Request | None = None) -> Answer:
    prompt, completion = prompt_tokens_of(body), completion_tokens_of(body)
    thinking = "thinking" in model
    output = completion + (REASONING_TOKENS if thinking else 0)
    usage = _anthropic_usage(prompt, output, "cached" in model)
    kind, value = _plan(model, _anthropic_tools(body), _anthropic_results(body))
    content: list[dict[str, Any]] = []
    if thinking:
        content.append({"type": "thinking", "thinking": THOUGHT, "signature": ANTHROPIC_SIGNATURE})
    if kind == "text":
        content.append({"type": "text", "text": " ".join(["mock"] * completion)})
        stop_reason = "max_tokens"
    elif kind == "tools":
        for index, (name, args) in enumerate(value):
            content.append({"type": "tool_use", "id": f"toolu_mock{index}", "name": name, "input": args})
        stop_reason = "tool_use"
    else:
        content.append({"type": "text", "text": value})
        stop_reason = "end_turn" if kind == "results" else "refusal"
    message: dict[str, Any] = {
        "id": f"msg_mock{STATS.requests}",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": usage,
    }
    if not body.get("stream"):
        if "echo" in model:
            message["echo"] = _echo(req, body)
        return Answer(whole=_json_utf8(200, message), tokens=(prompt, output))
    start = {**message, "content": [], "stop_reason": None, "usage": {**usage, "output_tokens": 1}}
    events = [_sse_utf8({"type": "message_start", "message": start}, "message_start")]
    for index, block in enumerate(content):
        kind_ = block["type"]
        if kind_ == "thinking":
            opened: dict[str, Any] = {"type": "thinking", "thinking": "", "signature": ""}
            deltas = [{"type": "thinking_delta", "thinking": THOUGHT}]
            deltas.append({"type": "signature_delta", "signature": ANTHROPIC_SIGNATURE})
        elif kind_ == "tool_use":
            opened = {**block, "input": {}}
            deltas = [{"type": "input_json_delta", "partial_json": p} for p in _pieces(_arguments(block["input"]))]
        else:
            opened = {"type": "text", "text": ""}
            words = ["mock "] * completion if kind == "text" else [block["text"]]
            deltas = [{"type": "text_delta", "text": word} for word in words]
        events.append(
            _sse_utf8({"type": "content_block_start", "index": index, "content_block": opened}, "content_block_start")
        )
        chunks = [
            _sse_utf8({"type": "content_block_delta", "index": index, "delta": d}, "content_block_delta")
            for d in deltas
        ]
        events += _split_first_non_ascii(chunks) if kind_ == "tool_use" else chunks
        events.append(_sse_utf8({"type": "content_block_stop", "index": index}, "content_block_stop"))
    delta = {"type": "message_delta", "delta": {"stop_reason": stop_reason, "stop_sequence": None}}
    events.append(_sse_utf8({**delta, "usage": usage}, "message_delta"))
    events.append(_sse_utf8({"type": "message_stop"}, "message_stop"))
    if kind == "text" and not thinking:
        return Answer(events=events, tokens=(prompt, output))
    return _special_stream(events, prompt, output)


def answer_count_tokens(body: dict[str, Any]) -> Answer:
    return Answer(whole=_json(200, {"input_tokens": prompt_tokens_of(body)}))


# --- Gemini -----------------------------------------------------------------------------------------


def _gemini_usage(prompt: int, candidates: int, thoughts: int, cached: int) -> dict[str, Any]:
    usage: dict[str, Any] = {
        "promptTokenCount": prompt,
        "candidatesTokenCount": candidates,
        "totalTokenCount": prompt + candidates + thoughts,
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": prompt}],
    }
    if cached:
        usage["cachedContentTokenCount"] = cached
    if thoughts:
        usage["thoughtsTokenCount"] = thoughts
    return usage


SAFETY_RATINGS = [{"category": "HARM_CATEGORY_DANGEROUS_CONTENT", "probability": "HIGH", "blocked": True}]


def answer_gemini(req: Request | None, body: dict[str, Any], model: str, stream: bool) -> Answer:
    """``generateContent`` (``stream`` False) or ``streamGenerateContent`` (SSE with ``alt=sse``,
    else one JSON array of the chunks)."""
    prompt, completion = gemini_prompt_tokens_of(body), gemini_completion_tokens_of(body)
    thinking = "thinking" in model
    thoughts = REASONING_TOKENS if thinking else 0
    cached = prompt // 2 if "cached" in model else 0
    kind, value = _plan(model, _gemini_tools(body), _gemini_results(body))
    rid = f"mock-{STATS.requests}"
    parts: list[dict[str, Any]] = [{"text": THOUGHT, "thought": True}] if thinking else []
    finish = "STOP"
    if kind == "text":
        parts.append({"text": " ".join(["mock"] * completion)})
        finish = "MAX_TOKENS"
    elif kind == "results":
        parts.append({"text": value})
    elif kind == "tools":
        for index, (name, args) in enumerate(value):
            part: dict[str, Any] = {"functionCall": {"name": name, "args": args}}
            if thinking and index == 0:
                part["thoughtSignature"] = GEMINI_SIGNATURE
            parts.append(part)
    else:
        finish = "SAFETY"

    def frame(frame_parts: list[dict[str, Any]] | None, candidates: int, finish_reason: str | None) -> dict[str, Any]:
        candidate: dict[str, Any] = {"index": 0}
        if frame_parts is not None:
            candidate["content"] = {"parts": frame_parts, "role": "model"}
        if finish_reason:
            candidate["finishReason"] = finish_reason
        if finish_reason == "SAFETY":
            candidate["safetyRatings"] = SAFETY_RATINGS
        return {
            "candidates": [candidate],
            "usageMetadata": _gemini_usage(prompt, candidates, thoughts, cached),
            "modelVersion": model,
            "responseId": rid,
        }

    tokens = (prompt, completion + thoughts)
    if not stream:
        payload = frame(parts if kind != "refusal" else None, completion, finish)
        if "echo" in model:
            payload["echo"] = _echo(req, body)
        return Answer(whole=_json_utf8(200, payload), tokens=tokens)
    frames: list[dict[str, Any]] = []
    if thinking:
        frames.append(frame([parts[0]], 0 if kind == "text" else completion, None))
    if kind == "text":
        frames += [
            frame([{"text": "mock "}], i + 1, "MAX_TOKENS" if i == completion - 1 else None) for i in range(completion)
        ]
    elif kind == "results":
        frames.append(frame([parts[-1]], completion, "STOP"))
    elif kind == "tools":
        frames += [frame([p], completion, None) for p in parts[1 if thinking else 0 :]]
        frames.append(frame(None, completion, "STOP"))
        frames[-1]["candidates"][0]["content"] = {"role": "model"}  # the final frame: no parts
    else:
        frames.append(frame(None, completion, "SAFETY"))
    if req is not None and req.param("alt") != "sse":
        return Answer(whole=_json_utf8(200, frames), tokens=tokens)
    events: list[bytes] = []
    for item in frames:
        event = b"data: " + _dumps_utf8(item).encode() + b"\r\n\r\n"
        events += _split_mid_char(event) if b'"functionCall"' in event else [event]
    return _special_stream(events, *tokens)


def answer_gemini_count(body: dict[str, Any]) -> Answer:
    request = body.get("generateContentRequest")
    total = gemini_prompt_tokens_of(request if isinstance(request, dict) else body)
    details = [{"modality": "TEXT", "tokenCount": total}]
    return Answer(whole=_json(200, {"totalTokens": total, "promptTokensDetails": details}))


def _gemini_model(name: str) -> dict[str, Any]:
    return {
        "name": f"models/{name}",
        "version": "001",
        "displayName": name,
        "description": "A mock Gemini model.",
        "inputTokenLimit": 1048576,
        "outputTokenLimit": 65536,
        "supportedGenerationMethods": ["generateContent", "countTokens", "streamGenerateContent"],
        "temperature": 1.0,
        "topP": 0.95,
        "topK": 64,
        "maxTemperature": 2.0,
        "thinking": True,
    }


# --- model lists and routing ------------------------------------------------------------------------


def _is_gemini(req: Request) -> bool:
    return "x-goog-api-key" in req.headers or bool(req.param("key"))


def _is_anthropic_models(req: Request) -> bool:
    """A model list or model in Anthropic's shape: ``anthropic-version`` (the ``anthropic`` SDK 2.x
    sends its key as ``Authorization: Bearer``), or ``x-api-key`` without ``authorization``."""
    headers = req.headers
    return "anthropic-version" in headers or ("x-api-key" in headers and "authorization" not in headers)


def _anthropic_model(name: str) -> dict[str, Any]:
    return {"type": "model", "id": name, "display_name": name, "created_at": "2025-01-01T00:00:00Z"}


def _models_list(req: Request) -> bytes:
    if _is_gemini(req):
        return _json(200, {"models": [_gemini_model(m) for m in GEMINI_MODELS]})
    if _is_anthropic_models(req):
        data = [_anthropic_model(m) for m in BASE_MODELS]
        return _json(200, {"data": data, "has_more": False, "first_id": BASE_MODELS[0], "last_id": BASE_MODELS[-1]})
    return _json(
        200,
        {"object": "list", "data": [{"id": m, "object": "model", "created": 0, "owned_by": "mock"} for m in MODELS]},
    )


ROUTES = {
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/embeddings",
    "/v1/responses",
    "/v1/messages",
    "/v1/messages/count_tokens",
}
GEMINI_METHODS = ("generateContent", "streamGenerateContent", "countTokens")
AZURE_OPERATIONS = ("chat/completions", "completions", "embeddings")


def _route(req: Request, error: Any) -> bytes | tuple[str, str, Any]:
    """A request outside ``ROUTES``: the whole answer (lists, auth and routing errors), or
    ``(route, model, error)`` for a model call."""
    path = req.path
    if path.startswith("/openai/"):
        return _route_azure(req)
    if path.startswith("/v1beta/") or (path.startswith("/v1/models/") and (":" in path or _is_gemini(req))):
        return _route_gemini(req)
    if req.method == "GET" and path.startswith("/v1/models/"):
        name = unquote(path[len("/v1/models/") :])
        if _is_anthropic_models(req):
            return _json(200, _anthropic_model(name))
        return _json(200, {"id": name, "object": "model", "created": 0, "owned_by": "mock"})
    return error(404, f"unknown route {req.method} {req.path}", "not_found_error")


def _route_gemini(req: Request) -> bytes | tuple[str, str, Any]:
    if not (req.headers.get("x-goog-api-key") or req.param("key")):
        return _gemini_error(401, "Method doesn't allow unregistered callers. Please use an API key.")
    prefix = "/v1beta/models" if req.path.startswith("/v1beta/") else "/v1/models"
    rest = req.path[len(prefix) :] if req.path.startswith(prefix) else None
    if rest == "" and req.method == "GET":
        return _json(200, {"models": [_gemini_model(m) for m in GEMINI_MODELS]})
    if rest and rest.startswith("/"):
        model, _, method = unquote(rest[1:]).partition(":")
        if not method and req.method == "GET":
            return _json(200, _gemini_model(model))
        if method in GEMINI_METHODS and req.method == "POST":
            return "gemini:" + method, model, _gemini_error
    return _gemini_error(404, f"unknown route {req.method} {req.path}")


def _route_azure(req: Request) -> bytes | tuple[str, str, Any]:
    if not req.param("api-version"):
        return _azure_error(404, "Resource not found")
    if not req.headers.get("api-key"):
        return _azure_error(401, AZURE_401)
    path = req.path
    if req.method == "GET" and path == "/openai/models":
        data = [
            {"id": m, "object": "model", "created_at": 0, "status": "succeeded"}
            | {"lifecycle_status": "generally-available"}
            for m in BASE_MODELS
        ]
        return _json(200, {"object": "list", "data": data})
    if req.method == "GET" and path == "/openai/deployments":
        data = [
            {"id": d, "model": d, "object": "deployment", "owner": "organization-owner", "status": "succeeded"}
            | {"created_at": 0, "updated_at": 0, "scale_settings": {"scale_type": "standard"}}
            for d in AZURE_DEPLOYMENTS
        ]
        return _json(200, {"object": "list", "data": data})
    if req.method == "POST" and path.startswith("/openai/deployments/"):
        deployment, _, operation = path[len("/openai/deployments/") :].partition("/")
        if deployment and operation in AZURE_OPERATIONS:
            return "azure:" + operation, unquote(deployment), _azure_error
    return _azure_error(404, "Resource not found")


async def _serve(req: Request, writer: asyncio.StreamWriter) -> bool:
    """Answer one request; False when the connection must be dropped."""
    STATS.requests += 1
    STATS.by_path[req.path] += 1
    if req.path == "/_mock/stats":
        writer.write(_json(200, STATS.as_dict()))
        return True
    if req.path == "/_mock/reset":
        STATS.reset()
        writer.write(_json(200, {"reset": True}))
        return True
    STATS.last_headers = req.headers
    STATS.last_request = req
    anthropic = req.path.startswith("/v1/messages") or "anthropic-version" in req.headers
    error = _anthropic_error if anthropic else _openai_error
    if req.method == "GET" and req.path in ("/v1/models", "/models"):
        writer.write(_models_list(req))
        return True
    path = req.path if req.path.startswith("/v1/") else "/v1" + req.path
    routed_model = None
    if req.method != "POST" or path not in ROUTES:
        routed = _route(req, error)
        if routed.__class__ is bytes:
            STATS.by_status[int(routed[9:12])] += 1
            writer.write(routed)
            return True
        path, routed_model, error = routed
    try:
        body = json.loads(req.body or b"{}")
        model = str(body.get("model", ""))
    except (ValueError, AttributeError):
        STATS.by_status[400] += 1
        writer.write(error(400, "invalid JSON body", "invalid_request_error"))
        return True
    if routed_model is not None:
        model = routed_model
    STATS.by_model[model] += 1
    if "reset" in model and "reset-mid-stream" not in model:
        return False
    if "hang" in model:
        await asyncio.sleep(3600)
        return False
    delay = _delay_ms(model, "slow", 0)
    if delay:
        await asyncio.sleep(delay / 1000)
    if "garbage-stream" in model:
        return await _replay(body, writer)
    for status in (500, 429, 400):
        if f"fail-{status}" in model:
            STATS.by_status[status] += 1
            writer.write(error(status, f"mock upstream failure {status}", "api_error"))
            return True
    if path == "/v1/chat/completions":
        answer = answer_chat(req, body, model, legacy=False)
    elif path == "/v1/messages":
        answer = answer_messages(body, model, req)
    elif path == "/v1/embeddings" or path == "azure:embeddings":
        answer = answer_embeddings(body, model)
    elif path == "/v1/responses":
        answer = answer_responses(body, model)
    elif path == "/v1/completions":
        answer = answer_chat(req, body, model, legacy=True)
    elif path == "/v1/messages/count_tokens":
        answer = answer_count_tokens(body)
    elif path == "gemini:countTokens":
        answer = answer_gemini_count(body)
    elif path.startswith("gemini:"):
        answer = answer_gemini(req, body, model, stream=path == "gemini:streamGenerateContent")
    else:  # azure:chat/completions, azure:completions
        answer = answer_chat(req, body, model, legacy=path == "azure:completions", azure=True)
    STATS.by_status[200] += 1
    STATS.prompt_tokens += answer.tokens[0]
    if answer.whole is not None:
        STATS.completion_tokens += answer.tokens[1]
        writer.write(answer.whole)
        return True
    return await _stream(answer, model, writer)


async def _stream(answer: Answer, model: str, writer: asyncio.StreamWriter) -> bool:
    STATS.streams_started += 1
    pause = _delay_ms(model, "slow-stream", 300)
    writer.write(_head(200, "text/event-stream", None, {"Cache-Control": "no-cache"}))
    events = answer.events or []
    if answer.split:
        return await _stream_split(events, model, pause, writer, answer.extra)
    for index, event in enumerate(events):
        if "reset-mid-stream" in model and index == 2:
            await writer.drain()
            return False
        if pause and index:
            await writer.drain()
            await asyncio.sleep(pause / 1000)
        writer.write(_chunk(event))
        # One token per content chunk; framing events (start/stop/usage/[DONE]) carry none.
        if b"mock " in event:
            STATS.completion_tokens += 1
        if pause:
            try:
                await writer.drain()
            except ConnectionError:
                return False
    writer.write(b"0\r\n\r\n")
    await writer.drain()
    STATS.completion_tokens += answer.extra
    STATS.streams_finished += 1
    return True


async def _stream_split(
    events: list[bytes], model: str, pause: int | None, writer: asyncio.StreamWriter, extra: int
) -> bool:
    """:func:`_stream` for an answer with :class:`Flush` chunks: each is sent on its own (flushed,
    then a pause) so that the reader gets the rest of its character in a later read."""
    for index, event in enumerate(events):
        if "reset-mid-stream" in model and index == 2:
            await writer.drain()
            return False
        if pause and index:
            await writer.drain()
            await asyncio.sleep(pause / 1000)
        writer.write(_chunk(event))
        if b"mock " in event:
            STATS.completion_tokens += 1
        flush = event.__class__ is Flush
        if pause or flush:
            try:
                await writer.drain()
            except ConnectionError:
                return False
            if flush:
                await asyncio.sleep(FLUSH_PAUSE)
    writer.write(b"0\r\n\r\n")
    await writer.drain()
    STATS.completion_tokens += extra
    STATS.streams_finished += 1
    return True


async def _replay(body: dict[str, Any], writer: asyncio.StreamWriter) -> bool:
    """``garbage-stream``: the stream the test scripted, verbatim (no tokens are counted)."""
    chunks = body.get("mock_chunks")
    chunks = [base64.b64decode(c) for c in chunks] if isinstance(chunks, list) else []
    STATS.by_status[200] += 1
    STATS.streams_started += 1
    writer.write(_head(200, "text/event-stream", None, {"Cache-Control": "no-cache"}))
    for data in chunks:
        if data:  # an empty chunk would end the chunked body early
            writer.write(_chunk(data))
    await writer.drain()
    if body.get("mock_abort") is True:
        return False
    writer.write(b"0\r\n\r\n")
    STATS.streams_finished += 1
    return True


async def _connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            req = await _read_request(reader)
            if req is None:
                break
            keep = await _serve(req, writer)
            if not keep:
                writer.transport.abort()
                return
            if writer.transport.get_write_buffer_size() > 65536:
                await writer.drain()
            if req.headers.get("connection", "").lower() == "close":
                break
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        if not writer.transport.is_closing():
            writer.transport.close()


async def _main(
    host: str, port: int, ready: threading.Event | None = None, box: list | None = None, announce: bool = False
) -> None:
    server = await asyncio.start_server(_connection, host, port, backlog=1024)
    if announce:
        where = f"http://{host}:{server.sockets[0].getsockname()[1]}"
        print(
            f"Mock upstream listening on {where}: give a provider base_url {where} (any type: the OpenAI,"
            " Anthropic and Gemini formats are all answered). Ctrl-C stops it.",
            flush=True,
        )
    if box is not None:
        box.append(server.sockets[0].getsockname()[1])
    if ready is not None:
        ready.set()
    async with server:
        await server.serve_forever()


def serve_in_thread(host: str = "127.0.0.1", port: int = 0) -> int:
    """Start the mock in a daemon thread of this process; returns the port it listens on."""
    ready, box = threading.Event(), []
    thread = threading.Thread(target=lambda: asyncio.run(_main(host, port, ready, box)), daemon=True)
    thread.start()
    if not ready.wait(10):
        raise RuntimeError("mock upstream did not start")
    return box[0]


def main() -> None:
    parser = argparse.ArgumentParser(description="Fake OpenAI/Azure/Anthropic/Gemini upstream for tests, benchmarks.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000)
    args = parser.parse_args()
    try:
        asyncio.run(_main(args.host, args.port, announce=True))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
