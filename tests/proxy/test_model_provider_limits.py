"""Limits on all traffic, whoever sends it: model configs and provider governance, in process.

They join the VK's path in one admit (provider config -> VK -> team -> customer -> provider ->
model on this provider -> model on every provider), govern requests without a VK too, are
matched on the model as the provider is asked for it, and are named in refusals: rate limits in a
``Provider limit exceeded: ...`` / ``Model limit exceeded: ...`` sentence of their own, budgets as
``provider openai`` / ``model gpt-4o-mini`` in the ``Budget exceeded: ...`` one.
"""

from __future__ import annotations

import re
from decimal import Decimal

import pytest

from governance.metering import snapshot
from governance.models import Budget, McpClient, ModelConfig, RateLimit, UsageRecord
from governance.services import (
    model_config_create,
    model_config_delete,
    provider_governance_delete,
    provider_governance_set,
)
from mcp_gateway import metering as mcp_metering
from tests.proxy.conftest import make_setup

pytestmark = pytest.mark.django_db

CHAT = "/v1/chat/completions"
MODEL = "gpt-4o-mini"
MESSAGES = [{"role": "user", "content": "hello there"}]
PER_MINUTE = {"request_reset_duration": "1m"}


def chat(model: str = f"openai/{MODEL}", **extra):
    return {"model": model, "messages": MESSAGES, "max_tokens": 4, **extra}


def refusal(answer) -> tuple[int, str, str]:
    body = answer.json()
    return answer.status, body["type"], body["error"]["message"]


def requests_of(config_or_provider) -> int:
    field = "model_config" if isinstance(config_or_provider, ModelConfig) else "provider"
    return RateLimit.objects.get(**{field: config_or_provider}).request_current_usage


@pytest.fixture
def s(mock, price):
    price(MODEL, input="0.000001", output="0.001")
    return make_setup(mock.url)


@pytest.fixture
def direct(settings):
    """Direct-key mode: requests without a VK are served on the providers' keys."""
    settings.GOVERNANCE_ENFORCE_VIRTUAL_KEYS = False


def test_a_model_request_limit_admits_exactly_n_and_names_the_model(call, s, mock):
    config = model_config_create(model_name=MODEL, rate_limit={"request_max_limit": 2, **PER_MINUTE})
    vk = {"x-bf-vk": s.value}
    assert [call(CHAT, chat(), vk).status for _ in range(2)] == [200, 200]

    third = call(CHAT, chat(), vk)

    assert refusal(third) == (
        429,
        "request_limited",
        "Model limit exceeded: gpt-4o-mini request limit exceeded (2/2, resets every 1m)",
    )
    assert 1 <= int(third.headers["retry-after"]) <= 60
    assert mock.stats()["by_model"] == {MODEL: 2}
    assert requests_of(config) == 2


def test_requests_without_a_vk_are_governed_by_model_and_provider_limits(call, s, mock, direct):
    config = model_config_create(model_name=MODEL, rate_limit={"request_max_limit": 3, **PER_MINUTE})
    provider_governance_set(provider=s.openai, rate_limit={"request_max_limit": 2, **PER_MINUTE})
    assert [call(CHAT, chat()).status for _ in range(2)] == [200, 200]

    third = call(CHAT, chat())

    assert refusal(third) == (
        429,
        "request_limited",
        "Provider limit exceeded: openai request limit exceeded (2/2, resets every 1m)",
    )
    assert mock.stats()["by_model"] == {MODEL: 2}
    assert requests_of(config) == requests_of(s.openai) == 2
    rows = list(UsageRecord.objects.attempts())
    assert len(rows) == 2 and all(r.virtual_key_id is None and r.cost > 0 for r in rows)
    refused = UsageRecord.objects.refusals().get()
    assert (refused.status_code, refused.error_type, refused.cost) == (429, "request_limited", 0)
    assert refused.refused_by.startswith("provider:rate_limit:")


def test_without_a_vk_and_without_shared_limits_nothing_is_reserved(call, s, direct):
    model_config_create(model_name="another-model", rate_limit={"request_max_limit": 1, **PER_MINUTE})
    assert [call(CHAT, chat()).status for _ in range(3)] == [200, 200, 200]
    assert UsageRecord.objects.attempts().count() == 3
    assert RateLimit.objects.get(model_config__model_name="another-model").request_current_usage == 0


def test_budgets_of_the_provider_and_the_model_are_named_in_the_402(call, s, mock):
    # An answer costs 4 output tokens at $0.001 and its prompt at $0.000001 a token: just over $0.004.
    provider_governance_set(provider=s.openai, budgets=[{"max_limit": "0.0045", "reset_duration": "1M"}])
    model_config_create(model_name=MODEL, budgets=[{"max_limit": "0.006", "reset_duration": "1d"}])
    vk = {"x-bf-vk": s.value}
    assert call(CHAT, chat(), vk).status == 200
    spent = UsageRecord.objects.get().cost
    assert Decimal("0.004") < spent < Decimal("0.0041")

    second = call(CHAT, chat(), vk)

    status, type_, message = refusal(second)
    assert (status, type_) == (402, "budget_exceeded")
    # The second request's worst case (another ~$0.004) would take both past their limits.
    assert re.fullmatch(
        r"Budget exceeded: provider openai budget exceeded: \$0\.004\d* of \$0\.0045 used, "
        r"this request needs up to \$0\.004\d* \(resets at [-\d: ]+ UTC\); "
        r"model gpt-4o-mini budget exceeded: \$0\.004\d* of \$0\.006 used, "
        r"this request needs up to \$0\.004\d* \(resets at [-\d: ]+ UTC\)",
        message,
    ), message
    assert mock.stats()["by_model"] == {MODEL: 1}
    assert Budget.objects.get(provider=s.openai).current_usage == spent
    assert Budget.objects.get(model_config__model_name=MODEL).current_usage == spent


