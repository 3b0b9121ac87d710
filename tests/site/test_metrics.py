"""``/metrics``: the families fed by real proxy traffic in this process, the bearer token, label
folding, the governance gauges, and (slow) two gunicorn workers summed after traffic from the
official ``openai`` SDK, refusals and the counter backend included."""

from __future__ import annotations

import json
import queue
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from unittest.mock import patch

import openai
import pytest
import urllib3
from django.utils import timezone
from prometheus_client.mmap_dict import MmapedDict
from prometheus_client.parser import text_string_to_metric_families

from governance.metering import enforcement, writer
from governance.metering.counters import CountersUnavailable, primary_counters
from governance.services import provider_create, provider_key_create, virtual_key_create
from telemetry import metrics
from tests.proxy.conftest import mock_server, send, wait_for  # noqa: F401 - mock_server is a fixture

MESSAGES = [{"role": "user", "content": "Say hello, please."}]
PROMPT_TOKENS = len(MESSAGES[0]["content"]) // 4  # what the mock upstream reports


def parse(text: str) -> dict[tuple[str, frozenset], float]:
    """Every sample of a scrape: ``{(sample name, frozenset(labels.items())): value}``."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def total(samples: dict, name: str, **labels: str) -> float:
    """The sum of ``name``'s samples whose labels include ``labels``."""
    wanted = set(labels.items())
    return sum(value for (sample, found), value in samples.items() if sample == name and wanted <= found)


def scrape(client, **headers: str) -> dict[tuple[str, frozenset], float]:
    response = client.get("/metrics", **headers)
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain")
    return parse(response.content.decode())


@pytest.fixture
def mock(mock_server):  # noqa: F811 - the imported fixture
    mock_server.reset()
    return mock_server


@pytest.fixture
def providers(mock):
    openai_provider = provider_create(name="openai", base_url=mock.url, timeout_seconds=2.0)
    provider_key_create(provider=openai_provider, name="main", value="sk-upstream-openai-secret")
    return openai_provider


ALL_OPENAI = [{"provider": "openai", "weight": 1.0, "allowed_models": ["*"], "key_ids": ["*"]}]


def chat(vk: str, model: str, **extra) -> tuple[int, bytes]:
    body = {"model": f"openai/{model}", "messages": MESSAGES, "max_tokens": 4, **extra}
    answer = send("/v1/chat/completions", json.dumps(body).encode(), {"Authorization": f"Bearer {vk}"})
    return answer.status, answer.body


@pytest.fixture(autouse=True)
def _fresh_labels():
    metrics.reset()
    yield
    metrics.reset()


# --- in this process -------------------------------------------------------------------------------


