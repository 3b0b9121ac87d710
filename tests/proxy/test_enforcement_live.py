"""Every 402/429 row of SPEC section 6 through a live gateway (gunicorn, 2 workers), with the ledger.

Costs are exact: the models used here have an input price of 0 and an output price of $0.001 per
token, and the mock upstream produces exactly ``max_tokens`` tokens, so the worst case the gateway
reserves equals the actual cost ($0.005 for ``max_tokens=5``) and a $0.01 budget admits exactly
two requests.
"""

from __future__ import annotations

from decimal import Decimal

import openai
import pytest

from governance.models import Budget, ProviderConfig
from governance.services import customer_create, team_create, virtual_key_create
from tests.proxy.conftest import make_setup
from tests.proxy.conftest_enforcement import (
    MESSAGES,
    MOCK_PROMPT_TOKENS,
    budget_usage,
    chat,
    mock_served,
    post,
    rate_limit_of,
    retry_after,
    settled,
    spend,
    without_resets,
)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

MODEL = "gpt-4o-mini"
FIVE_TOKENS = Decimal("0.005")
OPENAI_ONLY = [{"provider": "openai", "weight": 1.0, "allowed_models": ["*"], "key_ids": ["*"]}]


@pytest.fixture
def priced(price):
    price(MODEL, output="0.001")
    price("claude-3-5-haiku-latest", output="0.001", provider="anthropic")


def more_vk(**options):
    """Another VK on the providers ``make_setup`` registered (openai only)."""
    vk, value = virtual_key_create(name=options.pop("name", "other"), provider_configs=OPENAI_ONLY, **options)
    return vk, value


def test_request_limit_answers_429_request_limited_once_the_limit_is_used(gateway, mock, priced):
    live = make_setup(mock.url, rate_limit={"request_max_limit": 2, "request_reset_duration": "1m"})

    first, second = (post(gateway.url, chat(), vk=live.value) for _ in range(2))
    third = post(gateway.url, chat(), vk=live.value)

    assert (first.status, second.status) == (200, 200)
    assert third.error == (
        429,
        "request_limited",
        "Rate limit check failed: VK request limit exceeded (2/2, resets every 1m)",
    )
    retry_after(third, 60)
    rows = settled(2, vk=live.vk)
    assert [r.status_code for r in rows] == [200, 200]
    assert rate_limit_of(live.vk).request_current_usage == 2
    assert mock_served(mock, MODEL) == 2  # the rejected request never reached the upstream


def test_token_limit_answers_429_token_limited_once_usage_reaches_it(gateway, mock, priced):
    live = make_setup(mock.url, rate_limit={"token_max_limit": 10, "token_reset_duration": "1h"})
    # The mock reports 4 prompt tokens for MESSAGES and produces max_tokens: 4 + 6 = 10 tokens.
    assert post(gateway.url, chat(max_tokens=6), vk=live.value).status == 200
    [row] = settled(1, vk=live.vk)
    assert row.total_tokens == MOCK_PROMPT_TOKENS + 6 == 10

    second = post(gateway.url, chat(max_tokens=1), vk=live.value)

    assert second.error == (
        429,
        "token_limited",
        "Rate limit check failed: VK token limit exceeded (10/10, resets every 1h)",
    )
    retry_after(second, 3600)
    assert rate_limit_of(live.vk).token_current_usage == 10
    assert mock_served(mock, MODEL) == 1


def test_token_and_request_limits_both_exceeded_answer_429_rate_limited(gateway, mock, priced):
    live = make_setup(
        mock.url,
        rate_limit={
            "token_max_limit": 10,
            "token_reset_duration": "1h",
            "request_max_limit": 1,
            "request_reset_duration": "1m",
        },
    )
    assert post(gateway.url, chat(max_tokens=6), vk=live.value).status == 200
    settled(1, vk=live.vk)

    second = post(gateway.url, chat(), vk=live.value)

    assert second.error == (
        429,
        "rate_limited",
        "Rate limit check failed: VK token limit exceeded (10/10, resets every 1h); "
        "VK request limit exceeded (1/1, resets every 1m)",
    )
    # Both must clear before a request can pass: the hour-long token window decides.
    assert retry_after(second, 3600) > 60
    limit = rate_limit_of(live.vk)
    assert (limit.token_current_usage, limit.request_current_usage) == (10, 1)


