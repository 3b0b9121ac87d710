"""The virtual key list's filters, its page-wide lookups and its computed columns.

Every figure a row shows is fetched for the whole page at once: the live budget and rate-limit
usage (``common.LiveUsageChangeList``) and which providers each key can call
(``selectors.provider_reach``), so the page costs a fixed number of queries.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

from django.contrib import admin
from django.db.models import Q, QuerySet
from django.http import HttpRequest
from django.utils import timezone
from django.utils.html import format_html, format_html_join

from governance.admin.common import LIVE_USAGE_ATTR, LiveUsageChangeList, format_when
from governance.dashboard.charts import usage_level
from governance.models import VirtualKey
from governance.selectors import (
    ProviderReach,
    provider_reach,
    virtual_keys_at_budget_use,
    virtual_keys_rate_limited_now,
)

REACH_ATTR = "provider_reach"  # set on each row of the page by ``VirtualKeyChangeList``
MAX_PROVIDER_NAMES = 3


class ExpiredFilter(admin.SimpleListFilter):
    title = "expired"
    parameter_name = "expired"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin[Any]) -> list[tuple[str, str]]:
        return [("yes", "Expired"), ("no", "Not expired")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[VirtualKey]) -> QuerySet[VirtualKey]:
        now = timezone.now()
        if self.value() == "yes":
            return queryset.filter(expires_at__lte=now)
        if self.value() == "no":
            return queryset.filter(Q(expires_at__isnull=True) | Q(expires_at__gt=now))
        return queryset


class BudgetUseFilter(admin.SimpleListFilter):
    """``?budget_use=90``: keys with a budget of their own at 90 % of its limit or more, now.

    The choices offer 50, 90 and 100; any whole percent from 1 to 1000 works in the URL, and
    anything else leaves the list unfiltered (as the admin does with an unknown choice).
    """

    title = "budget use"
    parameter_name = "budget_use"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin[Any]) -> list[tuple[str, str]]:
        return [("50", "≥ 50 % of a budget"), ("90", "≥ 90 % of a budget"), ("100", "≥ 100 % (spent)")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[VirtualKey]) -> QuerySet[VirtualKey]:
        value = self.value() or ""
        if not value.isdigit() or not 1 <= int(value) <= 1000:
            return queryset
        return queryset.filter(pk__in=virtual_keys_at_budget_use(int(value)).values("pk"))


class RateLimitedFilter(admin.SimpleListFilter):
    """``?rate_limited=now``: keys whose own rate limit (requests or tokens) is used up in its
    current window, so their next request is refused until the window rolls over."""

    title = "rate limited"
    parameter_name = "rate_limited"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin[Any]) -> list[tuple[str, str]]:
        return [("now", "At its rate limit now")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[VirtualKey]) -> QuerySet[VirtualKey]:
        if self.value() != "now":
            return queryset
        return queryset.filter(pk__in=virtual_keys_rate_limited_now().values("pk"))


class VirtualKeyChangeList(LiveUsageChangeList):
    """The live usage of the page's limits, plus which providers each key on the page can call."""

    def get_results(self, request: HttpRequest) -> None:
        super().get_results(request)
        rows = list(self.result_list)
        reach = provider_reach(rows)
        for row in rows:
            setattr(row, REACH_ATTR, reach[row.pk])


def reach_of(vk: VirtualKey) -> ProviderReach:
    """The key's provider reach: the page's (already fetched), else computed for this key alone."""
    found: ProviderReach | None = getattr(vk, REACH_ATTR, None)
    if found is None:
        found = provider_reach([vk])[vk.pk]
        setattr(vk, REACH_ATTR, found)
    return found


def badge(level: str, text: str, title: str = "") -> str:
    if title:
        return format_html('<span class="gov-badge gov-badge-{}" title="{}">{}</span>', level, title, text)
    return format_html('<span class="gov-badge gov-badge-{}">{}</span>', level, text)


def status_badge(vk: VirtualKey) -> str:
    """Inactive, expired, "no provider" (with the reason as its tooltip), or active."""
    if not vk.is_active:
        return badge("off", "inactive", "Deactivated: every request with this key is refused.")
    if vk.is_expired:
        return badge("over", "expired", f"Expired {format_when(vk.expires_at)}: every request is refused.")
    reach = reach_of(vk)
    if not reach.providers:
        return badge("warn", "no provider", reach.problem)
    names = ", ".join(provider.name for provider in reach.providers)
    return badge("ok", "active", f"Can call: {names}.")


def budget_use(vk: VirtualKey) -> str:
    """The highest live use of the key's own budgets, as a percent coloured by level."""
    ratios = [float(getattr(b, LIVE_USAGE_ATTR, b.current_usage) / b.max_limit) for b in vk.budgets.all()]
    if not ratios:
        return "—"
    top = max(ratios)
    # Rounded down: "100 %" only once a budget is spent.
    return format_html('<span class="gov-pct gov-pct-{}">{} %</span>', usage_level(top), math.floor(top * 100))


def provider_names(vk: VirtualKey) -> str:
    """The providers the key has configs for (the first few), or "all" when it allows all."""
    names = sorted(config.provider.name for config in vk.provider_configs.all())
    shown = ", ".join(names[:MAX_PROVIDER_NAMES])
    if len(names) > MAX_PROVIDER_NAMES:
        shown += f" +{len(names) - MAX_PROVIDER_NAMES}"
    if vk.allow_all_providers:
        return format_html("all{}", format_html('<span class="gov-quiet"> (config: {})</span>', shown) if names else "")
    return shown or "none"


def when_cell(moment: datetime | None, empty: str = "—") -> str:
    """A date in the one format, the time allowed to wrap under the day in a narrow column."""
    if moment is None:
        return empty
    day, _, rest = format_when(moment).partition(" ")
    return format_html('<span class="gov-when">{} <span>{}</span></span>', day, rest)


def expiry_cell(vk: VirtualKey) -> str:
    if vk.expires_at is None:
        return "—"
    if vk.is_expired:
        return format_html('<span class="gov-expired" title="{}">expired</span>', format_when(vk.expires_at))
    return when_cell(vk.expires_at)


def links(items: list[tuple[str, str]]) -> str:
    """``label`` links separated by middle dots."""
    return format_html_join(" · ", '<a href="{}">{}</a>', ((url, label) for label, url in items))