@pytest.mark.django_db
def test_traffic_feeds_the_inference_and_refusal_families(client, providers):
    vk, value = virtual_key_create(
        name="metrics-in-process",
        provider_configs=ALL_OPENAI,
        rate_limit={"request_max_limit": 3, "request_reset_duration": "1h"},
    )
    assert chat(value, "gpt-4o-mini")[0] == 200
    # Pauses between the chunks (the mock's ``slow-stream``), so they are relayed one by one.
    status, body = chat(value, "gpt-4o-mini-slow-stream-10", stream=True, stream_options={"include_usage": True})
    assert status == 200 and b"[DONE]" in body
    assert chat(value, "gpt-4o-mini-fail-500")[0] == 500
    refused = chat(value, "gpt-4o-mini")
    assert refused[0] == 429 and b"request_limited" in refused[1]
    assert send("/v1/chat/completions", b"{}", {"Authorization": "Bearer sk-bf-unknown"}).status == 401

    samples = scrape(client)
    mine = {"virtual_key_id": str(vk.pk), "virtual_key_name": "metrics-in-process", "provider": "openai"}
    ok = {**mine, "model": "gpt-4o-mini", "method": "chat_completion"}
    streamed = {**ok, "model": "gpt-4o-mini-slow-stream-10"}
    assert total(samples, "bifrost_upstream_requests_total", **ok, status_class="2xx") == 1
    assert total(samples, "bifrost_upstream_requests_total", **streamed, status_class="2xx") == 1
    assert total(samples, "bifrost_success_requests_total", **mine) == 2
    failed = {**mine, "model": "gpt-4o-mini-fail-500"}
    assert total(samples, "bifrost_error_requests_total", **failed, status_code="500") == 1
    assert total(samples, "bifrost_upstream_requests_total", **failed, status_class="5xx") == 1
    assert total(samples, "bifrost_upstream_latency_seconds_count", **mine, is_success="true") == 2
    assert total(samples, "bifrost_upstream_latency_seconds_count", **failed, is_success="false") == 1
    assert total(samples, "bifrost_input_tokens_total", **mine) == 2 * PROMPT_TOKENS
    assert total(samples, "bifrost_output_tokens_total", **mine) == 2 * 4
    # One stream: one first-chunk observation and one mean inter-chunk gap (about 10 ms).
    assert total(samples, "bifrost_stream_first_token_latency_seconds_count", **streamed) == 1
    assert total(samples, "bifrost_stream_inter_token_latency_seconds_count", **streamed) == 1
    assert total(samples, "bifrost_stream_inter_token_latency_seconds_bucket", **streamed, le="0.005") == 0
    assert total(samples, "bifrost_stream_inter_token_latency_seconds_bucket", **streamed, le="+Inf") == 1
    assert total(samples, "bifrost_stream_first_token_latency_seconds_count", **ok) == 0
    # The refusals: by type and the first refusing level, and one per refusing limit.
    limited = {"type": "request_limited", "level": "virtual_key", "virtual_key_id": str(vk.pk)}
    assert total(samples, "bifrost_governance_refusals_total", **limited, method="chat_completion") == 1
    assert total(samples, "bifrost_governance_limit_refusals_total", level="virtual_key", kind="rate_limit") >= 1
    assert total(samples, "bifrost_governance_refusals_total", type="virtual_key_not_found", level="virtual_key") >= 1
    # The counter backend that admitted, and the configured one.
    backend = primary_counters().name
    assert total(samples, "bifrost_governance_counter_backend", backend=backend) == 1
    assert total(samples, "bifrost_governance_counter_backend_configured", backend=backend) == 1
    # Rate-limit use per owner, computed when scraped: 3 requests of 3 (the refused one took none).
    owner = {"owner_type": "virtual_key", "owner_id": str(vk.pk), "owner_name": "metrics-in-process"}
    assert total(samples, "bifrost_governance_rate_limit_usage_ratio", **owner, kind="requests") == 1.0
    assert total(samples, "bifrost_governance_usage_ratio_available") == 1
    # Never the key's value.
    assert value not in client.get("/metrics").content.decode()


@pytest.mark.django_db
def test_budget_ratio_and_unpriced_models(client, providers):
    from governance.models import ModelPrice

    ModelPrice.objects.create(
        provider="openai", model="gpt-4o-mini", input_cost_per_token="0.001", output_cost_per_token="0.002"
    )
    vk, value = virtual_key_create(
        name="metrics-budget",
        provider_configs=ALL_OPENAI,
        budgets=[{"max_limit": "1", "reset_duration": "1M"}],
    )
    before = scrape(client)  # the registry is the process's: other tests' figures are in it too
    assert chat(value, "gpt-4o-mini")[0] == 200
    plain, plain_value = virtual_key_create(name="metrics-unpriced", provider_configs=ALL_OPENAI)
    assert chat(plain_value, "no-price-model")[0] == 200
    refused = chat(value, "no-price-model")  # a budget on the path: an unpriced model is refused
    assert refused[0] == 400 and b"model_unpriced" in refused[1]

    samples = scrape(client)
    cost = PROMPT_TOKENS * 0.001 + 4 * 0.002
    assert total(samples, "bifrost_cost_total", virtual_key_id=str(vk.pk)) == pytest.approx(cost)
    owner = {"owner_type": "virtual_key", "owner_id": str(vk.pk), "reset_duration": "1M"}
    assert total(samples, "bifrost_governance_budget_usage_ratio", **owner) == pytest.approx(cost / 1)
    unpriced = {"provider": "openai", "model": "no-price-model"}
    grown = total(samples, "bifrost_unpriced_requests_total", **unpriced)
    assert grown - total(before, "bifrost_unpriced_requests_total", **unpriced) == 1
    refusal = {"type": "model_unpriced", "level": "model"}
    grown = total(samples, "bifrost_governance_refusals_total", **refusal)
    assert grown - total(before, "bifrost_governance_refusals_total", **refusal) == 1


def test_bearer_token(client, settings):
    settings.METRICS_BEARER_TOKEN = "scrape-secret"
    missing = client.get("/metrics")
    assert missing.status_code == 401 and missing["WWW-Authenticate"] == "Bearer"
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer wrong").status_code == 401
    assert client.get("/metrics", HTTP_AUTHORIZATION="Basic scrape-secret").status_code == 401
    assert b"scrape-secret" not in missing.content


@pytest.mark.django_db
def test_bearer_token_accepted(client, settings):
    settings.METRICS_BEARER_TOKEN = "scrape-secret"
    assert scrape(client, HTTP_AUTHORIZATION="Bearer scrape-secret")
    settings.METRICS_BEARER_TOKEN = ""
    assert scrape(client)  # open by default


