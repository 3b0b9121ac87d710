"""Usage extraction from SSE streams, and the configuration snapshot (limits order, invalidation)."""

from __future__ import annotations

import json
import time

import pytest

from governance.metering import snapshot
from governance.services import customer_create, team_create, virtual_key_update
from proxy.usage import SseScanner, read_usage, usage_from_tail


def event(payload, name=None) -> bytes:
    return (f"event: {name}\n" if name else "").encode() + b"data: " + json.dumps(payload).encode() + b"\n\n"


def test_openai_usage_chunk_is_read_and_stripped_when_the_proxy_asked_for_it():
    scanner = SseScanner(strip_usage_chunk=True)
    content = event({"choices": [{"delta": {"content": "hi"}}], "usage": None})
    usage = event({"choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": 2, "total_tokens": 9}})
    out = scanner.feed(content + usage[:10]) + scanner.feed(usage[10:] + b"data: [DONE]\n\n") + scanner.flush()
    assert out == content + b"data: [DONE]\n\n"
    assert (scanner.usage.prompt_tokens, scanner.usage.completion_tokens, scanner.usage.total_tokens) == (7, 2, 9)


def test_openai_usage_chunk_is_kept_when_the_client_asked():
    scanner = SseScanner(strip_usage_chunk=False)
    usage = event({"choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": 1}})
    assert scanner.feed(usage) == usage


def test_anthropic_stream_usage_from_message_start_and_delta_with_cache_reads():
    scanner = SseScanner(strip_usage_chunk=False)
    start = {
        "type": "message_start",
        "message": {"usage": {"input_tokens": 5, "cache_read_input_tokens": 10, "output_tokens": 1}},
    }
    scanner.feed(event(start, "message_start"))
    scanner.feed(event({"type": "content_block_delta", "delta": {"text": "a"}}, "content_block_delta"))
    scanner.feed(event({"type": "message_delta", "usage": {"output_tokens": 12}}, "message_delta"))
    usage = scanner.usage
    assert (usage.prompt_tokens, usage.cached_tokens, usage.completion_tokens, usage.total_tokens) == (15, 10, 12, 27)
    assert scanner.content_events == 1


def test_crlf_streams_and_responses_api_usage():
    scanner = SseScanner(strip_usage_chunk=False)
    completed = {
        "type": "response.completed",
        "response": {"usage": {"input_tokens": 4, "output_tokens": 6, "input_tokens_details": {"cached_tokens": 2}}},
    }
    scanner.feed(event(completed).replace(b"\n", b"\r\n"))
    assert (scanner.usage.prompt_tokens, scanner.usage.cached_tokens, scanner.usage.completion_tokens) == (4, 2, 6)


def test_upstream_reported_cost_is_kept():
    assert str(read_usage({"prompt_tokens": 1, "completion_tokens": 1, "cost": 0.25}).upstream_cost) == "0.25"


@pytest.mark.django_db
def test_limits_for_lists_config_vk_team_customer_in_that_order(mock):
    from tests.proxy.conftest import make_setup

    customer = customer_create(
        name="acme",
        budgets=[{"max_limit": "100", "reset_duration": "1M"}],
        rate_limit={"request_max_limit": 100, "request_reset_duration": "1m"},
    )
    team = team_create(name="core", customer=customer, budgets=[{"max_limit": "50", "reset_duration": "1d"}])
    s = make_setup(
        mock.url,
        team=team,
        budgets=[{"max_limit": "10", "reset_duration": "1h"}],
        rate_limit={"token_max_limit": 1000, "token_reset_duration": "1h"},
    )
    virtual_key_update(
        vk=s.vk,
        team=team,
        budgets=None,
        provider_configs=[
            {
                "provider": "openai",
                "weight": 1,
                "allowed_models": ["*"],
                "key_ids": ["*"],
                "budgets": [{"max_limit": "5", "reset_duration": "1d"}],
                "rate_limit": {"request_max_limit": 3, "request_reset_duration": "1m"},
            }
        ],
    )
    snap = snapshot.virtual_key(s.value)
    budgets, limits = snap.limits_for("openai")
    assert [(b.entity, b.max_limit, b.reset_duration) for b in budgets] == [
        ("openai", 5, "1d"),
        ("VK", 10, "1h"),
        ("Team", 50, "1d"),
        ("Customer", 100, "1M"),
    ]
    assert [(r.entity, r.request_max_limit, r.token_max_limit) for r in limits] == [
        ("openai", 3, None),
        ("VK", None, 1000),
        ("Customer", 100, None),
    ]
    assert snap.team_id == str(team.pk) and snap.customer_id == str(customer.pk)
    assert snapshot.virtual_key(s.value).limits_for("anthropic")[0][0].entity == "VK"


@pytest.mark.django_db
def test_snapshot_is_cached_until_a_change_invalidates_it(mock, django_assert_num_queries):
    from tests.proxy.conftest import make_setup

    s = make_setup(mock.url)
    first = snapshot.virtual_key(s.value)
    with django_assert_num_queries(0):
        assert snapshot.virtual_key(s.value) is first
    virtual_key_update(vk=s.vk, name="renamed", provider_configs=[])
    assert snapshot.virtual_key(s.value).name == "renamed"
    assert snapshot.virtual_key("sk-bf-unknown") is None


@pytest.mark.django_db
def test_snapshot_expires_after_the_ttl(mock, settings):
    from tests.proxy.conftest import make_setup

    settings.GOVERNANCE_CONFIG_CACHE_SECONDS = 0.05
    s = make_setup(mock.url)
    first = snapshot.virtual_key(s.value)
    time.sleep(0.06)
    assert snapshot.virtual_key(s.value) is not first


def test_key_snapshot_repr_hides_the_secret():
    key = snapshot.KeySnapshot(id="1", name="k", value="sk-very-secret", models=(), weight=1.0, enabled=True)
    assert "sk-very-secret" not in repr(key)


def test_usage_from_tail_reads_the_last_usage_member_never_one_quoted_in_the_content():
    content = 'fake: {"usage": {"prompt_tokens": 999}}, "usage": {"prompt_tokens": 998}'  # quoted when dumped
    openai = {"choices": [{"message": {"content": content}}], "usage": {"prompt_tokens": 7, "completion_tokens": 2}}
    usage = usage_from_tail(json.dumps(openai).encode())
    assert (usage.prompt_tokens, usage.completion_tokens) == (7, 2)
    gemini = {"candidates": [{"text": content}], "usageMetadata": {"promptTokenCount": 5, "candidatesTokenCount": 4}}
    usage = usage_from_tail(json.dumps(gemini).encode())
    assert (usage.prompt_tokens, usage.completion_tokens) == (5, 4)
    assert usage_from_tail(json.dumps({"choices": [{"text": content}]}).encode()) is None
    assert usage_from_tail(b'{"usage": {"prompt_tokens": 1') is None  # cut off: no usage, the caller estimates
