"""Budget alerts API: ``/api/governance/alert-webhooks[/{id}]`` and ``/api/governance/alerts``.

- ``alert-webhooks``: ``GET`` lists ``{"alert_webhooks": [...], "count"}`` by name; ``POST``
  creates (``name``, ``url``, ``secret`` required; ``enabled`` default true); ``GET``/``PUT``/
  ``DELETE /{id}``. Every success is 200 with ``{"message", "alert_webhook"}`` (``{"alert_webhook"}``
  for GET), as the other resources answer. ``PUT`` patches: an absent or null field keeps its
  value, the secret included. A webhook is ``{"id", "name", "url", "enabled", "secret_set",
  "created_at", "updated_at"}``: the secret is write-only and never returned. Validation is the
  service's (``governance.services.alert_webhooks``): 400 naming the field, 409 on a taken name.
- ``alerts`` (read only): the thresholds crossed, newest first, each with its deliveries
  (webhook, status, attempts, last error, when sent); ``budget_id`` filters, ``limit``/``offset``
  page (25 by default, at most 100).

What is sent, and how it is signed and retried: ``governance.metering.alert_delivery``.
"""

from __future__ import annotations

import uuid
from typing import Any

from django.db.models import QuerySet
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_serializer
from rest_framework import serializers, viewsets
from rest_framework.request import Request
from rest_framework.response import Response

from bifrost_site.exceptions import django_validation_detail
from governance import services
from governance.api import docs, listing
from governance.api.views import Conflict, get_or_404, known_fields
from governance.models import AlertWebhook, BudgetAlert, DeliveryStatus
from governance.services.alert_webhooks import WEBHOOK_FIELDS

NOT_FOUND = "Alert webhook not found"
MESSAGES = {
    "create": "Alert webhook created successfully",
    "update": "Alert webhook updated successfully",
    "destroy": "Alert webhook deleted successfully",
}


def _iso(value: Any) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value is not None else None


def alert_webhook_json(webhook: AlertWebhook) -> dict[str, Any]:
    return {
        "id": str(webhook.pk),
        "name": webhook.name,
        "url": webhook.url,
        "enabled": webhook.enabled,
        "secret_set": webhook.secret_set,
        "created_at": _iso(webhook.created_at),
        "updated_at": _iso(webhook.updated_at),
    }


def budget_alert_json(alert: BudgetAlert) -> dict[str, Any]:
    return {
        "id": alert.pk,
        "budget_id": str(alert.budget_id),
        "threshold_percent": alert.threshold,
        "spend": float(alert.spend),
        "limit": float(alert.limit),
        "window_start": _iso(alert.window_start),
        "crossed_at": _iso(alert.crossed_at),
        "deliveries": [
            {
                "webhook_id": str(d.webhook_id),
                "webhook": d.webhook.name,
                "status": d.status,
                "attempts": d.attempts,
                "response_status": d.response_status,
                "last_error": d.last_error,
                "next_attempt_at": _iso(d.next_attempt_at) if d.status == DeliveryStatus.PENDING else None,
                "sent_at": _iso(d.sent_at),
            }
            for d in alert.deliveries.all()
        ],
    }


# --- OpenAPI shapes (documentation only: the service validates) ---------------------------------


class AlertWebhookInput(serializers.Serializer):
    """Body of ``POST /api/governance/alert-webhooks``."""

    name = serializers.CharField(max_length=255, help_text="unique")
    url = serializers.CharField(max_length=2048, help_text="http:// or https:// (a Slack incoming webhook works)")
    secret = serializers.CharField(
        min_length=16, max_length=1024, write_only=True, help_text="signs every body; write-only, never returned"
    )
    enabled = serializers.BooleanField(required=False, default=True)


class AlertWebhookUpdateInput(AlertWebhookInput):
    """Body of ``PUT /api/governance/alert-webhooks/{id}``: every field optional, absent (or null) = kept."""

    name = serializers.CharField(max_length=255, required=False)
    url = serializers.CharField(max_length=2048, required=False)
    secret = serializers.CharField(min_length=16, max_length=1024, write_only=True, required=False)


class AlertWebhookOut(serializers.Serializer):
    id = serializers.UUIDField()
    name = serializers.CharField()
    url = serializers.CharField()
    enabled = serializers.BooleanField()
    secret_set = serializers.BooleanField(help_text="the secret itself is never returned")
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()


@extend_schema_serializer(many=False)
class AlertWebhookListOut(serializers.Serializer):
    alert_webhooks = AlertWebhookOut(many=True)
    count = serializers.IntegerField()


@extend_schema_serializer(many=False)
class AlertWebhookOneOut(serializers.Serializer):
    alert_webhook = AlertWebhookOut()


