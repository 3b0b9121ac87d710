"""The writes of the config import (``governance.config_import``): upserts by the identity a
Bifrost ``config.json`` gives, which the public services do not offer.

- Customers, teams, virtual keys, budgets and rate limits are keyed by a primary key the import
  derives from their config ids, providers by name, provider keys by name within their provider,
  a VK's provider config by its provider.
- A VK's imported value is stored as its digest; a new VK without one gets a generated value.
- A provider config names its keys (``["*"]``: all of them), not their ids.
- MCP clients are keyed by name and written whole from fields the import has already cleaned
  (``governance.services.mcp_clients.clean_client_fields``), without connecting to them.

Each function creates the row or updates the fields it is given in place: budget usage, rate-limit
counters and window starts are never written, so a re-import keeps them. The update goes through
``save_patched`` (``full_clean()``, errors keyed by field; the import puts its JSON path in front).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from decimal import Decimal
from typing import Any, TypeVar

from django.db import transaction
from django.db.models import Model

from governance.keys import digest, last_four
from governance.models import (
    Budget,
    Customer,
    McpClient,
    ModelConfig,
    Provider,
    ProviderConfig,
    ProviderKey,
    RateLimit,
    Team,
    VirtualKey,
)
from governance.services.limits import _owner_field
from governance.services.mcp_clients import assign_fields
from governance.services.validation import check, save_patched
from governance.services.virtual_keys import _assign_value, mcp_configs_replace

M = TypeVar("M", bound=Model)


def _find_or_new(model: type[M], **lookup: Any) -> tuple[M, bool]:
    """The row matching ``lookup``, or a new unsaved one built from it; and whether it is new."""
    row = model._default_manager.filter(**lookup).first()  # ``objects``: no model here has another manager
    return (row, False) if row is not None else (model(**lookup), True)


def _upsert(model: type[M], lookup: dict[str, Any], changes: dict[str, Any], **options: Any) -> tuple[M, bool]:
    row, created = _find_or_new(model, **lookup)
    save_patched(instance=row, changes=changes, fields=changes, **options)
    return row, created


@transaction.atomic
def provider_import(
    *,
    name: str,
    provider_type: str,
    base_url: str | None,
    timeout_seconds: float | None,
    extra_headers: dict[str, str],
) -> tuple[Provider, bool]:
    """By name; a None ``base_url`` or ``timeout_seconds`` keeps the stored (or default) one."""
    changes = {
        "provider_type": provider_type,
        "base_url": base_url,
        "timeout_seconds": timeout_seconds,
        "extra_headers": extra_headers,
    }
    return _upsert(Provider, {"name": name}, changes, keep_when_none=True)


@transaction.atomic
def provider_key_import(
    *,
    provider: Provider,
    name: str,
    value: str,
    models: list[str] | None,
    weight: float | None,
    enabled: bool,
    azure_key_config: dict[str, Any] | None = None,
) -> tuple[ProviderKey, bool]:
    """By name within ``provider``; the value is stored as given (encrypted)."""
    key, created = _find_or_new(ProviderKey, provider=provider, name=name)
    key.set_value(value)
    changes = {
        "models": models if models is not None else ["*"],
        "weight": weight if weight is not None else 1.0,
        "enabled": enabled,
        "azure_key_config": azure_key_config or {},
    }
    save_patched(instance=key, changes=changes, fields=changes)
    return key, created


@transaction.atomic
def customer_import(*, pk: uuid.UUID, name: str) -> tuple[Customer, bool]:
    return _upsert(Customer, {"pk": pk}, {"name": name})


@transaction.atomic
def team_import(*, pk: uuid.UUID, name: str, customer: Customer | None) -> tuple[Team, bool]:
    return _upsert(Team, {"pk": pk}, {"name": name, "customer": customer})


@transaction.atomic
def virtual_key_import(
    *,
    pk: uuid.UUID,
    name: str,
    description: str,
    is_active: bool,
    allow_all_providers: bool,
    team: Team | None,
    customer: Customer | None,
    value: str | None,
    providers: Iterable[str],
) -> tuple[VirtualKey, bool, str | None]:
    """The key, whether it is new, and its generated value (only for a new key without ``value``).

    A given ``value`` replaces the stored digest; without one an existing key keeps its value.
    Provider configs of providers not in ``providers`` are deleted (the file's list is the whole
    list); the others are written by :func:`provider_config_import`.
    """
    vk, created = _find_or_new(VirtualKey, pk=pk)
    generated = None
    if value:
        vk.value_digest, vk.value_last4 = digest(value), last_four(value)
    elif created:
        generated = _assign_value(vk)
    changes = {
        "name": name,
        "description": description,
        "is_active": is_active,
        "allow_all_providers": allow_all_providers,
        "team": team,
        "customer": customer,
    }
    save_patched(instance=vk, changes=changes, fields=changes)
    ProviderConfig.objects.filter(virtual_key=vk).exclude(provider__name__in=list(providers)).delete()
    return vk, created, generated


@transaction.atomic
def provider_config_import(
    *,
    vk: VirtualKey,
    provider: Provider,
    weight: float | None,
    allowed_models: list[str] | None,
    key_names: list[str] | None,
) -> ProviderConfig:
    """The VK's config for ``provider``; ``key_names`` ``["*"]`` allows every key of the provider,
    a list of names exactly those keys, none no key."""
    names = key_names or []
    changes = {
        "weight": weight,
        "allowed_models": allowed_models if allowed_models is not None else ["*"],
        "allow_all_keys": names == ["*"],
    }
    config, _ = _upsert(ProviderConfig, {"virtual_key": vk, "provider": provider}, changes)
    config.keys.set(ProviderKey.objects.filter(provider=provider, name__in=[] if config.allow_all_keys else names))
    return config


@transaction.atomic
def model_config_import(*, pk: uuid.UUID, model_name: str, provider: Provider | None) -> tuple[ModelConfig, bool]:
    """By the primary key derived from its config id, else by ``(model_name, provider)``: a config
    made in the admin or the API for the same model is adopted, not duplicated."""
    row = ModelConfig.objects.filter(pk=pk).first()
    if row is None:
        row = ModelConfig.objects.filter(model_name=model_name, provider=provider).first()
    created = row is None
    row = row or ModelConfig(pk=pk)
    save_patched(
        instance=row, changes={"model_name": model_name, "provider": provider}, fields=("model_name", "provider")
    )
    return row, created


@transaction.atomic
def budget_import(
    *,
    pk: uuid.UUID,
    owner: Model,
    max_limit: Decimal,
    reset_duration: str,
    calendar_aligned: bool,
    alert_thresholds: list[int] | None = None,
) -> tuple[Budget, bool]:
    """``alert_thresholds`` None: the stored ones kept (a new budget: the default)."""
    changes: dict[str, Any] = {
        "max_limit": max_limit,
        "reset_duration": reset_duration,
        "calendar_aligned": calendar_aligned,
        _owner_field(owner): owner,
    }
    if alert_thresholds is not None:
        changes["alert_thresholds"] = alert_thresholds
    return _upsert(Budget, {"pk": pk}, changes)


@transaction.atomic
def rate_limit_import(
    *,
    pk: uuid.UUID,
    owner: Model,
    token_max_limit: int | None,
    token_reset_duration: str,
    request_max_limit: int | None,
    request_reset_duration: str,
) -> tuple[RateLimit, bool]:
    """A None limit with an ``""`` duration: no limit of that kind."""
    changes = {
        "token_max_limit": token_max_limit,
        "token_reset_duration": token_reset_duration,
        "request_max_limit": request_max_limit,
        "request_reset_duration": request_reset_duration,
        _owner_field(owner): owner,
    }
    return _upsert(RateLimit, {"pk": pk}, changes)


@transaction.atomic
def mcp_client_import(*, name: str, fields: dict[str, Any]) -> tuple[McpClient, bool]:
    """By name; ``fields`` are cleaned, and every field they omit takes its default (the file
    describes the whole client). Its VK configs are left as they are."""
    client, created = _find_or_new(McpClient, name=name)
    blank = McpClient()  # every omitted field takes the default a new client has
    defaults = {field: getattr(blank, field) for field in _MCP_COLUMNS}
    assign_fields(client, {**defaults, "headers": {}, **fields})
    check(client)
    client.save()
    return client, created


_MCP_COLUMNS = (
    "connection_type",
    "connection_string",
    "stdio_config",
    "auth_type",
    "oauth_config",
    "tools_to_execute",
    "allowed_extra_headers",
    "tool_pricing",
    "timeout_seconds",
    "allow_on_all_virtual_keys",
)


@transaction.atomic
def virtual_key_mcp_configs_import(*, vk: VirtualKey, configs: list[dict[str, Any]]) -> None:
    """The key's MCP configs become the file's (``mcp_client_name``, ``tools_to_execute``)."""
    mcp_configs_replace(vk=vk, configs=configs)
