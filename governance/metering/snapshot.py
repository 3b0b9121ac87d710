"""Immutable, process-cached snapshots of the configuration the inference hot path reads.

Three caches, plain dicts in this process: **virtual keys** by the digest of the presented value
(:class:`VirtualKeySnapshot`: its provider configs and the budgets/rate limits on its path, in four
queries), **providers** with their keys (values decrypted here, in memory only, never logged) and
the limits on all traffic to them (provider governance and model configs, resolved per model:
:meth:`ProviderSnapshot.shared_limits`; four queries), and **model prices** with the pricing
overrides (:class:`PriceBook`, two queries). A cached virtual key costs the hot path no query.
The **routing rules** are cached the same way, compiled (:func:`routing_rules`, one query).

Invalidation:

1. :func:`invalidate` (``governance.signals`` calls it on every configuration change) drops this
   process's caches at once and again when the transaction commits, then ``freshness.changed``
   moves the shared generation so that every other process drops its own
   (:func:`invalidate_local`) on its next request. One bump per transaction, however many rows.
2. Each load checks a generation number bumped by every invalidation, so a reader that loaded the
   old rows mid-transaction cannot re-cache them.
3. Entries expire after ``GOVERNANCE_CONFIG_CACHE_SECONDS`` (default 5 s; 0 never serves a cached
   copy), a backstop for a lost generation bump. When an entry expires, one thread reloads it while
   the others keep answering from the expired copy for the few milliseconds the reload takes.

Unknown values are not cached, so a key created in one worker works in all of them at once.
Budget and rate-limit *usage* is not part of a snapshot (it lives in the counters); counters
must move usage with ``QuerySet.update`` (no signal) so that spending does not flush the cache.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, TypeVar

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from governance import price_overrides, pricing
from governance.keys import digest
from governance.limitspec import MODEL, PATH, PROVIDER, BudgetSpec, RateLimitSpec
from governance.metering import freshness
from governance.models import (
    Budget,
    Customer,
    McpClient,
    ModelConfig,
    ModelPrice,
    PricingOverride,
    Provider,
    ProviderConfig,
    ProviderKey,
    Team,
    VirtualKey,
    VirtualKeyMcpConfig,
)
from governance.models.pricing_overrides import PRICE_FIELDS
from governance.provider_types import AZURE_DEFAULT_API_VERSION
from governance.routing_rules import RuleBook, load_rule_book

# Budgets and rate limits of some levels of a request's path, in path order.
Limits = tuple[tuple[BudgetSpec, ...], tuple[RateLimitSpec, ...]]


@dataclass(frozen=True, slots=True)
class ProviderConfigSnapshot:
    id: int
    provider: str
    weight: float | None
    allowed_models: tuple[str, ...]
    allow_all_keys: bool
    key_ids: frozenset[str]
    budgets: tuple[BudgetSpec, ...]
    rate_limit: RateLimitSpec | None

    def allows_model(self, model: str) -> bool:
        return "*" in self.allowed_models or model in self.allowed_models

    def allows_key(self, key_id: str) -> bool:
        return self.allow_all_keys or key_id in self.key_ids


@dataclass(frozen=True, slots=True)
class VirtualKeySnapshot:
    """What the proxy needs to know about one virtual key, frozen at load time."""

    id: str
    name: str
    is_active: bool
    expires_at: datetime | None
    team_id: str | None
    customer_id: str | None  # the VK's own customer, or its team's customer
    allow_all_providers: bool
    log_content: bool
    provider_configs: tuple[ProviderConfigSnapshot, ...]
    budgets: tuple[BudgetSpec, ...]
    rate_limit: RateLimitSpec | None
    team_budgets: tuple[BudgetSpec, ...]
    team_rate_limit: RateLimitSpec | None
    customer_budgets: tuple[BudgetSpec, ...]
    customer_rate_limit: RateLimitSpec | None
    # MCP client id → the tools this key may use there (None: every tool), from its MCP configs.
    mcp_tools: tuple[tuple[int, tuple[str, ...] | None], ...] = ()
    # Names of the key's team and customer ("" when none), for routing rules' variables.
    team_name: str = ""
    customer_name: str = ""

    @property
    def is_expired(self) -> bool:
        return self.expires_at is not None and self.expires_at <= timezone.now()

    def config_for(self, provider: str) -> ProviderConfigSnapshot | None:
        for config in self.provider_configs:
            if config.provider == provider:
                return config
        return None

    def limits_for(self, provider: str) -> tuple[tuple[BudgetSpec, ...], tuple[RateLimitSpec, ...]]:
        """Budgets and rate limits on the path, in the fixed order provider config -> VK -> team -> customer."""
        config = self.config_for(provider)
        budgets = (config.budgets if config else ()) + self.budgets + self.team_budgets + self.customer_budgets
        limits = (
            config.rate_limit if config else None,
            self.rate_limit,
            self.team_rate_limit,
            self.customer_rate_limit,
        )
        return budgets, tuple(limit for limit in limits if limit is not None)


@dataclass(frozen=True, slots=True)
class KeySnapshot:
    id: str
    name: str
    # Never shown by repr (debuggers, tracebacks, log lines that format the object).
    value: str = field(repr=False)
    models: tuple[str, ...]
    weight: float
    enabled: bool
    azure: AzureKeySnapshot | None = None

    def allows_model(self, model: str) -> bool:
        # An empty list on a provider key means "no restriction" (Bifrost's behaviour for keys).
        return not self.models or "*" in self.models or model in self.models


@dataclass(frozen=True, slots=True)
class AzureKeySnapshot:
    endpoint: str
    api_version: str
    deployments: tuple[tuple[str, str], ...]

    def deployment(self, model: str) -> str:
        """The deployment serving ``model``: its mapping, else a deployment named like the model."""
        return next((dep for name, dep in self.deployments if name == model), model)


@dataclass(frozen=True, slots=True)
class ProviderSnapshot:
    id: str
    name: str
    provider_type: str
    api_format: str  # the wire format its type speaks: openai, anthropic or gemini
    base_url: str  # the effective one: the provider's, else its type's default
    timeout_seconds: float
    extra_headers: tuple[tuple[str, str], ...]
    keys: tuple[KeySnapshot, ...]
    # The limits on all traffic to this provider, whoever sends it: the provider's own (provider
    # governance), then for each model with a model config, those plus the model's config for
    # this provider and its config for every provider (``_shared_limits``). None: no limits.
    own_limits: Limits | None = None
    model_limits: dict[str, Limits | None] = field(default_factory=dict, hash=False, compare=False)

    def shared_limits(self, model: str) -> Limits | None:
        """The provider and model levels of a request for ``model`` (as the provider is asked
        for it), in path order provider -> model on this provider -> model on every provider;
        None when there are none. One dict lookup: this is on every request's path."""
        return self.model_limits.get(model, self.own_limits)


