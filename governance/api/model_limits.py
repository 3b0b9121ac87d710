"""Limits on all traffic, whoever sends it (Bifrost v1.5 paths and shapes).

- ``/api/governance/model-configs[/{id}]``: GET list (paginated, ``search`` on ``model_name``,
  ``sort_by`` ``model_name`` or ``created_at``), POST, GET one, PUT (a patch, as everywhere),
  DELETE. Wrapper ``model_config`` / ``model_configs``. A second config for the same
  ``(model_name, provider)`` is a 409 naming ``model_name``.
- ``/api/governance/providers[/{name}]``: GET lists the providers that have governance (budgets
  or a rate limit), with live usage; GET one; PUT sets it (creates, or patches what the body
  gives: ``budgets`` reconciled by duration keeping usage, ``rate_limit: {}`` removes it);
  DELETE removes it (the provider stays). A provider with no governance, or no such provider, is
  404 ``Provider governance not found``. Permissions are the ``providergovernance`` model's.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.db.models import QuerySet
from django.http import Http404
from drf_spectacular.utils import extend_schema
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from bifrost_site.exceptions import django_validation_detail
from governance import services
from governance.api import docs
from governance.api.representations import model_config_json, provider_governance_json, usage_for
from governance.api.serializers import ModelConfigInput, ModelConfigUpdateInput, ProviderGovernanceInput
from governance.api.views import Conflict, EntityViewSet, entity_schema
from governance.models import ModelConfig, Provider, ProviderGovernance

GOVERNANCE_NOT_FOUND = "Provider governance not found"


@entity_schema(
    list_params=docs.MODEL_CONFIG_LIST_PARAMS,
    list_out=docs.ModelConfigListOut,
    one_out=docs.ModelConfigOneOut,
    message_out=docs.ModelConfigMessageOut,
)
class ModelConfigViewSet(EntityViewSet[ModelConfig]):
    queryset = ModelConfig.objects.all()
    key = "model_config"
    list_key = "model_configs"
    not_found = "Model config not found"
    messages = {
        "create": "Model config created successfully",
        "update": "Model config updated successfully",
        "destroy": "Model config deleted successfully",
    }
    create_input = ModelConfigInput
    update_input = ModelConfigUpdateInput
    service = "model_config"
    instance = "model_config"
    represent = staticmethod(model_config_json)
    sort_fields = {"model_name": "model_name", "created_at": "created_at"}
    search_field = "model_name"
    default_sort = "model_name"

    def _queryset(self) -> QuerySet[ModelConfig]:
        return ModelConfig.objects.select_related("provider", "rate_limit").prefetch_related("budgets")

    def _service(self, verb: str) -> Callable[..., Any]:
        func = super()._service(verb)

        def call(**kwargs: Any) -> Any:
            try:
                return func(**kwargs)
            except services.ModelConfigConflict as exc:
                raise Conflict(django_validation_detail(exc)) from None

        return call


def _governed() -> QuerySet[ProviderGovernance]:
    return ProviderGovernance.objects.select_related("rate_limit").prefetch_related("budgets").order_by("name")


def _governed_or_404(name: str) -> ProviderGovernance:
    provider = _governed().filter(name=name).first()
    if provider is None:
        raise Http404(GOVERNANCE_NOT_FOUND)
    return provider


def _render(name: str) -> dict[str, Any]:
    provider = _governed().filter(name=name).first() or Provider.objects.get(name=name)
    return provider_governance_json(provider, usage_for([provider]))


class ProviderGovernanceListView(APIView):
    queryset = ProviderGovernance.objects.all()

    @extend_schema(operation_id="governance_providers_list", responses={200: docs.ProviderGovernanceListOut})
    def get(self, request: Request) -> Response:
        providers = list(_governed())
        usage = usage_for(providers)
        return Response({"providers": [provider_governance_json(p, usage) for p in providers], "count": len(providers)})


class ProviderGovernanceDetailView(APIView):
    queryset = ProviderGovernance.objects.all()

    @extend_schema(operation_id="governance_providers_retrieve", responses={200: docs.ProviderGovernanceOneOut})
    def get(self, request: Request, name: str) -> Response:
        provider = _governed_or_404(name)
        return Response({"provider": provider_governance_json(provider, usage_for([provider]))})

    @extend_schema(
        operation_id="governance_providers_update",
        request=ProviderGovernanceInput,
        responses={200: docs.ProviderGovernanceMessageOut},
    )
    def put(self, request: Request, name: str) -> Response:
        provider = Provider.objects.filter(name=name).first()
        if provider is None:
            raise Http404(GOVERNANCE_NOT_FOUND)
        data = ProviderGovernanceInput(data=request.data)
        data.is_valid(raise_exception=True)
        services.provider_governance_set(provider=provider, **data.to_service_kwargs())
        return Response({"message": "Provider governance updated successfully", "provider": _render(name)})

    @extend_schema(operation_id="governance_providers_destroy", responses={200: docs.MessageOut})
    def delete(self, request: Request, name: str) -> Response:
        services.provider_governance_delete(provider=_governed_or_404(name))
        return Response({"message": "Provider governance deleted successfully"})
