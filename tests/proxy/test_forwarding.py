"""Forwarding in this process: routing, fallbacks, faults, headers, usage rows, hot-path queries."""

from __future__ import annotations

import json
import time
from decimal import Decimal
from unittest.mock import patch

import pytest

from governance.models import ModelPrice, UsageRecord
from governance.services import provider_create, provider_key_create, virtual_key_update
from proxy import bodies, handler
from proxy.wsgi import application
from tests.proxy.conftest import make_setup, wsgi_environ

pytestmark = pytest.mark.django_db

CHAT = "/v1/chat/completions"


def chat(model: str, **extra) -> dict:
    return {"model": model, "messages": [{"role": "user", "content": "x" * 40}], "max_tokens": 3, **extra}


def test_json_answer_carries_extra_fields_and_writes_one_priced_usage_row(call, setup):
    ModelPrice.objects.create(
        provider="openai",
        model="gpt-4o-mini",
        input_cost_per_token=Decimal("0.001"),
        output_cost_per_token=Decimal("0.002"),
    )
    answer = call(CHAT, chat("gpt-4o-mini"), {"x-bf-vk": setup.value})
    assert answer.status == 200
    body = answer.json()
    assert body["usage"] == {
        "prompt_tokens": 10,
        "completion_tokens": 3,
        "total_tokens": 13,
        "prompt_tokens_details": {"cached_tokens": 0},
    }
    extra = body["extra_fields"]
    assert extra["provider"] == "openai" and extra["request_type"] == "chat_completion"
    assert extra["original_model_requested"] == "gpt-4o-mini" and extra["resolved_model_used"] == "gpt-4o-mini"
    assert isinstance(extra["latency"], int)
    row = UsageRecord.objects.get()
    assert (row.virtual_key_id, row.provider, row.model, row.status_code) == (setup.vk.pk, "openai", "gpt-4o-mini", 200)
    assert (row.prompt_tokens, row.completion_tokens, row.total_tokens) == (10, 3, 13)
    assert row.provider_key_id == setup.openai_key.pk
    assert row.cost == Decimal("0.016") and row.priced and not row.streamed


def test_a_large_json_answer_is_sent_in_slices_with_extra_fields_and_its_usage_read_from_its_end(
    call, setup, monkeypatch
):
    """Past ``LARGE_ANSWER_BYTES`` the answer is not parsed whole: its usage comes from its end and
    ``extra_fields`` follows it as a tail, so the bytes are held once (here with small limits)."""
    monkeypatch.setattr(handler, "LARGE_ANSWER_BYTES", 64 * 1024)
    monkeypatch.setattr(bodies, "SLICE_BYTES", 50_000)
    headers = {"x-bf-vk": setup.value, "x-mock-answer-bytes": "300000"}
    answer = call(CHAT, chat("gpt-4o-mini"), headers)
    assert answer.status == 200
    body = answer.json()
    assert body["choices"][0]["message"]["content"] == "m" * 300_000
    assert body["usage"]["total_tokens"] == 13
    assert body["extra_fields"]["provider"] == "openai" and list(body)[-1] == "extra_fields"
    row = UsageRecord.objects.get()
    assert (row.prompt_tokens, row.completion_tokens, row.total_tokens, row.estimated) == (10, 3, 13, False)

    # No usage at its end: estimated (never free), and the answer still reaches the client whole.
    answer = call(CHAT, chat("gpt-4o-mini-no-usage"), headers)
    assert answer.status == 200 and "usage" not in answer.json()
    assert answer.json()["choices"][0]["message"]["content"] == "m" * 300_000
    row = UsageRecord.objects.get(model="gpt-4o-mini-no-usage")
    assert row.estimated and row.completion_tokens == 3  # capped at max_tokens


def _served(setup, model: str, extra_headers: dict[str, str] | None = None):
    """``proxy.wsgi.application`` called as a server calls it: (what it returned, its status)."""
    environ = wsgi_environ(CHAT, json.dumps(chat(model)).encode(), {"x-bf-vk": setup.value, **(extra_headers or {})})
    status = []
    with patch("proxy.bodies.db.close_old_connections"):
        returned = application(environ, lambda line, headers: status.append(line))
    return returned, status[0]


