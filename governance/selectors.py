"""Reads that join or filter; writes live in ``governance.services``."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from django.contrib.auth.models import User
from django.db.models import (
    DateTimeField,
    DecimalField,
    FloatField,
    OuterRef,
    Prefetch,
    QuerySet,
    Subquery,
    Sum,
    Value,
)
from django.db.models.functions import Cast, Coalesce

from governance.keys import digest
from governance.metering.live import budget_states, rate_limit_usage
from governance.models import (
    ApiToken,
    Budget,
    Provider,
    ProviderConfig,
    ProviderKey,
    RateLimit,
    UsageRecord,
    VirtualKey,
)


def api_token_user(token: str) -> tuple[User, ApiToken] | None:
    """``(user, token_row)`` for a valid admin API token, else None (unknown and wrong look alike)."""
    row = ApiToken.objects.select_related("user").filter(token_digest=digest(token)).first()
    return (row.user, row) if row else None


def virtual_key_by_value(value: str) -> VirtualKey | None:
    """Look a key up by its secret value (via the digest; the value itself is never stored)."""
    return VirtualKey.objects.filter(value_digest=digest(value)).first()


def virtual_key_list() -> QuerySet[VirtualKey]:
    """Virtual keys with everything the API renders, in a fixed number of queries."""
    return (
        VirtualKey.objects.select_related("team", "customer", "rate_limit")
        .prefetch_related(
            "budgets",
            Prefetch(
                "provider_configs",
                queryset=ProviderConfig.objects.select_related("provider", "rate_limit").prefetch_related(
                    "budgets", "keys"
                ),
            ),
            "mcp_configs__mcp_client",
        )
        .annotate(
            budget_spent=Coalesce(
                Sum("budgets__current_usage"), Value(0), output_field=DecimalField(max_digits=24, decimal_places=10)
            )
        )
    )


def budgets_with_owner() -> QuerySet[Budget]:
    return Budget.objects.select_related(
        "virtual_key", "team", "customer", "provider_config__provider", "model_config__provider", "provider"
    )


# --- virtual keys: budget use, rate limits, last use, provider reach ----------------------------


def _use_ratio() -> Any:
    # Floats: SQLite would divide two whole-number decimals as integers (5 / 10 = 0).
    return Cast("current_usage", FloatField()) / Cast("max_limit", FloatField())


def highest_budget_use() -> Subquery:
    """SQL for the highest settled use ratio (``current_usage / max_limit``, 1.0 = spent) over a
    key's own budgets, NULL for a key without budgets; to annotate a ``VirtualKey`` queryset.

    Settled counters only: a budget's window that ended without traffic still reads its last
    usage here until a request rolls it over (the live figure reads 0 at once).
    """
    ratios = (
        Budget.objects.filter(virtual_key=OuterRef("pk"))
        .annotate(ratio=_use_ratio())
        .order_by("-ratio")
        .values("ratio")[:1]
    )
    return Subquery(ratios, output_field=FloatField())


def last_used() -> Subquery:
    """SQL for the time of a key's latest ledger row (served by the (virtual_key, created_at) index)."""
    latest = UsageRecord.objects.filter(virtual_key=OuterRef("pk")).order_by("-created_at").values("created_at")[:1]
    return Subquery(latest, output_field=DateTimeField())


def virtual_keys_at_budget_use(percent: int) -> QuerySet[VirtualKey]:
    """Keys with a budget of their own at ``percent`` % of its limit or more in its current window.

    The settled counters pick the candidates in SQL; their live state (``metering.live``: the
    current window, requests in flight included) decides, so a budget whose window has ended
    is not counted on its old usage.
    """
    share = Decimal(percent) / 100
    # The float ratio only narrows the rows (with a margin for its rounding); Decimals decide.
    candidates = list(
        Budget.objects.filter(virtual_key__isnull=False)
        .annotate(ratio=_use_ratio())
        .filter(ratio__gte=float(share) - 1e-9)
    )
    states = budget_states([budget.pk for budget in candidates])
    keys = {
        budget.virtual_key_id
        for budget in candidates
        if str(budget.pk) in states and states[str(budget.pk)].usage >= budget.max_limit * share
    }
    return VirtualKey.objects.filter(pk__in=keys)


def virtual_keys_rate_limited_now() -> QuerySet[VirtualKey]:
    """Keys whose own rate limit is at its maximum (requests or tokens) in the current window.

    Read from the live counters (``metering.live``); rate-limit rows are few, so the check runs
    in Python and the answer is a queryset of the keys found.
    """
    rows = {str(row.pk): row.virtual_key_id for row in RateLimit.objects.filter(virtual_key__isnull=False)}
    keys = {
        rows[pk]
        for pk, state in rate_limit_usage(rows).items()
        if any(counter is not None and counter.usage >= counter.limit for counter in (state.tokens, state.requests))
    }
    return VirtualKey.objects.filter(pk__in=keys)