def test_metrics_refuses_writes(client):
    assert client.post("/metrics").status_code == 405


@pytest.mark.django_db
def test_label_values_beyond_the_cap_fold_into_other(client, settings):
    settings.METRICS_MAX_LABEL_VALUES = 2
    metrics.reset()
    for index in range(5):
        metrics.refusal("model_blocked", (), None, method="chat_completion", provider="fold-p", model=f"fold-{index}")
    samples = scrape(client)
    models = {
        dict(labels)["model"]: value
        for (name, labels), value in samples.items()
        if name == "bifrost_governance_refusals_total" and dict(labels)["provider"] == "fold-p"
    }
    assert models == {"fold-0": 1, "fold-1": 1, "other": 3}
    assert total(samples, "bifrost_metrics_label_values_folded_total", label="model") >= 3


def test_folding_takes_a_keys_name_along():
    class Key:
        id, name, team_id, team_name, customer_id, customer_name = "k1", "name-1", "t1", "team", None, ""

    with patch.object(metrics, "max_label_values", return_value=1):
        assert metrics.identity(Key) == ("k1", "name-1", "t1", "team", "", "")
        other = type("Other", (Key,), {"id": "k2", "name": "name-2", "team_id": "t2", "team_name": "team-2"})
        assert metrics.identity(other) == ("other", "other", "other", "other", "", "")


@pytest.mark.django_db
def test_counter_backend_fallback_is_visible(client, providers, settings):
    settings.GOVERNANCE_COUNTERS = "auto"

    class DownRedis:
        name = "redis"

        def admit(self, **kwargs):
            raise CountersUnavailable("connection refused")

    vk, value = virtual_key_create(
        name="metrics-fallback",
        provider_configs=ALL_OPENAI,
        rate_limit={"request_max_limit": 10, "request_reset_duration": "1h"},
    )
    with patch.object(enforcement, "primary_counters", DownRedis):
        assert chat(value, "gpt-4o-mini")[0] == 200
    samples = scrape(client)
    assert total(samples, "bifrost_governance_counter_unavailable_total", backend="redis") >= 1
    fallback = {"from_backend": "redis", "to_backend": "database"}
    assert total(samples, "bifrost_governance_counter_fallbacks_total", **fallback) >= 1
    assert total(samples, "bifrost_governance_counter_backend", backend="database") == 1
    assert total(samples, "bifrost_governance_counter_backend", backend="redis") == 0


@pytest.mark.django_db
def test_mcp_tool_calls(client):
    metrics.mcp_call("metrics-mcp", "search", None, 200, 120, "0.25")
    metrics.mcp_call("metrics-mcp", "search", None, 504, 30_000, 0)
    samples = scrape(client)
    call = {"mcp_client": "metrics-mcp", "mcp_tool_name": "search", "mcp_method": "tools/call"}
    assert total(samples, "bifrost_mcp_client_operation_duration_seconds_count", **call, error_type="") == 1
    assert total(samples, "bifrost_mcp_client_operation_duration_seconds_count", **call, error_type="timeout") == 1
    assert total(samples, "bifrost_mcp_client_operation_duration_seconds_sum", **call) == pytest.approx(30.12)
    assert total(samples, "bifrost_mcp_cost_total", **call) == pytest.approx(0.25)


def test_settle_queue_depth_and_oldest_age(monkeypatch):
    rows: queue.Queue = queue.Queue()
    rows.put({"created_at": timezone.now() - timedelta(seconds=30)})
    rows.put({"created_at": timezone.now()})
    monkeypatch.setattr(writer, "_queue", rows)
    monkeypatch.setattr(writer, "_pending", 2)
    metrics.sample()
    assert metrics.SETTLE_QUEUE._value.get() == 2
    assert 29 <= metrics.SETTLE_AGE._value.get() < 60
    monkeypatch.setattr(writer, "_queue", queue.Queue())
    monkeypatch.setattr(writer, "_pending", 0)
    metrics.sample()
    assert metrics.SETTLE_AGE._value.get() == 0


def test_a_full_buffer_drops_and_counts(monkeypatch):
    before = metrics.DROPPED._value.get()
    monkeypatch.setattr(metrics, "MAX_PENDING", 0)
    metrics.refusal("model_blocked", (), None, method="chat_completion")
    metrics.drain()
    assert metrics.DROPPED._value.get() == before + 1


# --- two gunicorn workers --------------------------------------------------------------------------