@dataclass(frozen=True, slots=True)
class PriceSnapshot:
    input_cost_per_token: Decimal
    output_cost_per_token: Decimal
    cached_input_cost_per_token: Decimal | None
    cost_per_request: Decimal = Decimal("0")  # added once to a successful request (overrides only)
    # What the ledger records as the price a request was charged at: ``catalog:<provider>/<model>``
    # (the catalog row's own names), ``override:<id>``, or ``override:<id>+catalog:<provider>/<model>``
    # when the override leaves some token price to the catalog row.
    source: str | None = None
    is_override: bool = False  # an override's price also wins over a cost the upstream reports


# --- process caches -------------------------------------------------------------------------

_lock = threading.Lock()
_generation = 0
_vks: dict[str, tuple[float, VirtualKeySnapshot]] = {}
_providers: tuple[float, dict[str, ProviderSnapshot]] | None = None
_prices: tuple[float, PriceBook] | None = None
_mcp_clients: tuple[float, tuple[McpClient, ...]] | None = None
_routing: tuple[float, RuleBook] | None = None


def _ttl() -> float:
    return settings.GOVERNANCE_CONFIG_CACHE_SECONDS


def invalidate_local() -> None:
    """Drop every cached snapshot in this process."""
    global _generation, _providers, _prices, _mcp_clients, _routing
    with _lock:
        _generation += 1
        _vks.clear()
        _providers = None
        _prices = None
        _mcp_clients = None
        _routing = None


