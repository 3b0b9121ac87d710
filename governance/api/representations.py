"""JSON shapes of governance objects in API responses (Bifrost v1.5 field names).

Plain functions rather than serializers: the shapes are fixed, rendering is on list pages, and
this keeps the secret-masking rule in one obvious place (``value`` is masked unless the caller
passes the value it has just generated).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from decimal import Decimal
from typing import Any

from governance.metering.live import live_usage
from governance.models import Budget, Customer, ModelConfig, Provider, ProviderConfig, RateLimit, Team, VirtualKey
from governance.models.limits import OWNER_FIELDS

# ``live_usage``'s answer: ``{("budget", pk): {...}, ("rate_limit", pk): {...}}``.
Usage = dict[tuple[str, Any], dict[str, Any]]
# The rows that own budgets and a rate limit.
LimitOwner = VirtualKey | ProviderConfig | Team | Customer | ModelConfig | Provider


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat().replace("+00:00", "Z") if moment else None


def _money(value: Decimal) -> float:
    # JSON numbers, as Bifrost sends them; exact Decimals stay in the database and counters.
    return float(value)


def budget_json(budget: Budget, usage: Usage | None = None) -> dict[str, Any]:
    live = (usage or {}).get(("budget", budget.pk))
    return {
        "id": str(budget.pk),
        "max_limit": _money(budget.max_limit),
        "reset_duration": budget.reset_duration,
        "calendar_aligned": budget.calendar_aligned,
        "alert_thresholds": list(budget.alert_thresholds),
        "current_usage": _money(live["usage"] if live else budget.current_usage),
        "last_reset": _iso(live["window_start"] if live else budget.last_reset),
        "resets_at": _iso(live["resets_at"]) if live else None,
        "owner": _owner(budget),
        "created_at": _iso(budget.created_at),
        "updated_at": _iso(budget.updated_at),
    }


def _owner(row: Budget | RateLimit) -> dict[str, str | None]:
    for kind in OWNER_FIELDS:
        owner_id = getattr(row, f"{kind}_id")
        if owner_id is not None:
            return {"type": kind, "id": str(owner_id)}
    return {"type": None, "id": None}


def rate_limit_json(rate_limit: RateLimit | None, usage: Usage | None = None) -> dict[str, Any] | None:
    if rate_limit is None:
        return None
    live = (usage or {}).get(("rate_limit", rate_limit.pk)) or {}
    return {
        "id": str(rate_limit.pk),
        "token_max_limit": rate_limit.token_max_limit,
        "token_reset_duration": rate_limit.token_reset_duration or None,
        "token_current_usage": live.get("tokens", rate_limit.token_current_usage),
        "token_last_reset": _iso(live.get("token_window_start", rate_limit.token_last_reset)),
        "request_max_limit": rate_limit.request_max_limit,
        "request_reset_duration": rate_limit.request_reset_duration or None,
        "request_current_usage": live.get("requests", rate_limit.request_current_usage),
        "request_last_reset": _iso(live.get("request_window_start", rate_limit.request_last_reset)),
        "owner": _owner(rate_limit),
    }


def rate_limit_of(owner: LimitOwner | None) -> RateLimit | None:
    """The owner's rate limit or None (the reverse one-to-one raises when there is none)."""
    if owner is None:
        return None
    try:
        return owner.rate_limit
    except RateLimit.DoesNotExist:
        return None


def provider_config_json(config: ProviderConfig, usage: Usage | None) -> dict[str, Any]:
    keys = list(config.keys.all())
    return {
        "id": config.pk,
        "provider": config.provider.name,
        "weight": config.weight,
        "allowed_models": list(config.allowed_models),
        "key_ids": ["*"] if config.allow_all_keys else [str(k.pk) for k in keys],
        "keys": [{"id": str(k.pk), "name": k.name} for k in keys],
        "budgets": [budget_json(b, usage) for b in config.budgets.all()],
        "rate_limit": rate_limit_json(rate_limit_of(config), usage),
    }


def _ref(obj: Team | Customer | None) -> dict[str, str] | None:
    return {"id": str(obj.pk), "name": obj.name} if obj else None