def worker_sums(directory: Path, name: str) -> dict[str, float]:
    """Per worker file (``counter_<pid>.db``): the sum of ``name``'s values in it."""
    sums = {}
    for path in directory.glob("counter_*.db"):
        mapped = MmapedDict(str(path), read_mode=True)
        try:
            sums[path.name] = sum(v for key, v, _ in mapped.read_all_values() if f'"{name}"' in key)
        finally:
            mapped.close()
    return sums


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_two_workers_summed_after_openai_sdk_traffic(gateways, mock, providers, tmp_path):
    vk, value = virtual_key_create(name="metrics-live", provider_configs=ALL_OPENAI)
    limited, limited_value = virtual_key_create(
        name="metrics-live-limited",
        provider_configs=ALL_OPENAI,
        rate_limit={"request_max_limit": 1, "request_reset_duration": "1h"},
    )
    data_dir = tmp_path / "data"
    # Two threads a worker accept at most four connections each (GUNICORN_WORKER_CONNECTIONS is
    # twice the threads): eight slow requests at once must land on both workers.
    gateway = gateways(workers=2, BIFROST_DATA_DIR=str(data_dir), GUNICORN_THREADS="2")

    def sdk(key: str) -> openai.OpenAI:
        # No keep-alive: every request opens its own connection, so both workers take some.
        return openai.OpenAI(
            api_key=key, base_url=f"{gateway.url}/v1", max_retries=0, default_headers={"Connection": "close"}
        )

    client = sdk(value)
    count = 24
    for index in range(count):
        if index % 3 == 0:
            stream = client.chat.completions.create(
                model="openai/gpt-4o-mini",
                messages=MESSAGES,
                max_tokens=4,
                stream=True,
                stream_options={"include_usage": True},
            )
            assert [chunk for chunk in stream]
        else:
            answer = client.chat.completions.create(model="openai/gpt-4o-mini", messages=MESSAGES, max_tokens=4)
            assert answer.usage.completion_tokens == 4
    slow = "openai/gpt-4o-mini-slow-400"
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: sdk(value).chat.completions.create(model=slow, messages=MESSAGES), range(8)))
    assert all(answer.choices for answer in answers)
    limited_client = sdk(limited_value)
    limited_client.chat.completions.create(model="openai/gpt-4o-mini", messages=MESSAGES, max_tokens=4)
    with pytest.raises(openai.RateLimitError):
        limited_client.chat.completions.create(model="openai/gpt-4o-mini", messages=MESSAGES, max_tokens=4)

    mine = {"virtual_key_name": "metrics-live", "model": "gpt-4o-mini"}
    limited_labels = {"virtual_key_id": str(limited.pk), "virtual_key_name": "metrics-live-limited"}
    refusal = {"type": "request_limited", "level": "virtual_key", **limited_labels}

    def scraped() -> dict | None:
        text = urllib3.request("GET", f"{gateway.url}/metrics", timeout=10).data.decode()
        samples = parse(text)
        # Each worker drains its figures once a second: wait for the last request's (the refusal,
        # perhaps in the other worker) as well as the rest.
        done = (
            total(samples, "bifrost_success_requests_total", virtual_key_name="metrics-live") == count + 8
            and total(samples, "bifrost_governance_refusals_total", **refusal) >= 1
        )
        return samples if done else None

    samples = wait_for(scraped, timeout=15, interval=0.3)
    assert samples, "the workers' figures never added up to the traffic sent"
    # Both workers served (each wrote its own file), and the scrape summed them.
    (directory,) = (data_dir / "metrics").iterdir()
    per_worker = worker_sums(directory, "bifrost_success_requests_total")
    assert sum(1 for value in per_worker.values() if value > 0) == 2, per_worker
    assert sum(per_worker.values()) == total(samples, "bifrost_success_requests_total")  # the scrape is their sum
    assert total(samples, "bifrost_upstream_requests_total", **mine, status_class="2xx") == count
    assert total(samples, "bifrost_input_tokens_total", **mine) == count * PROMPT_TOKENS
    assert total(samples, "bifrost_output_tokens_total", **mine) == count * 4
    assert total(samples, "bifrost_stream_first_token_latency_seconds_count", **mine) == count // 3
    assert total(samples, "bifrost_governance_refusals_total", **refusal) == 1
    assert total(samples, "bifrost_governance_limit_refusals_total", level="virtual_key", kind="rate_limit") == 1
    backend = primary_counters().name
    assert total(samples, "bifrost_governance_counter_backend", backend=backend) >= 1
    assert total(samples, "bifrost_governance_counter_backend_configured", backend=backend) == 1
    assert total(samples, "bifrost_governance_settle_queue_depth") >= 0
    assert value not in urllib3.request("GET", f"{gateway.url}/metrics", timeout=10).data.decode()
