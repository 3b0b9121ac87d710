"""Budget and rate-limit inlines shared by every owner (VK, team, customer, provider config).

Inline formsets are validated by the stock admin (``full_clean()`` on each row, uniqueness of
``reset_duration`` per owner across rows), then saved through the services by turning the rows
into the same specs the API sends: ``budgets_reconcile`` (matched by duration, usage kept) and
``rate_limit_apply`` (patched field by field, counters kept; ``{}`` removes it).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, TypeAlias

from django import forms
from django.contrib import admin
from django.contrib.admin.utils import display_for_value
from django.db.models import Model
from django.forms.models import BaseInlineFormSet
from django.http import HttpRequest

from governance.admin.common import (
    LimitOwnerT,
    ServiceAdminMixin,
    attach_live_usage,
    budget_bars,
    rate_limit_bars,
    related_rate_limit,
)
from governance.forms import BudgetInlineForm, RateLimitInlineForm
from governance.models import Budget, RateLimit
from governance.services import budgets_reconcile, rate_limit_apply

if TYPE_CHECKING:
    # An admin inline's formset: rows of some model under an owner row, one model form each
    # (Django's form classes are not subscriptable at runtime).
    InlineFormSet: TypeAlias = BaseInlineFormSet[Model, Model, forms.ModelForm[Model]]


class BudgetInline(admin.TabularInline):
    model = Budget
    form = BudgetInlineForm
    extra = 0
    fields = ["max_limit", "reset_duration", "calendar_aligned", "alert_thresholds", "usage", "window_start"]
    readonly_fields = ["usage", "window_start"]
    verbose_name = "budget"
    verbose_name_plural = "budgets (one per reset duration; a changed duration starts a new budget)"

    @admin.display(description="usage")
    def usage(self, budget: Budget) -> str:
        if budget._state.adding:
            return "—"
        attach_live_usage([budget], [])
        return budget_bars([budget])

    @admin.display(description="window started")
    def window_start(self, budget: Budget) -> str:
        return "—" if budget._state.adding else display_for_value(budget.last_reset, "—")


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
        ("Current use", {"fields": ["usage", ("token_last_reset", "request_last_reset")]}),
    ]
    readonly_fields = ["usage", "token_last_reset", "request_last_reset"]
    verbose_name = "rate limit"
    verbose_name_plural = "rate limit"

    @admin.display(description="usage")
    def usage(self, rate_limit: RateLimit) -> str:
        if rate_limit._state.adding:
            return "—"
        attach_live_usage([], [rate_limit])
        return rate_limit_bars(rate_limit)


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
