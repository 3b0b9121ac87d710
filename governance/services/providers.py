"""Providers and their keys."""

from __future__ import annotations

from typing import Any

from django.db import transaction

from governance.models import Provider, ProviderKey
from governance.models.providers import default_api_format
from governance.services.locking import lock_before_delete
from governance.services.validation import check, field_error, save_patched


@transaction.atomic
def provider_create(
    *,
    name: str,
    base_url: str,
    api_format: str | None = None,
    timeout_seconds: float = 60.0,
    extra_headers: dict[str, str] | None = None,
) -> Provider:
    provider = Provider(
        name=name,
        base_url=base_url,
        api_format=api_format or default_api_format(name),
        timeout_seconds=timeout_seconds,
        extra_headers=extra_headers or {},
    )
    check(provider)
    provider.save()
    return provider


@transaction.atomic
def provider_update(*, provider: Provider, **changes: Any) -> Provider:
    """Patch semantics; a None leaves the field as it is."""
    return save_patched(
        instance=provider,
        changes=changes,
        fields=("base_url", "api_format", "timeout_seconds", "extra_headers"),
        keep_when_none=True,
    )


@transaction.atomic
def provider_delete(*, provider: Provider) -> None:
    """Its keys and every VK provider config naming it go too (ON DELETE CASCADE)."""
    lock_before_delete(ProviderKey.objects.filter(provider=provider))
    provider.delete()


def _validate_value(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise field_error("value", "a non-empty key value is required")
    if len(value) > 4096:
        raise field_error("value", "key value is too long (max 4096 characters)")
    return value.strip()


@transaction.atomic
def provider_key_create(
    *,
    provider: Provider,
    name: str,
    value: str,
    models: list[str] | None = None,
    weight: float = 1.0,
    enabled: bool = True,
) -> ProviderKey:
    key = ProviderKey(provider=provider, name=name, models=models if models is not None else ["*"], weight=weight)
    key.enabled = enabled
    key.set_value(_validate_value(value))
    check(key)
    key.save()
    return key


@transaction.atomic
def provider_key_update(*, key: ProviderKey, **changes: Any) -> ProviderKey:
    """Patch semantics; a new ``value`` replaces the stored one (it is never read back)."""
    if changes.get("value") is not None:
        key.set_value(_validate_value(changes["value"]))
    return save_patched(
        instance=key, changes=changes, fields=("name", "models", "weight", "enabled"), keep_when_none=True
    )


@transaction.atomic
def provider_key_delete(*, key: ProviderKey) -> None:
    lock_before_delete(ProviderKey.objects.filter(pk=key.pk))
    key.delete()
