"""Limits on all traffic, whoever sends it: model configs (per model) and provider governance.

- A **model config** is ``model_name`` + ``provider`` (None: the model on every provider) with
  its budgets and rate limit; ``(model_name, provider)`` is unique: a duplicate is a
  :class:`ModelConfigConflict` (the API answers 409). Updates are patches, as for every owner of
  limits: ``budgets`` given are reconciled by ``reset_duration`` (usage kept), ``rate_limit``
  ``{}`` removes it, otherwise patched field by field (counters kept).
- **Provider governance** is a provider's own budgets and rate limit: set (created, or patched
  the same way) and deleted here; the provider itself is untouched.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction

from governance.models import Budget, ModelConfig, Provider, RateLimit
from governance.services.limits import budgets_reconcile, limits_update, rate_limit_apply
from governance.services.validation import check


class ModelConfigConflict(ValidationError):
    """Another model config has this ``(model_name, provider)``: the API answers 409."""


def _check_unique(config: ModelConfig) -> None:
    others = ModelConfig.objects.filter(model_name=config.model_name, provider=config.provider)
    if config.pk:
        others = others.exclude(pk=config.pk)
    if others.exists():
        where = f"provider '{config.provider.name}'" if config.provider is not None else "every provider"
        raise ModelConfigConflict(
            {"model_name": [f"a model config for '{config.model_name}' on {where} already exists"]}
        )


@transaction.atomic
def model_config_create(
    *,
    model_name: str,
    provider: Provider | None = None,
    budgets: list[dict[str, Any]] | None = None,
    rate_limit: dict[str, Any] | None = None,
) -> ModelConfig:
    config = ModelConfig(model_name=model_name, provider=provider)
    _check_unique(config)  # before ``check``, whose constraint validation would make it a 400
    check(config)
    config.save()
    budgets_reconcile(owner=config, budgets=budgets or [])
    rate_limit_apply(owner=config, spec=rate_limit)
    return config


@transaction.atomic
def model_config_update(*, model_config: ModelConfig, **changes: Any) -> ModelConfig:
    """Patch semantics: only the keys given change; ``provider=None`` makes it every provider's."""
    for field in ("model_name", "provider"):
        if field in changes:
            setattr(model_config, field, changes[field])
    _check_unique(model_config)
    check(model_config)
    model_config.save()
    limits_update(owner=model_config, changes=changes)
    return model_config


@transaction.atomic
def model_config_delete(*, model_config: ModelConfig) -> None:
    """Its budgets and rate limit go with it (ON DELETE CASCADE)."""
    model_config.delete()


@transaction.atomic
def provider_governance_set(
    *,
    provider: Provider,
    budgets: list[dict[str, Any]] | None = None,
    rate_limit: dict[str, Any] | None = None,
) -> Provider:
    """Create or patch a provider's governance: ``budgets`` given are reconciled (``[]`` removes
    them), ``rate_limit`` ``{}`` removes it, otherwise it is patched field by field; an absent
    (None) part is left as it is."""
    limits_update(owner=provider, changes={"budgets": budgets, "rate_limit": rate_limit})
    return provider


@transaction.atomic
def provider_governance_delete(*, provider: Provider) -> None:
    """Remove the provider's budgets and rate limit (the provider stays)."""
    for budget in Budget.objects.filter(provider=provider):
        budget.delete()
    for rate_limit in RateLimit.objects.filter(provider=provider):
        rate_limit.delete()