def test_vk_budget_answers_402_once_spent_and_refuses_a_worst_case_past_it(gateway, mock, priced):
    live = make_setup(mock.url, budgets=[{"max_limit": "0.01", "reset_duration": "1h"}])
    assert post(gateway.url, chat(max_tokens=5), vk=live.value).status == 200
    settled(1, vk=live.vk)

    # $0.005 spent: a request that may produce 6 tokens ($0.006) would pass the limit.
    too_big = post(gateway.url, chat(max_tokens=6), vk=live.value)
    assert without_resets(too_big.error) == (
        402,
        "budget_exceeded",
        "Budget exceeded: VK budget exceeded: $0.005 of $0.01 used, this request needs up to $0.006",
    )

    assert post(gateway.url, chat(max_tokens=5), vk=live.value).status == 200
    spent = post(gateway.url, chat(max_tokens=1), vk=live.value)

    assert without_resets(spent.error) == (
        402,
        "budget_exceeded",
        "Budget exceeded: VK budget exceeded: $0.01 of $0.01 used",
    )
    rows = settled(2, vk=live.vk)
    assert [r.cost for r in rows] == [FIVE_TOKENS, FIVE_TOKENS]
    assert budget_usage(live.vk) == spend(live.vk) == Decimal("0.01")
    assert mock_served(mock, MODEL) == 2


def test_team_budget_stops_every_virtual_key_of_the_team(gateway, mock, priced):
    team = team_create(name="research", budgets=[{"max_limit": "0.01", "reset_duration": "1d"}])
    live = make_setup(mock.url, team=team)
    _, sibling = more_vk(team=team)

    assert post(gateway.url, chat(max_tokens=5), vk=live.value).status == 200
    assert post(gateway.url, chat(max_tokens=5), vk=sibling).status == 200
    settled(2)

    expected = (402, "budget_exceeded", "Budget exceeded: Team budget exceeded: $0.01 of $0.01 used")
    assert without_resets(post(gateway.url, chat(max_tokens=1), vk=sibling).error) == expected
    assert without_resets(post(gateway.url, chat(max_tokens=1), vk=live.value).error) == expected
    assert budget_usage(team) == spend(team=team) == Decimal("0.01")


def test_customer_budget_stops_keys_of_its_teams_and_its_direct_keys(gateway, mock, priced):
    customer = customer_create(name="acme", budgets=[{"max_limit": "0.01", "reset_duration": "1M"}])
    team = team_create(name="ops", customer=customer)
    live = make_setup(mock.url, team=team)
    direct_vk, direct = more_vk(customer=customer)

    assert post(gateway.url, chat(max_tokens=5), vk=live.value).status == 200
    assert post(gateway.url, chat(max_tokens=5), vk=direct).status == 200
    rows = settled(2)

    expected = (402, "budget_exceeded", "Budget exceeded: Customer budget exceeded: $0.01 of $0.01 used")
    assert without_resets(post(gateway.url, chat(max_tokens=1), vk=live.value).error) == expected
    assert without_resets(post(gateway.url, chat(max_tokens=1), vk=direct).error) == expected
    assert {r.virtual_key_id for r in rows} == {live.vk.pk, direct_vk.pk}
    assert all(r.customer_id == customer.pk for r in rows)
    assert budget_usage(customer) == spend(customer=customer) == Decimal("0.01")


def test_provider_config_budget_names_the_provider_and_leaves_other_providers_alone(gateway, mock, priced):
    live = make_setup(
        mock.url,
        provider_configs=[
            {
                "provider": "openai",
                "weight": 1.0,
                "allowed_models": ["*"],
                "key_ids": ["*"],
                "budgets": [{"max_limit": "0.01", "reset_duration": "1h"}],
            },
            {"provider": "anthropic", "weight": None, "allowed_models": ["*"], "key_ids": ["*"]},
        ],
    )
    config = ProviderConfig.objects.get(virtual_key=live.vk, provider__name="openai")
    for _ in range(2):
        assert post(gateway.url, chat(max_tokens=5), vk=live.value).status == 200
    settled(2, vk=live.vk)

    spent = post(gateway.url, chat(max_tokens=1), vk=live.value)
    messages = post(
        gateway.url,
        {"model": "claude-3-5-haiku-latest", "max_tokens": 5, "messages": MESSAGES},
        vk=live.value,
        form="x-api-key",
        path="/anthropic/v1/messages",
    )

    assert without_resets(spent.error) == (
        402,
        "budget_exceeded",
        "Budget exceeded: openai budget exceeded: $0.01 of $0.01 used",
    )
    assert messages.status == 200
    settled(3, vk=live.vk)
    assert budget_usage(config) == spend(provider="openai") == Decimal("0.01")
    assert spend(provider="anthropic") == FIVE_TOKENS


