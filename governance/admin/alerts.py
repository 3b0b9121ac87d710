"""Budget alerts in the admin: the webhooks (secret write-only), and read-only lists of the alerts
recorded and of their deliveries (what was sent, when, to which webhook, attempts, last error).

Alerts and deliveries are written by the ledger and the sender only
(``governance.metering.alerts``, ``.alert_delivery``); these pages never add or change them.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from django import forms
from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html, format_html_join

from governance.admin.common import GovernanceModelAdmin, ServiceAdminMixin, Services
from governance.admin.limits import owner_link
from governance.dashboard.charts import money
from governance.forms import AlertWebhookAdminForm
from governance.models import AlertDelivery, AlertWebhook, BudgetAlert, DeliveryStatus
from governance.services import alert_webhook_create, alert_webhook_delete, alert_webhook_update

_STATUS_LEVEL: dict[str, str] = {
    DeliveryStatus.SENT: "ok",
    DeliveryStatus.PENDING: "warn",
    DeliveryStatus.FAILED: "over",
}
_BUDGET_OWNERS = (
    "alert__budget__virtual_key",
    "alert__budget__team",
    "alert__budget__customer",
    "alert__budget__provider_config__provider",
    "alert__budget__model_config__provider",
    "alert__budget__provider",
)
# Shown and read-only alike.
ALERT_FIELDS = ("budget_owner", "threshold_display", "spend_display", "window_start", "crossed_at", "sent_to")
DELIVERY_FIELDS = (
    "webhook",
    "alert_summary",
    "status_badge",
    "attempts",
    "created_at",
    "sent_at",
    "response_status",
    "next_attempt_at",
    "last_error",
)


def _badge(status: str) -> str:
    return format_html('<span class="gov-badge gov-badge-{}">{}</span>', _STATUS_LEVEL.get(status, "warn"), status)


@admin.register(AlertWebhook)
class AlertWebhookAdmin(ServiceAdminMixin[AlertWebhook], GovernanceModelAdmin[AlertWebhook]):
    form = AlertWebhookAdminForm
    list_display = ["name", "url_host", "enabled", "created_at"]
    list_filter = ["enabled"]
    search_fields = ["name"]
    services = Services(
        create=alert_webhook_create, update=alert_webhook_update, delete=alert_webhook_delete, instance="webhook"
    )
    service_fields = ("name", "url", "enabled")

    @admin.display(description="host")
    def url_host(self, webhook: AlertWebhook) -> str:
        # The host only on the list: a Slack webhook URL's path is its credential.
        return urlsplit(webhook.url).hostname or "—"

    def service_data(self, form: forms.ModelForm[AlertWebhook], change: bool) -> dict[str, Any]:
        # Blank on a change keeps the stored secret (the update service keeps what it is not given).
        return super().service_data(form, change) | {"secret": form.cleaned_data.get("secret") or None}


class _ReadOnly(GovernanceModelAdmin[Any]):
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(BudgetAlert)
class BudgetAlertAdmin(_ReadOnly):
    list_display = ["crossed_at", "budget_owner", "threshold_display", "spend_display", "window_start", "sent_to"]
    list_filter = ["threshold", "crossed_at"]
    date_hierarchy = "crossed_at"
    list_select_related = [name.removeprefix("alert__") for name in _BUDGET_OWNERS]
    fields = ALERT_FIELDS
    readonly_fields = ALERT_FIELDS

    def get_queryset(self, request: HttpRequest) -> QuerySet[BudgetAlert]:
        return super().get_queryset(request).prefetch_related("deliveries__webhook")

    @admin.display(description="budget")
    def budget_owner(self, alert: BudgetAlert) -> str:
        return format_html("{} ({})", owner_link(alert.budget), alert.budget.reset_duration)

    @admin.display(description="threshold", ordering="threshold")
    def threshold_display(self, alert: BudgetAlert) -> str:
        return f"{alert.threshold}%"

    @admin.display(description="spent / limit")
    def spend_display(self, alert: BudgetAlert) -> str:
        return f"{money(alert.spend)} / {money(alert.limit)}"

    @admin.display(description="deliveries")
    def sent_to(self, alert: BudgetAlert) -> str:
        deliveries = list(alert.deliveries.all())
        if not deliveries:
            return "— (no enabled webhook)"
        url = reverse("admin:governance_alertdelivery_changelist") + f"?alert__id__exact={alert.pk}"
        items = format_html_join(" ", "{} {}", ((d.webhook.name, _badge(d.status)) for d in deliveries))
        return format_html('{} <a href="{}">details</a>', items, url)


@admin.register(AlertDelivery)
class AlertDeliveryAdmin(_ReadOnly):
    list_display = [
        "created_at",
        "webhook",
        "alert_summary",
        "status_badge",
        "attempts",
        "sent_at",
        "response_status",
        "next_attempt_at",
        "last_error",
    ]
    list_filter = ["status", "webhook"]
    list_select_related = ["webhook", "alert__budget", *_BUDGET_OWNERS]
    fields = DELIVERY_FIELDS
    readonly_fields = DELIVERY_FIELDS

    @admin.display(description="status", ordering="status")
    def status_badge(self, delivery: AlertDelivery) -> str:
        return _badge(delivery.status)

    @admin.display(description="alert")
    def alert_summary(self, delivery: AlertDelivery) -> str:
        alert = delivery.alert
        url = reverse("admin:governance_budgetalert_change", args=[alert.pk])
        return format_html(
            '<a href="{}">{}%</a> of {} ({})',
            url,
            alert.threshold,
            owner_link(alert.budget),
            alert.budget.reset_duration,
        )
