"""Event streams: Anthropic events -> OpenAI chunks (``StreamToOpenAI``) and back (``StreamFromOpenAI``)."""

from __future__ import annotations

import json
from collections.abc import Callable

from proxy.translate import hub
from proxy.translate.anthropic.answers import (
    _error_payload,
    _finish_reason,
    _message_id,
    _stop_reason,
    _usage_from_openai,
    _usage_to_openai,
)
from proxy.translate.anthropic.tables import ERROR_STATUSES, JSON_TOOL, Body
from proxy.translate.hub import compact

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
            return  # see the package docstring: never reopen a closed block
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
