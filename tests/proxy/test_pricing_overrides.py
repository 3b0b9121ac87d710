"""Pricing overrides on the proxy: what a request is charged and the price its ledger row names.

In this process through ``proxy.wsgi`` (``call``), against the mock upstream: a 40-character
prompt is 10 prompt tokens and ``max_tokens: 3`` gives 3 completion tokens.
"""

from __future__ import annotations

from decimal import Decimal
from types import SimpleNamespace

import pytest

from governance.metering import enforcement, snapshot
from governance.models import Budget, ModelPrice, UsageRecord
from governance.services import (
    pricing_override_create,
    pricing_override_delete,
    pricing_override_update,
    virtual_key_create,
)
from proxy import accounting
from proxy.usage import Usage, estimate_prompt_tokens
from tests.proxy.conftest import make_setup
from tests.proxy.conftest_enforcement import chat as chat_body
from tests.proxy.conftest_enforcement import post, wait_until

pytestmark = pytest.mark.django_db

CHAT = "/v1/chat/completions"
BUDGET = [{"max_limit": 100, "reset_duration": "1d"}]
LONG_CACHE = {"GOVERNANCE_CONFIG_CACHE_SECONDS": "300"}
ROUNDS = 12  # fresh connections per process: both workers of each serve some of them
EVERY_PROVIDER = [
    {"provider": "openai", "weight": 1.0, "allowed_models": ["*"], "key_ids": ["*"]},
    {"provider": "anthropic", "weight": None, "allowed_models": ["*"], "key_ids": ["*"]},
]


def chat(model: str, **extra) -> dict:
    return {"model": model, "messages": [{"role": "user", "content": "x" * 40}], "max_tokens": 3, **extra}


def catalog(model: str = "gpt-4o-mini", provider: str = "openai", cached: str | None = None) -> None:
    ModelPrice.objects.create(
        provider=provider,
        model=model,
        input_cost_per_token=Decimal("0.001"),
        output_cost_per_token=Decimal("0.002"),
        cached_input_cost_per_token=Decimal(cached) if cached else None,
    )


def override(pattern: str = "gpt-4o-mini", *, scope_kind: str = "global", match_type: str = "exact", **options):
    prices = {
        name: Decimal(options.pop(name))
        for name in ("input_cost_per_token", "output_cost_per_token", "cached_input_cost_per_token", "cost_per_request")
        if name in options
    }
    return pricing_override_create(
        name=options.pop("name", f"{scope_kind} {pattern}"),
        scope_kind=scope_kind,
        match_type=match_type,
        pattern=pattern,
        prices=prices,
        **options,
    )


def last_row() -> UsageRecord:
    return UsageRecord.objects.order_by("-id").first()


@pytest.fixture
def governed(mock):
    return make_setup(mock.url, budgets=BUDGET)


def test_catalog_price_is_recorded_as_the_catalog_row(call, setup):
    catalog("gpt-4o-mini")
    assert call(CHAT, chat("gpt-4o-mini-2024-07-18"), {"x-bf-vk": setup.value}).status == 200
    row = last_row()
    # The dated id is priced by the base model's row: the source names the row that priced it.
    assert (row.cost, row.price_source, row.priced) == (Decimal("0.016"), "catalog:openai/gpt-4o-mini", True)


def test_an_override_prices_the_request_and_the_ledger_names_it(call, governed):
    catalog("gpt-4o-mini")
    patch = override(input_cost_per_token="0.0001", output_cost_per_token="0.0002", cached_input_cost_per_token="0")
    answer = call(CHAT, chat("gpt-4o-mini"), {"x-bf-vk": governed.value})
    assert answer.status == 200, answer.body
    row = last_row()
    assert row.cost == Decimal("0.0016")  # 10 * 0.0001 + 3 * 0.0002
    assert row.price_source == f"override:{patch.pk}" and row.priced
    assert Budget.objects.get(virtual_key=governed.vk).current_usage == Decimal("0.0016")


def test_a_partial_override_keeps_the_catalog_for_the_fields_it_leaves_empty(call, setup):
    catalog("gpt-4o-mini-cached", cached="0.0005")
    patch = override("gpt-4o-mini-cached", output_cost_per_token="0.01")
    assert call(CHAT, chat("gpt-4o-mini-cached"), {"x-bf-vk": setup.value}).status == 200
    row = last_row()
    # 5 uncached at the catalog's input 0.001, 5 cached at the catalog's 0.0005, 3 output at 0.01.
    assert (row.prompt_tokens, row.cached_tokens) == (10, 5)
    assert row.cost == Decimal("0.0375")
    assert row.price_source == f"override:{patch.pk}+catalog:openai/gpt-4o-mini-cached"


