"""Routing rules API: ``/api/governance/routing-rules[/{id}]`` (Bifrost's paths, bodies and messages).

- ``GET`` lists ``{"rules": [...], "count", "total_count", "limit", "offset"}`` in evaluation
  order within each scope (priority, then age); filters ``scope`` and ``scope_id``. As in
  Bifrost, without ``limit``, ``offset`` or ``search`` (name substring) every rule is listed;
  with one of them the page is ``listing.paginate``'s (25 by default, at most 100).
- ``POST`` creates (``name`` and ``targets`` required), ``GET``/``PUT``/``DELETE /{id}``; every
  success is 200 with ``{"message", "rule"}`` (``{"rule"}`` for GET), as Bifrost answers.
  ``PUT`` patches: an absent or null field keeps its value; ``targets`` and ``fallbacks`` given
  replace the lists.
- A rule is ``{"id", "name", "description", "enabled", "cel_expression", "targets": [{"provider",
  "model", "key_id", "weight"}], "fallbacks", "scope", "scope_id", "priority", "created_at",
  "updated_at"}``; ``null`` in a target: keep the request's provider or model, the usual key
  choice. Bifrost's UI-only ``query`` and ``chain_rule`` are not kept (ignored in bodies).
- Validation lives in ``governance.services.routing_rules``: 400 naming the field, an expression
  the CEL compiler refuses quoted under ``cel_expression``; a name taken in the same scope is 409.
"""

from __future__ import annotations

import uuid
from typing import Any

from django.db.models import QuerySet
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_serializer
from rest_framework import serializers, viewsets
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.response import Response

from bifrost_site.exceptions import django_validation_detail
from governance import services
from governance.api import docs, listing
from governance.api.views import Conflict, get_or_404, known_fields
from governance.models import RoutingRule, RoutingScope
from governance.services.routing_rules import RULE_FIELDS

NOT_FOUND = "Routing rule not found"
MESSAGES = {
    "create": "Routing rule created successfully",
    "update": "Routing rule updated successfully",
    "destroy": "Routing rule deleted successfully",
}
PAGINATION_PARAMS = ("limit", "offset", "search")


def _iso(value: Any) -> str:
    return value.isoformat().replace("+00:00", "Z")


def rule_json(rule: RoutingRule) -> dict[str, Any]:
    return {
        "id": str(rule.pk),
        "name": rule.name,
        "description": rule.description,
        "enabled": rule.enabled,
        "cel_expression": rule.cel_expression,
        "targets": [
            {
                "provider": t.get("provider") or None,
                "model": t.get("model") or None,
                "key_id": t.get("key_id") or None,
                "weight": t.get("weight", 1.0),
            }
            for t in rule.targets or ()
        ],
        "fallbacks": list(rule.fallbacks or ()),
        "scope": rule.scope,
        "scope_id": rule.scope_id or None,
        "priority": rule.priority,
        "created_at": _iso(rule.created_at),
        "updated_at": _iso(rule.updated_at),
    }


# --- OpenAPI shapes (documentation only: the service validates) ---------------------------------


class RoutingTargetShape(serializers.Serializer):
    provider = serializers.CharField(
        max_length=63, required=False, allow_null=True, help_text="a configured provider; absent: the request's own"
    )
    model = serializers.CharField(max_length=255, required=False, allow_null=True, help_text="absent: the model asked")
    key_id = serializers.UUIDField(
        required=False,
        allow_null=True,
        help_text="pins this key of the provider (needs provider); absent: usual choice",
    )
    weight = serializers.FloatField(min_value=0, required=False, help_text="default 1; the weights sum to 1")


class RoutingRuleInput(serializers.Serializer):
    """Body of ``POST /api/governance/routing-rules``."""

    name = serializers.CharField(max_length=255, help_text="unique within its scope")
    description = serializers.CharField(max_length=10_000, required=False, allow_blank=True)
    enabled = serializers.BooleanField(required=False, default=True)
    cel_expression = serializers.CharField(
        max_length=10_000,
        required=False,
        allow_blank=True,
        help_text="CEL, compiled when saved; empty matches every request (variables: see the README)",
    )
    targets = serializers.ListField(child=RoutingTargetShape(), min_length=1, max_length=32)
    fallbacks = serializers.ListField(
        child=serializers.CharField(max_length=320),
        required=False,
        max_length=32,
        help_text='"provider/model", or "provider/" for the model asked; after the targets',
    )
    scope = serializers.ChoiceField(choices=RoutingScope.choices, required=False, default=RoutingScope.GLOBAL)
    scope_id = serializers.UUIDField(
        required=False, allow_null=True, help_text="the virtual key, team or customer; required unless global"
    )
    priority = serializers.IntegerField(required=False, default=0, help_text="lower is evaluated first in its scope")


