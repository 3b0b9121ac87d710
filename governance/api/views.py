"""Management API views for virtual keys, teams and customers (Bifrost v1.5 shapes).

Each handler validates input with a serializer, makes one service call and wraps the result in
Bifrost's envelope. All successes are 200 with JSON, as Bifrost does.
"""

from __future__ import annotations

import uuid

from django.db.models import Model, QuerySet
from django.http import Http404
from drf_spectacular.utils import extend_schema
from rest_framework import viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from governance import selectors, services
from governance.api import docs, listing
from governance.api.representations import customer_json, team_json, usage_for, virtual_key_json
from governance.api.serializers import (
    CustomerInput,
    CustomerUpdateInput,
    TeamInput,
    TeamUpdateInput,
    VirtualKeyInput,
    VirtualKeyUpdateInput,
)
from governance.models import Customer, Team, VirtualKey


def get_or_404(queryset: QuerySet, pk: str, message: str) -> Model:
    try:
        key = uuid.UUID(str(pk))
    except ValueError:
        raise Http404(message) from None
    obj = queryset.filter(pk=key).first()
    if obj is None:
        raise Http404(message)
    return obj


class VirtualKeyViewSet(viewsets.GenericViewSet):
    queryset = VirtualKey.objects.all()
    not_found = "Virtual key not found"
    sort_fields = {"name": "name", "created_at": "created_at", "budget_spent": "budget_spent", "status": "is_active"}

    def _fetch(self, pk: str) -> VirtualKey:
        return get_or_404(selectors.virtual_key_list(), pk, self.not_found)

    def _render(self, vk: VirtualKey, value: str | None = None) -> dict:
        return virtual_key_json(vk, value=value, usage=usage_for([vk]))

    @extend_schema(parameters=docs.VK_LIST_PARAMS, responses=docs.VirtualKeyListOut)
    def list(self, request: Request) -> Response:
        params = request.query_params
        queryset = listing.search(selectors.virtual_key_list(), params)
        team_id = listing.uuid_param(params, "team_id")
        customer_id = listing.uuid_param(params, "customer_id")
        if team_id:
            queryset = queryset.filter(team_id=team_id)
        if customer_id:
            queryset = queryset.filter(customer_id=customer_id)
        queryset = listing.sort(queryset, params, self.sort_fields)
        rows, page = listing.paginate(queryset, params)
        usage = usage_for(rows)
        return Response({"virtual_keys": [virtual_key_json(vk, usage=usage) for vk in rows], **page})

    @extend_schema(request=VirtualKeyInput, responses={200: docs.VirtualKeyMessageOut})
    def create(self, request: Request) -> Response:
        data = VirtualKeyInput(data=request.data)
        data.is_valid(raise_exception=True)
        vk, value = services.virtual_key_create(**data.to_service_kwargs())
        return Response(
            {"message": "Virtual key created successfully", "virtual_key": self._render(self._fetch(vk.pk), value)}
        )

    @extend_schema(parameters=[docs.ID_PARAM], responses=docs.VirtualKeyOneOut)
    def retrieve(self, request: Request, pk: str) -> Response:
        return Response({"virtual_key": self._render(self._fetch(pk))})

    @extend_schema(parameters=[docs.ID_PARAM], request=VirtualKeyUpdateInput, responses=docs.VirtualKeyMessageOut)
    def update(self, request: Request, pk: str) -> Response:
        vk = self._fetch(pk)
        data = VirtualKeyUpdateInput(data=request.data)
        data.is_valid(raise_exception=True)
        services.virtual_key_update(vk, **data.to_service_kwargs())
        return Response({"message": "Virtual key updated successfully", "virtual_key": self._render(self._fetch(pk))})

    @extend_schema(parameters=[docs.ID_PARAM], responses={200: docs.MessageOut})
    def destroy(self, request: Request, pk: str) -> Response:
        services.virtual_key_delete(self._fetch(pk))
        return Response({"message": "Virtual key deleted successfully"})

    @extend_schema(parameters=[docs.ID_PARAM], request=None, responses=docs.VirtualKeyMessageOut)
    @action(detail=True, methods=["post"])
    def rotate(self, request: Request, pk: str) -> Response:
        value = services.virtual_key_rotate(self._fetch(pk))
        return Response(
            {"message": "Virtual key rotated successfully", "virtual_key": self._render(self._fetch(pk), value)}
        )