def invalidate() -> None:
    """Drop the caches here at once, and everywhere once the current transaction commits.

    One generation bump per transaction, however many rows it changes: an import of a thousand
    keys must not restart every request in flight a thousand times. Django drops the callbacks of
    a rolled-back savepoint from ``run_on_commit``, so a pending one there is always going to run.
    """
    invalidate_local()
    connection = transaction.get_connection()
    if connection.in_atomic_block and any(item[1] is _after_commit for item in connection.run_on_commit):
        return
    transaction.on_commit(_after_commit)


def _after_commit() -> None:
    invalidate_local()
    freshness.changed()


_reloading: set[tuple[str, str]] = set()


def _claim_reload(name: tuple[str, str]) -> bool:
    """True for the one thread that reloads an expired entry; the others serve the expired copy."""
    with _lock:
        if name in _reloading:
            return False
        _reloading.add(name)
        return True


def _reloaded(name: tuple[str, str]) -> None:
    with _lock:
        _reloading.discard(name)


T = TypeVar("T")


def _cached(
    name: tuple[str, str],
    entry: tuple[float, T] | None,
    load: Callable[[], T],
    store: Callable[[tuple[float, T]], None],
) -> T:
    """The value of one cache entry ``(loaded at, value)``: the cached value while fresh; once
    expired, reloaded by one thread (``store`` keeps the result, called under the lock, unless an
    invalidation happened meanwhile) while the others get the expired copy."""
    now = time.monotonic()
    claim = None
    if entry is not None:
        ttl = _ttl()
        if now - entry[0] < ttl:
            return entry[1]
        if ttl > 0:  # a TTL of 0 means never serve a cached copy
            if not _claim_reload(name):
                return entry[1]
            claim = name
    try:
        generation = _generation
        value = load()
        with _lock:
            if generation == _generation:
                store((now, value))
        return value
    finally:
        if claim is not None:
            _reloaded(claim)


def virtual_key(value: str) -> VirtualKeySnapshot | None:
    """The snapshot for a presented VK value, or None when no key has that value."""
    return virtual_key_by_digest(digest(value))


def virtual_key_by_digest(key: str) -> VirtualKeySnapshot | None:
    """The snapshot for a VK value's digest (what a consent session holds), or None."""

    def store(entry: tuple[float, VirtualKeySnapshot | None]) -> None:
        loaded_at, snapshot = entry
        if snapshot is not None:  # unknown values are not cached
            _vks[key] = (loaded_at, snapshot)

    cached: tuple[float, VirtualKeySnapshot | None] | None = _vks.get(key)
    return _cached(("vk", key), cached, lambda: _load_virtual_key(key), store)


def providers() -> dict[str, ProviderSnapshot]:
    """Every configured provider by name, with its keys."""
    return _cached(("providers", ""), _providers, _load_providers, _store_providers)


def _store_providers(entry: tuple[float, dict[str, ProviderSnapshot]]) -> None:
    global _providers
    _providers = entry


def mcp_clients() -> tuple[McpClient, ...]:
    """Every MCP client row, as loaded (the MCP gateway reads them and never saves them)."""
    return _cached(("mcp", ""), _mcp_clients, lambda: tuple(McpClient.objects.all()), _store_mcp_clients)


def _store_mcp_clients(entry: tuple[float, tuple[McpClient, ...]]) -> None:
    global _mcp_clients
    _mcp_clients = entry


def routing_rules() -> RuleBook:
    """Every enabled routing rule, compiled, by scope (``governance.routing_rules``); loaded
    and compiled once per configuration generation. Empty (falsy) when there are none."""
    return _cached(("routing", ""), _routing, load_rule_book, _store_routing)


def _store_routing(entry: tuple[float, RuleBook]) -> None:
    global _routing
    _routing = entry


