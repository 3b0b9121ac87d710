"""The body iterables the proxy hands to the WSGI server: their ``close()`` (called by the server
after the last byte) runs the attempt's accounting, exactly once however the answer ended. A
finished answer of one piece is accounted as it is handed over instead (``Body.handed_over``)."""

from __future__ import annotations

import logging
import time
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from typing import Protocol

from django import db
from django.conf import settings

from bifrost_site import logging as site_logging
from proxy import accounting, http1
from proxy.translation import FORMATS
from proxy.usage import MAX_TOKENS, SseScanner, Usage, estimate_prompt_tokens
from telemetry import metrics

logger = logging.getLogger("bifrost.proxy")
SLICE_BYTES = 1024 * 1024  # a body larger than this is handed to the server in slices of this size


def request_done() -> None:
    """Django's end-of-request database cleanup, run when a body is closed: connections past
    ``CONN_MAX_AGE`` or left unusable by an error are closed, as after a view. Called directly
    rather than through ``request_finished``: the signal's dispatch and its other receivers (cache
    and URLconf resets, which the inference path never touches) cost about 25 µs a request.
    The request's id leaves this thread's log lines here."""
    db.close_old_connections()
    site_logging.request_id.set("")


@dataclass(slots=True)
class Reply:
    status: int
    headers: list[tuple[str, str]]
    body: Body | StreamBody  # an iterable of bytes with close()