def test_a_one_piece_answer_is_handed_over_as_a_list_already_accounted(setup, monkeypatch):
    """A JSON answer the server writes in one call (granian: ``response_bytes``) is a one-item list
    whose usage row is written before the server sends a byte; one sent in slices stays a body that
    accounts when the server closes it."""
    returned, status = _served(setup, "gpt-4o-mini")
    assert status == "200 OK" and isinstance(returned, list) and len(returned) == 1
    assert json.loads(returned[0])["usage"]["total_tokens"] == 13
    row = UsageRecord.objects.get()
    assert (row.status_code, row.total_tokens) == (200, 13)

    monkeypatch.setattr(bodies, "SLICE_BYTES", 50_000)
    returned, status = _served(setup, "gpt-4o-mini", {"x-mock-answer-bytes": "120000"})
    assert status == "200 OK" and isinstance(returned, bodies.Body)
    assert UsageRecord.objects.count() == 1  # not yet: the server has not closed it
    with patch("proxy.bodies.db.close_old_connections"):
        assert len(b"".join(returned)) > 120_000
        returned.close()
    assert UsageRecord.objects.count() == 2


def test_accounting_that_fails_as_the_answer_is_handed_over_still_answers(setup, monkeypatch, caplog):
    def broken(*args, **kwargs):
        raise RuntimeError("accounting broke")

    monkeypatch.setattr(bodies.accounting, "finish", broken)
    returned, status = _served(setup, "gpt-4o-mini")
    assert status == "200 OK" and json.loads(returned[0])["usage"]["total_tokens"] == 13
    assert "accounting failed after the upstream answered" in caplog.text
    assert not UsageRecord.objects.exists()


def test_extra_fields_tail_leaves_what_is_not_an_object_or_has_the_member_already():
    extra = {"provider": "openai"}
    assert handler._extra_fields_tail(b'{"a": 1}  \n', extra) == (7, b',"extra_fields":{"provider":"openai"}}')
    assert handler._extra_fields_tail(b"[1, 2]", extra) == (6, b"")
    held = b'{"a": 1, "extra_fields": {"x": 1}}'
    assert handler._extra_fields_tail(held, extra) == (len(held), b"")
    quoted = b'{"a": "say \\"extra_fields\\": no"}'
    assert handler._extra_fields_tail(quoted, extra)[1].startswith(b',"extra_fields"')


def test_unpriced_model_is_recorded_with_priced_false(call, setup):
    call(CHAT, chat("no-such-priced-model"), {"x-bf-vk": setup.value})
    row = UsageRecord.objects.get()
    assert row.cost == 0 and row.priced is False


def test_cached_vk_costs_no_query_but_the_ledger_insert(call, setup, django_assert_num_queries):
    # VK (5, its MCP configs included) + providers and keys (2) + their governance and the model
    # configs (2) + routing rules (1) + prices and pricing overrides (2) + the usage row and its rollups
    with django_assert_num_queries(14):
        assert call(CHAT, chat("gpt-4o-mini"), {"x-bf-vk": setup.value}).status == 200
    with django_assert_num_queries(2):  # the usage row and its rollups only
        assert call(CHAT, chat("gpt-4o-mini"), {"x-bf-vk": setup.value}).status == 200


def test_rejected_requests_cost_no_query_once_cached(call, setup, django_assert_num_queries):
    call(CHAT, chat("gpt-4o-mini"), {"x-bf-vk": setup.value})
    virtual_key_update(
        vk=setup.vk,
        provider_configs=[{"provider": "openai", "weight": 1, "allowed_models": ["gpt-4o-mini"], "key_ids": ["*"]}],
    )
    call(CHAT, chat("gpt-4o-mini"), {"x-bf-vk": setup.value})
    with django_assert_num_queries(2):  # its ledger entry (the refusal) and its rollups, nothing read
        assert call(CHAT, chat("openai/gpt-4o"), {"x-bf-vk": setup.value}).status == 403
    refusal = UsageRecord.objects.get(status_code=403)
    assert (refusal.error_type, refusal.upstream_reached, refusal.cost) == ("model_blocked", False, 0)
    assert (refusal.provider, refusal.model, refusal.virtual_key_id) == ("openai", "gpt-4o", setup.vk.id)


def test_prefix_counts_only_for_a_configured_provider(call, mock):
    s = make_setup(mock.url)
    router = provider_create(name="openrouter", base_url=mock.url)
    provider_key_create(provider=router, name="k", value="sk-or-secret")
    virtual_key_update(
        vk=s.vk, provider_configs=[{"provider": "openrouter", "weight": 1, "allowed_models": ["*"], "key_ids": ["*"]}]
    )
    answer = call(CHAT, chat("openrouter/openai/gpt-4o"), {"x-bf-vk": s.value})
    assert answer.json()["extra_fields"]["provider"] == "openrouter"
    assert answer.json()["extra_fields"]["resolved_model_used"] == "openai/gpt-4o"
    assert mock.stats()["by_model"] == {"openai/gpt-4o": 1}