@extend_schema_serializer(many=False)
class AlertWebhookMessageOut(serializers.Serializer):
    message = serializers.CharField()
    alert_webhook = AlertWebhookOut()


class AlertDeliveryOut(serializers.Serializer):
    webhook_id = serializers.UUIDField()
    webhook = serializers.CharField(help_text="the webhook's name")
    status = serializers.ChoiceField(choices=DeliveryStatus.choices)
    attempts = serializers.IntegerField()
    response_status = serializers.IntegerField(allow_null=True)
    last_error = serializers.CharField(allow_blank=True)
    next_attempt_at = serializers.DateTimeField(allow_null=True, help_text="pending deliveries only")
    sent_at = serializers.DateTimeField(allow_null=True)


class BudgetAlertOut(serializers.Serializer):
    id = serializers.IntegerField()
    budget_id = serializers.UUIDField()
    threshold_percent = serializers.IntegerField()
    spend = serializers.FloatField()
    limit = serializers.FloatField()
    window_start = serializers.DateTimeField()
    crossed_at = serializers.DateTimeField()
    deliveries = AlertDeliveryOut(many=True)


@extend_schema_serializer(many=False)
class BudgetAlertListOut(docs.PageOut):
    alerts = BudgetAlertOut(many=True)


ALERT_LIST_PARAMS = [OpenApiParameter("budget_id", OpenApiTypes.UUID), *docs.PAGE_PARAMS[:2]]


# --- views ---------------------------------------------------------------------------------------


def _call(service: Any, **kwargs: Any) -> AlertWebhook:
    """A service call whose duplicate name is a 409 naming the field."""
    try:
        return service(**kwargs)
    except services.AlertWebhookConflict as exc:
        raise Conflict(django_validation_detail(exc)) from None


# (Comments, not a docstring: drf-spectacular would publish it as every operation's description.)
# CRUD of alert webhooks through ``governance.services.alert_webhooks``.
class AlertWebhookViewSet(viewsets.GenericViewSet):
    queryset = AlertWebhook.objects.all()

    def _fetch(self, pk: str | uuid.UUID) -> AlertWebhook:
        return get_or_404(AlertWebhook.objects.all(), pk, NOT_FOUND)

    @extend_schema(responses=AlertWebhookListOut)
    def list(self, request: Request) -> Response:
        rows = list(AlertWebhook.objects.order_by("name", "pk"))
        return Response({"alert_webhooks": [alert_webhook_json(w) for w in rows], "count": len(rows)})

    @extend_schema(request=AlertWebhookInput, responses={200: AlertWebhookMessageOut})
    def create(self, request: Request) -> Response:
        webhook = _call(services.alert_webhook_create, **known_fields(request, WEBHOOK_FIELDS))
        return Response({"message": MESSAGES["create"], "alert_webhook": alert_webhook_json(self._fetch(webhook.pk))})

    @extend_schema(parameters=[docs.ID_PARAM], responses=AlertWebhookOneOut)
    def retrieve(self, request: Request, pk: str) -> Response:
        return Response({"alert_webhook": alert_webhook_json(self._fetch(pk))})

    @extend_schema(parameters=[docs.ID_PARAM], request=AlertWebhookUpdateInput, responses=AlertWebhookMessageOut)
    def update(self, request: Request, pk: str) -> Response:
        webhook = self._fetch(pk)
        _call(services.alert_webhook_update, webhook=webhook, **known_fields(request, WEBHOOK_FIELDS))
        return Response({"message": MESSAGES["update"], "alert_webhook": alert_webhook_json(self._fetch(pk))})

    @extend_schema(parameters=[docs.ID_PARAM], responses={200: docs.MessageOut})
    def destroy(self, request: Request, pk: str) -> Response:
        services.alert_webhook_delete(webhook=self._fetch(pk))
        return Response({"message": MESSAGES["destroy"]})


# The budget alerts recorded, newest first, with their deliveries (read only).
class BudgetAlertViewSet(viewsets.GenericViewSet):
    queryset = BudgetAlert.objects.all()

    def _queryset(self) -> QuerySet[BudgetAlert]:
        return BudgetAlert.objects.prefetch_related("deliveries__webhook").order_by("-crossed_at", "-pk")

    @extend_schema(parameters=ALERT_LIST_PARAMS, responses=BudgetAlertListOut)
    def list(self, request: Request) -> Response:
        queryset = self._queryset()
        budget_id = listing.uuid_param(request.query_params, "budget_id")
        if budget_id is not None:
            queryset = queryset.filter(budget_id=budget_id)
        rows, page = listing.paginate(queryset, request.query_params)
        return Response({"alerts": [budget_alert_json(alert) for alert in rows], **page})
