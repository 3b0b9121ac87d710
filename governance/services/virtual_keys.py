"""Virtual keys: create, update (Bifrost PUT semantics), rotate, activate, delete."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from django.db import transaction

from governance.keys import digest, last_four, new_virtual_key_value
from governance.models import (
    Customer,
    McpClient,
    Provider,
    ProviderConfig,
    ProviderKey,
    Team,
    VirtualKey,
    VirtualKeyMcpConfig,
)
from governance.services.limits import budgets_reconcile, limits_update, rate_limit_apply
from governance.services.locking import lock_before_delete
from governance.services.validation import check, field_error

_UNSET = object()


def _assign_value(vk: VirtualKey) -> str:
    value = new_virtual_key_value()
    vk.value_digest = digest(value)
    vk.value_last4 = last_four(value)
    return value


@transaction.atomic
def virtual_key_create(
    *,
    name: str,
    description: str = "",
    is_active: bool = True,
    team: Team | None = None,
    customer: Customer | None = None,
    budgets: list[dict[str, Any]] | None = None,
    rate_limit: dict[str, Any] | None = None,
    provider_configs: list[dict[str, Any]] | None = None,
    mcp_configs: list[dict[str, Any]] | None = None,
    allow_all_providers: bool = False,
    expires_at: datetime | None = None,
    log_content: bool = False,
) -> tuple[VirtualKey, str]:
    """Create a key; returns it with its full secret value, which is never available again."""
    vk = VirtualKey(
        name=name,
        description=description,
        is_active=is_active,
        team=team,
        customer=customer,
        allow_all_providers=allow_all_providers,
        expires_at=expires_at,
        log_content=log_content,
    )
    value = _assign_value(vk)
    check(vk, exclude=["value_digest"])
    vk.save()
    budgets_reconcile(owner=vk, budgets=budgets or [])
    rate_limit_apply(owner=vk, spec=rate_limit)
    provider_configs_reconcile(vk=vk, configs=provider_configs or [])
    mcp_configs_replace(vk=vk, configs=mcp_configs or [])
    return vk, value


@transaction.atomic
def virtual_key_update(
    *,
    vk: VirtualKey,
    name: Any = _UNSET,
    description: Any = _UNSET,
    is_active: Any = _UNSET,
    team: Team | None = None,
    customer: Customer | None = None,
    budgets: list[dict[str, Any]] | None = None,
    rate_limit: dict[str, Any] | None = None,
    provider_configs: list[dict[str, Any]] | None = None,
    mcp_configs: list[dict[str, Any]] | None = None,
    allow_all_providers: Any = _UNSET,
    expires_at: Any = _UNSET,
    log_content: Any = _UNSET,
) -> VirtualKey:
    """Bifrost PUT: team/customer as given (both absent -> detached); lists reconciled when present."""
    for field, value in (
        ("name", name),
        ("description", description),
        ("is_active", is_active),
        ("allow_all_providers", allow_all_providers),
        ("expires_at", expires_at),
        ("log_content", log_content),
    ):
        if value is not _UNSET:
            setattr(vk, field, value)
    vk.team = team
    vk.customer = customer
    check(vk)
    vk.save()
    limits_update(owner=vk, changes={"budgets": budgets, "rate_limit": rate_limit})
    if provider_configs is not None:
        provider_configs_reconcile(vk=vk, configs=provider_configs)
    if mcp_configs is not None:
        mcp_configs_replace(vk=vk, configs=mcp_configs)
    return vk


@transaction.atomic
def virtual_key_rotate(*, vk: VirtualKey) -> str:
    """Give the key a new value; the old one stops working at once (its digest is gone)."""
    value = _assign_value(vk)
    vk.save(update_fields=["value_digest", "value_last4", "updated_at"])
    return value


@transaction.atomic
def virtual_key_set_active(*, vk: VirtualKey, active: bool) -> VirtualKey:
    vk.is_active = active
    vk.save(update_fields=["is_active", "updated_at"])
    return vk


@transaction.atomic
def virtual_key_delete(*, vk: VirtualKey) -> None:
    """Budgets, rate limit, provider configs and MCP configs go with it (ON DELETE CASCADE)."""
    lock_before_delete(VirtualKey.objects.filter(pk=vk.pk))
    vk.delete()


def _resolve_keys(provider: Provider, key_ids: list[str] | None, prefix: str) -> tuple[bool, list[ProviderKey]]:
    if not key_ids:
        return False, []
    if "*" in key_ids:
        if len(key_ids) > 1:
            raise field_error(f"{prefix}.key_ids", "'*' cannot be combined with other entries")
        return True, []
    ids = []
    for key_id in key_ids:
        try:
            ids.append(uuid.UUID(str(key_id)))
        except ValueError:
            raise field_error(f"{prefix}.key_ids", f"{key_id!r} is not a valid key id") from None
    if len(set(ids)) != len(ids):
        raise field_error(f"{prefix}.key_ids", "duplicate entries are not allowed")
    keys = list(ProviderKey.objects.filter(provider=provider, pk__in=ids))
    if len(keys) != len(ids):
        found = {k.pk for k in keys}
        missing = next(str(i) for i in ids if i not in found)
        raise field_error(f"{prefix}.key_ids", f"key {missing} does not exist for provider {provider.name!r}")
    return False, keys


def provider_configs_reconcile(*, vk: VirtualKey, configs: list[dict[str, Any]]) -> None:
    """Items with ``id`` update that config, items without create one, unlisted ones are deleted."""
    existing = {pc.pk: pc for pc in ProviderConfig.objects.filter(virtual_key=vk)}
    kept: set[int] = set()
    seen_providers: set[str] = set()
    for index, spec in enumerate(configs):
        prefix = f"provider_configs[{index}]"
        provider = Provider.objects.filter(name=spec.get("provider")).first()
        if provider is None:
            raise field_error(f"{prefix}.provider", f"provider {spec.get('provider')!r} is not configured")
        if provider.name in seen_providers:
            raise field_error(f"{prefix}.provider", f"duplicate provider {provider.name!r}")
        seen_providers.add(provider.name)
        if spec.get("id") is not None:
            config = existing.get(spec["id"])
            if config is None:
                raise field_error(f"{prefix}.id", f"provider config {spec['id']} does not belong to this virtual key")
            kept.add(config.pk)
        else:
            config = ProviderConfig(virtual_key=vk)
        config.provider = provider
        if "weight" in spec or not config.pk:
            config.weight = spec.get("weight")
        if "allowed_models" in spec or not config.pk:
            config.allowed_models = spec.get("allowed_models") if spec.get("allowed_models") is not None else ["*"]
        check(config, prefix, exclude=["virtual_key"])
        if "key_ids" in spec or not config.pk:
            config.allow_all_keys, keys = _resolve_keys(provider, spec.get("key_ids"), prefix)
        else:
            keys = None
        # Free the provider slot of configs about to be deleted before saving, so that moving a
        # provider from one config to a new one in the same PUT does not trip the unique constraint.
        if not config.pk:
            stale = [pk for pk, pc in existing.items() if pc.provider_id == provider.pk and pk not in kept]
            ProviderConfig.objects.filter(pk__in=stale).delete()
            for pk in stale:
                existing.pop(pk)
        config.save()
        kept.add(config.pk)
        if keys is not None:
            config.keys.set(keys)
        if spec.get("budgets") is not None:
            budgets_reconcile(owner=config, budgets=spec["budgets"], prefix=f"{prefix}.budgets")
        rate_limit_apply(owner=config, spec=spec.get("rate_limit"), prefix=f"{prefix}.rate_limit")
    ProviderConfig.objects.filter(virtual_key=vk).exclude(pk__in=kept).delete()


def mcp_configs_replace(*, vk: VirtualKey, configs: list[dict[str, Any]]) -> None:
    rows = []
    seen: set[str | None] = set()
    for index, spec in enumerate(configs):
        name = spec.get("mcp_client_name")
        client = McpClient.objects.filter(name=name).first()
        if client is None:
            raise field_error(f"mcp_configs[{index}].mcp_client_name", f"MCP client {name!r} does not exist")
        if name in seen:
            raise field_error(f"mcp_configs[{index}].mcp_client_name", f"duplicate MCP client {name!r}")
        seen.add(name)
        tools = spec.get("tools_to_execute") or []
        if not isinstance(tools, list) or not all(isinstance(t, str) and t for t in tools):
            raise field_error(f"mcp_configs[{index}].tools_to_execute", "must be a list of tool names")
        rows.append(VirtualKeyMcpConfig(virtual_key=vk, mcp_client=client, tools_to_execute=tools))
    VirtualKeyMcpConfig.objects.filter(virtual_key=vk).delete()
    for row in rows:  # one save each (a few rows): bulk_create sends no signal, the audit trail needs one
        row.save()