def price(
    provider: ProviderSnapshot,
    model: str,
    *,
    request_type: str | None = None,
    virtual_key_id: str | None = None,
    provider_key_id: str | None = None,
) -> PriceSnapshot | None:
    """The price of ``model`` on ``provider`` for one request: the catalog's by the rule in
    ``governance.pricing``, patched by the pricing override that applies to the request's virtual
    key, provider key and request type (``governance.price_overrides``); None = unpriced."""
    book = _cached(("prices", ""), _prices, _load_prices, _store_prices)
    if not book.overrides:
        return book.find(provider.name, provider.provider_type, model)
    return book.find_for(provider.name, provider.provider_type, model, request_type, virtual_key_id, provider_key_id)


class PriceBook:
    """Every price row and pricing override, with the answers of the lookup rule remembered per
    (provider, model) and, when there are overrides, per request's scopes."""

    MEMO_LIMIT = 10_000  # model names come from clients: the memo must not grow without bound

    def __init__(
        self,
        rows: dict[tuple[str, str], PriceSnapshot],
        overrides: price_overrides.OverrideIndex | None = None,
    ) -> None:
        self.rows = rows
        self.by_model = pricing.index_by_model(rows.items())
        self.memo: dict[tuple[str, str, str], PriceSnapshot | None] = {}
        self.overrides = overrides or price_overrides.OverrideIndex()
        self.scoped: dict[tuple[str, str, str, str | None, str | None, str | None], PriceSnapshot | None] = {}

    def find_for(
        self,
        provider: str,
        provider_type: str,
        model: str,
        request_type: str | None,
        virtual_key_id: str | None,
        provider_key_id: str | None,
    ) -> PriceSnapshot | None:
        """The catalog's price patched by the override that applies (see :func:`price`)."""
        key = (provider, provider_type, model, request_type, virtual_key_id, provider_key_id)
        try:
            return self.scoped[key]
        except KeyError:
            pass
        base = self.find(provider, provider_type, model)
        override = self.overrides.find(
            model=model,
            provider=provider,
            virtual_key=virtual_key_id,
            provider_key=provider_key_id,
            request_type=request_type,
        )
        found = base if override is None else patched(base, override)
        if len(self.scoped) >= self.MEMO_LIMIT:
            self.scoped.clear()
        self.scoped[key] = found
        return found

    def find(self, provider: str, provider_type: str, model: str) -> PriceSnapshot | None:
        key = (provider, provider_type, model)
        try:
            return self.memo[key]
        except KeyError:
            pass
        found = pricing.find_price(
            self.rows, self.by_model, provider=provider, provider_type=provider_type, model=model
        )
        if len(self.memo) >= self.MEMO_LIMIT:
            self.memo.clear()
        self.memo[key] = found
        return found


def patched(base: PriceSnapshot | None, override: price_overrides.OverrideSnapshot) -> PriceSnapshot:
    """``base`` (the catalog's price, or None) with the fields ``override`` sets replaced; a field
    it leaves empty keeps the catalog's value (none: 0, for the cached price: the input price)."""
    source = f"override:{override.id}"
    if base is not None and base.source:
        from_catalog = (
            override.input_cost_per_token is None
            or override.output_cost_per_token is None
            or (override.cached_input_cost_per_token is None and base.cached_input_cost_per_token is not None)
        )
        if from_catalog:  # the catalog row still sets some token price
            source += "+" + base.source
    zero = Decimal("0")
    input_price = override.input_cost_per_token
    if input_price is None:
        input_price = base.input_cost_per_token if base is not None else zero
    output_price = override.output_cost_per_token
    if output_price is None:
        output_price = base.output_cost_per_token if base is not None else zero
    cached_price = override.cached_input_cost_per_token
    if cached_price is None and base is not None:
        cached_price = base.cached_input_cost_per_token
    return PriceSnapshot(
        input_cost_per_token=input_price,
        output_cost_per_token=output_price,
        cached_input_cost_per_token=cached_price,
        cost_per_request=override.cost_per_request or zero,
        source=source,
        is_override=True,
    )


