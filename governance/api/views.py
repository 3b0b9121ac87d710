"""Management API views for virtual keys, teams and customers (Bifrost v1.5 shapes).

The three resources share one flow, ``EntityViewSet``: each handler validates input with a
serializer, makes one service call and wraps the result in Bifrost's envelope. All successes are
200 with JSON, as Bifrost does. A subclass states only what differs: its queryset, filters, sort
fields, input serializers, services, representation, envelope keys and messages.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable
from typing import Any, ClassVar, Generic, TypeVar

from django.db.models import Model, QuerySet
from django.http import Http404
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import serializers, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import APIException, ValidationError
from rest_framework.request import Request
from rest_framework.response import Response

from governance import selectors, services
from governance.api import docs, listing
from governance.api.representations import Usage, customer_json, team_json, usage_for, virtual_key_json
from governance.api.serializers import (
    CustomerInput,
    CustomerUpdateInput,
    TeamInput,
    TeamUpdateInput,
    VirtualKeyInput,
    VirtualKeyUpdateInput,
)
from governance.models import Customer, ModelConfig, Team, VirtualKey

_M = TypeVar("_M", bound=Model)
# The row an ``EntityViewSet`` manages.
Entity = TypeVar("Entity", VirtualKey, Team, Customer, ModelConfig)


def get_or_404(queryset: QuerySet[_M], pk: str | uuid.UUID, message: str) -> _M:
    try:
        key = uuid.UUID(str(pk))
    except ValueError:
        raise Http404(message) from None
    obj = queryset.filter(pk=key).first()
    if obj is None:
        raise Http404(message)
    return obj


# list / create / retrieve / update / destroy of one entity through ``governance.services``.
# (Comments, not a docstring: drf-spectacular would publish a class docstring as the description
# of every operation of every subclass.) A subclass's ``queryset`` stays the plain manager query:
# the permission class reads its model.
class Conflict(APIException):
    """A write that collides with an existing row (a duplicate name...): 409, the field named."""

    status_code = 409
    default_detail = "Conflict with the current state of the resource"


def known_fields(request: Request, fields: Iterable[str]) -> dict[str, Any]:
    """The given ``fields`` of the JSON object sent; others (such as a GET body's ``id`` sent back)
    are ignored. A body that is not an object is a 400."""
    if not isinstance(request.data, dict):
        raise ValidationError({"non_field_errors": ["the body must be a JSON object"]})
    return {name: request.data[name] for name in fields if name in request.data}


class EntityViewSet(viewsets.GenericViewSet, Generic[Entity]):
    # Bifrost's envelope: ``{"<list_key>": [...], **page}``, ``{"<key>": {...}}``, plus ``message``.
    key: ClassVar[str]
    list_key: ClassVar[str]
    not_found: ClassVar[str]
    messages: ClassVar[dict[str, str]]  # "create", "update", "destroy" -> the success message
    create_input: ClassVar[type[serializers.Serializer]]
    update_input: ClassVar[type[serializers.Serializer]]
    # ``governance.services.<service>_create`` / ``_update`` / ``_delete``, looked up on each call
    # (not bound at import) so that a patched service is the one called.
    service: ClassVar[str]
    instance: ClassVar[str]  # the keyword ``_update`` and ``_delete`` take the row by
    # ``(obj, usage, **extra) -> dict``: the representation of one object.
    represent: ClassVar[Callable[..., dict[str, Any]]]
    # UUID query parameters that filter the list on the field of the same name, in this order.
    list_filters: ClassVar[tuple[str, ...]] = ()
    sort_fields: ClassVar[dict[str, str]] = {"name": "name", "created_at": "created_at"}
    search_field: ClassVar[str] = "name"  # what ``search`` matches (case-insensitive substring)
    default_sort: ClassVar[str] = "name"  # the ``sort_by`` of a list that names none

    def _queryset(self) -> QuerySet[Entity]:
        raise NotImplementedError

    def _fetch(self, pk: str | uuid.UUID) -> Entity:
        return get_or_404(self._queryset(), pk, self.not_found)

    def _render(self, obj: Entity, **extra: Any) -> dict[str, Any]:
        return self.represent(obj, usage_for([obj]), **extra)

    def _service(self, verb: str) -> Callable[..., Any]:
        return getattr(services, f"{self.service}_{verb}")

    def _created(self, result: Any) -> tuple[Entity, dict[str, Any]]:
        """The created object and the extra arguments of its representation."""
        return result, {}

    def _input(self, serializer_class: type[serializers.Serializer], request: Request) -> dict[str, Any]:
        data = serializer_class(data=request.data)
        data.is_valid(raise_exception=True)
        return data.to_service_kwargs()

    def list(self, request: Request) -> Response:
        params = request.query_params
        queryset = listing.search(self._queryset(), params, field=self.search_field)
        filters = {name: listing.uuid_param(params, name) for name in self.list_filters}
        queryset = queryset.filter(**{name: value for name, value in filters.items() if value})
        queryset = listing.sort(queryset, params, self.sort_fields, default=self.default_sort)
        rows, page = listing.paginate(queryset, params)
        usage = usage_for(rows)
        return Response({self.list_key: [self.represent(obj, usage) for obj in rows], **page})

    def create(self, request: Request) -> Response:
        obj, extra = self._created(self._service("create")(**self._input(self.create_input, request)))
        return Response({"message": self.messages["create"], self.key: self._render(self._fetch(obj.pk), **extra)})

    def retrieve(self, request: Request, pk: str) -> Response:
        return Response({self.key: self._render(self._fetch(pk))})

    def update(self, request: Request, pk: str) -> Response:
        obj = self._fetch(pk)
        self._service("update")(**{self.instance: obj}, **self._input(self.update_input, request))
        return Response({"message": self.messages["update"], self.key: self._render(self._fetch(pk))})

    def destroy(self, request: Request, pk: str) -> Response:
        self._service("delete")(**{self.instance: self._fetch(pk)})
        return Response({"message": self.messages["destroy"]})


def entity_schema(
    *,
    list_params: list[OpenApiParameter],
    list_out: type[serializers.Serializer],
    one_out: type[serializers.Serializer],
    message_out: type[serializers.Serializer],
) -> Callable[[type[EntityViewSet[Any]]], type[EntityViewSet[Any]]]:
    """The OpenAPI description of an ``EntityViewSet`` subclass (its input serializers are read
    from the class). Create and destroy declare 200, not drf-spectacular's 201/204: Bifrost
    answers 200."""

    def decorate(cls: type[EntityViewSet[Any]]) -> type[EntityViewSet[Any]]:
        return extend_schema_view(
            list=extend_schema(parameters=list_params, responses=list_out),
            create=extend_schema(request=cls.create_input, responses={200: message_out}),
            retrieve=extend_schema(parameters=[docs.ID_PARAM], responses=one_out),
            update=extend_schema(parameters=[docs.ID_PARAM], request=cls.update_input, responses=message_out),
            destroy=extend_schema(parameters=[docs.ID_PARAM], responses={200: docs.MessageOut}),
        )(cls)

    return decorate


def _virtual_key_json(vk: VirtualKey, usage: Usage, value: str | None = None) -> dict[str, Any]:
    return virtual_key_json(vk, value=value, usage=usage)


@entity_schema(
    list_params=docs.VK_LIST_PARAMS,
    list_out=docs.VirtualKeyListOut,
    one_out=docs.VirtualKeyOneOut,
    message_out=docs.VirtualKeyMessageOut,
)
class VirtualKeyViewSet(EntityViewSet[VirtualKey]):
    queryset = VirtualKey.objects.all()
    key = "virtual_key"
    list_key = "virtual_keys"
    not_found = "Virtual key not found"
    messages = {
        "create": "Virtual key created successfully",
        "update": "Virtual key updated successfully",
        "destroy": "Virtual key deleted successfully",
    }
    create_input = VirtualKeyInput
    update_input = VirtualKeyUpdateInput
    service = "virtual_key"
    instance = "vk"
    represent = staticmethod(_virtual_key_json)
    list_filters = ("team_id", "customer_id")
    sort_fields = {"name": "name", "created_at": "created_at", "budget_spent": "budget_spent", "status": "is_active"}

    def _queryset(self) -> QuerySet[VirtualKey]:
        return selectors.virtual_key_list()

    def _created(self, result: tuple[VirtualKey, str]) -> tuple[VirtualKey, dict[str, Any]]:
        vk, value = result  # the only time the secret is shown, with rotate
        return vk, {"value": value}

    @extend_schema(parameters=[docs.ID_PARAM], request=None, responses=docs.VirtualKeyMessageOut)
    @action(detail=True, methods=["post"])
    def rotate(self, request: Request, pk: str) -> Response:
        value = services.virtual_key_rotate(vk=self._fetch(pk))
        return Response(
            {"message": "Virtual key rotated successfully", "virtual_key": self._render(self._fetch(pk), value=value)}
        )


@entity_schema(
    list_params=docs.TEAM_LIST_PARAMS,
    list_out=docs.TeamListOut,
    one_out=docs.TeamOneOut,
    message_out=docs.TeamMessageOut,
)
class TeamViewSet(EntityViewSet[Team]):
    queryset = Team.objects.all()
    key = "team"
    list_key = "teams"
    not_found = "Team not found"
    messages = {
        "create": "Team created successfully",
        "update": "Team updated successfully",
        "destroy": "Team deleted successfully",
    }
    create_input = TeamInput
    update_input = TeamUpdateInput
    service = "team"
    instance = "team"
    represent = staticmethod(team_json)
    list_filters = ("customer_id",)

    def _queryset(self) -> QuerySet[Team]:
        return Team.objects.select_related("customer", "rate_limit").prefetch_related("budgets", "virtual_keys")


@entity_schema(
    list_params=docs.PAGE_PARAMS,
    list_out=docs.CustomerListOut,
    one_out=docs.CustomerOneOut,
    message_out=docs.CustomerMessageOut,
)
class CustomerViewSet(EntityViewSet[Customer]):
    queryset = Customer.objects.all()
    key = "customer"
    list_key = "customers"
    not_found = "Customer not found"
    messages = {
        "create": "Customer created successfully",
        "update": "Customer updated successfully",
        "destroy": "Customer deleted successfully",
    }
    create_input = CustomerInput
    update_input = CustomerUpdateInput
    service = "customer"
    instance = "customer"
    represent = staticmethod(customer_json)

    def _queryset(self) -> QuerySet[Customer]:
        return Customer.objects.select_related("rate_limit").prefetch_related("budgets", "teams", "virtual_keys")
