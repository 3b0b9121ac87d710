"""How one attempt crosses formats: the client's format → OpenAI chat (the hub) → the upstream's.

``proxy.translate`` holds the per-format mappings; this module decides, per attempt, whether any
runs (a client and upstream of the same format pass through, parsing nothing extra), builds the
upstream body and path, and turns the upstream's JSON answer back into the client's format.
Streams are turned around by ``proxy.translated_stream``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from django.conf import settings

from proxy import errors
from proxy.routing import Resolved
from proxy.translate import anthropic, gemini, hub, quirks
from proxy.translate import openai as openai_format

FORMATS: dict[str, ModuleType] = {"openai": openai_format, "anthropic": anthropic, "gemini": gemini}
# The upstream path of a translated chat request, by the upstream's wire format (Gemini's
# carries the model: ``gemini_path``). A translated token count is answered by the gateway.
_TRANSLATED_PATHS = {"openai": "/v1/chat/completions", "anthropic": "/v1/messages"}
# A field the upstream's format cannot take is named as the client wrote it, not by its OpenAI
# (hub) name: the first segment of the hub's path, by client format.
CLIENT_FIELDS: dict[str, dict[str, str]] = {
    "anthropic": {"stop": "stop_sequences", "tools": "tools", "messages": "messages", "n": "n"},
    "gemini": {
        "n": "generationConfig.candidateCount",
        "max_tokens": "generationConfig.maxOutputTokens",
        "stop": "generationConfig.stopSequences",
        "response_format": "generationConfig.responseMimeType",
        "reasoning_effort": "generationConfig.thinkingConfig",
        "logprobs": "generationConfig.responseLogprobs",
        "tool_choice": "toolConfig",
        "messages": "contents",
    },
}


@dataclass(frozen=True, slots=True)
class Outgoing:
    body: bytes
    path: str
    strip_usage: bool  # the proxy asked for the usage chunk on the client's behalf: hide it
    translated: bool


def is_translated(resolved: Resolved) -> bool:
    return resolved.provider.api_format != resolved.route.api_format


def gemini_path(model: str, action: str, stream: bool) -> str:
    if stream:
        return f"/v1beta/models/{model}:streamGenerateContent?alt=sse"
    return f"/v1beta/models/{model}:{action}"


def hub_request(resolved: Resolved) -> dict[str, Any]:
    """The client's request as an OpenAI chat body, translated once per request (400 naming the
    field when it cannot be expressed)."""
    request = resolved.request
    cached = request.cache.get("hub")
    if cached is None:
        try:
            cached = FORMATS[request.route.api_format].request_to_openai(request.body, request.model)
        except hub.TranslationError as exc:
            raise errors.bad_request(exc.message) from None
        request.cache["hub"] = cached
    return cached


def outgoing(resolved: Resolved) -> Outgoing:
    """The upstream call's body and path for this attempt."""
    request, provider, model = resolved.request, resolved.provider, resolved.model
    wire, stream = provider.api_format, request.stream
    if wire == request.route.api_format:
        return _passthrough(resolved)
    out = dict(hub_request(resolved))
    out["model"] = model
    if stream:
        out["stream"] = True
    else:
        out.pop("stream", None)
    out.pop("stream_options", None)
    try:
        if wire == "openai":
            if stream and quirks.accepts_stream_options(provider.provider_type):
                out["stream_options"] = {"include_usage": True}
            quirks.apply(provider.provider_type, out)
            body = out
        else:
            if not any(out.get(name) for name in ("max_tokens", "max_completion_tokens")):
                # What admission reserved for (accounting.output_cap): the same cap goes upstream.
                out["max_tokens"] = settings.GOVERNANCE_DEFAULT_MAX_TOKENS
            body = FORMATS[wire].request_from_openai(out, model)
    except hub.TranslationError as exc:
        raise errors.bad_request(_client_message(exc, request.route.api_format)) from None
    path = gemini_path(model, "generateContent", stream) if wire == "gemini" else _TRANSLATED_PATHS[wire]
    return Outgoing(hub.compact_bytes(body), path, False, True)


def _client_message(exc: hub.TranslationError, client: str) -> str:
    """The refusal, naming the field the way the client's format spells it where that differs."""
    fields = CLIENT_FIELDS.get(client, {})
    head = exc.param.split(".", 1)[0].split("[", 1)[0]
    if head not in fields or client == "openai":
        return exc.message
    # An indexed path (messages[2].content[0]) cannot be mapped index for index: name the field.
    param = fields[head] if exc.param != head and "[" in exc.param else fields[head] + exc.param[len(head) :]
    return f"{param}: {exc.reason}"


def _passthrough(resolved: Resolved) -> Outgoing:
    request, route, provider = resolved.request, resolved.route, resolved.provider
    if route.api_format == "gemini":  # the model is in the path; the body goes as the client sent it
        action = "countTokens" if route.request_type == "count_tokens" else "generateContent"
        return Outgoing(request.raw, gemini_path(resolved.model, action, request.stream), False, False)
    out = dict(request.body)
    out["model"] = resolved.model
    strip_usage = False
    if request.stream and route.usage_option:
        if quirks.accepts_stream_options(provider.provider_type):
            options = out.get("stream_options")
            options = dict(options) if isinstance(options, dict) else {}
            if not options.get("include_usage"):
                # Ask for usage so the request can be charged; the extra chunk is hidden from the client.
                options["include_usage"] = True
                strip_usage = True
            out["stream_options"] = options
    if route.api_format == "openai":
        quirks.apply(provider.provider_type, out)
    return Outgoing(hub.compact_bytes(out), route.upstream_path, strip_usage, False)


def answer(resolved: Resolved, payload: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """A translated upstream JSON answer as ``(the client's answer, its OpenAI form)``; the
    OpenAI form is where the usage is read."""
    wire, client = resolved.provider.api_format, resolved.route.api_format
    as_hub = FORMATS[wire].response_to_openai(payload, resolved.model)
    return FORMATS[client].response_from_openai(as_hub, resolved.request.model), as_hub


def error_bytes(exc: errors.ProxyError, client_format: str) -> bytes:
    """The error answer in the client's format, with the gateway's own fields beside it."""
    if client_format == "openai":
        return exc.body()
    payload = json.loads(FORMATS[client_format].error_body(exc.status, exc.message, exc.type_))
    payload.update(is_bifrost_error=False, status_code=exc.status, extra_fields=exc.extra_fields)
    return hub.compact_bytes(payload)
