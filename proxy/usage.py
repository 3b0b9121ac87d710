"""Token usage read from upstream answers (whole JSON bodies and server-sent event streams), and the
prompt estimate that admission reserves (``estimate_prompt_tokens``).

Counts are normalised to OpenAI's convention: ``prompt_tokens`` includes cached input tokens
(Anthropic reports them apart, so they are added back), ``cached_tokens`` is the cached part.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from governance.models.usage import INT_COLUMN_MAX
from proxy.sse import LineEnds


@dataclass(slots=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    cached_tokens: int = 0
    reasoning_tokens: int = 0  # the part of completion_tokens spent thinking, when reported
    upstream_cost: Decimal | None = None
    estimated: bool = False


# What the ledger's token columns hold on every supported database (a 32-bit signed integer),
# and the most a cost column holds (24 digits, 10 of them decimals). An upstream reporting more
# is wrong, and storing its figure would make the ledger insert fail for good.
MAX_TOKENS = INT_COLUMN_MAX
MAX_COST = Decimal(10) ** 14


def _int(value: Any) -> int:
    """A token count as reported, capped at what the ledger stores; anything not a positive int is 0."""
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return min(value, MAX_TOKENS)
    return 0


def _cost(value: Any) -> Decimal | None:
    """An upstream-reported cost, or None (the price table decides) when it is not a finite amount
    the ledger can hold: a negative, NaN or infinite figure must never credit or poison a budget."""
    if not isinstance(value, int | float | str) or isinstance(value, bool):
        return None
    try:
        cost = Decimal(str(value))
    except InvalidOperation:
        return None
    return cost if cost.is_finite() and 0 <= cost < MAX_COST else None


def read_usage(raw: Any, usage: Usage | None = None) -> Usage:
    """Fold one ``usage`` object (OpenAI chat/embeddings, OpenAI responses or Anthropic) into ``usage``."""
    usage = usage or Usage()
    if not isinstance(raw, dict):
        return usage
    if "prompt_tokens" in raw or "completion_tokens" in raw:  # OpenAI chat, completions, embeddings
        usage.prompt_tokens = _int(raw.get("prompt_tokens"))
        usage.completion_tokens = _int(raw.get("completion_tokens"))
        details = raw.get("prompt_tokens_details") or {}
        usage.cached_tokens = _int(details.get("cached_tokens")) if isinstance(details, dict) else 0
        details = raw.get("completion_tokens_details") or {}
        usage.reasoning_tokens = _int(details.get("reasoning_tokens")) if isinstance(details, dict) else 0
    elif "input_tokens" in raw or "output_tokens" in raw:
        details = raw.get("input_tokens_details")
        if isinstance(details, dict):  # OpenAI responses: input_tokens includes cached ones
            usage.prompt_tokens = _int(raw.get("input_tokens"))
            usage.cached_tokens = _int(details.get("cached_tokens"))
            output_details = raw.get("output_tokens_details")
            if isinstance(output_details, dict):
                usage.reasoning_tokens = _int(output_details.get("reasoning_tokens"))
        elif "input_tokens" in raw:  # Anthropic: cache reads and writes are reported apart
            cache_read = _int(raw.get("cache_read_input_tokens"))
            usage.prompt_tokens = (
                _int(raw.get("input_tokens")) + cache_read + _int(raw.get("cache_creation_input_tokens"))
            )
            usage.cached_tokens = cache_read
        if "output_tokens" in raw:  # Anthropic's message_delta carries only the cumulative output count
            usage.completion_tokens = _int(raw.get("output_tokens"))
    total = raw.get("total_tokens")
    usage.total_tokens = _int(total) or min(usage.prompt_tokens + usage.completion_tokens, MAX_TOKENS)
    cost = _cost(raw.get("cost"))
    if cost is not None:
        usage.upstream_cost = cost
    return usage


def read_gemini_usage(raw: Any, usage: Usage | None = None) -> Usage:
    """Fold Gemini's ``usageMetadata`` (cumulative in a stream: the last one wins) into ``usage``.

    ``promptTokenCount`` already includes the cached part; tool-use prompt tokens and thinking
    tokens are billed as input and output respectively, so they are added in.
    """
    usage = usage or Usage()
    if not isinstance(raw, dict):
        return usage
    usage.prompt_tokens = min(_int(raw.get("promptTokenCount")) + _int(raw.get("toolUsePromptTokenCount")), MAX_TOKENS)
    usage.completion_tokens = min(
        _int(raw.get("candidatesTokenCount")) + _int(raw.get("thoughtsTokenCount")), MAX_TOKENS
    )
    usage.cached_tokens = _int(raw.get("cachedContentTokenCount"))
    usage.reasoning_tokens = _int(raw.get("thoughtsTokenCount"))
    usage.total_tokens = _int(raw.get("totalTokenCount")) or min(
        usage.prompt_tokens + usage.completion_tokens, MAX_TOKENS
    )
    return usage


def usage_from_body(body: Any) -> Usage:
    if not isinstance(body, dict):
        return Usage()
    if "usageMetadata" in body and "usage" not in body:
        return read_gemini_usage(body["usageMetadata"])
    return read_usage(body.get("usage"))


_DECODER = json.JSONDecoder()
_USAGE_OBJECT = re.compile(rb'"usage(?:Metadata)?"\s*:\s*\{')
# A member named usage or usageMetadata whose value is an object. Preceded by ``{`` or ``,``, so
# never inside a JSON string (a quote there is always escaped: ``\"``).
_USAGE_MEMBER = re.compile(rb'[{,]\s*"(usage|usageMetadata)"\s*:\s*(?=\{)')
TAIL_BYTES = 64 * 1024


def usage_from_tail(data: bytes) -> Usage | None:
    """The usage of a JSON answer read from its last ``TAIL_BYTES`` without parsing the whole: every
    format puts it after the content (OpenAI and Anthropic ``usage``, Gemini ``usageMetadata``),
    so a large answer is not decoded a second time. The last such member wins; None when there is
    none there (the caller estimates)."""
    tail = data[-TAIL_BYTES:]
    for match in reversed(list(_USAGE_MEMBER.finditer(tail))):
        try:
            value, _ = _DECODER.raw_decode(tail[match.end() :].decode("utf-8"))
        except ValueError:
            continue
        if isinstance(value, dict):
            return read_gemini_usage(value) if match.group(1) == b"usageMetadata" else read_usage(value)
    return None


class SseScanner:
    """Passes an event stream through while reading its usage.

    ``feed`` returns the bytes to send on now: complete events only, so a usage chunk can be
    removed whole. When ``strip_usage_chunk`` is set (the proxy asked an OpenAI-format upstream
    for ``include_usage`` on the client's behalf) the extra usage-only chunk is dropped. Only
    events that contain a usage object are parsed, keeping the per-chunk cost low.
    """

    def __init__(
        self, *, strip_usage_chunk: bool, delta_marker: bytes = b'"delta"', drop_filter_chunks: bool = False
    ) -> None:
        self.strip_usage_chunk = strip_usage_chunk
        # Azure OpenAI opens a stream with a chunk of prompt filter results and no choices, which
        # OpenAI never sends: OpenAI clients that read ``choices[0]`` of every chunk would break.
        self.drop_filter_chunks = drop_filter_chunks
        self.delta_marker = delta_marker
        self.usage = Usage()
        self.seen_usage = False
        self.content_events = 0
        self._buffer = b""
        self._ends = LineEnds()  # passed on as LF, whatever the upstream used (proxy.sse)

    def feed(self, data: bytes) -> bytes:
        data = self._ends.normalise(data)
        buffer = self._buffer + data if self._buffer else data
        cut = buffer.rfind(b"\n\n")
        if cut < 0:
            self._buffer = buffer
            return b""
        ready, self._buffer = buffer[: cut + 2], buffer[cut + 2 :]
        self.content_events += ready.count(self.delta_marker)
        if self.drop_filter_chunks and b'"prompt_filter_results"' in ready:
            ready = b"".join(event + b"\n\n" for event in ready.split(b"\n\n") if event and not _filter_only(event))
        if _USAGE_OBJECT.search(ready):
            ready = self._read_usage_events(ready)
        return ready

    def flush(self) -> bytes:
        rest, self._buffer = self._buffer, b""
        if rest and _USAGE_OBJECT.search(rest):
            rest = self._read_usage_events(rest)
        return rest

    def _read_usage_events(self, ready: bytes) -> bytes:
        kept = []
        for event in ready.split(b"\n\n"):
            if not event:
                continue
            drop = False
            if _USAGE_OBJECT.search(event):
                payload = _event_json(event)
                if payload is not None:
                    drop = self._take(payload)
            if not drop:
                kept.append(event)
        return b"".join(event + b"\n\n" for event in kept)

    def _take(self, payload: dict[str, Any]) -> bool:
        """Read usage from one event; True when the event must not reach the client."""
        kind = payload.get("type")
        if kind == "message_start":  # Anthropic
            read_usage((payload.get("message") or {}).get("usage"), self.usage)
        elif kind == "message_delta":
            read_usage(payload.get("usage"), self.usage)
        elif isinstance(kind, str) and kind.startswith("response."):  # OpenAI responses
            read_usage((payload.get("response") or {}).get("usage"), self.usage)
        elif isinstance(payload.get("usageMetadata"), dict):  # Gemini: cumulative, the last one counts
            read_gemini_usage(payload["usageMetadata"], self.usage)
            candidates = payload.get("candidates")
            if isinstance(candidates, list) and any(isinstance(c, dict) and c.get("finishReason") for c in candidates):
                self.seen_usage = True  # the figures are final with the finish reason
            return False
        elif isinstance(payload.get("usage"), dict):  # OpenAI chat / completions
            read_usage(payload["usage"], self.usage)
            self.seen_usage = True
            return self.strip_usage_chunk and payload.get("choices") == []
        else:
            return False
        self.seen_usage = True
        return False


def _filter_only(event: bytes) -> bool:
    """An Azure prompt-filter chunk: filter results, no choices, no usage."""
    if b'"prompt_filter_results"' not in event:
        return False
    payload = _event_json(event)
    return payload is not None and not payload.get("choices") and payload.get("usage") is None


def _event_json(event: bytes) -> dict[str, Any] | None:
    lines = [line[5:].lstrip() for line in event.split(b"\n") if line.startswith(b"data:")]
    if not lines:
        return None
    try:
        payload = json.loads(b"\n".join(lines))
    except ValueError:
        return None
    return payload if isinstance(payload, dict) else None


# Everything a provider counts as input, in the OpenAI, Anthropic, Responses and Gemini request shapes.
PROMPT_FIELDS = (
    "messages",
    "system",
    "contents",  # Gemini
    "systemInstruction",
    "toolConfig",
    "generationConfig",
    "input",
    "prompt",
    "instructions",
    "tools",
    "functions",
    "tool_choice",
    "function_call",
    "response_format",
    "text",
)
# An image costs its provider at most about this many input tokens (Anthropic: ~1,600 for the
# largest image it accepts unresized; OpenAI: 1,105 for a high-detail 2048x768 tile set).
IMAGE_TOKENS = 1600
_IMAGE_PARTS = (b'"type": "image_url"', b'"type": "input_image"', b'"type": "image"')
# Base64 image payloads are not text: each image is counted at IMAGE_TOKENS instead.
_IMAGE_DATA = re.compile(
    rb'data:image/[A-Za-z0-9.+-]+;base64,[A-Za-z0-9+/=]*|"media_type": "image/[^"]*", "data": "[A-Za-z0-9+/=]*"'
)


def estimate_prompt_tokens(body: dict[str, Any]) -> int:
    """A worst-case count of the request's input tokens, never below what the provider bills.

    Rule (written down for operators): one token per four characters of the JSON of every input
    field (:data:`PROMPT_FIELDS`: messages, system, tools and functions with their schemas,
    tool choice, instructions, response format schemas...), rounded up; each image part counts
    :data:`IMAGE_TOKENS` and its base64 data (a ``data:image/...`` URL, or Anthropic's
    ``media_type``/``data`` pair) is not counted as text; any other file (a PDF...) counts its
    base64 text at the same four characters per token, which is above what providers bill.
    Real tokenizers average more than four characters per token on English and code, so this
    errs towards reserving too much, and the settle gives the difference back.
    """
    parts = [body[name] for name in PROMPT_FIELDS if name in body]
    if not parts:
        return 1
    # ASCII escapes on purpose: a non-Latin character becomes six characters (1.5 tokens), about
    # what tokenizers spend on it.
    text = json.dumps(parts).encode()
    size = len(text)
    images = sum(text.count(marker) for marker in _IMAGE_PARTS)
    if images and (b"base64" in text or b'"data": "' in text):
        size -= sum(len(match) for match in _IMAGE_DATA.findall(text))
    return max(1, -(-size // 4) + images * IMAGE_TOKENS)