class TeamViewSet(viewsets.GenericViewSet):
    queryset = Team.objects.all()
    not_found = "Team not found"

    def _queryset(self) -> QuerySet[Team]:
        return Team.objects.select_related("customer", "rate_limit").prefetch_related("budgets", "virtual_keys")

    def _fetch(self, pk: str) -> Team:
        return get_or_404(self._queryset(), pk, self.not_found)

    def _render(self, team: Team) -> dict:
        return team_json(team, usage_for([team]))

    @extend_schema(parameters=docs.TEAM_LIST_PARAMS, responses=docs.TeamListOut)
    def list(self, request: Request) -> Response:
        params = request.query_params
        queryset = listing.search(self._queryset(), params)
        customer_id = listing.uuid_param(params, "customer_id")
        if customer_id:
            queryset = queryset.filter(customer_id=customer_id)
        queryset = listing.sort(queryset, params, {"name": "name", "created_at": "created_at"})
        rows, page = listing.paginate(queryset, params)
        usage = usage_for(rows)
        return Response({"teams": [team_json(team, usage) for team in rows], **page})

    @extend_schema(request=TeamInput, responses={200: docs.TeamMessageOut})
    def create(self, request: Request) -> Response:
        data = TeamInput(data=request.data)
        data.is_valid(raise_exception=True)
        team = services.team_create(**data.to_service_kwargs())
        return Response({"message": "Team created successfully", "team": self._render(self._fetch(team.pk))})

    @extend_schema(parameters=[docs.ID_PARAM], responses=docs.TeamOneOut)
    def retrieve(self, request: Request, pk: str) -> Response:
        return Response({"team": self._render(self._fetch(pk))})

    @extend_schema(parameters=[docs.ID_PARAM], request=TeamUpdateInput, responses=docs.TeamMessageOut)
    def update(self, request: Request, pk: str) -> Response:
        team = self._fetch(pk)
        data = TeamUpdateInput(data=request.data)
        data.is_valid(raise_exception=True)
        services.team_update(team, **data.to_service_kwargs())
        return Response({"message": "Team updated successfully", "team": self._render(self._fetch(pk))})

    @extend_schema(parameters=[docs.ID_PARAM], responses={200: docs.MessageOut})
    def destroy(self, request: Request, pk: str) -> Response:
        services.team_delete(self._fetch(pk))
        return Response({"message": "Team deleted successfully"})


class CustomerViewSet(viewsets.GenericViewSet):
    queryset = Customer.objects.all()
    not_found = "Customer not found"

    def _queryset(self) -> QuerySet[Customer]:
        return Customer.objects.select_related("rate_limit").prefetch_related("budgets", "teams", "virtual_keys")

    def _fetch(self, pk: str) -> Customer:
        return get_or_404(self._queryset(), pk, self.not_found)

    def _render(self, customer: Customer) -> dict:
        return customer_json(customer, usage_for([customer]))

    @extend_schema(parameters=docs.PAGE_PARAMS, responses=docs.CustomerListOut)
    def list(self, request: Request) -> Response:
        params = request.query_params
        queryset = listing.search(self._queryset(), params)
        queryset = listing.sort(queryset, params, {"name": "name", "created_at": "created_at"})
        rows, page = listing.paginate(queryset, params)
        usage = usage_for(rows)
        return Response({"customers": [customer_json(c, usage) for c in rows], **page})

    @extend_schema(request=CustomerInput, responses={200: docs.CustomerMessageOut})
    def create(self, request: Request) -> Response:
        data = CustomerInput(data=request.data)
        data.is_valid(raise_exception=True)
        customer = services.customer_create(**data.to_service_kwargs())
        return Response(
            {"message": "Customer created successfully", "customer": self._render(self._fetch(customer.pk))}
        )

    @extend_schema(parameters=[docs.ID_PARAM], responses=docs.CustomerOneOut)
    def retrieve(self, request: Request, pk: str) -> Response:
        return Response({"customer": self._render(self._fetch(pk))})

    @extend_schema(parameters=[docs.ID_PARAM], request=CustomerUpdateInput, responses=docs.CustomerMessageOut)
    def update(self, request: Request, pk: str) -> Response:
        customer = self._fetch(pk)
        data = CustomerUpdateInput(data=request.data)
        data.is_valid(raise_exception=True)
        services.customer_update(customer, **data.to_service_kwargs())
        return Response({"message": "Customer updated successfully", "customer": self._render(self._fetch(pk))})

    @extend_schema(parameters=[docs.ID_PARAM], responses={200: docs.MessageOut})
    def destroy(self, request: Request, pk: str) -> Response:
        services.customer_delete(self._fetch(pk))
        return Response({"message": "Customer deleted successfully"})
