"""Pricing overrides API: ``/api/governance/pricing-overrides[/{id}]`` (Bifrost's shapes).

- ``GET`` lists ``{"pricing_overrides": [...], "count"}``, oldest first; filters ``scope_kind``,
  ``virtual_key_id``, ``provider_id`` (a provider name), ``provider_key_id``. As in Bifrost,
  ``limit``, ``offset`` or ``search`` (name substring) switch to the paginated shape, which adds
  ``total_count``, ``limit`` and ``offset``.
- ``POST`` answers **201** (as Bifrost does) ``{"message", "pricing_override"}``; ``GET``/``PUT``/
  ``DELETE /{id}`` answer 200. ``PUT`` follows Bifrost: an omitted field keeps its value, a given
  ``scope_kind`` resets the scope identifiers to those sent with it, ``patch`` replaces the whole
  price patch.
- An override is ``{"id", "name", "scope_kind", "virtual_key_id", "provider_id",
  "provider_key_id", "match_type", "pattern", "request_types", "patch", "pricing_patch",
  "created_at", "updated_at"}``. ``patch`` holds the price fields it sets (USD: per token, and
  per request for ``cost_per_request``); ``pricing_patch`` is the same as a JSON string (how
  Bifrost stores it and how ``config.json`` writes it, also accepted in bodies).

The rules (which override wins, what a field left out means) are ``governance.price_overrides``.
"""

from __future__ import annotations

import json
import uuid
from decimal import Decimal
from typing import Any

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_field, extend_schema_serializer
from rest_framework import serializers, viewsets
from rest_framework.request import Request
from rest_framework.response import Response

from governance import services
from governance.api import docs, listing
from governance.api.serializers import StrictCharField
from governance.api.views import get_or_404
from governance.models import PricingOverride, Provider, ProviderKey, VirtualKey
from governance.models.pricing_overrides import MatchType, ScopeKind
from governance.price_overrides import PATCH_FIELDS, REQUEST_TYPES

NOT_FOUND = "Pricing override not found"
MESSAGES = {
    "create": "Pricing override created successfully",
    "update": "Pricing override updated successfully",
    "destroy": "Pricing override deleted successfully",
}
PAGINATION_PARAMS = ("limit", "offset", "search")
SCOPE_API_NAMES = {"virtual_key": "virtual_key_id", "provider": "provider_id", "provider_key": "provider_key_id"}


# --- input --------------------------------------------------------------------------------------


@extend_schema_field({"type": "number", "minimum": 0, "nullable": True, "description": "USD"})
class PriceField(serializers.DecimalField):
    """A price: a JSON number, finite, >= 0, at most 15 decimal places (the catalog's precision)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(
            max_digits=24, decimal_places=15, min_value=Decimal("0"), required=False, allow_null=True, **kwargs
        )

    def to_internal_value(self, data: Any) -> Decimal:
        if isinstance(data, bool) or not isinstance(data, int | float):
            self.fail("invalid")
        return super().to_internal_value(data)


class PatchInput(serializers.Serializer):
    """The price fields an override sets (USD); null or absent: the catalog's value."""

    input_cost_per_token = PriceField()
    output_cost_per_token = PriceField()
    cache_read_input_token_cost = PriceField(help_text="a cached input token (the catalog's cached input price)")
    cost_per_request = PriceField(help_text="flat amount added once to every successful request")

    def to_internal_value(self, data: Any) -> dict[str, Any]:
        if isinstance(data, dict):
            unknown = sorted(key for key in data if key not in self.fields)
            if unknown:
                raise serializers.ValidationError(
                    {unknown[0]: [f"not a price this gateway applies (supported: {', '.join(self.fields)})"]}
                )
        return dict(super().to_internal_value(data))


@extend_schema_field({"type": "string", "description": "the patch as a JSON string (config.json's form)"})
class PricingPatchField(serializers.Field):
    """Bifrost's ``pricing_patch``: a JSON string holding the patch object (an object is taken too)."""

    def to_internal_value(self, data: Any) -> dict[str, Any]:
        if isinstance(data, str):
            try:
                data = json.loads(data)
            except ValueError:
                raise serializers.ValidationError("must be a JSON object, or a string holding one") from None
        if not isinstance(data, dict):
            raise serializers.ValidationError("must be a JSON object, or a string holding one")
        return PatchInput().run_validation(data)

    def to_representation(self, value: Any) -> Any:
        return value


class _Ref(serializers.UUIDField):
    """A UUID naming an existing row; an unknown id is a 400 on the field."""

    def __init__(self, model: type[VirtualKey] | type[ProviderKey], noun: str, **kwargs: Any) -> None:
        super().__init__(required=False, allow_null=True, **kwargs)
        self.model, self.noun = model, noun

    def to_internal_value(self, data: Any) -> VirtualKey | ProviderKey:
        pk = super().to_internal_value(data)
        obj = self.model.objects.filter(pk=pk).first()
        if obj is None:
            raise serializers.ValidationError(f"{self.noun} {pk} does not exist")
        return obj