def test_an_override_for_one_vk_halves_the_price_for_that_vk_only(call, setup):
    catalog("gpt-4o-mini")
    other, other_value = virtual_key_create(name="other", provider_configs=EVERY_PROVIDER)
    half = override(
        scope_kind="virtual_key",
        virtual_key=setup.vk,
        input_cost_per_token="0.0005",
        output_cost_per_token="0.001",
        cached_input_cost_per_token="0.0005",
    )
    assert call(CHAT, chat("gpt-4o-mini"), {"x-bf-vk": setup.value}).status == 200
    assert call(CHAT, chat("gpt-4o-mini"), {"x-bf-vk": other_value}).status == 200
    rows = {row.virtual_key_id: row for row in UsageRecord.objects.all()}
    assert (rows[setup.vk.pk].cost, rows[setup.vk.pk].price_source) == (Decimal("0.008"), f"override:{half.pk}")
    assert (rows[other.pk].cost, rows[other.pk].price_source) == (Decimal("0.016"), "catalog:openai/gpt-4o-mini")


def test_the_most_specific_scope_wins(call, setup):
    catalog("gpt-4o-mini")
    override(input_cost_per_token="0.1", name="global")
    override(scope_kind="provider", provider=setup.openai, input_cost_per_token="0.2", name="provider")
    key = override(scope_kind="provider_key", provider_key=setup.openai_key, input_cost_per_token="0.3", name="key")
    assert call(CHAT, chat("gpt-4o-mini"), {"x-bf-vk": setup.value}).status == 200
    assert last_row().price_source == f"override:{key.pk}+catalog:openai/gpt-4o-mini"
    assert last_row().cost == Decimal("3.006")  # 10 * 0.3 + 3 * 0.002 (the catalog's output price)
    override("gpt-?o-*", scope_kind="virtual_key", virtual_key=setup.vk, match_type="pattern", input_cost_per_token="0")
    assert call(CHAT, chat("gpt-4o-mini"), {"x-bf-vk": setup.value}).status == 200
    assert last_row().cost == Decimal("0.006")  # the VK's glob beats the provider key's exact match


def test_per_request_cost_is_added_on_success_and_reserved_by_admission(call, governed, monkeypatch):
    catalog("gpt-4o-mini")
    flat = override(cost_per_request="0.05")
    reserved = []
    admit = enforcement.admit

    def spy(**kwargs):
        reserved.append(kwargs["estimated_cost"])
        return admit(**kwargs)

    monkeypatch.setattr(enforcement, "admit", spy)
    assert call(CHAT, chat("gpt-4o-mini"), {"x-bf-vk": governed.value}).status == 200
    row = last_row()
    assert (row.cost, row.price_source) == (Decimal("0.066"), f"override:{flat.pk}+catalog:openai/gpt-4o-mini")
    # Worst case: the prompt estimate and the 3-token cap at the catalog's prices, plus the flat amount.
    estimate = estimate_prompt_tokens(chat("gpt-4o-mini"))
    assert reserved == [estimate * Decimal("0.001") + 3 * Decimal("0.002") + Decimal("0.05")]
    assert Budget.objects.get(virtual_key=governed.vk).current_usage == Decimal("0.066")


def test_a_failed_attempt_is_not_charged_the_per_request_cost(call, setup):
    override("fail-500", cost_per_request="0.05", input_cost_per_token="0", output_cost_per_token="0")
    catalog("gpt-4o-mini")
    answer = call(CHAT, chat("openai/fail-500", fallbacks=["openai/gpt-4o-mini"]), {"x-bf-vk": setup.value})
    assert answer.status == 200
    rows = {row.model: row for row in UsageRecord.objects.all()}
    assert rows["fail-500"].status_code == 500 and rows["fail-500"].cost == 0
    assert rows["gpt-4o-mini"].cost == Decimal("0.016")


def test_an_unpriced_model_priced_by_an_override_passes_a_budgeted_path(call, governed):
    refused = call(CHAT, chat("openai/selfhosted-llm"), {"x-bf-vk": governed.value})
    assert refused.status == 400 and refused.json()["type"] == "model_unpriced"
    priced = override(
        "selfhosted-*",
        scope_kind="virtual_key",
        virtual_key=governed.vk,
        match_type="wildcard",
        input_cost_per_token="0.00001",
        cost_per_request="0.001",
    )
    answer = call(CHAT, chat("openai/selfhosted-llm"), {"x-bf-vk": governed.value})
    assert answer.status == 200, answer.body
    row = last_row()
    # No catalog row: the output price the override leaves empty costs 0.
    assert (row.cost, row.priced, row.price_source) == (Decimal("0.0011"), True, f"override:{priced.pk}")
    assert Budget.objects.get(virtual_key=governed.vk).current_usage == Decimal("0.0011")


