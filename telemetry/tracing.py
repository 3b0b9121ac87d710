"""Optional OpenTelemetry spans: one per inference attempt (and per MCP tool call), over OTLP/HTTP.

Off unless ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) is set
when the process starts: then nothing of OpenTelemetry is imported and the request's path pays
one boolean test (:data:`ENABLED`, read by ``telemetry.metrics``). When on, the official SDK is
set up once per process, after gunicorn's fork (a ``TracerProvider`` with a
``BatchSpanProcessor`` and the OTLP/HTTP ``OTLPSpanExporter``, which read the standard
``OTEL_*`` variables: endpoint, headers, timeout, ``OTEL_SERVICE_NAME``...). The spans are
made by the metrics drain thread from what the request thread recorded (start and end times
included), so they cost the request nothing either; they are exported in batches off both.

Each span is a ``CLIENT`` span named ``{gen_ai.operation.name} {gen_ai.request.model}`` with the
GenAI semantic conventions' attributes (``gen_ai.provider.name`` and its older name
``gen_ai.system``, ``gen_ai.operation.name``, ``gen_ai.request.model``,
``gen_ai.usage.input_tokens``, ``gen_ai.usage.output_tokens``; ``gen_ai.tool.name`` for a tool
call), ``http.response.status_code``, ``error.type`` on a failure, and the gateway's own
(``bifrost.*``: provider, virtual key id and name, team, customer, cost, request id, fallback
index, streamed). Never a key value, a prompt or an answer.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any

logger = logging.getLogger("bifrost.tracing")


def _configured() -> bool:
    return bool(
        (os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or "").strip()
        or (os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or "").strip()
    )


ENABLED = _configured()
SERVICE_NAME = "bifrost-gateway"

# The request types' GenAI operation names (``gen_ai.operation.name``).
OPERATIONS = {
    "chat_completion": "chat",
    "messages": "chat",
    "responses": "chat",
    "text_completion": "text_completion",
    "embedding": "embeddings",
    "generate_content": "generate_content",
}
# Provider types whose GenAI name differs from the gateway's (``gen_ai.provider.name`` values).
PROVIDER_NAMES = {
    "gemini": "gcp.gemini",
    "azure": "azure.ai.openai",
    "mistral": "mistral_ai",
    "xai": "x_ai",
}

_lock = threading.Lock()
_state: dict[str, Any] = {}  # "pid", "provider", "tracer": this process's SDK objects


def clock() -> tuple[int, float]:
    """Now, as wall-clock ns and monotonic seconds: turns a monotonic start into a span's start."""
    return time.time_ns(), time.monotonic()


def _tracer() -> Any:
    """This process's tracer, set up on first use (and again in a forked child)."""
    if _state.get("pid") == os.getpid():
        return _state["tracer"]
    with _lock:
        if _state.get("pid") == os.getpid():
            return _state["tracer"]
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        attributes = {} if os.environ.get("OTEL_SERVICE_NAME") else {"service.name": SERVICE_NAME}
        provider = TracerProvider(resource=Resource.create(attributes))
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        _state.update(pid=os.getpid(), provider=provider, tracer=provider.get_tracer("bifrost.gateway"))
        return _state["tracer"]


def _start_ns(started: float, clock_at_end: tuple[int, float]) -> int:
    wall_ns, monotonic_now = clock_at_end
    return wall_ns - int(max(0.0, monotonic_now - started) * 1e9)


def _identity(attributes: dict[str, Any], vk: Any) -> None:
    if vk is None:
        return
    attributes["bifrost.virtual_key.id"] = str(vk.id)
    attributes["bifrost.virtual_key.name"] = vk.name or ""
    if vk.team_id:
        attributes["bifrost.team.id"] = str(vk.team_id)
        attributes["bifrost.team.name"] = vk.team_name or ""
    if vk.customer_id:
        attributes["bifrost.customer.id"] = str(vk.customer_id)
        attributes["bifrost.customer.name"] = vk.customer_name or ""


