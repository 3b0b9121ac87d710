"""Customers and teams."""

from __future__ import annotations

from typing import Any

from django.db import transaction

from governance.models import Customer, Team
from governance.services.limits import budgets_reconcile, limits_update, rate_limit_apply
from governance.services.locking import lock_before_delete
from governance.services.validation import check, save_patched


@transaction.atomic
def customer_create(
    *, name: str, budgets: list[dict[str, Any]] | None = None, rate_limit: dict[str, Any] | None = None
) -> Customer:
    customer = Customer(name=name)
    check(customer)
    customer.save()
    budgets_reconcile(owner=customer, budgets=budgets or [])
    rate_limit_apply(owner=customer, spec=rate_limit)
    return customer


@transaction.atomic
def customer_update(*, customer: Customer, **changes: Any) -> Customer:
    """Patch semantics: only the keys given change; ``budgets`` present -> reconciled."""
    save_patched(instance=customer, changes=changes, fields=("name",))
    limits_update(owner=customer, changes=changes)
    return customer


@transaction.atomic
def customer_delete(*, customer: Customer) -> None:
    """Teams and virtual keys of the customer are detached (ON DELETE SET NULL), not deleted."""
    lock_before_delete(Customer.objects.filter(pk=customer.pk))
    customer.delete()


@transaction.atomic
def team_create(
    *,
    name: str,
    customer: Customer | None = None,
    budgets: list[dict[str, Any]] | None = None,
    rate_limit: dict[str, Any] | None = None,
    profile: dict | None = None,
    config: dict | None = None,
    claims: dict | None = None,
) -> Team:
    team = Team(name=name, customer=customer, profile=profile or {}, config=config or {}, claims=claims or {})
    check(team)
    team.save()
    budgets_reconcile(owner=team, budgets=budgets or [])
    rate_limit_apply(owner=team, spec=rate_limit)
    return team


@transaction.atomic
def team_update(*, team: Team, **changes: Any) -> Team:
    """Patch semantics: only the keys given change; ``customer=None`` detaches the team."""
    documents = {field: changes[field] or {} for field in ("profile", "config", "claims") if field in changes}
    save_patched(
        instance=team,
        changes={**changes, **documents},
        fields=("name", "customer", "profile", "config", "claims"),
    )
    limits_update(owner=team, changes=changes)
    return team


@transaction.atomic
def team_delete(*, team: Team) -> None:
    """Virtual keys of the team are detached (ON DELETE SET NULL), not deleted."""
    lock_before_delete(Team.objects.filter(pk=team.pk))
    team.delete()
