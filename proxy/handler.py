"""One inference request from start to answer: authenticate, plan, try candidates, relay.

HTTP-agnostic: it receives the WSGI environ and the raw body and returns a :class:`Reply`
(status, headers, body iterable); ``proxy.wsgi`` turns that into the WSGI call. The body
iterables (``proxy.bodies``) call ``accounting.finish`` from ``close()``, after the server has
sent the bytes. An attempt whose provider speaks another format than the client is translated
(``proxy.translation``); errors are answered in the client's format.

Every request has an id (``request_id``): the client's ``x-request-id`` when it is a sane token
(``SANE_REQUEST_ID``), else a new time-ordered one. It is answered in ``x-request-id`` (errors
included), sent upstream in ``x-request-id``, written on each attempt's ledger row and on every
log line of the request. A refusal by governance leaves a ledger entry (``accounting.refused``).
"""

from __future__ import annotations

import json
import logging
import re
import time
from typing import Any

from django.conf import settings

from bifrost_site import json_text
from bifrost_site import logging as site_logging
from governance.metering import freshness, snapshot
from governance.metering.snapshot import ProviderSnapshot, VirtualKeySnapshot
from governance.models.usage import new_request_id
from mcp_gateway import injection
from proxy import accounting, auth, errors, http1, routing, translation, upstream
from proxy.bodies import Body, Reply, StreamBody
from proxy.errors import ProxyError
from proxy.routing import InferenceRequest, Resolved, Route
from proxy.translated_stream import TranslatedStreamBody
from proxy.usage import MAX_TOKENS, Usage, estimate_prompt_tokens, usage_from_body, usage_from_tail

logger = logging.getLogger("bifrost.proxy")

# One encoder for the hot path: ``json.dumps`` with ``separators`` builds a new one every call.
compact_json = json.JSONEncoder(separators=(",", ":")).encode
MAX_ERROR_BODY = 1024 * 1024  # an upstream error answer is read this far for its message
# A JSON answer larger than this is not parsed whole: its usage is read from its end and
# ``extra_fields`` is sent after it (``_extra_fields_tail``), so the answer is held once.
LARGE_ANSWER_BYTES = 4 * 1024 * 1024
JSON_HEADERS = [("Content-Type", "application/json")]
SSE_HEADERS = [("Content-Type", "text/event-stream"), ("Cache-Control", "no-cache"), ("X-Accel-Buffering", "no")]


# A client's request id is kept when it is a token a log search can use as it is: letters,
# digits and a few separators, at most 128 characters (the ledger column), no spaces or quotes.
SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@/+=-]{0,127}").fullmatch
REQUEST_ID_HEADER = "x-request-id"


def request_id_of(environ: dict[str, Any]) -> str:
    """This request's id (see the module doc), remembered for the log lines of this thread."""
    given = environ.get("HTTP_X_REQUEST_ID")
    rid = given if given and SANE_REQUEST_ID(given) else str(new_request_id())
    site_logging.request_id.set(rid)
    return rid


def error_reply(exc: ProxyError, client_format: str = "openai", request_id: str = "") -> Reply:
    headers = JSON_HEADERS + list(exc.headers.items())
    if request_id:
        headers.append((REQUEST_ID_HEADER, request_id))
    return Reply(exc.status, headers, Body(translation.error_bytes(exc, client_format)))


def handle(
    route: Route, environ: dict[str, Any], raw: bytes, path_model: str | None = None, request_id: str = ""
) -> Reply:
    """Answer one request (``path_model``: the model its path names, on Gemini and Azure-style
    routes). A configuration change committed while it was being decided (seen before any
    upstream call: ``governance.metering.freshness``) starts it over on the new configuration."""
    started = time.monotonic()
    request_id = request_id or request_id_of(environ)
    for _ in range(freshness.MAX_RESTARTS):
        try:
            reply = _handle(route, environ, raw, started, path_model, request_id)
        except freshness.StaleConfig:
            continue
        # A new list: a reply's headers may be a shared constant (``JSON_HEADERS``).
        reply.headers = [*reply.headers, (REQUEST_ID_HEADER, request_id)]
        return reply
    return error_reply(ProxyError(503, CONFIG_CHANGING, headers={"Retry-After": "1"}), route.api_format, request_id)


CONFIG_CHANGING = "The gateway's configuration kept changing while this request was decided; retry shortly"


