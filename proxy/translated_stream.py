"""A streamed answer relayed across formats: upstream events → OpenAI chunks → the client's events.

Each network read is cut into whole SSE events (``proxy.sse``: a character or JSON document split
across reads is never decoded in pieces), each event is turned into OpenAI chunks by the upstream
format's ``StreamToOpenAI``, the usage is read from those chunks, and the client format's
``StreamFromOpenAI`` writes them out, so a chunk reaches the client as soon as its event arrived.
A stream that breaks off, or that the upstream ends early or with an in-band error, ends with an
error event in the client's format; it is never silently truncated.
"""

from __future__ import annotations

import logging
from collections.abc import Generator
from typing import Any

from proxy import accounting, http1, sse
from proxy.bodies import StreamBody
from proxy.translate import hub
from proxy.translation import FORMATS
from proxy.usage import Usage, read_usage

logger = logging.getLogger("bifrost.proxy")


class HubUsage:
    """What the accounting reads from a stream (``StreamBody._account``), gathered from OpenAI chunks."""

    __slots__ = ("usage", "seen_usage", "content_events")

    def __init__(self) -> None:
        self.usage = Usage()
        self.seen_usage = False
        self.content_events = 0

    def take(self, chunk: dict[str, Any]) -> None:
        usage = chunk.get("usage")
        if isinstance(usage, dict):
            read_usage(usage, self.usage)  # each report replaces the last: never added twice
            self.seen_usage = True
        if chunk.get("choices"):
            self.content_events += 1


class TranslatedStreamBody(StreamBody):
    def __init__(self, answer: http1.Response, ticket: accounting.Ticket, *, include_usage: bool) -> None:
        super().__init__(answer, ticket, strip_usage=False)
        resolved = ticket.resolved
        self.source = FORMATS[resolved.provider.api_format].StreamToOpenAI(resolved.model)
        client = FORMATS[resolved.route.api_format]
        if resolved.route.api_format == "openai":
            self.sink = client.StreamFromOpenAI(resolved.request.model, include_usage=include_usage)
        else:
            self.sink = client.StreamFromOpenAI(resolved.request.model)
        self.hub_counts = HubUsage()
        self.counts = self.hub_counts  # what StreamBody._account reads, instead of the scanner's

    def _relay(self) -> Generator[bytes, None, None]:
        reader = sse.EventReader()
        name = self.ticket.resolved.provider.name
        try:
            for data in self.answer.stream():
                out = self._translate(reader.feed(data))
                if out:
                    self._relayed_chunk(out)
                    yield out
            out = self._translate(reader.flush())
            out += b"".join(self._write(chunk) for chunk in self.source.finish())
            yield self._captured(out + self.sink.finish())
            self.done = True
        except hub.StreamError as exc:
            self.failed_status = 502
            logger.warning("upstream stream ended with an error", extra={"provider": name, "status": exc.status})
            yield self.sink.error(exc.status, f"upstream provider '{name}': {exc.message}")
        except Exception as exc:  # the upstream broke off mid-stream (or its events made no sense)
            self.failed_status = 504 if "Timeout" in type(exc).__name__ else 502
            logger.warning("upstream stream failed", extra={"provider": name, "error": type(exc).__name__})
            message = f"upstream provider '{name}' broke off the stream ({type(exc).__name__})"
            yield self.sink.error(self.failed_status, message)

    def _translate(self, events: list[tuple[str | None, bytes]]) -> bytes:
        out = b""
        for event, data in events:
            payload = sse.decode(data)
            if payload is None:  # [DONE], keep-alives
                continue
            for chunk in self.source.feed(event, payload):
                out += self._write(chunk)
        return out

    def _write(self, chunk: dict[str, Any]) -> bytes:
        self.hub_counts.take(chunk)
        return self.sink.feed(chunk)
