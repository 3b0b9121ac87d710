"""Budgets and rate limits attached to an owner (VK, provider config, team, customer, model
config or provider)."""

from __future__ import annotations

import logging
from datetime import datetime
from decimal import Decimal
from typing import Any

from django.db import models, transaction
from django.utils import timezone

from governance.models import Budget, RateLimit
from governance.services.validation import check, field_error

logger = logging.getLogger("bifrost.enforcement")

RATE_LIMIT_FIELDS = ("token_max_limit", "token_reset_duration", "request_max_limit", "request_reset_duration")


def _owner_field(owner: models.Model) -> str:
    from governance.models import Customer, ModelConfig, Provider, ProviderConfig, ProviderGovernance, Team, VirtualKey

    return {
        VirtualKey: "virtual_key",
        ProviderConfig: "provider_config",
        Team: "team",
        Customer: "customer",
        ModelConfig: "model_config",
        Provider: "provider",
        ProviderGovernance: "provider",
    }[type(owner)]


def budgets_reconcile(*, owner: models.Model, budgets: list[dict[str, Any]], prefix: str = "budgets") -> None:
    """Make the owner's budgets match ``budgets``, matched by ``reset_duration``.

    A matching duration keeps its usage and window and takes the new limit; new durations are
    created; durations not listed are deleted (Bifrost's PUT semantics). ``alert_thresholds``
    (percents of the limit, ``[]`` for none) is kept when a spec leaves it out; a new budget then
    takes the default (50, 80, 100). Errors name ``<prefix>[i].alert_thresholds``.
    """
    seen: set[str | None] = set()
    for index, spec in enumerate(budgets):
        duration = spec.get("reset_duration")
        if duration in seen:
            raise field_error(f"{prefix}[{index}].reset_duration", f"duplicate reset_duration {duration!r}")
        seen.add(duration)
    field = _owner_field(owner)
    existing = {b.reset_duration: b for b in Budget.objects.filter(**{field: owner})}
    for index, spec in enumerate(budgets):
        budget = existing.get(spec["reset_duration"]) or Budget(**{field: owner}, reset_duration=spec["reset_duration"])
        budget.max_limit = spec["max_limit"]
        thresholds = spec.get("alert_thresholds")
        if thresholds is not None:
            # A tuple is taken as a list; anything else is stored as given for the validator to name.
            budget.alert_thresholds = list(thresholds) if isinstance(thresholds, list | tuple) else thresholds
        if "calendar_aligned" in spec:
            if budget.pk and bool(spec["calendar_aligned"]) != budget.calendar_aligned:
                budget.last_reset = timezone.now()
            budget.calendar_aligned = bool(spec["calendar_aligned"])
        check(budget, f"{prefix}[{index}]")
        budget.save()
    stale = [b.pk for duration, b in existing.items() if duration not in seen]
    if stale:
        Budget.objects.filter(pk__in=stale).delete()


def rate_limit_apply(*, owner: models.Model, spec: dict[str, Any] | None, prefix: str = "rate_limit") -> None:
    """Create, patch (field by field, counters kept) or remove (``{}``) the owner's rate limit."""
    if spec is None:
        return
    field = _owner_field(owner)
    current = RateLimit.objects.filter(**{field: owner}).first()
    if not spec:
        if current:
            current.delete()
        return
    rate_limit = current or RateLimit(**{field: owner})
    for name in RATE_LIMIT_FIELDS:
        if name in spec:
            value = spec[name]
            setattr(rate_limit, name, "" if value is None and name.endswith("duration") else value)
    check(rate_limit, prefix)
    rate_limit.save()


def limits_update(*, owner: models.Model, changes: dict[str, Any]) -> None:
    """An owner's budgets (reconciled when the list is given) and rate limit (see
    :func:`rate_limit_apply`) from an update's changes."""
    if changes.get("budgets") is not None:
        budgets_reconcile(owner=owner, budgets=changes["budgets"])
    rate_limit_apply(owner=owner, spec=changes.get("rate_limit"))


def budget_reset_usage(*, budget: Budget, now: datetime | None = None) -> Budget:
    """Set the budget's usage to zero and start a new window now, in the database and in the
    hot counters (manual reset from the API or the admin). Requests in flight settle their actual
    cost into the new window. If the hot counters cannot be reached, they are rebuilt from the
    database on reconnect (the backend is marked down, so the epoch moves)."""
    from governance.metering import counters, live  # the counters import the models: import late

    now = now or timezone.now()
    with transaction.atomic():
        updated = Budget.objects.filter(pk=budget.pk).update(current_usage=Decimal("0"), last_reset=now)
    if not updated:
        return budget
    budget = Budget.objects.get(pk=budget.pk)
    backend = counters.hot_counters()
    if backend is not None:
        try:
            backend.forget([live.budget_counter(budget)])
        except counters.CountersUnavailable:
            logger.warning("could not clear hot counters; they are rebuilt from the database on reconnect")
    return budget