def _handle(
    route: Route, environ: dict[str, Any], raw: bytes, started: float, path_model: str | None, request_id: str
) -> Reply:
    freshness.begin_request()
    vk = None
    try:
        vk = auth.authenticate(environ)
        if route.request_type == "list_models":
            from proxy.models_list import list_models

            listing = list_models(route, vk, path_model)
            freshness.confirm()
            return Reply(200, JSON_HEADERS, Body(listing))
        request = _request(route, environ, raw, vk, started, path_model, request_id)
        providers = snapshot.providers()
        candidates = routing.plan(request, providers)
        if route.request_type == "count_tokens":
            return _count_tokens(request, providers, candidates[0])
        return _attempt(request, providers, candidates)
    except ProxyError as exc:
        freshness.confirm()  # a refusal decided on old configuration is not given: start over
        if exc.is_refusal:
            accounting.refused(exc, request_id=request_id, route=route, vk=vk, latency_ms=_ms(started))
        return error_reply(exc, route.api_format)


def _request(
    route: Route,
    environ: dict[str, Any],
    raw: bytes,
    vk: VirtualKeySnapshot | None,
    started: float,
    path_model: str | None,
    request_id: str,
) -> InferenceRequest:
    """The request's facts, read and checked once (400 for a body the gateway cannot act on)."""
    body = _parse_body(raw)
    wrapped = body.get("generateContentRequest") if route.request_type == "count_tokens" else None
    if route.api_format == "gemini" and isinstance(wrapped, dict):
        # countTokens also takes the whole generateContent request, wrapped: count what it holds
        # (a Gemini provider is sent the raw body, as the client wrote it).
        body = {k: v for k, v in wrapped.items() if k != "model"}
    model = path_model if path_model is not None else body.get("model")
    if not isinstance(model, str) or not model.strip():
        raise errors.bad_request("model is required (a string such as 'openai/gpt-4o-mini')")
    if route.api_format == "gemini":
        check_gemini_fields(body)
    else:
        check_fields(body)
    fallbacks = routing.parse_fallbacks(body.pop("fallbacks", None))
    if route.request_type == "chat_completion" and injection.wanted(environ):
        _add_mcp_tools(body, environ)
    if fallbacks and route.api_format == "gemini":
        raw = compact_json(body).encode()  # a Gemini body passes through as sent: without ours
    return InferenceRequest(
        route=route,
        body=body,
        model=model,
        stream=route.stream_always or (body.get("stream") is True and route.streamable),
        fallbacks=fallbacks,
        vk=vk,
        client_headers=[
            *(h for h in upstream.forwardable_headers(environ) if h[0] != REQUEST_ID_HEADER),
            (REQUEST_ID_HEADER, request_id),
        ],
        started=started,
        raw=raw,
        environ=environ,
        request_id=request_id,
        log_content=settings.CONTENT_LOGGING or (vk is not None and vk.log_content),
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


def _add_mcp_tools(body: dict[str, Any], environ: dict[str, Any]) -> None:
    """The caller's MCP tools appended to the request's (``mcp_gateway.injection``)."""
    offered = injection.openai_tools(environ)
    if not offered:
        return
    current = body.get("tools")
    if current is not None and not isinstance(current, list):
        raise errors.bad_request("tools must be a list")
    taken = {(t.get("function") or {}).get("name") for t in current or () if isinstance(t, dict)}
    body["tools"] = [*(current or ()), *(t for t in offered if t["function"]["name"] not in taken)]


def check_gemini_fields(body: dict[str, Any]) -> None:
    """The Gemini request fields the gateway reads (what it reserves for and translates)."""
    if not isinstance(body.get("contents", []), list):
        raise errors.bad_request("contents must be a list of Content objects")
    config = body.get("generationConfig")
    if config is None:
        return
    if not isinstance(config, dict):
        raise errors.bad_request("generationConfig must be an object")
    for name in ("maxOutputTokens", "candidateCount"):
        value = config.get(name)
        if value is not None and not accounting.is_positive_int(value):
            raise errors.bad_request(f"generationConfig.{name} must be a positive integer")


def _parse_body(raw: bytes) -> dict[str, Any]:
    try:
        body = json_text.loads(raw) if raw else None
    except json_text.LoneSurrogate as exc:
        raise errors.bad_request(str(exc)) from None
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
    stream = request.stream
    first_error: ProxyError | None = None
    for index, candidate in enumerate(candidates):
        try:
            resolved = routing.resolve(candidate, request, providers)
            outgoing = translation.outgoing(resolved)
        except ProxyError as exc:
            if exc.is_refusal:
                _refused_attempt(exc, request, candidate.provider, candidate.model, index)
            if index == 0:
                raise  # the primary's allow-list, key and format checks answer before any upstream call
            logger.info("fallback skipped", extra={"provider": candidate.provider, "reason": exc.message})
            continue
        ticket = accounting.begin(resolved, index)
        if not isinstance(ticket, accounting.Ticket):
            refusal = errors.refusal(ticket)
            _refused_attempt(refusal, request, resolved.provider.name, resolved.model, index, resolved.key.id)
            first_error = first_error or refusal
            continue
        accounting.calling(ticket)
        try:
            answer = _send(resolved, outgoing)
        except ProxyError as exc:
            accounting.finish(
                ticket,
                Usage(),
                exc.status,
                _ms(ticket.started),
                streamed=stream,
                upstream_called=exc.upstream_reached,
                error=exc,
            )
            first_error = first_error or exc
            continue
        if answer.status >= 400:
            error = _upstream_error(answer, resolved)
            accounting.finish(ticket, Usage(), answer.status, _ms(ticket.started), streamed=stream, error=error)
            if answer.status == 429 or answer.status >= 500:
                first_error = first_error or error
                continue
            raise first_error or error
        if stream:
            body: StreamBody
            if outgoing.translated:
                options = request.body.get("stream_options")
                include = isinstance(options, dict) and options.get("include_usage") is True
                body = TranslatedStreamBody(answer, ticket, include_usage=include)
            else:
                body = StreamBody(answer, ticket, strip_usage=outgoing.strip_usage)
            return Reply(answer.status, SSE_HEADERS + upstream.response_headers(answer), body)
        if outgoing.translated:
            return _translated_reply(answer, resolved, ticket)
        return _json_reply(answer, resolved, ticket)
    assert first_error is not None  # plan() never returns an empty list
    raise first_error


def _refused_attempt(
    exc: ProxyError, request: InferenceRequest, provider: str, model: str, index: int, key_id: Any = None
) -> None:
    accounting.refused(
        exc,
        request_id=request.request_id,
        route=request.route,
        vk=request.vk,
        provider=provider,
        model=model,
        provider_key_id=key_id,
        attempt=index,
        streamed=request.stream,
        latency_ms=_ms(request.started),
    )


def _ms(since: float) -> int:
    return int((time.monotonic() - since) * 1000)


def _send(resolved: Resolved, outgoing: translation.Outgoing) -> http1.Response:
    request = resolved.request
    return upstream.send(
        "POST",
        resolved.provider,
        resolved.key,
        outgoing.path,
        outgoing.body,
        request.client_headers,
        stream=request.stream,
        model=resolved.model,
    )


def _count_tokens(
    request: InferenceRequest, providers: dict[str, ProviderSnapshot], candidate: routing.Candidate
) -> Reply:
    """A token count: the provider's own when it speaks the client's format, else the gateway's
    estimate of the translated request (the rule in ``proxy.usage.estimate_prompt_tokens``).
    Counting is free at every provider: nothing is reserved or recorded."""
    resolved = routing.resolve(candidate, request, providers)
    freshness.confirm()
    client = translation.FORMATS[request.route.api_format]
    if translation.is_translated(resolved):
        tokens = estimate_prompt_tokens(translation.hub_request(resolved))
        return Reply(200, JSON_HEADERS, Body(compact_json(client.count_tokens_answer(tokens)).encode()))
    answer = _send(resolved, translation.outgoing(resolved))
    if answer.status >= 400:
        raise _upstream_error(answer, resolved)
    assert answer.data is not None
    headers = [("Content-Type", answer.header("content-type", "application/json"))]
    return Reply(answer.status, headers + upstream.response_headers(answer), Body(answer.data))


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
    send, tail = None, b""
    if len(data) > LARGE_ANSWER_BYTES:
        usage = usage_from_tail(data) or usage
        if resolved.route.api_format != "gemini":
            send, tail = _extra_fields_tail(data, _extra_fields(resolved, latency))
    else:
        try:
            payload = json.loads(data)
        except (ValueError, UnicodeDecodeError):
            payload = None
        if isinstance(payload, dict):
            usage = usage_from_body(payload)
            if resolved.route.api_format != "gemini":  # the Gemini SDK refuses members it does not know
                data = _with_extra_fields(data, payload, _extra_fields(resolved, latency))
    if not usage.prompt_tokens and not usage.completion_tokens and usage.upstream_cost is None:
        usage = estimated_usage(resolved, data)
    headers = [("Content-Type", answer.header("content-type", "application/json"))]
    headers += upstream.response_headers(answer)
    if resolved.request.log_content:
        ticket.response_capture = data[: settings.CONTENT_MAX_BYTES + 1]
    body = Body(data, ticket, usage, answer.status, _ms(ticket.started), send=send, tail=tail)
    return Reply(answer.status, headers, body)


def _translated_reply(answer: http1.Response, resolved: Resolved, ticket: accounting.Ticket) -> Reply:
    """An upstream JSON answer in the client's format. One that cannot be read or translated is
    a 502 to the client, charged at the estimate: the upstream answered, and billed, it."""
    data = answer.data
    assert data is not None  # upstream.send(stream=False) has read the body
    client_format = resolved.route.api_format
    try:
        payload = json.loads(data)
        if not isinstance(payload, dict):
            raise ValueError("not a JSON object")
        out, as_hub = translation.answer(resolved, payload)
    except Exception as exc:  # an answer the format module cannot read: never a 500
        logger.warning(
            "upstream answer not translatable", extra={"provider": resolved.provider.name, "error": type(exc).__name__}
        )
        message = f"upstream provider '{resolved.provider.name}' answered with a body that could not be translated"
        error = ProxyError(502, message)
        usage = estimated_usage(resolved, data)
        body = Body(
            translation.error_bytes(error, client_format), ticket, usage, 502, _ms(ticket.started), delivered=True
        )
        return Reply(502, JSON_HEADERS, body)
    usage = usage_from_body(as_hub)
    if not usage.prompt_tokens and not usage.completion_tokens and usage.upstream_cost is None:
        usage = estimated_usage(resolved, data)
    if client_format != "gemini":  # the Gemini SDK refuses members it does not know
        out["extra_fields"] = _extra_fields(resolved, _ms(resolved.request.started))
    headers = JSON_HEADERS + upstream.response_headers(answer)
    data = compact_json(out).encode()
    if resolved.request.log_content:
        ticket.response_capture = data[: settings.CONTENT_MAX_BYTES + 1]
    return Reply(answer.status, headers, Body(data, ticket, usage, answer.status, _ms(ticket.started)))


def estimated_usage(resolved: Resolved, answer: bytes) -> Usage:
    """A successful answer whose usage cannot be read is never free: the request's input estimate
    plus one token per four bytes of the answer (capped at the request's output cap), flagged
    ``estimated`` on its record."""
    prompt = estimate_prompt_tokens(resolved.body)
    completion = min(-(-len(answer) // 4), accounting.output_cap(resolved.body, resolved.route))
    total = min(prompt + completion, MAX_TOKENS)
    return Usage(prompt_tokens=prompt, completion_tokens=completion, total_tokens=total, estimated=True)


def _extra_fields_tail(data: bytes, extra: dict[str, Any]) -> tuple[int, bytes]:
    """How much of a large answer to send, and the tail to send after it, that add ``extra_fields``
    as its last member without copying the answer: ``(up to its closing brace, ',"extra_fields":
    {...}}')``. An answer that is not a JSON object, or that has an ``extra_fields`` member
    already, is sent as it came: ``(len(data), b"")``."""
    brace = _closing_brace(data)
    if brace < 0:
        return len(data), b""
    found = data.find(b'"extra_fields"')
    if found >= 0 and _EXTRA_FIELDS_MEMBER.search(data, max(found - 64, 0), found + 64):
        return len(data), b""
    # Megabytes of answer: the object has members, so the new one follows a comma.
    return brace, _extra_member(extra)


_EXTRA_FIELDS_MEMBER = re.compile(rb'[{,]\s*"extra_fields"\s*:')
_JSON_SPACE = b" \t\r\n"


def _closing_brace(data: bytes) -> int:
    """The offset of the closing brace of an answer that reads as one JSON object (``{`` first and
    ``}`` last, JSON whitespace aside), found without copying it; -1 for any other answer. UTF-8
    only (json.loads also reads UTF-16/32, whose braces are not single bytes)."""
    start, end = 0, len(data)
    while start < end and data[start] in _JSON_SPACE:
        start += 1
    while end > start and data[end - 1] in _JSON_SPACE:
        end -= 1
    return end - 1 if end - start >= 2 and data[start] == 0x7B and data[end - 1] == 0x7D else -1


def _extra_member(extra: dict[str, Any]) -> bytes:
    """``extra_fields`` as the last member of an object that has others, with the closing brace."""
    return b',"extra_fields":' + compact_json(extra).encode() + b"}"


def _with_extra_fields(data: bytes, payload: dict[str, Any], extra: dict[str, Any]) -> bytes:
    """The upstream's answer with ``extra_fields`` added as its last member.

    Spliced in before the closing brace rather than re-encoding the whole answer: the upstream's
    bytes (number formatting included) reach the client unchanged, and a large answer (an
    embedding is thousands of floats) costs no re-encoding.
    """
    if payload and "extra_fields" not in payload:
        brace = _closing_brace(data)
        if brace >= 0:
            return data[:brace] + _extra_member(extra)
    payload["extra_fields"] = extra
    return compact_json(payload).encode()
