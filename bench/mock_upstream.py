"""A fast fake LLM provider for the tests and the benchmark (never a real provider).

Speaks enough of two APIs for the official SDKs:

- OpenAI: ``POST /v1/chat/completions``, ``/v1/completions``, ``/v1/embeddings``, ``/v1/responses``
  (JSON and SSE) and ``GET /v1/models``;
- Anthropic: ``POST /v1/messages`` (JSON and SSE with ``message_start`` ... ``message_stop``).

Usage is deterministic: prompt tokens = characters of the prompt text // 4 (at least 1),
completion tokens = ``max_tokens`` / ``max_completion_tokens`` / ``max_output_tokens`` (default
16); a streamed answer sends one token per chunk. A model whose name contains ``cached`` reports
half of its prompt tokens as cached.

Failure modes are chosen by words in the model name, so a test selects them per request:
``fail-500``, ``fail-429``, ``fail-400``, ``hang`` (never answers), ``slow-<ms>`` (waits before
the headers), ``slow-stream`` / ``slow-stream-<ms>`` (pauses between chunks, 300 ms by default),
``reset`` (drops the connection without an answer), ``reset-mid-stream`` (drops it after two
chunks), ``echo`` (the answer carries the request's path, headers and body under ``echo``) and
``no-usage`` (a JSON chat answer without its ``usage`` object).
``garbage-stream`` answers 200 ``text/event-stream`` whose body is exactly the chunks listed
(base64) in the request body's ``mock_chunks``, one HTTP chunk each, then ends the body, or
drops the connection when ``mock_abort`` is true: fuzz tests send truncated or garbage events
byte for byte.

``GET /_mock/stats`` reports what was served (requests by path and model, statuses, tokens,
streams started/finished); ``POST /_mock/reset`` zeroes it. Fault tests compare the gateway's
ledger with these counts.

It is an asyncio server with a tiny HTTP/1.1 parser (keep-alive, ``Content-Length`` bodies) so
that one core answers far more requests per second than the gateway forwards: the benchmark
must measure the gateway, not the mock. Run it with ``python -m bench.mock_upstream --port N``,
or in a background thread with :func:`serve_in_thread`.
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

MODELS = ("gpt-4o", "gpt-4o-mini", "text-embedding-3-small", "claude-3-5-sonnet-latest", "claude-3-5-haiku-latest")
REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 411: "Length Required", 429: "Too Many Requests"}
REASONS |= {500: "Internal Server Error"}


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
        }


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


def _delay_ms(model: str, word: str, default: int) -> int | None:
    match = re.search(rf"(?:^|[^a-z]){word}(?:-(\d+))?(?:$|[^a-z0-9-])", model)
    if not match:
        return None
    return int(match.group(1)) if match.group(1) else default


class Request:
    __slots__ = ("method", "path", "headers", "body")

    def __init__(self, method: str, path: str, headers: dict[str, str], body: bytes) -> None:
        self.method, self.path, self.headers, self.body = method, path, headers, body


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
    return Request(method, target.split("?", 1)[0], headers, body)


def _head(status: int, content_type: str, length: int | None, extra: dict[str, str] | None = None) -> bytes:
    lines = [f"HTTP/1.1 {status} {REASONS.get(status, 'Status')}", f"Content-Type: {content_type}"]
    lines.append(f"Content-Length: {length}" if length is not None else "Transfer-Encoding: chunked")
    for name, value in (extra or {}).items():
        lines.append(f"{name}: {value}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _json(status: int, payload: Any, extra: dict[str, str] | None = None) -> bytes:
    data = json.dumps(payload, separators=(",", ":")).encode()
    return _head(status, "application/json", len(data), extra) + data


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def _openai_error(status: int, message: str, type_: str) -> bytes:
    extra = {"Retry-After": "1"} if status == 429 else None
    return _json(status, {"error": {"message": message, "type": type_, "code": None, "param": None}}, extra)


def _anthropic_error(status: int, message: str, type_: str) -> bytes:
    return _json(status, {"type": "error", "error": {"type": type_, "message": message}})


class Answer:
    """What to send back: a whole JSON body, or SSE events with their per-chunk token counts."""

    def __init__(self, whole: bytes | None = None, events: list[bytes] | None = None, tokens: tuple[int, int] = (0, 0)):
        self.whole, self.events, self.tokens = whole, events, tokens


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


def answer_chat(req: Request, body: dict[str, Any], model: str, legacy: bool) -> Answer:
    prompt, completion = prompt_tokens_of(body), completion_tokens_of(body)
    cached = prompt // 2 if "cached" in model else 0
    rid, created = f"chatcmpl-mock{STATS.requests}", int(time.time())
    kind = "text_completion" if legacy else "chat.completion"
    if not body.get("stream"):
        text = " ".join(["mock"] * completion)
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
        if "echo" in model:
            payload["echo"] = {"path": req.path, "headers": req.headers, "body": body}
        if "no-usage" in model:  # an upstream that does not report usage
            del payload["usage"]
        return Answer(whole=_json(200, payload), tokens=(prompt, completion))
    kind = "text_completion" if legacy else "chat.completion.chunk"
    include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
    events = []
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


def answer_messages(body: dict[str, Any], model: str) -> Answer:
    prompt, completion = prompt_tokens_of(body), completion_tokens_of(body)
    cached = prompt // 2 if "cached" in model else 0
    usage = {"input_tokens": prompt, "output_tokens": completion, "cache_read_input_tokens": cached}
    message: dict[str, Any] = {
        "id": f"msg_mock{STATS.requests}",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [{"type": "text", "text": " ".join(["mock"] * completion)}],
        "stop_reason": "max_tokens",
        "stop_sequence": None,
        "usage": usage,
    }
    if not body.get("stream"):
        return Answer(whole=_json(200, message), tokens=(prompt, completion))
    start = {**message, "content": [], "stop_reason": None, "usage": {**usage, "output_tokens": 1}}
    events = [
        _sse({"type": "message_start", "message": start}, "message_start"),
        _sse(
            {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
            "content_block_start",
        ),
    ]
    for _ in range(completion):
        delta = {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "mock "}}
        events.append(_sse(delta, "content_block_delta"))
    events.append(_sse({"type": "content_block_stop", "index": 0}, "content_block_stop"))
    delta = {"type": "message_delta", "delta": {"stop_reason": "max_tokens", "stop_sequence": None}}
    events.append(_sse({**delta, "usage": {"output_tokens": completion}}, "message_delta"))
    events.append(_sse({"type": "message_stop"}, "message_stop"))
    return Answer(events=events, tokens=(prompt, completion))


def _models_list(anthropic: bool) -> bytes:
    if anthropic:
        data = [{"type": "model", "id": m, "display_name": m, "created_at": "2025-01-01T00:00:00Z"} for m in MODELS]
        return _json(200, {"data": data, "has_more": False, "first_id": MODELS[0], "last_id": MODELS[-1]})
    return _json(
        200,
        {"object": "list", "data": [{"id": m, "object": "model", "created": 0, "owned_by": "mock"} for m in MODELS]},
    )


ROUTES = {"/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/responses", "/v1/messages"}


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
    anthropic = req.path == "/v1/messages" or "anthropic-version" in req.headers
    error = _anthropic_error if anthropic else _openai_error
    if req.method == "GET" and req.path in ("/v1/models", "/models"):
        writer.write(_models_list(anthropic))
        return True
    path = req.path if req.path.startswith("/v1/") else "/v1" + req.path
    if req.method != "POST" or path not in ROUTES:
        STATS.by_status[404] += 1
        writer.write(error(404, f"unknown route {req.method} {req.path}", "not_found_error"))
        return True
    try:
        body = json.loads(req.body or b"{}")
        model = str(body.get("model", ""))
    except (ValueError, AttributeError):
        STATS.by_status[400] += 1
        writer.write(error(400, "invalid JSON body", "invalid_request_error"))
        return True
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
    if path == "/v1/messages":
        answer = answer_messages(body, model)
    elif path == "/v1/embeddings":
        answer = answer_embeddings(body, model)
    elif path == "/v1/responses":
        answer = answer_responses(body, model)
    else:
        answer = answer_chat(req, body, model, legacy=path == "/v1/completions")
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


async def _main(host: str, port: int, ready: threading.Event | None = None, box: list | None = None) -> None:
    server = await asyncio.start_server(_connection, host, port, backlog=1024)
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
    parser = argparse.ArgumentParser(description="Fake OpenAI/Anthropic upstream for tests and benchmarks.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000)
    args = parser.parse_args()
    asyncio.run(_main(args.host, args.port))


if __name__ == "__main__":
    main()
