"""One inference request from start to answer: authenticate, plan, try candidates, relay.

HTTP-agnostic: it receives the WSGI environ and the raw body and returns a :class:`Reply`
(status, headers, body iterable); ``proxy.wsgi`` turns that into the WSGI call. The body
iterables call ``accounting.finish`` from ``close()``, after the server has sent the bytes.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from typing import Any

from django import db

from governance.metering import freshness, snapshot
from governance.metering.snapshot import ProviderSnapshot, VirtualKeySnapshot
from proxy import accounting, auth, errors, http1, routing, upstream
from proxy.errors import ProxyError
from proxy.routing import InferenceRequest, Resolved, Route
from proxy.usage import MAX_TOKENS, SseScanner, Usage, estimate_prompt_tokens, usage_from_body

logger = logging.getLogger("bifrost.proxy")

# One encoder for the hot path: ``json.dumps`` with ``separators`` builds a new one every call.
compact_json = json.JSONEncoder(separators=(",", ":")).encode
MAX_ERROR_BODY = 1024 * 1024  # an upstream error answer is read this far for its message
JSON_HEADERS = [("Content-Type", "application/json")]
SSE_HEADERS = [("Content-Type", "text/event-stream"), ("Cache-Control", "no-cache"), ("X-Accel-Buffering", "no")]


def request_done() -> None:
    """Django's end-of-request database cleanup, run when a body is closed: connections past
    ``CONN_MAX_AGE`` or left unusable by an error are closed, as after a view. Called directly
    rather than through ``request_finished``: the signal's dispatch and its other receivers (cache
    and URLconf resets, which the inference path never touches) cost about 25 µs a request."""
    db.close_old_connections()


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
    ) -> None:
        self.data, self.ticket, self.usage, self.status, self.latency_ms = data, ticket, usage, status, latency_ms

    def __iter__(self) -> Iterator[bytes]:
        yield self.data

    def __len__(self) -> int:
        return 1

    def close(self) -> None:
        try:
            if self.ticket is not None:
                accounting.finish(self.ticket, self.usage or Usage(), self.status, self.latency_ms, streamed=False)
        finally:
            request_done()


def error_reply(exc: ProxyError) -> Reply:
    headers = JSON_HEADERS + list(exc.headers.items())
    return Reply(exc.status, headers, Body(exc.body()))


def handle(route: Route, environ: dict[str, Any], raw: bytes) -> Reply:
    """Answer one request. A configuration change committed while it was being decided (seen
    before any upstream call: ``governance.metering.freshness``) starts it over on the new configuration."""
    started = time.monotonic()
    for _ in range(freshness.MAX_RESTARTS):
        try:
            return _handle(route, environ, raw, started)
        except freshness.StaleConfig:
            continue
    return error_reply(ProxyError(503, CONFIG_CHANGING, headers={"Retry-After": "1"}))


CONFIG_CHANGING = "The gateway's configuration kept changing while this request was decided; retry shortly"


def _handle(route: Route, environ: dict[str, Any], raw: bytes, started: float) -> Reply:
    freshness.begin_request()
    try:
        vk = auth.authenticate(environ)
        if route.request_type == "list_models":
            from proxy.models_list import list_models

            listing = list_models(route, vk)
            freshness.confirm()
            return Reply(200, JSON_HEADERS, Body(listing))
        request = _request(route, environ, raw, vk, started)
        providers = snapshot.providers()
        return _attempt(request, providers, routing.plan(request, providers))
    except ProxyError as exc:
        freshness.confirm()  # a refusal decided on old configuration is not given: start over
        return error_reply(exc)


def _request(
    route: Route, environ: dict[str, Any], raw: bytes, vk: VirtualKeySnapshot | None, started: float
) -> InferenceRequest:
    """The request's facts, read and checked once (400 for a body the gateway cannot act on)."""
    body = _parse_body(raw)
    model = body.get("model")
    if not isinstance(model, str) or not model.strip():
        raise errors.bad_request("model is required (a string such as 'openai/gpt-4o-mini')")
    check_fields(body)
    fallbacks = routing.parse_fallbacks(body.pop("fallbacks", None))
    return InferenceRequest(
        route=route,
        body=body,
        model=model,
        stream=body.get("stream") is True and route.streamable,
        fallbacks=fallbacks,
        vk=vk,
        client_headers=upstream.forwardable_headers(environ),
        started=started,
    )


def check_fields(body: dict[str, Any]) -> None:
    """The request fields the gateway itself reads, type-checked like the management API's JSON:
    a value of another type would change what is reserved, streamed or charged."""
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise errors.bad_request("stream must be true or false")
    for name in (*accounting.OUTPUT_CAPS, "n", "best_of"):
        value = body.get(name)
        if value is not None and not accounting.is_positive_int(value):
            raise errors.bad_request(f"{name} must be a positive integer")
    options = body.get("stream_options")
    if options is not None:
        if not isinstance(options, dict):
            raise errors.bad_request("stream_options must be an object")
        include = options.get("include_usage")
        if include is not None and not isinstance(include, bool):
            raise errors.bad_request("stream_options.include_usage must be true or false")