def test_unprefixed_model_without_weighted_route_is_400_naming_it(call, mock):
    s = make_setup(
        mock.url, provider_configs=[{"provider": "openai", "weight": None, "allowed_models": ["*"], "key_ids": ["*"]}]
    )
    answer = call(CHAT, chat("mystery-model"), {"x-bf-vk": s.value})
    assert answer.status == 400 and "mystery-model" in answer.json()["error"]["message"]


def test_weighted_routing_spreads_over_configs_by_weight(call, mock):
    s = make_setup(mock.url)
    other = provider_create(name="azure", provider_type="openai", base_url=mock.url)
    provider_key_create(provider=other, name="k", value="sk-az-secret")
    virtual_key_update(
        vk=s.vk,
        provider_configs=[
            {"provider": "openai", "weight": 1, "allowed_models": ["*"], "key_ids": ["*"]},
            {"provider": "azure", "weight": 1, "allowed_models": ["*"], "key_ids": ["*"]},
        ],
    )
    seen = {call(CHAT, chat("gpt-4o"), {"x-bf-vk": s.value}).json()["extra_fields"]["provider"] for _ in range(30)}
    assert seen == {"openai", "azure"}


def test_fallback_is_tried_on_5xx_and_both_attempts_are_recorded(call, setup):
    body = chat("openai/fail-500", fallbacks=["openai/gpt-4o-mini"])
    answer = call(CHAT, body, {"x-bf-vk": setup.value})
    assert answer.status == 200
    assert answer.json()["extra_fields"]["resolved_model_used"] == "gpt-4o-mini"
    rows = sorted(UsageRecord.objects.values_list("model", "status_code", "completion_tokens"))
    assert rows == [("fail-500", 500, 0), ("gpt-4o-mini", 200, 3)]


def test_fallback_on_429_and_weighted_configs_become_fallbacks(call, mock):
    s = make_setup(mock.url)
    answer = call(CHAT, chat("openai/fail-429", fallbacks=["openai/gpt-4o"]), {"x-bf-vk": s.value})
    assert answer.status == 200 and mock.stats()["by_model"] == {"fail-429": 1, "gpt-4o": 1}


def test_when_every_attempt_fails_the_primary_error_is_returned(call, setup):
    answer = call(CHAT, chat("openai/fail-429", fallbacks=["openai/fail-500"]), {"x-bf-vk": setup.value})
    assert answer.status == 429
    assert answer.json()["error"]["message"] == "mock upstream failure 429"
    assert answer.headers.get("retry-after") == "1"


def test_client_error_from_upstream_is_not_retried(call, setup, mock):
    answer = call(CHAT, chat("openai/fail-400", fallbacks=["openai/gpt-4o"]), {"x-bf-vk": setup.value})
    assert answer.status == 400 and mock.stats()["by_model"] == {"fail-400": 1}


def test_fallback_to_a_blocked_provider_is_skipped(call, mock):
    s = make_setup(
        mock.url, provider_configs=[{"provider": "openai", "weight": 1, "allowed_models": ["*"], "key_ids": ["*"]}]
    )
    answer = call(CHAT, chat("openai/fail-500", fallbacks=["anthropic/claude"]), {"x-bf-vk": s.value})
    assert answer.status == 500 and mock.stats()["by_path"].get("/v1/messages", 0) == 0


def test_upstream_down_is_502_quickly(call, mock):
    s = make_setup(mock.url)
    from governance.services import provider_update

    provider_update(provider=s.openai, base_url="http://127.0.0.1:9")
    started = time.monotonic()
    answer = call(CHAT, chat("openai/gpt-4o"), {"x-bf-vk": s.value})
    assert answer.status == 502 and time.monotonic() - started < 2
    assert "unreachable" in answer.json()["error"]["message"]
    assert UsageRecord.objects.get().status_code == 502


def test_hanging_upstream_is_504_within_the_provider_timeout(call, mock):
    s = make_setup(mock.url)
    from governance.services import provider_update

    provider_update(provider=s.openai, timeout_seconds=0.5)
    started = time.monotonic()
    answer = call(CHAT, chat("openai/hang"), {"x-bf-vk": s.value})
    assert answer.status == 504 and 0.4 < time.monotonic() - started < 2
    assert answer.json()["is_bifrost_error"] is False