def virtual_key_json(vk: VirtualKey, *, value: str | None = None, usage: Usage | None = None) -> dict[str, Any]:
    """``value`` is the masked form unless the caller has the freshly generated secret."""
    return {
        "id": str(vk.pk),
        "name": vk.name,
        "description": vk.description,
        "value": value or vk.masked_value,
        "is_active": vk.is_active,
        "team_id": str(vk.team_id) if vk.team_id else None,
        "customer_id": str(vk.customer_id) if vk.customer_id else None,
        "team": _ref(vk.team),
        "customer": _ref(vk.customer),
        "budgets": [budget_json(b, usage) for b in vk.budgets.all()],
        "rate_limit": rate_limit_json(rate_limit_of(vk), usage),
        "provider_configs": [provider_config_json(pc, usage) for pc in vk.provider_configs.all()],
        "mcp_configs": [
            {"id": c.pk, "mcp_client_name": c.mcp_client.name, "tools_to_execute": list(c.tools_to_execute)}
            for c in vk.mcp_configs.all()
        ],
        "allow_all_providers": vk.allow_all_providers,
        "log_content": vk.log_content,
        "expires_at": _iso(vk.expires_at),
        "created_at": _iso(vk.created_at),
        "updated_at": _iso(vk.updated_at),
    }


def team_json(team: Team, usage: Usage | None = None) -> dict[str, Any]:
    return {
        "id": str(team.pk),
        "name": team.name,
        "customer_id": str(team.customer_id) if team.customer_id else None,
        "customer": _ref(team.customer),
        "budgets": [budget_json(b, usage) for b in team.budgets.all()],
        "rate_limit": rate_limit_json(rate_limit_of(team), usage),
        "profile": team.profile,
        "config": team.config,
        "claims": team.claims,
        "virtual_key_count": len(team.virtual_keys.all()),
        "created_at": _iso(team.created_at),
        "updated_at": _iso(team.updated_at),
    }


def customer_json(customer: Customer, usage: Usage | None = None) -> dict[str, Any]:
    budgets = [budget_json(b, usage) for b in customer.budgets.all()]
    return {
        "id": str(customer.pk),
        "name": customer.name,
        "budgets": budgets,
        # Bifrost's single-budget field, kept for v1.4 clients.
        "budget": budgets[0] if budgets else None,
        "rate_limit": rate_limit_json(rate_limit_of(customer), usage),
        "teams": [_ref(t) for t in customer.teams.all()],
        "virtual_key_count": len(customer.virtual_keys.all()),
        "created_at": _iso(customer.created_at),
        "updated_at": _iso(customer.updated_at),
    }


def model_config_json(config: ModelConfig, usage: Usage | None = None) -> dict[str, Any]:
    """Bifrost's model config, with ``budgets`` (one per reset duration) beside its single
    ``budget`` (the first); ``provider`` is null for a config on every provider."""
    budgets = [budget_json(b, usage) for b in config.budgets.all()]
    return {
        "id": str(config.pk),
        "model_name": config.model_name,
        "provider": config.provider.name if config.provider is not None else None,
        "budgets": budgets,
        "budget": budgets[0] if budgets else None,
        "rate_limit": rate_limit_json(rate_limit_of(config), usage),
        "created_at": _iso(config.created_at),
        "updated_at": _iso(config.updated_at),
    }


def provider_governance_json(provider: Provider, usage: Usage | None = None) -> dict[str, Any]:
    """Bifrost's provider governance (``provider``, ``budget``, ``rate_limit``), with ``budgets``
    beside ``budget`` and the provider's ``id``."""
    budgets = [budget_json(b, usage) for b in provider.budgets.all()]
    return {
        "id": str(provider.pk),
        "provider": provider.name,
        "budgets": budgets,
        "budget": budgets[0] if budgets else None,
        "rate_limit": rate_limit_json(rate_limit_of(provider), usage),
    }


def usage_for(objects: Iterable[VirtualKey | Team | Customer | ModelConfig | Provider]) -> Usage:
    """Live usage for every budget and rate limit reachable from ``objects`` (one lookup)."""
    budgets: list[Budget] = []
    rate_limits: list[RateLimit] = []
    for obj in objects:
        owners: list[LimitOwner] = [obj]
        if isinstance(obj, VirtualKey):
            owners += list(obj.provider_configs.all())
        for owner in owners:
            budgets += list(owner.budgets.all())
            rate_limit = rate_limit_of(owner)
            if rate_limit:
                rate_limits.append(rate_limit)
    return live_usage(budgets, rate_limits)