@extend_schema_field({"type": "string", "nullable": True, "maxLength": 63, "description": "a provider's name"})
class _ProviderRef(serializers.Field):
    """A provider named by its name (Bifrost's ``provider_id``); an unknown name is a 400."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(required=False, allow_null=True, **kwargs)

    def to_internal_value(self, data: Any) -> Provider:
        if not isinstance(data, str) or not data:
            raise serializers.ValidationError("must be a provider's name")
        provider = Provider.objects.filter(name=data).first() if len(data) <= 63 else None
        if provider is None:
            raise serializers.ValidationError(f"provider {data[:63]!r} does not exist")
        return provider

    def to_representation(self, value: Any) -> Any:
        return value


class PricingOverrideInput(serializers.Serializer):
    """Body of ``POST /api/governance/pricing-overrides``."""

    name = StrictCharField(max_length=255)
    scope_kind = serializers.ChoiceField(choices=ScopeKind.choices)
    virtual_key_id = _Ref(VirtualKey, "virtual key", help_text="for the virtual_key* scopes")
    provider_id = _ProviderRef(help_text="the provider's name, for the provider and virtual_key_provider scopes")
    provider_key_id = _Ref(ProviderKey, "provider key", help_text="for the provider_key scopes")
    match_type = serializers.ChoiceField(choices=MatchType.choices)
    pattern = StrictCharField(max_length=255, trim_whitespace=False)
    request_types = serializers.ListField(
        child=serializers.ChoiceField(choices=REQUEST_TYPES),
        required=False,
        allow_null=True,
        help_text="empty or absent: every request type",
    )
    patch = PatchInput(required=False, allow_null=True)
    pricing_patch = PricingPatchField(required=False, allow_null=True)

    creating = True

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        attrs = super().validate(attrs)
        encoded = attrs.pop("pricing_patch", None)
        if encoded is not None:
            patch = attrs.get("patch")
            if patch is not None and _set(patch) != _set(encoded):
                raise serializers.ValidationError({"pricing_patch": ["disagrees with patch: send one of them"]})
            attrs["patch"] = encoded
        patch = attrs.get("patch")
        if (self.creating or patch is not None) and not _set(patch or {}):
            raise serializers.ValidationError({"patch": ["set at least one price field"]})
        return attrs

    def to_service_kwargs(self) -> dict[str, Any]:
        data = dict(self.validated_data)
        kwargs: dict[str, Any] = {}
        for model, api in SCOPE_API_NAMES.items():
            if api in data:
                kwargs[model] = data.pop(api)
        patch = data.pop("patch", None)
        if patch is not None:
            kwargs["prices"] = {PATCH_FIELDS[api]: value for api, value in patch.items() if value is not None}
        if "request_types" in data and data["request_types"] is None:
            data["request_types"] = [] if self.creating else None
        return {**kwargs, **data}


class PricingOverrideUpdateInput(PricingOverrideInput):
    """Body of ``PUT /api/governance/pricing-overrides/{id}``: every field optional."""

    name = StrictCharField(max_length=255, required=False)
    scope_kind = serializers.ChoiceField(choices=ScopeKind.choices, required=False)
    match_type = serializers.ChoiceField(choices=MatchType.choices, required=False)
    pattern = StrictCharField(max_length=255, trim_whitespace=False, required=False)

    creating = False


def _set(patch: dict[str, Any]) -> dict[str, Decimal]:
    return {key: value for key, value in patch.items() if value is not None}


# --- output -------------------------------------------------------------------------------------


def _iso(value: Any) -> str:
    return value.isoformat().replace("+00:00", "Z")


def patch_of(override: PricingOverride) -> dict[str, float]:
    """The price fields the override sets, by Bifrost's names, as JSON numbers."""
    out = {}
    for api, model in PATCH_FIELDS.items():
        value = getattr(override, model)
        if value is not None:
            out[api] = float(value)
    return out


def pricing_override_json(override: PricingOverride) -> dict[str, Any]:
    patch = patch_of(override)
    return {
        "id": str(override.pk),
        "name": override.name,
        "scope_kind": override.scope_kind,
        "virtual_key_id": str(override.virtual_key_id) if override.virtual_key_id else None,
        "provider_id": override.provider.name if override.provider_id and override.provider else None,
        "provider_key_id": str(override.provider_key_id) if override.provider_key_id else None,
        "match_type": override.match_type,
        "pattern": override.pattern,
        "request_types": list(override.request_types),
        "patch": patch,
        "pricing_patch": json.dumps(patch, separators=(",", ":")),
        "created_at": _iso(override.created_at),
        "updated_at": _iso(override.updated_at),
    }


class PatchOut(serializers.Serializer):
    input_cost_per_token = serializers.FloatField(required=False)
    output_cost_per_token = serializers.FloatField(required=False)
    cache_read_input_token_cost = serializers.FloatField(required=False)
    cost_per_request = serializers.FloatField(required=False)


