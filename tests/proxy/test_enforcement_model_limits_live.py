"""Limits on all traffic are exact under concurrency, through live gateway processes.

Two gunicorn masters of 2 workers (8 threads each) on the test database, with their counters in
the host-local table (embedded mode) or in Redis (production mode), serve a burst spread over
both processes, two virtual keys and requests without a key (direct-key mode): a model config's
request limit of N admits exactly N; a provider budget is never overshot.
"""

from __future__ import annotations

import http.client
import json
import math
from decimal import Decimal

import pytest

from governance.models import Budget, Provider, RateLimit
from governance.services import model_config_create, provider_governance_set, virtual_key_create
from tests.governance.conftest_counters import _configured_redis_url
from tests.proxy.conftest import make_setup
from tests.proxy.conftest_enforcement import (
    ESTIMATED_PROMPT_TOKENS,
    MOCK_PROMPT_TOKENS,
    Reply,
    burst,
    chat,
    mock_served,
    post,
    settled,
    spend,
)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

MODEL = "gpt-4o-mini"
ASKED = f"openai/{MODEL}"  # a request without a VK names its provider
N = 12


@pytest.fixture(params=["local", "redis"])
def two_gateways(request, gateways, settings, tmp_path):
    """Two gateway processes (2 workers each) whose counters live in the backend under test;
    this process reads them there too. Direct-key mode: a request without a VK is served."""
    mode = request.param
    env: dict[str, str | None] = {"GOVERNANCE_COUNTERS": mode, "GOVERNANCE_ENFORCE_VIRTUAL_KEYS": "false"}
    if mode == "redis":
        url = _configured_redis_url() or request.getfixturevalue("private_redis").url
        env["REDIS_URL"] = url
        settings.REDIS_URL = url
    else:
        env |= {"REDIS_URL": None, "BIFROST_DATA_DIR": str(tmp_path)}
        settings.DATA_DIR, settings.REDIS_URL = tmp_path, None
    settings.GOVERNANCE_COUNTERS = mode
    return gateways(workers=2, **env), gateways(workers=2, **env)


def keys(mock_url: str) -> list[str | None]:
    """Two VKs allowed everything, and no VK at all."""
    first = make_setup(mock_url, name="first")
    configs = [{"provider": "openai", "weight": 1.0, "allowed_models": ["*"], "key_ids": ["*"]}]
    _, second = virtual_key_create(name="second", provider_configs=configs)
    return [first.value, second, None]


def send(url: str, vk: str | None, body: dict) -> Reply:
    """One chat request on its own connection, with the VK, or with no credential at all."""
    if vk is not None:
        return post(url, body, vk=vk)
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=20)
    try:
        conn.request(
            "POST", "/v1/chat/completions", body=json.dumps(body), headers={"Content-Type": "application/json"}
        )
        answer = conn.getresponse()
        return Reply(answer.status, {k.lower(): v for k, v in answer.getheaders()}, answer.read())
    finally:
        conn.close()


def test_a_model_request_limit_of_n_admits_exactly_n_across_processes_keys_and_no_key(two_gateways, mock, price):
    price(MODEL, input="0.000001", output="0.00001")
    one, two = two_gateways
    config = model_config_create(model_name=MODEL, rate_limit={"request_max_limit": N, "request_reset_duration": "1h"})
    senders = keys(mock.url)
    tasks = [
        (lambda url=url, vk=vk: send(url, vk, chat(ASKED)))
        for url in (one.url, two.url)
        for vk in senders
        for _ in range(6)
    ]  # 36 requests: 3 x N

    replies = burst(tasks)

    statuses = [r.status for r in replies]
    assert (statuses.count(200), statuses.count(429)) == (N, 2 * N), statuses
    assert {r.error for r in replies if r.status == 429} == {
        (429, "request_limited", f"Model limit exceeded: {MODEL} request limit exceeded ({N}/{N}, resets every 1h)")
    }
    rows = settled(N)
    assert {r.status_code for r in rows} == {200}
    assert RateLimit.objects.get(model_config=config).request_current_usage == N
    assert mock_served(mock, MODEL) == N


def test_a_provider_budget_is_never_overshot_across_processes(two_gateways, mock, price):
    price(MODEL, input="0.000001", output="0.0001")
    one, two = two_gateways
    limit = Decimal("0.0105")
    senders = keys(mock.url)
    provider_governance_set(
        provider=Provider.objects.get(name="openai"),
        budgets=[{"max_limit": str(limit), "reset_duration": "1h"}],
    )
    actual = MOCK_PROMPT_TOKENS * Decimal("0.000001") + 10 * Decimal("0.0001")
    worst_case = ESTIMATED_PROMPT_TOKENS * Decimal("0.000001") + 10 * Decimal("0.0001")
    tasks = [
        (lambda url=url, vk=vk: send(url, vk, chat(ASKED, max_tokens=10)))
        for url in (one.url, two.url)
        for vk in senders
        for _ in range(5)
    ]

    replies = burst(tasks)

    passed = sum(r.status == 200 for r in replies)
    for reply in replies:
        if reply.status != 200:
            status, type_, message = reply.error
            assert (status, type_) == (402, "budget_exceeded")
            assert message.startswith("Budget exceeded: provider openai budget exceeded: ")
    assert math.floor(limit / worst_case) <= passed <= math.floor(limit / actual)
    settled(passed)
    usage = Budget.objects.get(provider__name="openai").current_usage
    assert usage <= limit
    assert usage == spend() == passed * actual
    assert mock_served(mock, MODEL) == passed