def test_connection_reset_is_502_then_fallback(call, setup):
    answer = call(CHAT, chat("openai/reset", fallbacks=["openai/gpt-4o"]), {"x-bf-vk": setup.value})
    assert answer.status == 200


def test_vk_and_hop_by_hop_headers_never_reach_the_upstream(call, setup):
    headers = {
        "Authorization": f"Bearer {setup.value}",
        "x-bf-vk": setup.value,
        "Connection": "keep-alive, x-private",
        "x-private": "1",
        "Keep-Alive": "timeout=5",
        "Proxy-Authorization": "Basic abc",
        "TE": "trailers",
        "Upgrade": "h2c",
        "Cookie": "session=1",
        "OpenAI-Organization": "org-1",
    }
    echo = call(CHAT, chat("openai/echo"), headers).json()["echo"]
    sent = echo["headers"]
    for name in ("x-bf-vk", "keep-alive", "proxy-authorization", "te", "upgrade", "cookie", "x-private"):
        assert name not in sent
    assert sent["authorization"] == "Bearer sk-upstream-openai-secret"
    assert "openai-organization" not in sent  # billing is the operator's choice (provider extra_headers)
    assert setup.value not in str(echo)


def test_anthropic_route_sends_x_api_key_and_version(call, setup):
    answer = call("/anthropic/v1/messages", chat("echo"), {"x-api-key": setup.value})
    assert answer.status == 200
    record = UsageRecord.objects.get()
    assert record.provider == "anthropic" and record.request_type == "messages"


def test_openai_provider_on_anthropic_route_is_translated(call, setup, mock):
    answer = call("/anthropic/v1/messages", chat("openai/gpt-4o"), {"x-api-key": setup.value})
    assert answer.status == 200, answer.body
    assert answer.json()["type"] == "message" and answer.json()["content"][0]["type"] == "text"
    assert mock.stats()["by_path"]["/v1/chat/completions"] == 1
    record = UsageRecord.objects.get()
    assert (record.provider, record.model, record.request_type) == ("openai", "gpt-4o", "messages")


def test_embeddings_do_not_cross_formats(call, setup):
    body = {"model": "anthropic/claude-3-5-haiku-latest", "input": "hello"}
    answer = call("/v1/embeddings", body, {"x-bf-vk": setup.value})
    assert answer.status == 400 and "speaks the anthropic API" in answer.json()["error"]["message"]


@pytest.mark.parametrize(
    "raw, message",
    [
        (b"{not json", "Invalid JSON"),
        (b"[1, 2]", "request body must be a JSON object"),
        (b'{"messages": []}', "model is required"),
        (b'{"model": "gpt-4o", "fallbacks": "x"}', "fallbacks must be a list"),
    ],
)
def test_bad_bodies_are_400_naming_the_problem(call, setup, raw, message):
    answer = call(CHAT, raw, {"x-bf-vk": setup.value})
    assert answer.status == 400 and message in answer.json()["error"]["message"]


def test_unknown_route_is_404_json_and_wrong_method_405(call, setup):
    assert call("/v1/nothing", {}).status == 404
    answer = call(CHAT, None, method="GET")
    assert answer.status == 405 and answer.headers["allow"] == "POST"


def test_oversized_body_is_413(call, setup, settings):
    settings.MAX_REQUEST_BODY_BYTES = 2048
    answer = call(CHAT, chat("gpt-4o", pad="x" * 4096), {"x-bf-vk": setup.value})
    assert answer.status == 413


def test_models_list_is_filtered_to_the_vk(call, mock):
    s = make_setup(
        mock.url, provider_configs=[{"provider": "openai", "weight": 1, "allowed_models": ["gpt-4o"], "key_ids": ["*"]}]
    )
    answer = call("/v1/models", None, {"x-bf-vk": s.value}, method="GET")
    assert [m["id"] for m in answer.json()["data"]] == ["openai/gpt-4o"]


def test_embeddings_and_responses_usage_is_recorded(call, setup):
    call("/v1/embeddings", {"model": "openai/text-embedding-3-small", "input": "y" * 80}, {"x-bf-vk": setup.value})
    call(
        "/openai/v1/responses", {"model": "gpt-4o", "input": "z" * 40, "max_output_tokens": 5}, {"x-bf-vk": setup.value}
    )
    rows = dict(UsageRecord.objects.values_list("request_type", "total_tokens"))
    assert rows == {"embedding": 20, "responses": 15}
