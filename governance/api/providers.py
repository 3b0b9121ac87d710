"""Provider and provider-key management API (``/api/providers*``, ``/api/keys``).

Shapes follow Bifrost: a provider is ``{"name", "api_format", "network_config": {...},
"keys": [...]}``; key values are write-only and shown masked (``…abcd``). Every write is one
service call; every success is 200. Changes reach the proxy at once through the snapshot
invalidation signals (``governance.signals``).
"""

from __future__ import annotations

import uuid
from typing import Any

from django.db import transaction
from django.http import Http404
from drf_spectacular.utils import extend_schema
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from governance import services
from governance.api import provider_serializers as shapes
from governance.api.docs import MessageOut
from governance.api.provider_serializers import ProviderInput, ProviderKeyInput
from governance.models import Provider, ProviderKey
from governance.services.validation import field_error

PROVIDER_NOT_FOUND = "Provider not found"
KEY_NOT_FOUND = "Key not found"


def key_json(key: ProviderKey, provider_name: str | None = None) -> dict:
    return {
        "id": str(key.id),
        "provider": provider_name or key.provider.name,
        "name": key.name,
        "value": key.masked_value,
        "models": key.models,
        "weight": key.weight,
        "enabled": key.enabled,
        **({"azure_key_config": key.azure_key_config} if key.azure_key_config else {}),
        "created_at": key.created_at.isoformat().replace("+00:00", "Z"),
        "updated_at": key.updated_at.isoformat().replace("+00:00", "Z"),
    }


def provider_json(provider: Provider) -> dict:
    return {
        "id": str(provider.id),
        "name": provider.name,
        "provider_type": provider.provider_type,
        "api_format": provider.wire_format,
        "network_config": {
            "base_url": provider.base_url,
            "effective_base_url": provider.effective_base_url,
            "default_request_timeout_in_seconds": provider.timeout_seconds,
            "extra_headers": provider.extra_headers,
        },
        "keys": [key_json(key, provider.name) for key in provider.keys.all()],
        "created_at": provider.created_at.isoformat().replace("+00:00", "Z"),
        "updated_at": provider.updated_at.isoformat().replace("+00:00", "Z"),
    }


def provider_or_404(name: str) -> Provider:
    provider = Provider.objects.prefetch_related("keys").filter(name=name).first()
    if provider is None:
        raise Http404(PROVIDER_NOT_FOUND)
    return provider


def _validated(
    serializer_class: type[ProviderInput] | type[ProviderKeyInput], data: object, **context: Any
) -> dict[str, Any]:
    serializer = serializer_class(data=data, context=context)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data


def _network_changes(data: dict) -> dict:
    network = data.get("network_config") or {}
    changes = {}
    if "base_url" in network:
        changes["base_url"] = network["base_url"]
    if "default_request_timeout_in_seconds" in network:
        changes["timeout_seconds"] = network["default_request_timeout_in_seconds"]
    if "extra_headers" in network:
        changes["extra_headers"] = network["extra_headers"]
    return changes


class ProviderListView(APIView):
    queryset = Provider.objects.all()

    @extend_schema(operation_id="providers_list", responses={200: shapes.ProviderListOut})
    def get(self, request: Request) -> Response:
        providers = [provider_json(p) for p in Provider.objects.prefetch_related("keys")]
        return Response({"providers": providers, "total": len(providers)})

    @extend_schema(operation_id="providers_create", request=ProviderInput, responses={200: shapes.ProviderMessageOut})
    def post(self, request: Request) -> Response:
        data = _validated(ProviderInput, request.data, creating=True)
        if Provider.objects.filter(name=data["provider"]).exists():
            raise field_error("provider", f"provider {data['provider']!r} already exists")
        with transaction.atomic():  # the provider and its keys, or nothing
            provider = services.provider_create(
                name=data["provider"], provider_type=data.get("provider_type"), **_network_changes(data)
            )
            for key in data.get("keys") or ():
                services.provider_key_create(provider=provider, **key)
        provider = Provider.objects.prefetch_related("keys").get(pk=provider.pk)
        return Response({"message": "Provider created successfully", "provider": provider_json(provider)})


