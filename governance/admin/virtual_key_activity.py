"""What a virtual key's change page says about its use: last use, refusals, links to its ledger
rows and to the dashboard, and the spend chart of its last 30 days.

The key's budgets are shown once, in the budget inline (live usage, its window's start and
reset); the spend panel here has no budget table of its own.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.http import urlencode

from governance.admin.common import format_when
from governance.models import UsageRecord, VirtualKey

REFUSAL_DAYS = 30


def usage_records_url(vk: VirtualKey, **extra: str) -> str:
    """The ledger list filtered to ``vk`` (and to ``extra`` filters, e.g. ``outcome="refused"``)."""
    query = urlencode({"virtual_key__id__exact": str(vk.pk), **extra})
    return f"{reverse('admin:governance_usagerecord_changelist')}?{query}"


def dashboard_url(vk: VirtualKey) -> str:
    return f"{reverse('governance-usage-dashboard')}?{urlencode({'virtual_key': str(vk.pk)})}"


def refusal_counts(vk: VirtualKey, now: datetime | None = None) -> tuple[int, int]:
    """Requests governance refused for ``vk``: ``(last 24 hours, last 30 days)``."""
    now = now or timezone.now()
    refused = UsageRecord.objects.refusals().filter(virtual_key=vk, created_at__gte=now - timedelta(days=REFUSAL_DAYS))
    recent = refused.filter(created_at__gte=now - timedelta(hours=24)).count()
    return recent, refused.count()


def activity(vk: VirtualKey) -> str:
    """Last use, refusal counts (linked to the refused rows) and the links to the key's usage."""
    latest = UsageRecord.objects.filter(virtual_key=vk).order_by("-created_at").values_list("created_at", flat=True)
    last = latest.first()
    recent, month = refusal_counts(vk)
    refused_url = usage_records_url(vk, outcome="refused")
    return format_html(
        '<div class="gov-activity">'
        '<p>Last used: <strong id="vk-last-used">{last}</strong></p>'
        '<p>Refused by governance: <a id="vk-refusals" href="{refused_url}">'
        "<strong>{recent}</strong> in the last 24 h, <strong>{month}</strong> in the last {days} days</a></p>"
        '<p><a id="vk-usage-records" href="{records}">Usage records of this key</a> · '
        '<a id="vk-dashboard" href="{dashboard}">Usage dashboard for this key</a></p>'
        "</div>",
        last=format_when(last) if last else "never",
        refused_url=refused_url,
        recent=recent,
        month=month,
        days=REFUSAL_DAYS,
        records=usage_records_url(vk),
        dashboard=dashboard_url(vk),
    )
