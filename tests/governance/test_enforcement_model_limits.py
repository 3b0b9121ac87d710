"""The levels on all traffic (provider governance, model configs) in the counters: one atomic
admit with the VK's path, in every backend, refusals naming them, settles charging them; and
the snapshot that resolves them per model."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest

from governance.limitspec import MODEL, PATH, PROVIDER
from governance.metering import live, snapshot
from governance.metering.counters.base import BUDGET, REQUESTS, TOKENS, Counter, Violation, rejection_for
from governance.metering.enforcement import Admission, Rejection
from governance.models import Budget, RateLimit
from governance.services import model_config_create, provider_create, provider_governance_set
from tests.governance.conftest_counters import T0, admit, anchor_windows, path_specs, settle

pytestmark = pytest.mark.django_db(transaction=True)

PER_HOUR = {"request_reset_duration": "1h"}


@pytest.fixture
def openai():
    return provider_create(name="openai", base_url="http://127.0.0.1:9")


def shared(model: str = "gpt-4o") -> tuple[tuple, tuple]:
    snapshot.invalidate_local()
    return snapshot.providers()["openai"].shared_limits(model) or ((), ())


def joined(*parts: tuple[tuple, tuple]) -> tuple[tuple, tuple]:
    return tuple(b for p in parts for b in p[0]), tuple(r for p in parts for r in p[1])


def test_snapshot_resolves_provider_then_model_on_it_then_on_every_provider(openai):
    anthropic = provider_create(name="anthropic", base_url="http://127.0.0.1:9")
    provider_governance_set(
        provider=openai,
        budgets=[{"max_limit": 100, "reset_duration": "1M"}],
        rate_limit={"request_max_limit": 9, **PER_HOUR},
    )
    model_config_create(model_name="gpt-4o", budgets=[{"max_limit": 3, "reset_duration": "1d"}])
    model_config_create(
        model_name="gpt-4o",
        provider=openai,
        rate_limit={"request_max_limit": 5, **PER_HOUR},
        budgets=[{"max_limit": 2, "reset_duration": "1d"}],
    )
    model_config_create(model_name="gpt-4o", provider=anthropic, rate_limit={"request_max_limit": 1, **PER_HOUR})

    budgets, rate_limits = shared("gpt-4o")

    assert [(b.level, b.entity, b.max_limit) for b in budgets] == [
        (PROVIDER, "openai", 100),
        (MODEL, "openai/gpt-4o", 2),
        (MODEL, "gpt-4o", 3),
    ]
    assert [(r.level, r.entity, r.request_max_limit) for r in rate_limits] == [
        (PROVIDER, "openai", 9),
        (MODEL, "openai/gpt-4o", 5),
    ]
    # Another model on this provider: the provider's own limits only; a provider without any: None.
    assert [b.entity for b in shared("gpt-4o-mini")[0]] == ["openai"]
    assert snapshot.providers()["anthropic"].shared_limits("gpt-4o-mini") is None
    assert [r.entity for r in snapshot.providers()["anthropic"].shared_limits("gpt-4o")[1]] == ["anthropic/gpt-4o"]


def test_a_model_request_limit_joins_the_vks_admit_in_every_backend(counter_mode, make_vk, openai):
    vk = make_vk(rate_limit={"request_max_limit": 10, **PER_HOUR})
    config = model_config_create(model_name="gpt-4o", rate_limit={"request_max_limit": 2, **PER_HOUR})
    anchor_windows()
    specs = joined(path_specs(vk), shared())
    first = admit(specs)
    assert isinstance(first, Admission) and len(first.counters) == 2
    assert isinstance(admit(specs, now=T0 + timedelta(seconds=1)), Admission)

    refused = admit(specs, now=T0 + timedelta(seconds=2))

    assert isinstance(refused, Rejection)
    assert (refused.status, refused.type) == (429, "request_limited")
    assert refused.message == "Model limit exceeded: gpt-4o request limit exceeded (2/2, resets every 1h)"
    assert refused.retry_after == 3600 - 2
    # The refused request reserved nothing, not even on the VK's limit (all or none).
    vk_limit, model_limit = RateLimit.objects.get(virtual_key=vk), RateLimit.objects.get(model_config=config)
    now = T0 + timedelta(seconds=3)
    usage = live.rate_limit_usage([vk_limit.pk, model_limit.pk], now=now)
    assert usage[str(vk_limit.pk)].requests.usage == usage[str(model_limit.pk)].requests.usage == 2
    assert settle(first, cost="0.01", vk=vk, now=now)
    assert RateLimit.objects.get(pk=model_limit.pk).request_current_usage >= 1


def test_provider_and_model_budgets_are_charged_on_settle_and_named(counter_mode, make_vk, openai):
    vk = make_vk()
    provider_governance_set(provider=openai, budgets=[{"max_limit": "1", "reset_duration": "1d"}])
    model_config_create(model_name="gpt-4o", budgets=[{"max_limit": "2", "reset_duration": "1d"}])
    anchor_windows()
    specs = joined(path_specs(vk), shared())
    admission = admit(specs, cost="0.5")
    assert isinstance(admission, Admission)
    assert settle(admission, cost="1.2", vk=vk)
    assert Budget.objects.get(provider=openai).current_usage == Decimal("1.2")
    assert Budget.objects.get(model_config__model_name="gpt-4o").current_usage == Decimal("1.2")

    refused = admit(specs, cost="0.9", now=T0 + timedelta(seconds=1))

    assert isinstance(refused, Rejection)
    assert (refused.status, refused.type) == (402, "budget_exceeded")
    assert refused.message == (
        "Budget exceeded: provider openai budget exceeded: $1.20 of $1.00 used (resets at 2030-01-16 12:00:00 UTC); "
        "model gpt-4o budget exceeded: $1.20 of $2.00 used, this request needs up to $0.90"
        " (resets at 2030-01-16 12:00:00 UTC)"
    )


def counter(kind: str, entity: str, level: str, limit: int | Decimal = 1) -> Counter:
    return Counter(kind, "id", entity, limit, "1m", False, 1 if kind != BUDGET else Decimal("0"), level)


def test_each_family_of_rate_limits_has_its_sentence_in_path_order():
    violations = [
        Violation(counter(REQUESTS, "VK", PATH), 1, T0 + timedelta(seconds=30)),
        Violation(counter(TOKENS, "openai", PROVIDER, 100), 150, T0 + timedelta(seconds=40)),
        Violation(counter(REQUESTS, "openai/gpt-4o", MODEL), 1, T0 + timedelta(seconds=50)),
        Violation(counter(REQUESTS, "gpt-4o", MODEL), 1, T0 + timedelta(seconds=20)),
        Violation(counter(BUDGET, "gpt-4o", MODEL, Decimal("5")), Decimal("5"), T0 + timedelta(days=1)),
    ]

    rejection = rejection_for(violations, T0)

    assert (rejection.status, rejection.type, rejection.retry_after) == (429, "rate_limited", 50)
    assert rejection.message == (
        "Rate limit check failed: VK request limit exceeded (1/1, resets every 1m). "
        "Provider limit exceeded: openai token limit exceeded (150/100, resets every 1m). "
        "Model limit exceeded: openai/gpt-4o request limit exceeded (1/1, resets every 1m); "
        "gpt-4o request limit exceeded (1/1, resets every 1m). "
        "Budget exceeded: model gpt-4o budget exceeded: $5.00 of $5.00 used (resets at 2030-01-16 12:00:00 UTC)"
    )