def _parse_body(raw: bytes) -> dict[str, Any]:
    try:
        body = json.loads(raw) if raw else None
    except (ValueError, UnicodeDecodeError):
        raise errors.bad_request("Invalid JSON") from None
    except RecursionError:  # the C decoder's depth guard: no model API nests anywhere near this deep
        raise errors.bad_request("Invalid JSON: nested too deeply") from None
    if not isinstance(body, dict):
        raise errors.bad_request("request body must be a JSON object")
    return body


def _attempt(
    request: InferenceRequest, providers: dict[str, ProviderSnapshot], candidates: list[routing.Candidate]
) -> Reply:
    route, stream = request.route, request.stream
    first_error: ProxyError | None = None
    for index, candidate in enumerate(candidates):
        try:
            resolved = routing.resolve(candidate, request, providers)
        except ProxyError as exc:
            if index == 0:
                raise  # the primary's allow-list and key checks answer before any upstream call
            logger.info("fallback skipped", extra={"provider": candidate.provider, "reason": exc.message})
            continue
        ticket = accounting.begin(resolved)
        if not isinstance(ticket, accounting.Ticket):
            first_error = first_error or errors.refusal(ticket)
            continue
        payload, strip_usage = _outgoing_body(resolved)
        accounting.calling(ticket)
        try:
            answer = upstream.send(
                "POST",
                resolved.provider,
                resolved.key,
                route.upstream_path,
                payload,
                request.client_headers,
                stream=stream,
            )
        except ProxyError as exc:
            accounting.finish(
                ticket, Usage(), exc.status, _ms(ticket.started), streamed=stream, upstream_called=exc.upstream_reached
            )
            first_error = first_error or exc
            continue
        if answer.status >= 400:
            error = _upstream_error(answer, resolved)
            accounting.finish(ticket, Usage(), answer.status, _ms(ticket.started), streamed=stream)
            if answer.status == 429 or answer.status >= 500:
                first_error = first_error or error
                continue
            raise first_error or error
        if stream:
            return Reply(
                answer.status,
                SSE_HEADERS + upstream.response_headers(answer),
                StreamBody(answer, ticket, strip_usage=strip_usage),
            )
        return _json_reply(answer, resolved, ticket)
    assert first_error is not None  # plan() never returns an empty list
    raise first_error


def _ms(since: float) -> int:
    return int((time.monotonic() - since) * 1000)


def _outgoing_body(resolved: Resolved) -> tuple[bytes, bool]:
    out = dict(resolved.body)
    out["model"] = resolved.model
    strip_usage = False
    if resolved.stream and resolved.route.usage_option:
        options = out.get("stream_options")
        options = dict(options) if isinstance(options, dict) else {}
        if not options.get("include_usage"):
            # Ask for usage so the request can be charged; the extra chunk is hidden from the client.
            options["include_usage"] = True
            strip_usage = True
        out["stream_options"] = options
    return compact_json(out).encode(), strip_usage


def _extra_fields(resolved: Resolved, latency_ms: int) -> dict[str, Any]:
    return {
        "provider": resolved.provider.name,
        "original_model_requested": resolved.request.model,
        "resolved_model_used": resolved.model,
        "request_type": resolved.route.request_type,
        "latency": latency_ms,
    }


def _upstream_error(answer: http1.Response, resolved: Resolved) -> ProxyError:
    """The upstream's error in the project's shape, keeping its message, type and code."""
    data = answer.data
    if data is None:  # a streamed request's error answer: read it for its message
        try:
            data = answer.read(MAX_ERROR_BODY)
        except http1.UpstreamError:
            data = b""
        finally:
            answer.release()
    fields: dict[str, Any] = {}
    message = f"upstream provider '{resolved.provider.name}' answered {answer.status}"
    try:
        payload = json.loads(data)
        error = payload.get("error") if isinstance(payload, dict) else None
        if isinstance(error, dict):
            fields = {k: v for k, v in error.items() if k in ("type", "code", "param")}
            if isinstance(error.get("message"), str):
                message = error["message"]
        elif isinstance(error, str):
            message = error
    except (ValueError, UnicodeDecodeError):
        pass
    retry_after = answer.header("retry-after")
    headers = {"Retry-After": retry_after} if retry_after is not None else {}
    return ProxyError(
        answer.status,
        message,
        headers=headers,
        error_fields=fields,
        extra_fields=_extra_fields(resolved, 0),
        retryable=answer.status == 429 or answer.status >= 500,
    )