class ProviderDetailView(APIView):
    queryset = Provider.objects.all()

    @extend_schema(operation_id="providers_retrieve", responses={200: shapes.ProviderOneOut})
    def get(self, request: Request, name: str) -> Response:
        return Response({"provider": provider_json(provider_or_404(name))})

    @extend_schema(operation_id="providers_update", request=ProviderInput, responses={200: shapes.ProviderMessageOut})
    def put(self, request: Request, name: str) -> Response:
        provider = provider_or_404(name)
        data = _validated(ProviderInput, request.data)
        if data.get("provider") not in (None, provider.name):
            raise field_error("provider", "a provider cannot be renamed")
        provider = services.provider_update(
            provider=provider, provider_type=data.get("provider_type"), **_network_changes(data)
        )
        return Response({"message": "Provider updated successfully", "provider": provider_json(provider)})

    @extend_schema(operation_id="providers_destroy", responses={200: MessageOut})
    def delete(self, request: Request, name: str) -> Response:
        services.provider_delete(provider=provider_or_404(name))
        return Response({"message": "Provider deleted successfully"})


def key_or_404(provider: Provider, key_id: str) -> ProviderKey:
    try:
        pk = uuid.UUID(str(key_id))
    except ValueError:
        raise Http404(KEY_NOT_FOUND) from None
    key = ProviderKey.objects.filter(provider=provider, pk=pk).first()
    if key is None:
        raise Http404(KEY_NOT_FOUND)
    return key


class ProviderKeyListView(APIView):
    queryset = ProviderKey.objects.all()

    @extend_schema(operation_id="providers_keys_list", responses={200: shapes.KeyListOut})
    def get(self, request: Request, name: str) -> Response:
        provider = provider_or_404(name)
        keys = [key_json(k, provider.name) for k in provider.keys.all()]
        return Response({"keys": keys, "count": len(keys)})

    @extend_schema(
        operation_id="providers_keys_create", request=ProviderKeyInput, responses={200: shapes.KeyMessageOut}
    )
    def post(self, request: Request, name: str) -> Response:
        provider = provider_or_404(name)
        data = _validated(ProviderKeyInput, request.data, creating=True)
        if provider.keys.filter(name=data["name"]).exists():
            raise field_error("name", f"key {data['name']!r} already exists for provider {provider.name!r}")
        key = services.provider_key_create(provider=provider, **data)
        return Response({"message": "Key created successfully", "key": key_json(key, provider.name)})


class ProviderKeyDetailView(APIView):
    queryset = ProviderKey.objects.all()

    @extend_schema(operation_id="providers_keys_retrieve", responses={200: shapes.KeyOneOut})
    def get(self, request: Request, name: str, key_id: str) -> Response:
        provider = provider_or_404(name)
        return Response({"key": key_json(key_or_404(provider, key_id), provider.name)})

    @extend_schema(
        operation_id="providers_keys_update", request=ProviderKeyInput, responses={200: shapes.KeyMessageOut}
    )
    def put(self, request: Request, name: str, key_id: str) -> Response:
        provider = provider_or_404(name)
        key = key_or_404(provider, key_id)
        data = _validated(ProviderKeyInput, request.data)
        if "name" in data and data["name"] != key.name and provider.keys.filter(name=data["name"]).exists():
            raise field_error("name", f"key {data['name']!r} already exists for provider {provider.name!r}")
        key = services.provider_key_update(key=key, **data)
        return Response({"message": "Key updated successfully", "key": key_json(key, provider.name)})

    @extend_schema(operation_id="providers_keys_destroy", responses={200: MessageOut})
    def delete(self, request: Request, name: str, key_id: str) -> Response:
        services.provider_key_delete(key=key_or_404(provider_or_404(name), key_id))
        return Response({"message": "Key deleted successfully"})


class KeyListView(APIView):
    queryset = ProviderKey.objects.all()

    @extend_schema(operation_id="keys_list", responses={200: shapes.KeyListOut})
    def get(self, request: Request) -> Response:
        keys = [key_json(k) for k in ProviderKey.objects.select_related("provider")]
        return Response({"keys": keys, "count": len(keys)})
