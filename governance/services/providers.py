"""Providers and their keys."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction

from governance.models import Provider, ProviderKey
from governance.provider_types import default_type
from governance.services.locking import lock_before_delete
from governance.services.validation import check, field_error, save_patched


@transaction.atomic
def provider_create(
    *,
    name: str,
    base_url: str = "",
    provider_type: str | None = None,
    api_format: str | None = None,
    timeout_seconds: float = 60.0,
    extra_headers: dict[str, str] | None = None,
) -> Provider:
    """``api_format`` is the old name of ``provider_type``, still accepted."""
    provider = Provider(
        name=name,
        base_url=base_url or "",
        provider_type=provider_type or api_format or default_type(name),
        timeout_seconds=timeout_seconds,
        extra_headers=extra_headers or {},
    )
    check(provider)
    provider.save()
    return provider


@transaction.atomic
def provider_update(*, provider: Provider, **changes: Any) -> Provider:
    """Patch semantics; a None leaves the field as it is (``api_format``: the old name of ``provider_type``)."""
    if changes.get("provider_type") is None and changes.get("api_format") is not None:
        changes["provider_type"] = changes["api_format"]
    changes.pop("api_format", None)
    type_before = provider.provider_type
    provider = save_patched(
        instance=provider,
        changes=changes,
        fields=("base_url", "provider_type", "timeout_seconds", "extra_headers"),
        keep_when_none=True,
    )
    if provider.provider_type != type_before:
        # Azure keys carry an endpoint config and others must not: every key must suit the new type.
        for key in provider.keys.all():
            try:
                check(key)
            except ValidationError as exc:
                problem = "; ".join(exc.messages)
                raise field_error("provider_type", f"key '{key.name}' does not suit this type: {problem}") from None
    return provider


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
    azure_key_config: dict[str, Any] | None = None,
) -> ProviderKey:
    key = ProviderKey(
        provider=provider,
        name=name,
        models=models if models is not None else ["*"],
        weight=weight,
        azure_key_config=azure_key_config or {},
    )
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
        instance=key,
        changes=changes,
        fields=("name", "models", "weight", "enabled", "azure_key_config"),
        keep_when_none=True,
    )


@transaction.atomic
def provider_key_delete(*, key: ProviderKey) -> None:
    lock_before_delete(ProviderKey.objects.filter(pk=key.pk))
    key.delete()
