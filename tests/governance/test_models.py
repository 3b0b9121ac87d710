from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from governance.keys import digest
from governance.models import Budget, Customer, Team, VirtualKey
from governance.services import customer_create, team_create, virtual_key_create

pytestmark = pytest.mark.django_db


def test_vk_value_is_stored_only_as_digest_and_last_four():
    vk, value = virtual_key_create(name="svc")
    assert value.startswith("sk-bf-") and len(value) == 42
    row = VirtualKey.objects.get(pk=vk.pk)
    assert row.value_digest == digest(value)
    assert row.value_last4 == value[-4:]
    assert value not in str(VirtualKey.objects.filter(pk=vk.pk).values().first())
    assert row.masked_value == f"sk-bf-…{value[-4:]}"


def test_vk_with_both_team_and_customer_is_rejected_by_clean():
    team = team_create(name="t")
    customer = customer_create(name="c")
    with pytest.raises(ValidationError) as exc:
        virtual_key_create(name="both", team=team, customer=customer)
    assert "VirtualKey cannot be attached to both Team and Customer" in str(exc.value)
    assert not VirtualKey.objects.exists()


def test_database_constraint_fires_when_clean_is_bypassed():
    vk, _ = virtual_key_create(name="svc")
    VirtualKey.objects.filter(pk=vk.pk).update(team=Team.objects.create(name="t"))
    with pytest.raises(IntegrityError), transaction.atomic():
        VirtualKey.objects.filter(pk=vk.pk).update(customer=Customer.objects.create(name="c"))


def test_budget_needs_exactly_one_owner_in_the_database():
    with pytest.raises(IntegrityError), transaction.atomic():
        Budget.objects.create(max_limit=1, reset_duration="1d")


def test_one_budget_per_duration_per_owner_in_the_database():
    vk, _ = virtual_key_create(name="svc", budgets=[{"max_limit": 1, "reset_duration": "1d"}])
    with pytest.raises(IntegrityError), transaction.atomic():
        Budget.objects.create(max_limit=2, reset_duration="1d", virtual_key=vk)


@pytest.mark.parametrize("duration", ["", "1", "0d", "1x", "d1", "1.5h", "-1h", " 1h", "1H", "1d\n", "101Y", "999999Y"])
def test_invalid_budget_durations_are_rejected(duration):
    with pytest.raises(ValidationError) as exc:
        virtual_key_create(name="svc", budgets=[{"max_limit": 1, "reset_duration": duration}])
    assert "budgets[0].reset_duration" in exc.value.message_dict
    assert not VirtualKey.objects.exists()
