"""Changelist query counts do not grow with the number of rows (no N+1)."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from governance.models import UsageRecord
from governance.services import (
    customer_create,
    provider_create,
    provider_key_create,
    team_create,
    virtual_key_create,
)

pytestmark = pytest.mark.django_db

LISTS = [
    "virtualkey",
    "team",
    "customer",
    "usagerecord",
    "providerkey",
    "provider",
    "budget",
    "ratelimit",
    "providerconfig",
]


def add_rows(start: int, count: int) -> None:
    """``count`` of each listed thing, each wired to the others, with budgets and rate limits."""
    for i in range(start, start + count):
        provider = provider_create(name=f"p{i}", base_url="http://upstream.invalid/v1")
        provider_key_create(provider=provider, name=f"key{i}", value=f"sk-upstream-{i:04d}")
        limits = {
            "budgets": [{"max_limit": Decimal("10"), "reset_duration": "1d"}],
            "rate_limit": {"request_max_limit": 10, "request_reset_duration": "1m"},
        }
        customer = customer_create(name=f"customer{i}", **limits)
        team = team_create(name=f"team{i}", customer=customer, **limits)
        vk, _ = virtual_key_create(
            name=f"vk{i}",
            team=team if i % 2 else None,
            customer=None if i % 2 else customer,
            provider_configs=[{"provider": provider.name, "weight": 1, "budgets": limits["budgets"]}],
            **limits,
        )
        UsageRecord.objects.create(
            created_at=timezone.now(),
            virtual_key=vk,
            team=team,
            customer=customer,
            provider=provider.name,
            model="gpt-4o",
            status_code=200,
            total_tokens=10,
            priced=bool(i % 2),
        )


def count_queries(client, url: str) -> int:
    with CaptureQueriesContext(connection) as queries:
        assert client.get(url).status_code == 200
    return len(queries)


@pytest.mark.parametrize("model_name", LISTS)
def test_changelist_query_count_is_the_same_for_1_and_20_rows(client, alice, django_assert_max_num_queries, model_name):
    client.force_login(alice)
    url = reverse(f"admin:governance_{model_name}_changelist")
    add_rows(0, 1)
    with_one = count_queries(client, url)

    add_rows(1, 19)

    with django_assert_max_num_queries(with_one):
        response = client.get(url)
    assert response.status_code == 200
    assert response.context["cl"].result_count >= 20