class PricingOverrideOut(serializers.Serializer):
    id = serializers.UUIDField()
    name = serializers.CharField()
    scope_kind = serializers.ChoiceField(choices=ScopeKind.choices)
    virtual_key_id = serializers.UUIDField(allow_null=True)
    provider_id = serializers.CharField(allow_null=True, help_text="the provider's name")
    provider_key_id = serializers.UUIDField(allow_null=True)
    match_type = serializers.ChoiceField(choices=MatchType.choices)
    pattern = serializers.CharField()
    request_types = serializers.ListField(child=serializers.CharField(), help_text="empty: every request type")
    patch = PatchOut(help_text="the price fields the override sets; the others are the catalog's")
    pricing_patch = serializers.CharField(help_text="patch as a JSON string")
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()


@extend_schema_serializer(many=False)
class PricingOverrideListOut(serializers.Serializer):
    pricing_overrides = PricingOverrideOut(many=True)
    count = serializers.IntegerField()
    total_count = serializers.IntegerField(required=False, help_text="paginated shape only")
    limit = serializers.IntegerField(required=False, help_text="paginated shape only")
    offset = serializers.IntegerField(required=False, help_text="paginated shape only")


@extend_schema_serializer(many=False)
class PricingOverrideOneOut(serializers.Serializer):
    pricing_override = PricingOverrideOut()


@extend_schema_serializer(many=False)
class PricingOverrideMessageOut(serializers.Serializer):
    message = serializers.CharField()
    pricing_override = PricingOverrideOut()


LIST_PARAMS = [
    OpenApiParameter("scope_kind", str, enum=ScopeKind.values),
    OpenApiParameter("virtual_key_id", OpenApiTypes.UUID),
    OpenApiParameter("provider_id", str, description="a provider's name"),
    OpenApiParameter("provider_key_id", OpenApiTypes.UUID),
    *docs.PAGE_PARAMS[:3],
]


# --- views --------------------------------------------------------------------------------------


# (Comments, not a docstring: drf-spectacular would publish it as every operation's description.)
# CRUD of pricing overrides through ``governance.services``; 201 on create as Bifrost answers.
class PricingOverrideViewSet(viewsets.GenericViewSet):
    queryset = PricingOverride.objects.all()

    def _queryset(self) -> Any:
        return PricingOverride.objects.select_related("provider")

    def _fetch(self, pk: str | uuid.UUID) -> PricingOverride:
        return get_or_404(self._queryset(), pk, NOT_FOUND)

    def _input(self, serializer_class: type[PricingOverrideInput], request: Request) -> dict[str, Any]:
        data = serializer_class(data=request.data)
        data.is_valid(raise_exception=True)
        return data.to_service_kwargs()

    @extend_schema(parameters=LIST_PARAMS, responses=PricingOverrideListOut)
    def list(self, request: Request) -> Response:
        params = request.query_params
        queryset = self._queryset()
        scope_kind = params.get("scope_kind") or None
        if scope_kind is not None:
            if scope_kind not in ScopeKind.values:
                raise serializers.ValidationError(
                    {"scope_kind": [f"scope_kind must be one of {', '.join(ScopeKind.values)}"]}
                )
            queryset = queryset.filter(scope_kind=scope_kind)
        for name in ("virtual_key_id", "provider_key_id"):
            value = listing.uuid_param(params, name)
            if value is not None:
                queryset = queryset.filter(**{name: value})
        provider = params.get("provider_id") or None
        if provider is not None:
            queryset = queryset.filter(provider__name=provider)
        queryset = listing.search(queryset, params).order_by("created_at", "pk")
        if not any(params.get(name) for name in PAGINATION_PARAMS):
            rows = list(queryset)
            return Response({"pricing_overrides": [pricing_override_json(o) for o in rows], "count": len(rows)})
        page_rows, page = listing.paginate(queryset, params)
        return Response({"pricing_overrides": [pricing_override_json(o) for o in page_rows], **page})

    @extend_schema(request=PricingOverrideInput, responses={201: PricingOverrideMessageOut})
    def create(self, request: Request) -> Response:
        override = services.pricing_override_create(**self._input(PricingOverrideInput, request))
        body = {"message": MESSAGES["create"], "pricing_override": pricing_override_json(self._fetch(override.pk))}
        return Response(body, status=201)

    @extend_schema(parameters=[docs.ID_PARAM], responses=PricingOverrideOneOut)
    def retrieve(self, request: Request, pk: str) -> Response:
        return Response({"pricing_override": pricing_override_json(self._fetch(pk))})

    @extend_schema(parameters=[docs.ID_PARAM], request=PricingOverrideUpdateInput, responses=PricingOverrideMessageOut)
    def update(self, request: Request, pk: str) -> Response:
        override = self._fetch(pk)
        services.pricing_override_update(override=override, **self._input(PricingOverrideUpdateInput, request))
        return Response({"message": MESSAGES["update"], "pricing_override": pricing_override_json(self._fetch(pk))})

    @extend_schema(parameters=[docs.ID_PARAM], responses={200: docs.MessageOut})
    def destroy(self, request: Request, pk: str) -> Response:
        services.pricing_override_delete(override=self._fetch(pk))
        return Response({"message": MESSAGES["destroy"]})