class Body:
    """A finished body; ``close()`` (called by the WSGI server after sending it) runs the accounting."""

    def __init__(
        self,
        data: bytes,
        ticket: accounting.Ticket | None = None,
        usage: Usage | None = None,
        status: int = 200,
        latency_ms: int = 0,
        *,
        delivered: bool = False,
        send: int | None = None,
        tail: bytes = b"",
    ) -> None:
        self.data, self.ticket, self.usage, self.status, self.latency_ms = data, ticket, usage, status, latency_ms
        self.delivered = delivered  # an upstream answer the client did not get as such (see accounting.finish)
        # What is sent: the first ``send`` bytes of ``data`` (all by default), then ``tail``.
        self.send = len(data) if send is None else send
        self.tail = tail

    def _one_piece(self) -> bool:
        """Whether the answer goes out as ``data`` whole (else in slices, then ``tail``)."""
        return self.send == len(self.data) and self.send <= SLICE_BYTES and not self.tail

    def __iter__(self) -> Iterator[bytes]:
        data, send = self.data, self.send
        if self._one_piece():
            yield data
            return
        # A large answer goes out in slices: each is a copy, alive only while it is written.
        for start in range(0, send, SLICE_BYTES):
            yield data[start : min(start + SLICE_BYTES, send)]
        if self.tail:
            yield self.tail

    def __len__(self) -> int:
        return -(-self.send // SLICE_BYTES) + (1 if self.tail else 0) or 1

    def handed_over(self) -> list[bytes] | Body:
        """What the WSGI server is given: a body that goes out in one piece is accounted now and
        handed over as a one-item list, which granian writes in one call (``response_bytes``); an
        iterable costs it a hand-over between its threads for each item and one more for
        ``close()`` (about 8 % of a plain request's server CPU, measured side by side). Accounting
        before the bytes are written records the same: the upstream answered and was paid, whether
        or not the client stays to read it, and the attempt's latency was taken when it answered.
        A body sent in slices (over ``SLICE_BYTES``, or with a ``tail``) is handed over as is."""
        if not self._one_piece():
            return self
        try:
            self.close()
        except Exception:
            # As when ``close()`` failed after the last byte: the client still gets its answer.
            logger.exception("accounting failed after the upstream answered")
        return [self.data]

    def close(self) -> None:
        try:
            if self.ticket is not None:
                usage = self.usage or Usage()
                accounting.finish(
                    self.ticket, usage, self.status, self.latency_ms, streamed=False, delivered=self.delivered
                )
        finally:
            request_done()


class StreamCounts(Protocol):
    """What the accounting reads from a stream as it passes."""

    usage: Usage
    seen_usage: bool
    content_events: int


def _ms(since: float) -> int:
    return int((time.monotonic() - since) * 1000)


class StreamBody:
    """Relays an upstream event stream chunk by chunk; accounts once when it ends, however it ends."""

    def __init__(self, answer: http1.Response, ticket: accounting.Ticket, *, strip_usage: bool) -> None:
        self.answer = answer
        self.ticket = ticket
        self.route = ticket.resolved.route
        self.scanner = SseScanner(
            strip_usage_chunk=strip_usage,
            delta_marker=self.route.sse_marker,
            drop_filter_chunks=ticket.resolved.provider.provider_type == "azure",
        )
        self.counts: StreamCounts = self.scanner
        self.done = False
        self.relayed = False  # some of the answer reached the client
        # Chunks relayed, and when the first and the last were (the stream latency metrics).
        self.chunks, self.first_chunk, self.last_chunk = 0, 0.0, 0.0
        self.failed_status: int | None = None
        self._iterator: Generator[bytes, None, None] | None = None
        # Content logging: the relayed bytes, up to the cap (None: not logged).
        self.capture: bytearray | None = bytearray() if ticket.resolved.request.log_content else None
        self.capture_cap = settings.CONTENT_MAX_BYTES

    def __iter__(self) -> Iterator[bytes]:
        self._iterator = self._relay()
        return self._iterator

    def _relay(self) -> Generator[bytes, None, None]:
        try:
            for data in self.answer.stream():
                out = self.scanner.feed(data)
                if out:
                    self._relayed_chunk(out)
                    yield out
            rest = self.scanner.flush()
            if rest:
                yield self._captured(rest)
            self.done = True
        except Exception as exc:  # the upstream broke off mid-stream: tell the client in-band
            self.failed_status = 504 if "Timeout" in type(exc).__name__ else 502
            name = self.ticket.resolved.provider.name
            message = f"upstream provider '{name}' broke off the stream ({type(exc).__name__})"
            logger.warning("upstream stream failed", extra={"provider": name, "error": type(exc).__name__})
            yield self._error_event(message)

    def _captured(self, out: bytes) -> bytes:
        """``out``, kept (up to the cap) when this request's content is logged."""
        if self.capture is not None and len(self.capture) <= self.capture_cap:
            self.capture += out
        return out

    def _relayed_chunk(self, out: bytes) -> None:
        self._captured(out)
        now = time.monotonic()
        if not self.chunks:
            self.first_chunk = now
            self.relayed = True
        self.last_chunk = now
        self.chunks += 1

    def _error_event(self, message: str) -> bytes:
        status = self.failed_status or 502
        return (
            FORMATS[self.route.api_format].StreamFromOpenAI(self.ticket.resolved.request.model).error(status, message)
        )

    def close(self) -> None:
        try:
            if self._iterator is not None:
                self._iterator.close()
            if self.done:
                self.answer.release()
            else:  # unread bytes left: this connection cannot be reused
                self.answer.close()
        finally:
            try:
                self._account()
            finally:
                request_done()

    def _account(self) -> None:
        usage = self.counts.usage
        status = self.answer.status if self.done else (self.failed_status or accounting.CLIENT_CLOSED)
        if not self.done or not self.counts.seen_usage:
            # Cut off before the upstream reported its final usage, or ended without reporting
            # any (a truncated stream, an upstream ignoring include_usage): charge what was
            # produced, about one token per content chunk forwarded, rather than nothing.
            usage.completion_tokens = max(usage.completion_tokens, self.counts.content_events)
            if not usage.prompt_tokens:
                usage.prompt_tokens = estimate_prompt_tokens(self.ticket.resolved.body)
            usage.total_tokens = min(usage.prompt_tokens + usage.completion_tokens, MAX_TOKENS)
            usage.estimated = True
        # A stream the upstream broke off after content reached the client is charged what was
        # delivered (the record keeps the 502/504 and says the tokens are estimated).
        if self.chunks:  # time to the first chunk, and the mean gap between chunks: one observation each
            gap = (self.last_chunk - self.first_chunk) / (self.chunks - 1) if self.chunks > 1 else None
            metrics.stream(self.ticket.resolved, self.first_chunk - self.ticket.started, gap)
        if self.capture is not None:
            self.ticket.response_capture = bytes(self.capture)
        accounting.finish(self.ticket, usage, status, _ms(self.ticket.started), streamed=True, delivered=self.relayed)