def test_a_change_applies_on_the_next_request(call, setup):
    catalog("gpt-4o-mini")
    headers = {"x-bf-vk": setup.value}
    assert call(CHAT, chat("gpt-4o-mini"), headers).status == 200
    assert last_row().cost == Decimal("0.016")  # the prices are cached now
    patch = override(input_cost_per_token="0", output_cost_per_token="0")
    assert call(CHAT, chat("gpt-4o-mini"), headers).status == 200
    # Every token price is the override's (the catalog row has no cached price to keep).
    assert (last_row().cost, last_row().price_source) == (Decimal("0"), f"override:{patch.pk}")
    pricing_override_update(override=patch, prices={"output_cost_per_token": Decimal("1")})
    assert call(CHAT, chat("gpt-4o-mini"), headers).status == 200
    # The whole patch was replaced: the input price is the catalog's again.
    assert (last_row().cost, last_row().price_source) == (
        Decimal("3.01"),
        f"override:{patch.pk}+catalog:openai/gpt-4o-mini",
    )
    pricing_override_delete(override=patch)
    assert call(CHAT, chat("gpt-4o-mini"), headers).status == 200
    assert (last_row().cost, last_row().price_source) == (Decimal("0.016"), "catalog:openai/gpt-4o-mini")


def test_request_types_narrow_an_override_and_chat_completion_covers_every_chat_format(call, setup):
    catalog("claude-x", provider="anthropic")
    chat_only = override("claude-x", request_types=["chat_completion"], input_cost_per_token="0.01")
    override("claude-x", request_types=["embedding"], input_cost_per_token="9")  # newer, but not for chat
    answer = call("/anthropic/v1/messages", chat("claude-x"), {"x-api-key": setup.value})
    assert answer.status == 200, answer.body
    row = last_row()
    assert row.request_type == "messages"
    assert (row.cost, row.price_source) == (Decimal("0.106"), f"override:{chat_only.pk}+catalog:anthropic/claude-x")


def test_an_override_wins_over_the_cost_the_upstream_reports(monkeypatch):
    recorded = []
    monkeypatch.setattr(accounting.writer, "record", recorded.append)
    resolved = SimpleNamespace(
        provider=SimpleNamespace(name="openrouter"),
        model="some-model",
        vk=None,
        key=SimpleNamespace(id="k"),
        route=SimpleNamespace(request_type="chat_completion"),
        stream=False,
        request=SimpleNamespace(request_id="req-1", log_content=False),
    )
    usage = Usage(prompt_tokens=10, completion_tokens=3, upstream_cost=Decimal("0.5"))
    catalog_price = snapshot.PriceSnapshot(Decimal("1"), Decimal("1"), None, source="catalog:openrouter/some-model")
    accounting.finish(accounting.Ticket(resolved, catalog_price), usage, 200, 5, streamed=False)
    forced = snapshot.PriceSnapshot(Decimal("0.01"), Decimal("0"), None, Decimal("0.2"), "override:x", True)
    accounting.finish(accounting.Ticket(resolved, forced), usage, 200, 5, streamed=False)
    assert [(r["cost"], r["price_source"]) for r in recorded] == [
        (Decimal("0.5"), "upstream"),
        (Decimal("0.30"), "override:x"),
    ]


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_new_override_prices_the_next_request_in_every_worker_of_every_process(gateways, mock):
    """Two gateway processes of two workers caching configuration for five minutes: only the
    shared configuration generation tells them about the override (as for any other change)."""
    cluster = [gateways(workers=2, **LONG_CACHE), gateways(workers=2, **LONG_CACHE)]
    live = make_setup(mock.url)
    catalog("gpt-4o-mini")
    body = chat_body("gpt-4o-mini")

    def send_rounds() -> None:
        replies = [post(p.url, body, vk=live.value) for p in cluster for _ in range(ROUNDS)]
        assert {r.status for r in replies} == {200}

    # Only this test's key: a gateway of an earlier test may still be flushing its own rows.
    mine = UsageRecord.objects.filter(virtual_key_id=live.vk.pk)
    send_rounds()  # every worker that served one has the prices cached now
    served = 2 * ROUNDS
    wait_until(lambda: mine.count() >= served, what="usage rows")
    before = mine.order_by("-id").values_list("id", flat=True).first()
    assert set(mine.values_list("price_source", flat=True)) == {"catalog:openai/gpt-4o-mini"}

    flat = override(
        scope_kind="virtual_key",
        virtual_key=live.vk,
        input_cost_per_token="0",
        output_cost_per_token="0",
        cached_input_cost_per_token="0",
        cost_per_request="0.5",
    )
    send_rounds()
    wait_until(lambda: mine.count() >= 2 * served, what="usage rows")
    after = mine.filter(id__gt=before)
    assert set(after.values_list("price_source", "cost")) == {(f"override:{flat.pk}", Decimal("0.5"))}
    assert after.count() == served