def _load_prices() -> PriceBook:
    rows = ModelPrice.objects.values_list(
        "provider", "model", "input_cost_per_token", "output_cost_per_token", "cached_input_cost_per_token"
    )
    catalog = {(p, m): PriceSnapshot(i, o, c, source=f"catalog:{p}/{m}") for p, m, i, o, c in rows}
    overrides = []
    for row in PricingOverride.objects.values(
        "id",
        "scope_kind",
        "virtual_key_id",
        "provider__name",
        "provider_key_id",
        "match_type",
        "pattern",
        "request_types",
        "created_at",
        *PRICE_FIELDS,
    ):
        overrides.append(
            price_overrides.OverrideSnapshot(
                id=str(row["id"]),
                scope=price_overrides.scope_key(
                    row["scope_kind"],
                    virtual_key=row["virtual_key_id"],
                    provider=row["provider__name"],
                    provider_key=row["provider_key_id"],
                ),
                match_type=row["match_type"],
                pattern=row["pattern"],
                request_types=frozenset(row["request_types"] or ()),
                created_at=row["created_at"],
                regex=price_overrides.glob_regex(row["pattern"]) if row["match_type"] == "pattern" else None,
                **{name: row[name] for name in PRICE_FIELDS},
            )
        )
    return PriceBook(catalog, price_overrides.OverrideIndex(overrides))


def _store_prices(entry: tuple[float, PriceBook]) -> None:
    global _prices
    _prices = entry


# --- loading --------------------------------------------------------------------------------


def _rate_spec(
    owner: ProviderConfig | VirtualKey | Team | Customer | Provider | ModelConfig, entity: str, level: str = PATH
) -> RateLimitSpec | None:
    try:
        row = owner.rate_limit
    except Exception:  # RelatedObjectDoesNotExist: the owner has no rate limit
        return None
    if row is None:
        return None
    return RateLimitSpec.of(row, entity, level)


def _load_virtual_key(value_digest: str) -> VirtualKeySnapshot | None:
    vk = (
        VirtualKey.objects.select_related(
            "rate_limit", "team__rate_limit", "team__customer__rate_limit", "customer__rate_limit"
        )
        .filter(value_digest=value_digest)
        .first()
    )
    if vk is None:
        return None
    customer = vk.customer or (vk.team.customer if vk.team else None)
    configs = list(ProviderConfig.objects.filter(virtual_key=vk).select_related("provider", "rate_limit"))
    owners = Q(virtual_key=vk) | Q(provider_config__virtual_key=vk)
    if vk.team_id:
        owners |= Q(team_id=vk.team_id)
    if customer is not None:
        owners |= Q(customer_id=customer.pk)
    budgets = list(Budget.objects.filter(owners).order_by("created_at", "id"))
    key_links = ProviderConfig.keys.through.objects.filter(providerconfig__virtual_key=vk).values_list(
        "providerconfig_id", "providerkey_id"
    )
    keys_by_config: dict[int, set[str]] = {}
    for config_id, key_id in key_links:
        keys_by_config.setdefault(config_id, set()).add(str(key_id))
    config_snaps = tuple(
        ProviderConfigSnapshot(
            id=config.pk,
            provider=config.provider.name,
            weight=config.weight,
            allowed_models=tuple(config.allowed_models or ()),
            allow_all_keys=config.allow_all_keys,
            key_ids=frozenset(keys_by_config.get(config.pk, ())),
            budgets=tuple(BudgetSpec.of(b, config.provider.name) for b in budgets if b.provider_config_id == config.pk),
            rate_limit=_rate_spec(config, config.provider.name),
        )
        for config in configs
    )
    return VirtualKeySnapshot(
        id=str(vk.pk),
        name=vk.name,
        is_active=vk.is_active,
        expires_at=vk.expires_at,
        team_id=str(vk.team_id) if vk.team_id else None,
        customer_id=str(customer.pk) if customer else None,
        team_name=vk.team.name if vk.team else "",
        customer_name=customer.name if customer is not None else "",
        allow_all_providers=vk.allow_all_providers,
        log_content=vk.log_content,
        provider_configs=config_snaps,
        budgets=tuple(BudgetSpec.of(b, "VK") for b in budgets if b.virtual_key_id == vk.pk),
        rate_limit=_rate_spec(vk, "VK"),
        team_budgets=tuple(BudgetSpec.of(b, "Team") for b in budgets if vk.team_id and b.team_id == vk.team_id),
        team_rate_limit=_rate_spec(vk.team, "Team") if vk.team else None,
        customer_budgets=tuple(
            BudgetSpec.of(b, "Customer") for b in budgets if customer is not None and b.customer_id == customer.pk
        ),
        customer_rate_limit=_rate_spec(customer, "Customer") if customer is not None else None,
        mcp_tools=tuple(
            (client_id, None if "*" in (tools or []) else tuple(tools or []))
            for client_id, tools in VirtualKeyMcpConfig.objects.filter(virtual_key=vk).values_list(
                "mcp_client_id", "tools_to_execute"
            )
        ),
    )


