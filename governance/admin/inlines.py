"""Budget and rate-limit inlines shared by every owner (VK, team, customer, provider config).

Inline formsets are validated by the stock admin (``full_clean()`` on each row, uniqueness of
``reset_duration`` per owner across rows), then saved through the services by turning the rows
into the same specs the API sends: ``budgets_reconcile`` (matched by duration, usage kept) and
``rate_limit_apply`` (patched field by field, counters kept; ``{}`` removes it).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any, TypeAlias

from django import forms
from django.contrib import admin
from django.db.models import Model
from django.forms.models import BaseInlineFormSet
from django.http import HttpRequest
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe

from governance.admin.common import (
    LIVE_REQUESTS_ATTR,
    LIVE_TOKENS_ATTR,
    LimitOwnerT,
    ServiceAdminMixin,
    format_when,
    rate_limit_bars,
    related_rate_limit,
    usage_bar,
)
from governance.forms import BudgetInlineForm, RateLimitInlineForm
from governance.metering.live import live_usage
from governance.models import Budget, RateLimit
from governance.services import budgets_reconcile, rate_limit_apply

LIVE_STATE_ATTR = "_live_state"  # a limit row's ``live_usage`` entry, kept for its other columns
# What a calendar-aligned window starts on, by the unit of its duration (``governance.durations``).
CALENDAR_PERIODS = {"d": "day", "w": "week", "M": "month", "Y": "year"}

if TYPE_CHECKING:
    # An admin inline's formset: rows of some model under an owner row, one model form each
    # (Django's form classes are not subscriptable at runtime).
    InlineFormSet: TypeAlias = BaseInlineFormSet[Model, Model, forms.ModelForm[Model]]


class BudgetInline(admin.TabularInline):
    model = Budget
    form = BudgetInlineForm
    extra = 0
    extra_on_add = 0  # blank rows on an owner's add page (a blank row left blank adds nothing)
    fields = ["max_limit", "reset_duration", "calendar_aligned", "alert_thresholds", "usage", "window"]
    readonly_fields = ["usage", "window"]
    verbose_name = "budget"
    verbose_name_plural = "budgets (one per reset duration; a changed duration starts a new budget)"

    def get_extra(self, request: HttpRequest, obj: Model | None = None, **kwargs: Any) -> int:
        return self.extra_on_add if obj is None else self.extra

    @admin.display(description="usage")
    def usage(self, budget: Budget) -> str:
        if budget._state.adding:
            return "—"
        state = _live_state(budget)
        used = state["usage"] if state is not None else budget.current_usage
        label = budget.reset_duration + (" cal." if budget.calendar_aligned else "")
        return usage_bar(used, budget.max_limit, label, exact_money)

    @admin.display(description="current window")
    def window(self, budget: Budget) -> str:
        """The window's start as the API reports it (``last_reset``: the calendar period's start
        for a calendar-aligned budget, e.g. the 1st of the month) and when it resets."""
        if budget._state.adding:
            return "—"
        state = _live_state(budget)
        if state is None:
            return format_when(budget.last_reset)
        period = CALENDAR_PERIODS.get(budget.reset_duration[-1], "") if budget.calendar_aligned else ""
        return window_text(state["window_start"], state["resets_at"], period=period)


def _live_state(row: Budget | RateLimit) -> dict[str, Any] | None:
    """The row's live state (``metering.live``), read once per row for the columns that show it."""
    if not hasattr(row, LIVE_STATE_ATTR):
        kind = "budget" if isinstance(row, Budget) else "rate_limit"
        budgets, rate_limits = ([row], []) if isinstance(row, Budget) else ([], [row])
        setattr(row, LIVE_STATE_ATTR, live_usage(budgets, rate_limits).get((kind, row.pk)))
    state: dict[str, Any] | None = getattr(row, LIVE_STATE_ATTR)
    return state


def exact_money(value: Decimal | int) -> str:
    """Every digit the amount has, cents at least (``$123.4567``, ``$46.00``): the one place a
    key's budgets are shown does not round its spend (``money`` rounds from a dollar up)."""
    amount = Decimal(value)
    exponent = amount.normalize().as_tuple().exponent
    places = max(2, -exponent) if isinstance(exponent, int) else 2
    return f"${amount:,.{places}f}"


def window_text(start: datetime, resets_at: datetime | None, *, period: str = "") -> str:
    """``since <start>``, ``resets <end>`` and the calendar ``period`` on lines of their own, in
    the one date format."""
    lines = [format_html("since {}", format_when(start))]
    if resets_at is not None:
        lines.append(format_html("resets {}", format_when(resets_at)))
    if period:
        lines.append(format_html('<span class="gov-quiet">calendar {}</span>', period))
    return format_html(
        '<span class="gov-window">{}</span>', format_html_join(mark_safe("<br>"), "{}", ((line,) for line in lines))
    )


