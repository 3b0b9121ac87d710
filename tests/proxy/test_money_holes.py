"""Nothing is free by accident: request fields are type-checked, unpriced models on a budgeted path
are refused, unreadable usage and cut-off streams are charged an estimate, and the worst-case
reservation counts everything the provider bills as input and every answer asked for."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from governance.models import Budget, ModelPrice, UsageRecord
from governance.pricing import seed_model_prices
from governance.services import provider_create, provider_key_create
from proxy.accounting import output_cap
from proxy.routing import ROUTES
from proxy.usage import IMAGE_TOKENS, estimate_prompt_tokens
from tests.proxy.conftest import make_setup

pytestmark = pytest.mark.django_db

CHAT = "/v1/chat/completions"
MESSAGES = [{"role": "user", "content": "hello there"}]
BUDGET = [{"max_limit": 100, "reset_duration": "1d"}]


def chat(model: str, **extra):
    return {"model": model, "messages": MESSAGES, **extra}


def price(model: str, provider: str = "openai", output: str = "0.001", input: str = "0") -> None:
    ModelPrice.objects.create(
        provider=provider, model=model, input_cost_per_token=Decimal(input), output_cost_per_token=Decimal(output)
    )


@pytest.fixture
def governed(mock):
    return make_setup(mock.url, budgets=BUDGET)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("stream", 1, "stream must be true or false"),
        ("stream", "true", "stream must be true or false"),
        ("max_tokens", "5", "max_tokens must be a positive integer"),
        ("max_tokens", 0, "max_tokens must be a positive integer"),
        ("max_tokens", 2.5, "max_tokens must be a positive integer"),
        ("max_completion_tokens", True, "max_completion_tokens must be a positive integer"),
        ("max_output_tokens", -1, "max_output_tokens must be a positive integer"),
        ("n", "2", "n must be a positive integer"),
        ("n", 0, "n must be a positive integer"),
        ("stream_options", "yes", "stream_options must be an object"),
        ("stream_options", {"include_usage": 1}, "stream_options.include_usage must be true or false"),
        ("fallbacks", "anthropic/x", "fallbacks must be a list of 'provider/model' strings"),
    ],
)
def test_a_mistyped_field_is_refused_before_the_upstream(call, governed, mock, field, value, message):
    price("gpt-4o-mini")
    answer = call(CHAT, chat("openai/gpt-4o-mini", **{field: value}), {"x-bf-vk": governed.value})

    assert answer.status == 400, answer.body
    assert answer.json()["error"]["message"] == message
    assert mock.stats()["by_model"] == {}
    assert UsageRecord.objects.attempts().count() == 0
    assert Budget.objects.get(virtual_key=governed.vk).current_usage == 0


def test_an_unpriced_model_on_a_budgeted_path_is_refused_naming_the_model(call, governed, mock):
    answer = call(CHAT, chat("openai/mystery-model"), {"x-bf-vk": governed.value})

    assert answer.status == 400
    body = answer.json()
    assert body["type"] == "model_unpriced"
    message = body["error"]["message"]
    assert "'mystery-model'" in message and "seed_prices" in message and "GOVERNANCE_UNPRICED_MODELS" in message
    assert mock.stats()["by_model"] == {} and UsageRecord.objects.attempts().count() == 0


def test_a_model_name_with_nul_is_refused_and_its_refusal_still_recorded(call, governed, mock):
    # PostgreSQL's text cannot hold NUL: the refusal's ledger row keeps the name with it replaced.
    raw = json.dumps(chat("openai/MODEL")).replace("MODEL", "ev\\u0000il").encode()
    answer = call(CHAT, raw, {"x-bf-vk": governed.value, "x-request-id": "odd-model"})

    assert answer.status == 400 and answer.json()["type"] == "model_unpriced"
    assert mock.stats()["by_model"] == {}
    refusal = UsageRecord.objects.refusals().get(http_request_id="odd-model")
    assert refusal.model == "ev\ufffdil" and refusal.error_type == "model_unpriced"


@pytest.mark.parametrize(
    "escaped",
    [
        '{"model": "openai/gpt-4o-mini", "messages": [{"role": "user", "content": "a \\ud800 b"}]}',
        '{"model": "openai/x\\uDFFF", "messages": [{"role": "user", "content": "hi"}]}',
    ],
)
def test_a_lone_surrogate_anywhere_in_the_body_is_a_400_not_a_500(call, governed, mock, escaped):
    answer = call(CHAT, escaped.encode(), {"x-bf-vk": governed.value})
    assert answer.status == 400
    assert "lone UTF-16 surrogate" in answer.json()["error"]["message"]
    assert mock.stats()["by_model"] == {}


def test_an_escaped_surrogate_pair_is_a_character_and_is_served(call, governed, mock):
    price("gpt-4o-mini")
    body = json.dumps(chat("openai/gpt-4o-mini", messages=[{"role": "user", "content": "hi \U0001f600"}]))
    assert "\\ud83d\\ude00" in body  # json.dumps escapes it as a pair
    assert call(CHAT, body.encode(), {"x-bf-vk": governed.value}).status == 200


def test_allow_lets_an_unpriced_model_through_at_zero_flagged(call, governed, mock, settings):
    settings.GOVERNANCE_UNPRICED_MODELS = "allow"
    answer = call(CHAT, chat("openai/mystery-model"), {"x-bf-vk": governed.value})

    assert answer.status == 200
    row = UsageRecord.objects.get()
    assert (row.cost, row.priced) == (Decimal("0"), False)


def test_an_explicit_price_of_zero_is_a_price(call, governed):
    price("free-model", output="0")
    answer = call(CHAT, chat("openai/free-model"), {"x-bf-vk": governed.value})

    assert answer.status == 200
    row = UsageRecord.objects.get()
    assert (row.cost, row.priced) == (Decimal("0"), True)


def test_an_unpriced_model_without_a_budget_is_served_and_flagged(call, mock):
    plain = make_setup(mock.url)
    assert call(CHAT, chat("openai/mystery-model"), {"x-bf-vk": plain.value}).status == 200
    assert UsageRecord.objects.get().priced is False


def test_a_provider_of_any_name_prices_dated_models_from_the_shipped_catalog(call, mock):
    seed_model_prices()
    eu = provider_create(name="openai-eu", base_url=mock.url, timeout_seconds=2.0)
    provider_key_create(provider=eu, name="main", value="sk-upstream-eu")
    live = make_setup(
        mock.url,
        budgets=BUDGET,
        provider_configs=[{"provider": "openai-eu", "weight": 1.0, "allowed_models": ["*"], "key_ids": ["*"]}],
    )
    answer = call(CHAT, chat("openai-eu/gpt-4o-2024-11-20", max_tokens=10), {"x-bf-vk": live.value})

    assert answer.status == 200, answer.body
    row = UsageRecord.objects.get()
    usage = answer.json()["usage"]
    expected = Decimal(usage["prompt_tokens"]) * Decimal("2.5e-6") + Decimal(usage["completion_tokens"]) * Decimal(
        "10e-6"
    )
    assert row.priced and row.cost == expected and row.cost > 0
    assert Budget.objects.get(virtual_key=live.vk).current_usage == expected


def test_a_successful_answer_without_usage_is_charged_an_estimate(call, governed):
    price("gpt-4o-mini-no-usage", input="0.001")
    answer = call(CHAT, chat("openai/gpt-4o-mini-no-usage", max_tokens=8), {"x-bf-vk": governed.value})

    assert answer.status == 200 and "usage" not in answer.json()
    row = UsageRecord.objects.get()
    assert row.estimated and row.priced
    assert row.prompt_tokens == estimate_prompt_tokens(chat("x")) and 0 < row.completion_tokens <= 8
    assert row.cost > 0
    assert Budget.objects.get(virtual_key=governed.vk).current_usage == row.cost


def test_a_stream_broken_off_after_content_is_charged_what_was_delivered(call, governed):
    price("gpt-4o-mini-reset-mid-stream")
    answer = call(
        CHAT, chat("openai/gpt-4o-mini-reset-mid-stream", max_tokens=6, stream=True), {"x-bf-vk": governed.value}
    )

    assert answer.status == 200
    assert b"mock " in answer.body and b"broke off the stream" in answer.body
    row = UsageRecord.objects.get()
    assert row.status_code == 502 and row.streamed and row.estimated
    assert row.completion_tokens == 2  # two content chunks reached the client
    assert row.cost == Decimal("0.002")
    assert Budget.objects.get(virtual_key=governed.vk).current_usage == Decimal("0.002")


def test_the_prompt_estimate_counts_tools_schemas_and_instructions():
    tools = [
        {"type": "function", "function": {"name": f"tool_{i}", "description": "x" * 4000, "parameters": {}}}
        for i in range(100)
    ]
    body = {"messages": MESSAGES, "tools": tools}
    assert estimate_prompt_tokens(body) >= 100 * 4000 // 4
    schema = {"type": "json_schema", "json_schema": {"schema": {"description": "y" * 8000}}}
    assert estimate_prompt_tokens({"messages": MESSAGES, "response_format": schema}) >= 2000
    assert estimate_prompt_tokens({"input": "hi", "instructions": "z" * 4000}) >= 1000
    assert estimate_prompt_tokens({"messages": MESSAGES, "system": "s" * 400}) >= 100


def test_images_count_a_fixed_amount_and_their_base64_is_not_text():
    data = "A" * 400_000
    openai_image = {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{data}"}}
    anthropic_image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": data}}
    url_image = {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}
    for part in (openai_image, anthropic_image, url_image):
        estimate = estimate_prompt_tokens({"messages": [{"role": "user", "content": [part]}]})
        assert IMAGE_TOKENS <= estimate < IMAGE_TOKENS + 100, (part["type"], estimate)
    pdf = {"type": "file", "file": {"file_data": f"data:application/pdf;base64,{data}"}}
    assert estimate_prompt_tokens({"messages": [{"role": "user", "content": [pdf]}]}) >= len(data) // 4


def test_several_answers_multiply_the_output_reservation(settings):
    chat, completions, embeddings = (
        ROUTES[f"/v1/{name}"] for name in ("chat/completions", "completions", "embeddings")
    )
    assert output_cap({"max_tokens": 100, "n": 3}, chat) == 300
    assert output_cap({"max_tokens": 100, "best_of": 5, "n": 2}, completions) == 500
    assert output_cap({"n": 2}, chat) == 2 * settings.GOVERNANCE_DEFAULT_MAX_TOKENS
    assert output_cap({"n": 4}, embeddings) == 0


def test_n_answers_are_reserved_before_the_call(call, mock):
    price("gpt-4o-mini", output="0.001")
    tight = make_setup(mock.url, budgets=[{"max_limit": Decimal("0.05"), "reset_duration": "1d"}])
    one = call(CHAT, chat("openai/gpt-4o-mini", max_tokens=20), {"x-bf-vk": tight.value})
    three = call(CHAT, chat("openai/gpt-4o-mini", max_tokens=20, n=3), {"x-bf-vk": tight.value})

    assert one.status == 200
    assert three.status == 402 and three.json()["type"] == "budget_exceeded"
    assert "this request needs up to $0.06 (resets at " in json.loads(three.body)["error"]["message"]