def _azure(config: dict[str, Any] | None) -> AzureKeySnapshot | None:
    if not config or not isinstance(config.get("endpoint"), str):
        return None
    deployments = config.get("deployments") or {}
    return AzureKeySnapshot(
        endpoint=config["endpoint"].rstrip("/"),
        api_version=config.get("api_version") or AZURE_DEFAULT_API_VERSION,
        deployments=tuple((str(k), str(v)) for k, v in deployments.items()),
    )


def _load_shared_limits(providers: list[Provider]) -> tuple[dict[str, Limits], dict[tuple[str, str], Limits]]:
    """Provider governance by provider id, and model configs by ``(provider id or "", model)``.
    Two queries: the model configs (their rate limits joined) and every budget of a provider or a
    model config; the providers come with their rate limits joined."""
    budgets: dict[str, list[Budget]] = {}
    shared = Budget.objects.filter(Q(provider__isnull=False) | Q(model_config__isnull=False))
    for budget in shared.order_by("created_at", "id"):
        budgets.setdefault(str(budget.provider_id or budget.model_config_id), []).append(budget)

    def limits(owner: Provider | ModelConfig, entity: str, level: str) -> Limits:
        rate_limit = _rate_spec(owner, entity, level)
        specs = tuple(BudgetSpec.of(b, entity, level) for b in budgets.get(str(owner.pk), ()))
        return specs, (rate_limit,) if rate_limit is not None else ()

    by_provider = {str(p.pk): limits(p, p.name, PROVIDER) for p in providers}
    models: dict[tuple[str, str], Limits] = {}
    for config in ModelConfig.objects.select_related("provider", "rate_limit"):
        models[(str(config.provider_id or ""), config.model_name)] = limits(config, config.label, MODEL)
    return by_provider, models


def _join(*parts: Limits | None) -> Limits | None:
    budgets = tuple(spec for part in parts if part for spec in part[0])
    rate_limits = tuple(spec for part in parts if part for spec in part[1])
    return (budgets, rate_limits) if budgets or rate_limits else None


def _model_limits(
    provider_id: str, own: Limits | None, models: dict[tuple[str, str], Limits]
) -> dict[str, Limits | None]:
    """For each model with a config on this provider or on every provider: the provider's own
    limits, then the model's config for this provider, then its config for every provider."""
    names = {model for owner, model in models if owner in ("", provider_id)}
    return {name: _join(own, models.get((provider_id, name)), models.get(("", name))) for name in names}


def _load_providers() -> dict[str, ProviderSnapshot]:
    provider_rows = list(Provider.objects.select_related("rate_limit"))
    provider_limits, model_limits = _load_shared_limits(provider_rows)
    keys_by_provider: dict[str, list[KeySnapshot]] = {}
    for key in ProviderKey.objects.order_by("name"):
        keys_by_provider.setdefault(str(key.provider_id), []).append(
            KeySnapshot(
                id=str(key.pk),
                name=key.name,
                value=key.value,
                models=tuple(key.models or ()),
                weight=key.weight,
                enabled=key.enabled,
                azure=_azure(key.azure_key_config),
            )
        )
    return {
        p.name: ProviderSnapshot(
            id=str(p.pk),
            name=p.name,
            provider_type=p.provider_type,
            api_format=p.wire_format,
            base_url=p.effective_base_url,
            timeout_seconds=p.timeout_seconds,
            extra_headers=tuple((p.extra_headers or {}).items()),
            keys=tuple(keys_by_provider.get(str(p.pk), ())),
            own_limits=(own := _join(provider_limits.get(str(p.pk)))),
            model_limits=_model_limits(str(p.pk), own, model_limits),
        )
        for p in provider_rows
    }
