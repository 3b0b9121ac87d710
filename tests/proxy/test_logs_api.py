"""Request ids, refusal entries, ``/api/logs``, ``/api/logs/stats`` and the self-service usage
endpoint, over traffic sent through the proxy."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from governance.metering import rollups
from governance.models import RequestContent, UsageRecord
from governance.services import virtual_key_create, virtual_key_update
from tests.proxy.conftest import make_setup

pytestmark = pytest.mark.django_db(transaction=True)
CHAT = "/v1/chat/completions"


def chat(model: str = "openai/gpt-4o-mini", **extra) -> dict:
    return {"model": model, "messages": [{"role": "user", "content": "hi"}], **extra}


@pytest.fixture
def world(mock, price):
    price("gpt-4o-mini", input="0.00000015", output="0.0000006")
    price("gpt-4o", input="0.0000025", output="0.00001")
    s = make_setup(mock.url)
    poor, poor_value = virtual_key_create(
        name="poor",
        provider_configs=[{"provider": "openai", "weight": 1, "allowed_models": ["*"], "key_ids": ["*"]}],
        budgets=[{"max_limit": "0.0000001", "reset_duration": "1d"}],
    )
    return s, poor, poor_value


def test_a_sane_client_request_id_is_kept_answered_recorded_and_sent_upstream(call, world, mock):
    s, _, _ = world
    answer = call(CHAT, chat(), {"x-bf-vk": s.value, "x-request-id": "trace-42.a:b"})
    assert answer.status == 200 and answer.headers["x-request-id"] == "trace-42.a:b"
    assert mock.stats()["last_request"]["headers"].get("x-request-id") == "trace-42.a:b"
    assert UsageRecord.objects.get(virtual_key=s.vk).http_request_id == "trace-42.a:b"


@pytest.mark.parametrize("given", ["", "has space", "x" * 129, 'quote"d', "-leading-dash"])
def test_an_odd_client_request_id_is_replaced_by_a_time_ordered_one(call, world, given):
    s, _, _ = world
    answer = call(CHAT, chat(), {"x-bf-vk": s.value, "x-request-id": given})
    rid = answer.headers["x-request-id"]
    assert rid != given and len(rid) == 36 and rid[14] == "7"  # a UUIDv7
    assert UsageRecord.objects.get(virtual_key=s.vk).http_request_id == rid


def test_errors_answered_before_routing_carry_a_request_id_too(call):
    answer = call("/v1/nowhere", chat(), {"x-request-id": "rid-1"})
    assert answer.status == 404 and answer.headers["x-request-id"] == "rid-1"


def test_log_lines_of_a_request_carry_its_id(call, world, caplog):
    s, _, _ = world
    from bifrost_site.logging import JsonFormatter

    caplog.set_level(logging.INFO, logger="bifrost.proxy")
    # A fallback to a provider that is not configured is skipped with a log line.
    call(
        CHAT,
        chat(fallbacks=["nowhere/x"], model="openai/gpt-4o-fail-500"),
        {
            "x-bf-vk": s.value,
            "x-request-id": "rid-logged",
        },
    )
    lines = [JsonFormatter().format(r) for r in caplog.records if r.name == "bifrost.proxy"]
    assert lines and all('"request_id": "rid-logged"' in line for line in lines)


def test_refusals_are_ledger_entries_with_the_reason_and_the_limit(call, world, mock):
    s, poor, poor_value = world
    answer = call(CHAT, chat(), {"x-bf-vk": poor_value, "x-request-id": "refused-1"})
    assert answer.status == 402
    row = UsageRecord.objects.get(http_request_id="refused-1")
    budget = poor.budgets.get()
    assert (row.status_code, row.error_type, row.upstream_reached, row.cost) == (402, "budget_exceeded", False, 0)
    assert row.refused_by == f"virtual_key:budget:{budget.pk}"
    assert row.virtual_key_id == poor.pk and "budget exceeded" in row.error_message.lower()
    assert mock.stats()["by_model"] == {}


def test_unauthenticated_refusals_are_recorded_at_a_bounded_rate(call, world, settings):
    settings.LEDGER_ANONYMOUS_REFUSALS_PER_SECOND = 3
    headers = {"x-bf-vk": "sk-bf-nope", "x-request-id": "anonymous"}
    statuses = [call(CHAT, chat(), headers).status for _ in range(10)]
    assert statuses == [401] * 10
    recorded = UsageRecord.objects.refusals().filter(error_type="virtual_key_not_found", http_request_id="anonymous")
    assert 3 <= recorded.count() <= 6  # 3 a second: the ten calls may straddle a second


def test_logs_search_finds_a_refused_request_by_its_request_id(call, world, alice_api):
    s, poor, poor_value = world
    call(CHAT, chat(), {"x-bf-vk": s.value})
    call(CHAT, chat(), {"x-bf-vk": poor_value, "x-request-id": "why-failing"})
    response = alice_api.get("/api/logs", {"request_id": "why-failing"})
    assert response.status_code == 200
    body = response.json()
    assert body["pagination"]["total_count"] == 1 and body["has_logs"] is True
    (log,) = body["logs"]
    assert (log["status"], log["status_code"], log["virtual_key_name"]) == ("refused", 402, "poor")
    assert log["error_details"]["type"] == "budget_exceeded"
    assert log["error_details"]["refused_by"] == [
        {"level": "virtual_key", "kind": "budget", "id": str(poor.budgets.get().pk)}
    ]
    assert poor_value not in response.content.decode() and s.value not in response.content.decode()


def test_logs_filters_sort_and_page(call, world, alice_api):
    s, poor, poor_value = world
    for tokens in (5, 10, 20):
        assert call(CHAT, chat(max_tokens=tokens), {"x-bf-vk": s.value}).status == 200
    call(CHAT, chat(model="openai/gpt-4o-fail-500"), {"x-bf-vk": s.value})
    call(CHAT, chat(), {"x-bf-vk": poor_value})
    mine = {"virtual_key_ids": f"{s.vk.pk},{poor.pk}"}  # rows of earlier tests may still arrive
    page = alice_api.get("/api/logs", {**mine, "status": "success", "sort_by": "tokens", "order": "asc", "limit": 2})
    body = page.json()
    assert body["pagination"]["total_count"] == 3
    assert [log["token_usage"]["completion_tokens"] for log in body["logs"]] == [5, 10]
    errors = alice_api.get("/api/logs", {**mine, "status": "error,refused"}).json()
    assert sorted(log["status_code"] for log in errors["logs"]) == [402, 500]
    assert errors["logs"][0]["selected_key_name"] in ("main", None)
    vk_only = alice_api.get("/api/logs", {"virtual_key_ids": str(s.vk.pk), "min_tokens": 20}).json()
    expected = UsageRecord.objects.filter(virtual_key=s.vk, total_tokens__gte=20)
    assert {log["id"] for log in vk_only["logs"]} == {str(r.request_id) for r in expected}
    assert 1 <= len(vk_only["logs"]) < 4


@pytest.mark.parametrize(
    ("params", "named"),
    [
        ({"limit": "1001"}, "limit"),
        ({"limit": "0"}, "limit"),
        ({"offset": "-1"}, "offset"),
        ({"sort_by": "name"}, "sort_by"),
        ({"order": "up"}, "order"),
        ({"status": "ok"}, "status"),
        ({"virtual_key_ids": "nope"}, "virtual_key_ids"),
        ({"start_time": "yesterday"}, "start_time"),
        ({"min_cost": "NaN"}, "min_cost"),
        ({"start_time": "2026-01-02T00:00:00Z", "end_time": "2026-01-01T00:00:00Z"}, "end_time"),
        ({"content_search": "hello"}, "content_search"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_bad_log_queries_are_400_naming_the_parameter(alice_api, params, named):
    response = alice_api.get("/api/logs", params)
    assert response.status_code == 400
    assert named in response.json()["error"]["message"]


def test_logs_need_a_staff_credential(anon_api, world):
    assert anon_api.get("/api/logs").status_code == 401
    assert anon_api.get("/api/logs/stats").status_code == 401


def test_stats_totals_and_histogram_match_the_ledger(call, world, alice_api):
    s, poor, poor_value = world
    for _ in range(3):
        call(CHAT, chat(), {"x-bf-vk": s.value})
    call(CHAT, chat(model="openai/gpt-4o-fail-500"), {"x-bf-vk": s.value})
    call(CHAT, chat(), {"x-bf-vk": poor_value})
    start = (datetime.now(UTC) - timedelta(hours=3)).replace(microsecond=0)
    mine = {"virtual_key_ids": f"{s.vk.pk},{poor.pk}"}  # rows of earlier tests may still arrive
    body = alice_api.get("/api/logs/stats", {**mine, "start_time": start.isoformat()}).json()
    rows = list(UsageRecord.objects.filter(virtual_key__in=[s.vk, poor]))
    assert body["total_requests"] == 5 == len(rows)
    assert (body["success_count"], body["error_count"], body["refused_count"]) == (3, 1, 1)
    assert body["success_rate"] == 60.0
    assert Decimal(body["total_cost_exact"]) == sum(r.cost for r in rows) > 0
    assert body["total_tokens"] == sum(r.total_tokens for r in rows)
    assert body["histogram"]["bucket_size_seconds"] == 3600
    assert sum(b["requests"] for b in body["histogram"]["buckets"]) == 5
    only_vk = alice_api.get("/api/logs/stats", {"virtual_key_ids": str(s.vk.pk), "status": "success"}).json()
    assert only_vk["total_requests"] == 3
    # A page's total over a range is counted from the rollups: the same figure as the ledger's.
    for status, expected in (("success", 3), ("error", 1), ("refused", 1), ("error,refused", 2)):
        query = {**mine, "start_time": start.isoformat(), "status": status, "limit": 1}
        page = alice_api.get("/api/logs", query).json()
        assert page["pagination"]["total_count"] == expected, status
    assert rollups.differences() == []


def test_a_key_holder_reads_its_own_daily_usage_per_model(call, world, anon_api):
    s, _, poor_value = world
    call(CHAT, chat(), {"x-bf-vk": s.value})
    call(CHAT, chat(model="openai/gpt-4o"), {"x-bf-vk": s.value})
    call(CHAT, chat(), {"x-bf-vk": poor_value})  # another key's: not shown
    response = anon_api.get("/api/governance/virtual-keys/usage", HTTP_X_BF_VK=s.value)
    assert response.status_code == 200
    body = response.json()
    assert body["virtual_key_name"] == "app" and len(body["days"]) == 30
    today = body["days"][-1]
    assert today["date"] == datetime.now(UTC).date().isoformat() and today["requests"] == 2
    assert {m["model"] for m in today["models"]} == {"gpt-4o-mini", "gpt-4o"}
    ledger = UsageRecord.objects.filter(virtual_key=s.vk)
    assert Decimal(str(body["totals"]["cost"])) == pytest.approx(sum(r.cost for r in ledger))
    assert body["totals"]["total_tokens"] == sum(r.total_tokens for r in ledger)


@pytest.mark.parametrize(
    ("params", "status", "named"),
    [
        ({"start_date": "2026-13-01"}, 400, "start_date"),
        ({"start_date": "2020-01-01", "end_date": "2026-01-01"}, 400, "start_date"),
        ({"start_date": "2026-02-01", "end_date": "2026-01-01"}, 400, "start_date"),
        ({"page": "2"}, 400, "page"),
    ],
)
def test_bad_usage_ranges_are_400(world, anon_api, params, status, named):
    s, _, _ = world
    response = anon_api.get("/api/governance/virtual-keys/usage", params, HTTP_X_BF_VK=s.value)
    assert response.status_code == status and named in response.json()["error"]["message"]


def test_the_usage_endpoint_needs_the_key(anon_api, world):
    assert anon_api.get("/api/governance/virtual-keys/usage").status_code == 401
    response = anon_api.get("/api/governance/virtual-keys/usage", HTTP_X_BF_VK="sk-bf-nope")
    assert response.status_code == 401


def test_a_key_blocked_by_its_allow_list_leaves_a_model_blocked_entry(call, world):
    s, _, _ = world
    virtual_key_update(
        vk=s.vk,
        provider_configs=[{"provider": "openai", "weight": 1, "allowed_models": ["gpt-4o-mini"], "key_ids": ["*"]}],
    )
    assert call(CHAT, chat(model="openai/gpt-4o"), {"x-bf-vk": s.value}).status == 403
    row = UsageRecord.objects.refusals().get(virtual_key=s.vk)
    assert (row.error_type, row.model, row.fallback_index) == ("model_blocked", "gpt-4o", 0)


def test_without_content_logging_no_body_is_stored_and_content_search_says_why(call, world, alice_api):
    s, _, _ = world
    call(CHAT, chat(), {"x-bf-vk": s.value})
    assert not RequestContent.objects.exists()
    response = alice_api.get("/api/logs", {"content_search": "hi"})
    assert response.status_code == 400 and "content logging is off" in response.json()["error"]["message"]


def test_a_key_with_log_content_has_its_bodies_stored_and_searchable(call, world, alice_api, settings):
    s, _, _ = world
    settings.CONTENT_MAX_BYTES = 4096
    virtual_key_update(vk=s.vk, log_content=True)
    body = {"model": "openai/gpt-4o-mini", "messages": [{"role": "user", "content": "purple elephant"}]}
    assert call(CHAT, body, {"x-bf-vk": s.value, "x-request-id": "with-content"}).status == 200
    streamed = dict(body, stream=True, messages=[{"role": "user", "content": "green giraffe"}])
    assert call(CHAT, streamed, {"x-bf-vk": s.value}).status == 200
    stored = RequestContent.objects.get(request_id=UsageRecord.objects.get(http_request_id="with-content").request_id)
    assert "purple elephant" in stored.request_body and '"choices"' in stored.response_body
    assert s.value not in stored.request_body + stored.response_body  # bodies only: never the key
    found = alice_api.get("/api/logs", {"content_search": "elephant"}).json()
    assert [log["request_id"] for log in found["logs"]] == ["with-content"]
    assert "purple elephant" in found["logs"][0]["content"]["request"]
    giraffe = alice_api.get("/api/logs", {"content_search": "giraffe"}).json()["logs"]
    assert len(giraffe) == 1 and "data:" in giraffe[0]["content"]["response"]


def test_stored_bodies_are_cut_at_the_cap(call, world, settings):
    s, _, _ = world
    settings.CONTENT_LOGGING = True
    settings.CONTENT_MAX_BYTES = 64
    long_text = "é" * 200  # two bytes a character: the cut never splits one
    assert call(CHAT, chat(messages=[{"role": "user", "content": long_text}]), {"x-bf-vk": s.value}).status == 200
    stored = RequestContent.objects.get(request_id=UsageRecord.objects.get(virtual_key=s.vk).request_id)
    assert stored.truncated and len(stored.request_body.encode()) <= 64 and len(stored.response_body.encode()) <= 64


def test_each_entry_breaks_its_cost_down_exactly(call, world, alice_api):
    s, _, _ = world
    assert call(CHAT, chat(max_tokens=8), {"x-bf-vk": s.value, "x-request-id": "costed"}).status == 200
    row = UsageRecord.objects.get(http_request_id="costed")
    assert row.input_cost == row.prompt_tokens * Decimal("0.00000015")
    assert row.output_cost == row.completion_tokens * Decimal("0.0000006") and row.completion_tokens == 8
    (log,) = alice_api.get("/api/logs", {"request_id": "costed"}).json()["logs"]
    details = log["cost_details"]
    assert Decimal(details["input_tokens_cost"]) + Decimal(details["output_tokens_cost"]) == row.cost
    assert Decimal(details["request_cost"]) == 0 and details["price_source"] == "catalog:openai/gpt-4o-mini"
    # Exact and fixed-point, as a person reads money: never ``1.500E-7`` or ``0E-10``.
    assert all(
        "E" not in details[part] for part in ("input_tokens_cost", "output_tokens_cost", "request_cost", "total_cost")
    )
