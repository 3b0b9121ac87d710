"""Pricing overrides: create, update (Bifrost's merge rules), delete, and the config import's upsert.

Errors are keyed by the names the API and the import use (``virtual_key_id``, ``provider_id``,
``provider_key_id``, ``patch.<price field>``, ``patch`` when no price is set), so the API's 400
and the import's JSON path name what the client sent. The snapshot caches are invalidated by the
save and delete signals (``governance.signals``), so a change prices the next request everywhere.
"""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any

from django.core.exceptions import NON_FIELD_ERRORS, ValidationError
from django.db import transaction

from governance.models import PricingOverride, Provider, ProviderKey, VirtualKey
from governance.models.pricing_overrides import PRICE_FIELDS, SCOPE_ID_FIELDS
from governance.price_overrides import API_NAMES


def _check(override: PricingOverride) -> None:
    """``full_clean()`` with errors re-keyed to the API's names."""
    try:
        override.full_clean()
    except ValidationError as exc:
        if not hasattr(exc, "error_dict"):
            raise
        raise ValidationError(
            {
                "patch" if name == NON_FIELD_ERRORS else API_NAMES.get(name, name): errors
                for name, errors in exc.error_dict.items()
            }
        ) from None


def _set_prices(override: PricingOverride, prices: dict[str, Decimal | None]) -> None:
    """The whole price patch: a field absent from ``prices`` is cleared (left to the catalog)."""
    for name in PRICE_FIELDS:
        setattr(override, name, prices.get(name))


@transaction.atomic
def pricing_override_create(
    *,
    name: str,
    scope_kind: str,
    match_type: str,
    pattern: str,
    prices: dict[str, Decimal | None],
    request_types: list[str] | None = None,
    virtual_key: VirtualKey | None = None,
    provider: Provider | None = None,
    provider_key: ProviderKey | None = None,
    pk: uuid.UUID | None = None,
) -> PricingOverride:
    override = PricingOverride(
        name=name,
        scope_kind=scope_kind,
        virtual_key=virtual_key,
        provider=provider,
        provider_key=provider_key,
        match_type=match_type,
        pattern=pattern,
        request_types=list(request_types or []),
    )
    if pk is not None:
        override.pk = pk
    _set_prices(override, prices)
    _check(override)
    override.save(force_insert=True)
    return override


@transaction.atomic
def pricing_override_update(*, override: PricingOverride, **changes: Any) -> PricingOverride:
    """Bifrost's update: a field absent (or None) keeps its value, except that a given
    ``scope_kind`` resets the scope identifiers to those given with it; ``prices`` replaces the
    whole price patch."""
    if changes.get("scope_kind") is not None:
        override.scope_kind = changes["scope_kind"]
        for name in SCOPE_ID_FIELDS:
            setattr(override, name, changes.get(name))
    else:
        for name in SCOPE_ID_FIELDS:
            if name in changes:
                setattr(override, name, changes[name])
    for name in ("name", "match_type", "pattern", "request_types"):
        if changes.get(name) is not None:
            setattr(override, name, changes[name])
    if changes.get("prices") is not None:
        _set_prices(override, changes["prices"])
    _check(override)
    override.save()
    return override


@transaction.atomic
def pricing_override_delete(*, override: PricingOverride) -> None:
    override.delete()


@transaction.atomic
def pricing_override_import(*, pk: uuid.UUID, **fields: Any) -> tuple[PricingOverride, bool]:
    """The config import's upsert by the id derived from the file: created, or every field
    written as the file has it (``fields`` as ``pricing_override_create`` takes them)."""
    existing = PricingOverride.objects.select_for_update().filter(pk=pk).first()
    if existing is None:
        return pricing_override_create(pk=pk, **fields), True
    existing.name, existing.scope_kind = fields["name"], fields["scope_kind"]
    for name in SCOPE_ID_FIELDS:
        setattr(existing, name, fields.get(name))
    existing.match_type, existing.pattern = fields["match_type"], fields["pattern"]
    existing.request_types = list(fields.get("request_types") or [])
    _set_prices(existing, fields["prices"])
    _check(existing)
    existing.save()
    return existing, False
