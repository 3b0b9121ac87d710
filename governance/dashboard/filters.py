"""The dashboard's filter form: date range, VK, team, customer, provider, model."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from django import forms
from django.db.models import QuerySet
from django.utils import timezone

from governance.models import Customer, Team, UsageRecord, VirtualKey
from governance.usage_stats import UsageFilter

MAX_RANGE_DAYS = 366


class UsageFilterForm(forms.Form):
    start = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}))
    end = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}))
    virtual_key = forms.ModelChoiceField(VirtualKey.objects.order_by("name"), required=False)
    team = forms.ModelChoiceField(Team.objects.order_by("name"), required=False)
    customer = forms.ModelChoiceField(Customer.objects.order_by("name"), required=False)
    provider = forms.CharField(required=False, max_length=63)
    model = forms.CharField(required=False, max_length=255)

    def clean(self) -> dict[str, Any]:
        super().clean()
        data = self.cleaned_data  # what ``Form.clean()`` returns
        today = timezone.now().date()
        end = data.get("end") or today
        start = data.get("start") or end - timedelta(days=29)
        if start > end:
            self.add_error("start", "start must be on or before end")
        elif (end - start).days + 1 > MAX_RANGE_DAYS:
            self.add_error("start", f"the range may span at most {MAX_RANGE_DAYS} days")
        data["start"], data["end"] = start, end
        return data

    @property
    def days(self) -> list[date]:
        start, end = self.cleaned_data["start"], self.cleaned_data["end"]
        return [start + timedelta(days=n) for n in range((end - start).days + 1)]

    def usage_filter(self) -> UsageFilter:
        """The (valid) filters for the rollup reads (``governance.usage_stats``); end inclusive (UTC)."""
        data = self.cleaned_data
        return UsageFilter(
            start=datetime.combine(data["start"], time.min, tzinfo=UTC),
            end=datetime.combine(data["end"] + timedelta(days=1), time.min, tzinfo=UTC),
            virtual_key_ids=[data["virtual_key"].pk] if data.get("virtual_key") else [],
            team_ids=[data["team"].pk] if data.get("team") else [],
            customer_ids=[data["customer"].pk] if data.get("customer") else [],
            providers=[data["provider"].strip()] if data.get("provider") else [],
            models=[data["model"].strip()] if data.get("model") else [],
        )

    def records(self) -> QuerySet[UsageRecord]:
        """Usage records matching the (valid) filters; the end date is inclusive (UTC)."""
        data = self.cleaned_data
        start = datetime.combine(data["start"], time.min, tzinfo=UTC)
        end = datetime.combine(data["end"] + timedelta(days=1), time.min, tzinfo=UTC)
        queryset = UsageRecord.objects.filter(created_at__gte=start, created_at__lt=end)
        for field in ("virtual_key", "team", "customer"):
            if data.get(field):
                queryset = queryset.filter(**{field: data[field]})
        for field in ("provider", "model"):
            if data.get(field):
                queryset = queryset.filter(**{field: data[field].strip()})
        return queryset