class RateLimitInline(admin.StackedInline):
    model = RateLimit
    form = RateLimitInlineForm
    extra = 0
    max_num = 1
    fieldsets = [
        (
            None,
            {"fields": [("token_max_limit", "token_reset_duration"), ("request_max_limit", "request_reset_duration")]},
        ),
        ("Current use", {"fields": ["usage", ("token_window", "request_window")]}),
    ]
    readonly_fields = ["usage", "token_window", "request_window"]
    verbose_name = "rate limit"
    verbose_name_plural = "rate limit"

    @admin.display(description="usage")
    def usage(self, rate_limit: RateLimit) -> str:
        if rate_limit._state.adding:
            return "—"
        state = _live_state(rate_limit) or {}
        for key, attr in (("tokens", LIVE_TOKENS_ATTR), ("requests", LIVE_REQUESTS_ATTR)):
            if key in state:
                setattr(rate_limit, attr, state[key])
        return rate_limit_bars(rate_limit)

    @admin.display(description="token window")
    def token_window(self, rate_limit: RateLimit) -> str:
        return self._window(rate_limit, "token")

    @admin.display(description="request window")
    def request_window(self, rate_limit: RateLimit) -> str:
        return self._window(rate_limit, "request")

    @staticmethod
    def _window(rate_limit: RateLimit, kind: str) -> str:
        if rate_limit._state.adding or not getattr(rate_limit, f"{kind}_max_limit"):
            return "—"
        state = _live_state(rate_limit) or {}
        start = state.get(f"{kind}_window_start") or getattr(rate_limit, f"{kind}_last_reset")
        return window_text(start, state.get(f"{kind}_resets_at"))


def _marked_for_deletion(formset: InlineFormSet, form: forms.ModelForm[Model]) -> bool:
    """The formset's own test of a row's DELETE box."""
    # ``BaseFormSet._should_delete_form`` exists in Django but is missing from django-stubs.
    return bool(formset._should_delete_form(form))  # type: ignore[attr-defined]


def live_forms(formset: InlineFormSet) -> Iterator[forms.ModelForm[Model]]:
    """Rows that should exist after the save: kept existing rows and filled-in new rows."""
    for form in formset.forms:
        if form in formset.extra_forms and not form.has_changed():
            continue
        if formset.can_delete and _marked_for_deletion(formset, form):
            continue
        yield form


def record_changes(formset: InlineFormSet) -> None:
    """Fill the attributes ``formset.save()`` would set; the admin's history message reads them."""
    formset.new_objects = [f.instance for f in live_forms(formset) if f in formset.extra_forms]
    formset.changed_objects = [
        (f.instance, f.changed_data) for f in live_forms(formset) if f in formset.initial_forms and f.has_changed()
    ]
    formset.deleted_objects = [
        f.instance for f in formset.initial_forms if formset.can_delete and _marked_for_deletion(formset, f)
    ]


def budget_specs(formset: InlineFormSet) -> list[dict[str, Any]]:
    return [
        {key: form.cleaned_data[key] for key in ("max_limit", "reset_duration", "calendar_aligned", "alert_thresholds")}
        for form in live_forms(formset)
    ]


def rate_limit_spec(formset: InlineFormSet) -> dict[str, Any]:
    """The single rate-limit row as a spec, or ``{}`` (remove) when it was deleted or never filled."""
    for form in live_forms(formset):
        return {
            key: form.cleaned_data.get(key)
            for key in ("token_max_limit", "token_reset_duration", "request_max_limit", "request_reset_duration")
        }
    return {}


class LimitsOwnerAdminMixin(ServiceAdminMixin[LimitOwnerT]):
    """Saves the budget and rate-limit inlines of an owner through the services."""

    def limits_of(self, owner: LimitOwnerT) -> tuple[list[Budget], list[RateLimit]]:
        rate_limit = related_rate_limit(owner)
        return list(owner.budgets.all()), [rate_limit] if rate_limit else []

    def save_formset(
        self, request: HttpRequest, form: forms.ModelForm[LimitOwnerT], formset: InlineFormSet, change: bool
    ) -> None:
        owner = form.instance
        if formset.model is Budget:
            self.run_service(budgets_reconcile, owner=owner, budgets=budget_specs(formset))
        elif formset.model is RateLimit:
            self.run_service(rate_limit_apply, owner=owner, spec=rate_limit_spec(formset))
        else:
            super().save_formset(request, form, formset, change)
            return
        record_changes(formset)