def attempt_span(fields: dict[str, Any], resolved: Any, cost: Any, started: float, clock_at_end: Any) -> None:
    """The span of one inference attempt (``telemetry.metrics.attempt``'s record)."""
    if clock_at_end is None:
        return
    from opentelemetry.trace import SpanKind, Status, StatusCode

    tracer = _tracer()
    provider_type = resolved.provider.provider_type
    genai_provider = PROVIDER_NAMES.get(provider_type, provider_type)
    operation = OPERATIONS.get(fields["request_type"], fields["request_type"])
    model = fields["model"]
    status = int(fields["status_code"])
    attributes: dict[str, Any] = {
        "gen_ai.operation.name": operation,
        "gen_ai.provider.name": genai_provider,
        "gen_ai.system": genai_provider,
        "gen_ai.request.model": model,
        "gen_ai.usage.input_tokens": int(fields["prompt_tokens"]),
        "gen_ai.usage.output_tokens": int(fields["completion_tokens"]),
        "http.response.status_code": status,
        "bifrost.provider": fields["provider"],
        "bifrost.requested_model": str(resolved.request.model),
        "bifrost.request_type": fields["request_type"],
        "bifrost.request_id": str(fields.get("http_request_id") or ""),
        "bifrost.fallback_index": int(fields.get("fallback_index") or 0),
        "bifrost.streamed": bool(fields.get("streamed")),
        "bifrost.cost_usd": float(cost or 0),
    }
    _identity(attributes, resolved.vk)
    if status >= 400:
        attributes["error.type"] = fields.get("error_type") or str(status)
    span = tracer.start_span(
        f"{operation} {model}", kind=SpanKind.CLIENT, start_time=_start_ns(started, clock_at_end), attributes=attributes
    )
    if status >= 400:
        span.set_status(Status(StatusCode.ERROR, attributes["error.type"]))
    span.end(end_time=clock_at_end[0])


def tool_span(client: str, tool: str, vk: Any, status_code: int, latency_ms: int, cost: Any, clock_at_end: Any) -> None:
    """The span of one MCP tool call (``telemetry.metrics.mcp_call``'s record)."""
    if clock_at_end is None:
        return
    from opentelemetry.trace import SpanKind, Status, StatusCode

    attributes: dict[str, Any] = {
        "gen_ai.operation.name": "execute_tool",
        "gen_ai.tool.name": tool,
        "mcp.method.name": "tools/call",
        "bifrost.mcp_client": client,
        "bifrost.cost_usd": float(cost or 0),
        "http.response.status_code": status_code,
    }
    _identity(attributes, vk)
    end = clock_at_end[0]
    span = _tracer().start_span(
        f"execute_tool {tool}", kind=SpanKind.CLIENT, start_time=end - latency_ms * 1_000_000, attributes=attributes
    )
    if status_code >= 400:
        span.set_status(Status(StatusCode.ERROR, str(status_code)))
    span.end(end_time=end)


def force_flush(timeout_seconds: float = 10.0) -> bool:
    """Export the spans waiting now (tests; ``shutdown`` does it at exit)."""
    provider = _state.get("provider") if _state.get("pid") == os.getpid() else None
    return bool(provider.force_flush(int(timeout_seconds * 1000))) if provider is not None else True


def shutdown() -> None:
    """Export what waits and stop the exporter (a worker's exit)."""
    with _lock:
        provider = _state.get("provider") if _state.get("pid") == os.getpid() else None
        _state.clear()
    if provider is not None:
        try:
            provider.shutdown()
        except Exception:  # an unreachable collector must not hold up the exit
            logger.warning("tracing shutdown failed", exc_info=True)


def reload() -> None:
    """Read the environment again (tests that set or clear the endpoint)."""
    global ENABLED
    shutdown()
    ENABLED = _configured()