def test_every_level_in_path_order_in_one_answer(call, mock, price):
    price(MODEL, output="0.001")
    s = make_setup(mock.url, rate_limit={"request_max_limit": 1, **PER_MINUTE})
    model_config_create(model_name=MODEL, rate_limit={"request_max_limit": 1, **PER_MINUTE})
    provider_governance_set(provider=s.openai, rate_limit={"token_max_limit": 1, "token_reset_duration": "1h"})
    assert call(CHAT, chat(), {"x-bf-vk": s.value}).status == 200

    second = call(CHAT, chat(), {"x-bf-vk": s.value})

    status, type_, message = refusal(second)
    assert (status, type_) == (429, "rate_limited")
    assert message.startswith(
        "Rate limit check failed: VK request limit exceeded (1/1, resets every 1m). "
        "Provider limit exceeded: openai token limit exceeded ("
    ), message
    assert message.endswith(
        ", resets every 1h). Model limit exceeded: gpt-4o-mini request limit exceeded (1/1, resets every 1m)"
    )


def test_a_config_for_the_model_on_its_provider_and_one_for_every_provider_both_apply(call, s):
    specific = model_config_create(
        model_name=MODEL, provider=s.openai, rate_limit={"request_max_limit": 5, **PER_MINUTE}
    )
    anywhere = model_config_create(model_name=MODEL, rate_limit={"request_max_limit": 1, **PER_MINUTE})
    elsewhere = model_config_create(
        model_name=MODEL, provider=s.anthropic, rate_limit={"request_max_limit": 1, **PER_MINUTE}
    )
    vk = {"x-bf-vk": s.value}
    assert call(CHAT, chat(), vk).status == 200

    second = call(CHAT, chat(), vk)

    assert refusal(second)[2] == "Model limit exceeded: gpt-4o-mini request limit exceeded (1/1, resets every 1m)"
    assert (requests_of(specific), requests_of(anywhere), requests_of(elsewhere)) == (1, 1, 0)
    # The config for the model on another provider is not on this path.
    budgets, rate_limits = snapshot.providers()["openai"].shared_limits(MODEL) or ((), ())
    assert [r.entity for r in rate_limits] == ["openai/gpt-4o-mini", "gpt-4o-mini"]


def test_the_model_matched_is_the_one_the_provider_is_asked_for(call, s):
    model_config_create(model_name=f"openai/{MODEL}", rate_limit={"request_max_limit": 1, **PER_MINUTE})
    vk = {"x-bf-vk": s.value}
    # "openai/gpt-4o-mini" names the provider and the model: the provider is asked for gpt-4o-mini.
    assert [call(CHAT, chat(), vk).status for _ in range(3)] == [200, 200, 200]
    model_config_create(model_name=MODEL, rate_limit={"request_max_limit": 1, **PER_MINUTE})
    assert [call(CHAT, chat(), vk).status for _ in range(2)] == [200, 429]


def test_changes_apply_on_the_next_request(call, s):
    vk = {"x-bf-vk": s.value}
    assert call(CHAT, chat(), vk).status == 200
    config = model_config_create(model_name=MODEL, rate_limit={"request_max_limit": 1, **PER_MINUTE})
    assert [call(CHAT, chat(), vk).status for _ in range(2)] == [200, 429]
    model_config_delete(model_config=config)
    assert call(CHAT, chat(), vk).status == 200
    provider_governance_set(provider=s.openai, rate_limit={"request_max_limit": 1, **PER_MINUTE})
    assert [call(CHAT, chat(), vk).status for _ in range(2)] == [200, 429]
    provider_governance_delete(provider=s.openai)
    assert call(CHAT, chat(), vk).status == 200


def test_a_refused_provider_falls_back_to_the_next(call, s, mock, price):
    price(MODEL, provider="anthropic", output="0.001")
    provider_governance_set(provider=s.openai, rate_limit={"request_max_limit": 1, **PER_MINUTE})
    vk = {"x-bf-vk": s.value}
    assert call(CHAT, chat(), vk).status == 200

    answer = call(CHAT, chat(fallbacks=[f"anthropic/{MODEL}"]), vk)

    assert answer.status == 200
    assert UsageRecord.objects.filter(provider="anthropic").count() == 1


def test_an_unpriced_model_with_a_model_budget_is_refused(call, s, mock, direct):
    model_config_create(model_name="mystery-model", budgets=[{"max_limit": 1, "reset_duration": "1d"}])
    answer = call(CHAT, chat("openai/mystery-model"))
    assert answer.status == 400 and answer.json()["type"] == "model_unpriced"
    assert mock.stats()["by_model"] == {}


def test_mcp_tool_calls_are_not_governed_by_model_or_provider_limits(s):
    # Even an MCP client named like the provider, with a tool named like the model.
    provider_governance_set(provider=s.openai, rate_limit={"request_max_limit": 1, **PER_MINUTE})
    model_config_create(model_name=MODEL, rate_limit={"request_max_limit": 1, **PER_MINUTE})
    client = McpClient.objects.create(name="openai", connection_string="http://127.0.0.1:9/mcp")
    ticket = mcp_metering.begin(client, MODEL, snapshot.virtual_key(s.value))
    assert isinstance(ticket, mcp_metering.ToolTicket) and ticket.admission is None
