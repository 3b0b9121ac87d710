"""OpenTelemetry: with ``OTEL_EXPORTER_OTLP_ENDPOINT`` set, each inference attempt is a span with
the GenAI attributes, exported over OTLP/HTTP to a small receiver in this test; without it,
nothing of OpenTelemetry is loaded."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from governance.services import provider_create, provider_key_create, virtual_key_create
from telemetry import metrics, tracing
from tests.proxy.conftest import ROOT, mock_server, send, wait_for  # noqa: F401 - mock_server is a fixture


class Receiver(ThreadingHTTPServer):
    """An OTLP/HTTP trace receiver: ``POST /v1/traces`` with a protobuf ExportTraceServiceRequest."""

    def __init__(self) -> None:
        self.spans: list = []
        self.paths: list[str] = []
        super().__init__(("127.0.0.1", 0), _Handler)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.paths.append(self.path)
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        for resource_spans in request.resource_spans:
            service = {a.key: a.value.string_value for a in resource_spans.resource.attributes}.get("service.name")
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    self.server.spans.append((service, span))
        answer = ExportTraceServiceResponse().SerializeToString()
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - http.server's signature
        pass


@pytest.fixture
def receiver():
    server = Receiver()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def tracing_on(receiver, monkeypatch):
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint)
    monkeypatch.delenv("OTEL_SERVICE_NAME", raising=False)
    tracing.reload()
    yield receiver
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT")
    tracing.reload()


def attributes(span) -> dict:
    out = {}
    for item in span.attributes:
        value = item.value
        out[item.key] = getattr(value, value.WhichOneof("value"))
    return out


@pytest.mark.django_db
def test_each_attempt_is_a_span_with_genai_attributes(tracing_on, mock_server):  # noqa: F811 - the fixture
    mock_server.reset()
    provider = provider_create(name="openai", base_url=mock_server.url, timeout_seconds=2.0)
    provider_key_create(provider=provider, name="main", value="sk-upstream-openai-secret")
    configs = [{"provider": "openai", "weight": 1.0, "allowed_models": ["*"], "key_ids": ["*"]}]
    vk, value = virtual_key_create(name="traced-key", provider_configs=configs)
    body = {"model": "openai/gpt-4o-mini", "messages": [{"role": "user", "content": "Say hello, please."}]}
    answer = send("/v1/chat/completions", json.dumps({**body, "max_tokens": 4}).encode(), {"x-bf-vk": value})
    assert answer.status == 200
    failed = {**body, "model": "openai/gpt-4o-mini-fail-500"}
    assert send("/v1/chat/completions", json.dumps(failed).encode(), {"x-bf-vk": value}).status == 500

    metrics.drain()  # the drain thread would make the spans within a second
    assert tracing.force_flush()
    assert wait_for(lambda: len(tracing_on.spans) >= 2, timeout=10)
    assert set(tracing_on.paths) == {"/v1/traces"}
    by_model = {attributes(span)["gen_ai.request.model"]: (service, span) for service, span in tracing_on.spans}
    service, span = by_model["gpt-4o-mini"]
    found = attributes(span)
    assert service == "bifrost-gateway"
    assert span.name == "chat gpt-4o-mini"
    assert span.kind == span.SPAN_KIND_CLIENT
    assert found["gen_ai.provider.name"] == "openai" and found["gen_ai.system"] == "openai"
    assert found["gen_ai.operation.name"] == "chat"
    assert found["gen_ai.usage.input_tokens"] == len("Say hello, please.") // 4
    assert found["gen_ai.usage.output_tokens"] == 4
    assert found["http.response.status_code"] == 200
    assert found["bifrost.virtual_key.id"] == str(vk.pk) and found["bifrost.virtual_key.name"] == "traced-key"
    assert found["bifrost.request_id"] == answer.headers["x-request-id"]
    assert 0 < span.end_time_unix_nano - span.start_time_unix_nano < 10 * 10**9
    _, failed_span = by_model["gpt-4o-mini-fail-500"]
    assert attributes(failed_span)["error.type"]
    assert failed_span.status.code == failed_span.status.STATUS_CODE_ERROR
    # No secret in any attribute.
    for _, span in tracing_on.spans:
        assert value not in json.dumps(attributes(span), default=str)
        assert "sk-upstream-openai-secret" not in json.dumps(attributes(span), default=str)


def test_off_by_default_and_the_exporter_never_loaded():
    code = (
        "import os, sys; os.environ.pop('OTEL_EXPORTER_OTLP_ENDPOINT', None);"
        "os.environ.pop('OTEL_EXPORTER_OTLP_TRACES_ENDPOINT', None);"
        "import django; os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'bifrost_site.settings'); django.setup();"
        "import proxy.accounting, telemetry.metrics, telemetry.tracing as t;"
        "print(t.ENABLED, t._state == {}, any(m.startswith('opentelemetry.exporter') for m in sys.modules))"
    )
    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith("OTEL_")}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    # (redis-py imports the SDK's metrics when installed, and leaves them off: not the exporter.)
    assert out.stdout.split() == ["False", "True", "False"]