def _json_reply(answer: http1.Response, resolved: Resolved, ticket: accounting.Ticket) -> Reply:
    data = answer.data
    assert data is not None  # upstream.send(stream=False) has read the body
    latency = _ms(resolved.request.started)
    usage = Usage()
    try:
        payload = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        payload = None
    if isinstance(payload, dict):
        usage = usage_from_body(payload)
        data = _with_extra_fields(data, payload, _extra_fields(resolved, latency))
    if not usage.prompt_tokens and not usage.completion_tokens and usage.upstream_cost is None:
        usage = estimated_usage(resolved, data)
    headers = [("Content-Type", answer.header("content-type", "application/json"))]
    headers += upstream.response_headers(answer)
    return Reply(answer.status, headers, Body(data, ticket, usage, answer.status, _ms(ticket.started)))


def estimated_usage(resolved: Resolved, answer: bytes) -> Usage:
    """A successful answer whose usage cannot be read is never free: the request's input estimate
    plus one token per four bytes of the answer (capped at the request's output cap), flagged
    ``estimated`` on its record."""
    prompt = estimate_prompt_tokens(resolved.body)
    completion = min(-(-len(answer) // 4), accounting.output_cap(resolved.body, resolved.route))
    total = min(prompt + completion, MAX_TOKENS)
    return Usage(prompt_tokens=prompt, completion_tokens=completion, total_tokens=total, estimated=True)


def _with_extra_fields(data: bytes, payload: dict[str, Any], extra: dict[str, Any]) -> bytes:
    """The upstream's answer with ``extra_fields`` added as its last member.

    Spliced in before the closing brace rather than re-encoding the whole answer: the upstream's
    bytes (number formatting included) reach the client unchanged, and a large answer (an
    embedding is thousands of floats) costs no re-encoding.
    """
    if payload and "extra_fields" not in payload:
        end = data.rstrip()
        # UTF-8 only (json.loads also reads UTF-16/32, whose braces are not single bytes).
        if end.endswith(b"}") and data.lstrip()[:1] == b"{":
            return end[:-1] + b',"extra_fields":' + compact_json(extra).encode() + b"}"
    payload["extra_fields"] = extra
    return compact_json(payload).encode()


class StreamBody:
    """Relays an upstream event stream chunk by chunk; accounts once when it ends, however it ends."""

    def __init__(self, answer: http1.Response, ticket: accounting.Ticket, *, strip_usage: bool) -> None:
        self.answer = answer
        self.ticket = ticket
        self.route = ticket.resolved.route
        self.scanner = SseScanner(strip_usage_chunk=strip_usage, delta_marker=self.route.sse_marker)
        self.done = False
        self.relayed = False  # some of the answer reached the client
        self.failed_status: int | None = None
        self._iterator: Generator[bytes, None, None] | None = None

    def __iter__(self) -> Iterator[bytes]:
        self._iterator = self._relay()
        return self._iterator

    def _relay(self) -> Generator[bytes, None, None]:
        try:
            for data in self.answer.stream():
                out = self.scanner.feed(data)
                if out:
                    self.relayed = True
                    yield out
            rest = self.scanner.flush()
            if rest:
                yield rest
            self.done = True
        except Exception as exc:  # the upstream broke off mid-stream: tell the client in-band
            self.failed_status = 504 if "Timeout" in type(exc).__name__ else 502
            name = self.ticket.resolved.provider.name
            message = f"upstream provider '{name}' broke off the stream ({type(exc).__name__})"
            logger.warning("upstream stream failed", extra={"provider": name, "error": type(exc).__name__})
            yield self._error_event(message)

    def _error_event(self, message: str) -> bytes:
        if self.route.api_format == "anthropic":
            payload = {"type": "error", "error": {"type": "api_error", "message": message}}
            return b"event: error\ndata: " + json.dumps(payload).encode() + b"\n\n"
        return b"data: " + json.dumps({"error": {"message": message, "type": "upstream_error"}}).encode() + b"\n\n"

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
        usage = self.scanner.usage
        status = self.answer.status if self.done else (self.failed_status or accounting.CLIENT_CLOSED)
        if not self.done or not self.scanner.seen_usage:
            # Cut off before the upstream reported its final usage, or ended without reporting
            # any (a truncated stream, an upstream ignoring include_usage): charge what was
            # produced, about one token per content chunk forwarded, rather than nothing.
            usage.completion_tokens = max(usage.completion_tokens, self.scanner.content_events)
            if not usage.prompt_tokens:
                usage.prompt_tokens = estimate_prompt_tokens(self.ticket.resolved.body)
            usage.total_tokens = min(usage.prompt_tokens + usage.completion_tokens, MAX_TOKENS)
            usage.estimated = True
        # A stream the upstream broke off after content reached the client is charged what was
        # delivered (the record keeps the 502/504 and says the tokens are estimated).
        accounting.finish(self.ticket, usage, status, _ms(self.ticket.started), streamed=True, delivered=self.relayed)