class RoutingRuleUpdateInput(RoutingRuleInput):
    """Body of ``PUT /api/governance/routing-rules/{id}``: every field optional, absent (or null) = kept."""

    name = serializers.CharField(max_length=255, required=False)
    targets = serializers.ListField(child=RoutingTargetShape(), min_length=1, max_length=32, required=False)


class RoutingTargetOut(serializers.Serializer):
    provider = serializers.CharField(allow_null=True)
    model = serializers.CharField(allow_null=True)
    key_id = serializers.UUIDField(allow_null=True)
    weight = serializers.FloatField()


class RoutingRuleOut(serializers.Serializer):
    id = serializers.UUIDField()
    name = serializers.CharField()
    description = serializers.CharField(allow_blank=True)
    enabled = serializers.BooleanField()
    cel_expression = serializers.CharField(allow_blank=True)
    targets = RoutingTargetOut(many=True)
    fallbacks = serializers.ListField(child=serializers.CharField())
    scope = serializers.ChoiceField(choices=RoutingScope.choices)
    scope_id = serializers.UUIDField(allow_null=True)
    priority = serializers.IntegerField()
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()


@extend_schema_serializer(many=False)
class RoutingRuleListOut(docs.PageOut):
    rules = RoutingRuleOut(many=True)


@extend_schema_serializer(many=False)
class RoutingRuleOneOut(serializers.Serializer):
    rule = RoutingRuleOut()


@extend_schema_serializer(many=False)
class RoutingRuleMessageOut(serializers.Serializer):
    message = serializers.CharField()
    rule = RoutingRuleOut()


LIST_PARAMS = [
    OpenApiParameter("scope", str, enum=RoutingScope.values),
    OpenApiParameter("scope_id", OpenApiTypes.UUID),
    *docs.PAGE_PARAMS[:3],
]


# --- views ---------------------------------------------------------------------------------------


def _call(service: Any, **kwargs: Any) -> RoutingRule:
    """A service call whose duplicate name is a 409 naming the field."""
    try:
        return service(**kwargs)
    except services.RoutingRuleConflict as exc:
        raise Conflict(django_validation_detail(exc)) from None


# (Comments, not a docstring: drf-spectacular would publish it as every operation's description.)
# CRUD of routing rules through ``governance.services.routing_rules``.
class RoutingRuleViewSet(viewsets.GenericViewSet):
    queryset = RoutingRule.objects.all()

    def _queryset(self) -> QuerySet[RoutingRule]:
        return RoutingRule.objects.all()

    def _fetch(self, pk: str | uuid.UUID) -> RoutingRule:
        return get_or_404(self._queryset(), pk, NOT_FOUND)

    @extend_schema(parameters=LIST_PARAMS, responses=RoutingRuleListOut)
    def list(self, request: Request) -> Response:
        params = request.query_params
        queryset = self._queryset()
        scope = params.get("scope") or None
        if scope is not None:
            if scope not in RoutingScope.values:
                raise ValidationError({"scope": [f"scope must be one of {', '.join(RoutingScope.values)}"]})
            queryset = queryset.filter(scope=scope)
        scope_id = listing.uuid_param(params, "scope_id")
        if scope_id is not None:
            queryset = queryset.filter(scope_id=str(scope_id))
        queryset = listing.search(queryset, params).order_by("scope", "scope_id", "priority", "created_at", "pk")
        if not any(params.get(name) for name in PAGINATION_PARAMS):
            rows = list(queryset)
            page = {"count": len(rows), "total_count": len(rows), "limit": len(rows), "offset": 0}
        else:
            rows, page = listing.paginate(queryset, params)
        return Response({"rules": [rule_json(rule) for rule in rows], **page})

    @extend_schema(request=RoutingRuleInput, responses={200: RoutingRuleMessageOut})
    def create(self, request: Request) -> Response:
        rule = _call(services.routing_rule_create, **known_fields(request, RULE_FIELDS))
        return Response({"message": MESSAGES["create"], "rule": rule_json(self._fetch(rule.pk))})

    @extend_schema(parameters=[docs.ID_PARAM], responses=RoutingRuleOneOut)
    def retrieve(self, request: Request, pk: str) -> Response:
        return Response({"rule": rule_json(self._fetch(pk))})

    @extend_schema(parameters=[docs.ID_PARAM], request=RoutingRuleUpdateInput, responses=RoutingRuleMessageOut)
    def update(self, request: Request, pk: str) -> Response:
        rule = self._fetch(pk)
        _call(services.routing_rule_update, rule=rule, **known_fields(request, RULE_FIELDS))
        return Response({"message": MESSAGES["update"], "rule": rule_json(self._fetch(pk))})

    @extend_schema(parameters=[docs.ID_PARAM], responses={200: docs.MessageOut})
    def destroy(self, request: Request, pk: str) -> Response:
        services.routing_rule_delete(rule=self._fetch(pk))
        return Response({"message": MESSAGES["destroy"]})