@pytest.mark.parametrize("form", ["x-bf-vk", "authorization", "x-api-key", "x-goog-api-key"])
def test_each_header_form_reaches_the_same_limits(gateway, mock, priced, form):
    live = make_setup(
        mock.url,
        rate_limit={"request_max_limit": 3, "request_reset_duration": "1m"},
        budgets=[{"max_limit": "1", "reset_duration": "1h"}],
    )
    # The other three forms use up the limit the form under test then meets.
    others = [f for f in ("x-bf-vk", "authorization", "x-api-key", "x-goog-api-key") if f != form]
    assert [post(gateway.url, chat(max_tokens=5), vk=live.value, form=f).status for f in others] == [200] * 3

    reply = post(gateway.url, chat(max_tokens=5), vk=live.value, form=form)

    assert reply.error == (
        429,
        "request_limited",
        "Rate limit check failed: VK request limit exceeded (3/3, resets every 1m)",
    )
    retry_after(reply, 60)
    settled(3, vk=live.vk)
    assert rate_limit_of(live.vk).request_current_usage == 3
    assert budget_usage(live.vk) == spend(live.vk) == 3 * FIVE_TOKENS


# --- the openai SDK, as a user would try it -------------------------------------------------------


def client(gateway, value: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=value, max_retries=0, timeout=10)


def test_openai_sdk_meets_a_two_requests_per_minute_limit_with_rate_limit_error(gateway, mock, price):
    price(MODEL, input="0.000001", output="0.0001")
    live = make_setup(
        mock.url,
        budgets=[{"max_limit": "0.01", "reset_duration": "1h"}],
        rate_limit={"request_max_limit": 2, "request_reset_duration": "1m"},
    )
    sdk = client(gateway, live.value)
    replies = [sdk.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=4) for _ in range(2)]
    assert [r.choices[0].message.content for r in replies] == ["mock mock mock mock"] * 2

    with pytest.raises(openai.RateLimitError) as exc:
        sdk.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=4)

    assert exc.value.status_code == 429
    assert exc.value.response.json()["type"] == "request_limited"
    assert exc.value.body["message"] == "Rate limit check failed: VK request limit exceeded (2/2, resets every 1m)"
    assert 1 <= int(exc.value.response.headers["retry-after"]) <= 60
    rows = settled(2, vk=live.vk)
    # 4 prompt tokens at $0.000001 + 4 completion tokens at $0.0001, per request.
    assert [r.cost for r in rows] == [Decimal("0.000404")] * 2
    assert budget_usage(live.vk) == spend(live.vk) == Decimal("0.000808")


def test_openai_sdk_stops_at_a_spent_budget_with_402_budget_exceeded(gateway, mock, priced):
    live = make_setup(mock.url, budgets=[{"max_limit": "0.01", "reset_duration": "1h"}])
    sdk = client(gateway, live.value)
    sdk.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=5)
    streamed = sdk.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=5, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in streamed) == "mock " * 5

    with pytest.raises(openai.APIStatusError) as exc:
        sdk.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=1)

    assert exc.value.status_code == 402
    assert exc.value.response.json()["type"] == "budget_exceeded"
    assert without_resets(exc.value.body["message"]) == "Budget exceeded: VK budget exceeded: $0.01 of $0.01 used"
    rows = settled(2, vk=live.vk)
    assert [(r.streamed, r.cost) for r in rows] == [(False, FIVE_TOKENS), (True, FIVE_TOKENS)]
    assert Budget.objects.get(virtual_key=live.vk).current_usage == spend(live.vk) == Decimal("0.01")
