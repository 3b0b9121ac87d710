"""Token usage read from upstream answers: whole JSON bodies and server-sent event streams.

Counts are normalised to OpenAI's convention: ``prompt_tokens`` includes cached input tokens
(Anthropic reports them apart, so they are added back), ``cached_tokens`` is the cached part.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any


@dataclass(slots=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    cached_tokens: int = 0
    upstream_cost: Decimal | None = None
    estimated: bool = False


# What the ledger's token columns hold on every supported database (a 32-bit signed integer),
# and the most a cost column holds (24 digits, 10 of them decimals). An upstream reporting more
# is wrong, and storing its figure would make the ledger insert fail for good.
MAX_TOKENS = 2**31 - 1
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
    elif "input_tokens" in raw or "output_tokens" in raw:
        details = raw.get("input_tokens_details")
        if isinstance(details, dict):  # OpenAI responses: input_tokens includes cached ones
            usage.prompt_tokens = _int(raw.get("input_tokens"))
            usage.cached_tokens = _int(details.get("cached_tokens"))
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


def usage_from_body(body: Any) -> Usage:
    if not isinstance(body, dict):
        return Usage()
    return read_usage(body.get("usage"))


_USAGE_OBJECT = re.compile(rb'"usage"\s*:\s*\{')


class SseScanner:
    """Passes an event stream through while reading its usage.

    ``feed`` returns the bytes to send on now: complete events only, so a usage chunk can be
    removed whole. When ``strip_usage_chunk`` is set (the proxy asked an OpenAI-format upstream
    for ``include_usage`` on the client's behalf) the extra usage-only chunk is dropped. Only
    events that contain a usage object are parsed, keeping the per-chunk cost low.
    """

    def __init__(self, *, strip_usage_chunk: bool, delta_marker: bytes = b'"delta"') -> None:
        self.strip_usage_chunk = strip_usage_chunk
        self.delta_marker = delta_marker
        self.usage = Usage()
        self.seen_usage = False
        self.content_events = 0
        self._buffer = b""

    def feed(self, data: bytes) -> bytes:
        if b"\r" in data:
            data = data.replace(b"\r\n", b"\n")
        buffer = self._buffer + data if self._buffer else data
        cut = buffer.rfind(b"\n\n")
        if cut < 0:
            self._buffer = buffer
            return b""
        ready, self._buffer = buffer[: cut + 2], buffer[cut + 2 :]
        self.content_events += ready.count(self.delta_marker)
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
        elif isinstance(payload.get("usage"), dict):  # OpenAI chat / completions
            read_usage(payload["usage"], self.usage)
            self.seen_usage = True
            return self.strip_usage_chunk and payload.get("choices") == []
        else:
            return False
        self.seen_usage = True
        return False


def _event_json(event: bytes) -> dict[str, Any] | None:
    lines = [line[5:].lstrip() for line in event.split(b"\n") if line.startswith(b"data:")]
    if not lines:
        return None
    try:
        payload = json.loads(b"\n".join(lines))
    except ValueError:
        return None
    return payload if isinstance(payload, dict) else None


def estimate_prompt_tokens(body: dict[str, Any]) -> int:
    """About four characters per token, for answers cut off before the upstream reported usage."""
    text = json.dumps([body.get(k) for k in ("messages", "system", "input", "prompt") if k in body])
    return max(1, len(text) // 4)