@dataclass(frozen=True)
class ReachableProvider:
    """A provider a key can call, and the models it may ask it for (empty: any model)."""

    name: str
    provider_type: str
    api_format: str
    models: tuple[str, ...]


@dataclass(frozen=True)
class ProviderReach:
    """Which providers a key can call (``proxy.routing.resolve``'s rules), or why it can call none."""

    providers: tuple[ReachableProvider, ...]
    problem: str = ""


def _served_models(config_models: list[str] | None, keys: list[ProviderKey]) -> set[str] | None:
    """The models both the allow-list (None = all) and one of ``keys`` allow: None = any model,
    an empty set = none. A key with an empty model list has no restriction (as in routing)."""
    if not keys:
        return set()
    unrestricted = any(not key.models or "*" in key.models for key in keys)
    key_models = None if unrestricted else {model for key in keys for model in key.models}
    if config_models is None:
        return key_models
    return set(config_models) if key_models is None else set(config_models) & key_models


def provider_reach(keys: Iterable[VirtualKey]) -> dict[uuid.UUID, ProviderReach]:
    """What each key can call, by the proxy's allow-lists and key choice (three queries in all).

    A provider config serves when it allows a model (``allowed_models`` not empty) and an
    enabled key of its provider that it allows (``allow_all_keys`` or one of its ``keys``) serves
    one of those models. With ``allow_all_providers``, every provider without a config serves
    through its enabled keys; a provider with a config is governed by that config only.
    """
    keys = list(keys)
    configs: dict[uuid.UUID, list[ProviderConfig]] = {key.pk: [] for key in keys}
    for config in (
        ProviderConfig.objects.filter(virtual_key__in=keys).select_related("provider").prefetch_related("keys")
    ):
        configs[config.virtual_key_id].append(config)
    enabled: dict[uuid.UUID, list[ProviderKey]] = {}
    providers: dict[uuid.UUID, Provider] = {}
    for key in ProviderKey.objects.filter(enabled=True).select_related("provider").order_by("provider__name", "name"):
        enabled.setdefault(key.provider_id, []).append(key)
        providers[key.provider_id] = key.provider
    return {key.pk: _reach(key, configs[key.pk], enabled, providers) for key in keys}


def _reach(
    vk: VirtualKey,
    configs: list[ProviderConfig],
    enabled: dict[uuid.UUID, list[ProviderKey]],
    providers: dict[uuid.UUID, Provider],
) -> ProviderReach:
    reachable: list[ReachableProvider] = []
    problems: list[str] = []
    for config in sorted(configs, key=lambda c: c.provider.name):
        name = config.provider.name
        config_models = None if "*" in config.allowed_models else list(config.allowed_models)
        if config_models == []:
            problems.append(f"{name}: its config allows no model")
            continue
        provider_keys = enabled.get(config.provider_id, [])
        if not provider_keys:
            problems.append(f"{name}: the provider has no enabled key")
            continue
        chosen = {key.pk for key in config.keys.all()}
        allowed = [key for key in provider_keys if config.allow_all_keys or key.pk in chosen]
        if not allowed:
            problems.append(f"{name}: its config allows none of the provider's keys (tick “all keys” or pick keys)")
            continue
        served = _served_models(config_models, allowed)
        if served is not None and not served:
            problems.append(f"{name}: none of its allowed keys serves the models the config allows")
            continue
        provider = config.provider
        reachable.append(
            ReachableProvider(name, provider.provider_type, provider.wire_format, tuple(sorted(served or ())))
        )
    if vk.allow_all_providers:
        configured = {config.provider_id for config in configs}
        for provider_id, provider_keys in enabled.items():
            if provider_id in configured:
                continue
            served = _served_models(None, provider_keys)
            provider = providers[provider_id]
            reachable.append(
                ReachableProvider(
                    provider.name, provider.provider_type, provider.wire_format, tuple(sorted(served or ()))
                )
            )
        if not reachable:
            other = " other" if configs else ""
            problems.append(f"it allows all providers, but no{other} provider has an enabled key")
    elif not configs:
        problems.append("it has no provider config and “allow all providers” is off")
    if reachable:
        return ProviderReach(tuple(sorted(reachable, key=lambda p: p.name)))
    return ProviderReach((), "This key can call no provider: " + "; ".join(problems) + ".")
