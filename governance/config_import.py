"""Import of a Bifrost ``config.json`` (the ``providers``, ``mcp`` and ``governance`` sections).

Supported subset (anything else in the file is ignored and listed in the command's output):

- ``providers.<name>``: ``keys[]`` (``name``, ``value``, ``models``, ``weight``, ``enabled``),
  ``network_config`` (``base_url``, ``default_request_timeout_in_seconds``, ``extra_headers``),
  ``provider_type`` (or its old name ``api_format``, or ``custom_provider_config.base_provider_type``;
  one of ``governance.provider_types.ProviderType``, by default the name's type), and per key
  ``azure_key_config`` (``endpoint``, ``api_version``, ``deployments``) for Azure.
- ``governance.customers[]`` (``id``, ``name``, ``budget_id``, ``rate_limit_id``),
  ``governance.teams[]`` (``id``, ``name``, ``customer_id``, ``budget_id``, ``rate_limit_id``),
  ``governance.virtual_keys[]`` (``id``, ``name``, ``value``, ``description``, ``is_active``,
  ``team_id``, ``customer_id``, ``budget_id``, ``rate_limit_id``, ``allow_all_providers``,
  ``provider_configs[]`` with ``id``, ``provider``, ``allowed_models``, ``key_ids`` (key *names*
  or ``*``), ``weight``, ``budget_id``, ``rate_limit_id``),
  ``governance.budgets[]`` (``id``, ``max_limit``, ``reset_duration``, ``calendar_aligned``,
  ``alert_thresholds`` (this gateway's budget alerts, percents; absent: kept, new budgets 50, 80,
  100), and at most one owner: ``virtual_key_id``, ``team_id``, ``customer_id``, ``provider_config_id``,
  ``model_config_id``),
  ``governance.rate_limits[]`` (``id``, ``token_*``, ``request_*``),
  ``governance.model_configs[]`` (limits on all traffic for a model: ``id``, ``model_name``,
  ``provider`` (a provider of the file or the database; absent: every provider), ``budget_ids``
  and Bifrost's older single ``budget_id``, ``rate_limit_id``, ``calendar_aligned`` (applied to
  its budgets in d/w/M/Y), ``scope`` ``global`` only: a ``virtual_key`` scope is an error, the
  VK's own limits say that here),
  ``governance.providers[]`` (provider governance, limits on all traffic to a provider: ``name``
  of a provider of the file or the database, ``budget_id``, ``rate_limit_id``; the provider
  itself is configured in ``providers``, so its other fields here are listed as ignored),
  ``governance.pricing_overrides[]`` (``id``, ``name``, ``scope_kind``, ``virtual_key_id`` (a VK's
  config id), ``provider_id`` (a provider name), ``provider_key_id`` (a key's id in the database or
  a key name, unique across providers), ``match_type``, ``pattern``, ``request_types`` (empty: all),
  ``pricing_patch`` (a JSON string or an object; or ``patch``) with ``input_cost_per_token``,
  ``output_cost_per_token``, ``cache_read_input_token_cost``, ``cost_per_request``),
  ``governance.routing_rules[]`` (``id``, ``name``, ``description``, ``enabled``,
  ``cel_expression``, ``targets[]`` with ``provider``, ``model``, ``key_id`` (a key's id in the
  database or a key name of the target's provider) and ``weight``, ``fallbacks``, ``scope``,
  ``scope_id`` (the config id of the virtual key, team or customer), ``priority``; Bifrost's older
  single-target ``provider``/``model`` fields are read as one target), validated like the API
  (expressions compiled, weights summing to 1); Bifrost's UI-only ``query`` and ``chain_rule``
  are ignored.
- ``mcp.client_configs[]``: MCP clients (upstream MCP servers) by ``name``, with
  ``connection_type``, ``connection_string``, ``stdio_config`` (``command``, ``args``, ``envs``),
  ``auth_type`` (by default ``headers`` when there are headers, else ``none``), ``headers``,
  ``oauth_config``, ``tools_to_execute``, ``allowed_extra_headers``, ``tool_pricing``,
  ``timeout_seconds``, ``allow_on_all_virtual_keys``; and each virtual key's ``mcp_configs[]``
  (``mcp_client_name``, ``tools_to_execute``), naming clients of the file or the database.

Rules:

- Any string value ``env.NAME`` is read from the environment; a missing variable is an error.
  Except in an MCP client's ``connection_string``, ``stdio_config.envs`` and ``oauth_config``:
  those are kept as written and read when the gateway connects (header values, stored
  encrypted, are read at import like any other).
- MCP clients are validated as the API validates them but not connected to: the gateway
  connects when a client is first used.
- Everything is validated first (every problem reported with its JSON path, e.g.
  ``governance.virtual_keys[1].team_id``), then applied in one transaction: nothing is written
  unless everything is valid.
- Idempotent: objects get stable UUIDs derived from their config ids (a config id that already
  is a UUID is used as is), so a re-import updates the same rows. Budget and rate-limit *usage*
  and window starts are never touched by a re-import. Rows that exist only in the database are
  left alone (Bifrost's default "split" mode); a VK's provider configs and MCP configs, however,
  are made to match the file. An MCP client of the file is written whole: a field it omits takes
  its default.
- A VK ``value`` in the file is imported so existing clients keep working; as always only its
  digest is stored. A VK without ``value`` gets a generated one, reported once by the command.
- A rate limit or budget referenced by several owners becomes one copy per owner (here every
  limit belongs to exactly one owner), each with its own counters.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from governance import audit
from governance.durations import CALENDAR_UNITS, validate_duration
from governance.models import Customer, McpClient, Provider, ProviderKey, Team, Via, VirtualKey
from governance.models.limits import alert_thresholds_problem
from governance.models.pricing_overrides import SCOPE_FIELDS, ScopeKind
from governance.models.providers import extra_header_problem
from governance.price_overrides import PATCH_FIELDS, pattern_problem, request_types_problem
from governance.provider_types import ProviderType, azure_key_config_problem, base_url_problem, default_type
from governance.services import imports
from governance.services.mcp_clients import CLIENT_FIELDS, clean_client_fields, clean_whitelist_problems
from governance.services.pricing_overrides import pricing_override_import
from governance.services.routing_rules import RULE_FIELDS, SCOPE_MODELS, Lookups, clean_rule_fields, routing_rule_import

NAMESPACE = uuid.UUID("5b0f7f7e-6a43-4b52-9d59-1f0c1b7c2f11")
OWNER_FIELDS = ("virtual_key_id", "team_id", "customer_id", "provider_config_id", "model_config_id")
# What ``governance.providers[]`` items may say beyond their governance: the provider's own
# settings, which the ``providers`` section carries here.
GOVERNED_PROVIDER_FIELDS = ("id", "name", "budget_id", "rate_limit_id")


class ConfigError(Exception):
    """One or more problems, each ``(json_path, message)``."""

    def __init__(self, problems: list[tuple[str, str]]):
        self.problems = problems
        super().__init__("; ".join(f"{path}: {message}" for path, message in problems))


@dataclass
class ImportResult:
    created: dict[str, int] = field(default_factory=dict)
    updated: dict[str, int] = field(default_factory=dict)
    generated_values: dict[str, str] = field(default_factory=dict)  # VK name -> value, shown once
    ignored: list[str] = field(default_factory=list)

    def count(self, kind: str, created: bool) -> None:
        bucket = self.created if created else self.updated
        bucket[kind] = bucket.get(kind, 0) + 1


def stable_id(kind: str, config_id: Any) -> uuid.UUID:
    try:
        return uuid.UUID(str(config_id))
    except ValueError:
        return uuid.uuid5(NAMESPACE, f"{kind}:{config_id}")


def load_file(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except OSError as exc:
        raise ConfigError([("$", f"cannot read {path}: {exc.strerror}")]) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError([("$", f"invalid JSON: {exc}")]) from None
    if not isinstance(data, dict):
        raise ConfigError([("$", "the top level must be a JSON object")])
    return data


class _Checker:
    """Structural validation with JSON paths; collects every problem before failing."""

    def __init__(self) -> None:
        self.problems: list[tuple[str, str]] = []

    def fail(self, path: str, message: str) -> None:
        self.problems.append((path, message))

    def env(self, value: Any, path: str) -> Any:
        if isinstance(value, str) and value.startswith("env."):
            name = value[4:]
            if not name or name not in os.environ:
                self.fail(path, f"environment variable {name!r} is not set")
                return None
            return os.environ[name]
        return value

    def obj(self, value: Any, path: str) -> dict:
        if not isinstance(value, dict):
            self.fail(path, "must be an object")
            return {}
        return value

    def items(self, value: Any, path: str) -> list:
        if value is None:
            return []
        if not isinstance(value, list):
            self.fail(path, "must be a list")
            return []
        return value

    def string(self, data: dict, key: str, path: str, *, required: bool = False, max_length: int = 255) -> str | None:
        value = self.env(data.get(key), f"{path}.{key}")
        if value is None:
            if required and key not in data:
                self.fail(f"{path}.{key}", "is required")
            return None
        if not isinstance(value, str) or (required and not value.strip()) or len(value) > max_length:
            self.fail(f"{path}.{key}", f"must be a non-empty string of at most {max_length} characters")
            return None
        return value

    def number(
        self, data: dict, key: str, path: str, *, integer: bool = False, positive: bool = True
    ) -> int | float | None:
        value = data.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float) or (integer and not isinstance(value, int)):
            self.fail(f"{path}.{key}", "must be an integer" if integer else "must be a number")
            return None
        if positive and value <= 0:
            self.fail(f"{path}.{key}", "must be greater than 0")
            return None
        return value

    def boolean(self, data: dict, key: str, path: str, default: bool) -> bool:
        value = data.get(key, default)
        if not isinstance(value, bool):
            self.fail(f"{path}.{key}", "must be true or false")
            return default
        return value

    def duration(self, data: dict, key: str, path: str, *, required: bool) -> str | None:
        value = data.get(key)
        if value is None:
            if required:
                self.fail(f"{path}.{key}", "is required")
            return None
        try:
            validate_duration(value)
        except ValidationError as exc:
            self.fail(f"{path}.{key}", exc.messages[0])
            return None
        return value

    def string_list(self, data: dict, key: str, path: str) -> list[str] | None:
        value = data.get(key)
        if value is None:
            return None
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            self.fail(f"{path}.{key}", "must be a list of non-empty strings")
            return None
        return value


def _config_id(check_: _Checker, item: dict, path: str, seen: dict, kind: str) -> str | None:
    raw = item.get("id")
    if raw is None or isinstance(raw, bool) or not isinstance(raw, str | int) or str(raw) == "":
        check_.fail(f"{path}.id", "is required (a string)")
        return None
    key = str(raw)
    if key in seen:
        check_.fail(f"{path}.id", f"duplicate {kind} id {key!r} (first at {seen[key]})")
        return None
    seen[key] = path
    return key


def import_config(data: dict) -> ImportResult:
    """Validate ``data`` completely, then apply it in one transaction. Raises ConfigError."""
    plan = _validate(data)
    try:
        # The audit trail names the import as the channel, and whoever runs it ("import" if unknown).
        with transaction.atomic(), audit.acting_as(via=Via.IMPORT, user_when_unknown="import"):
            return _apply(plan)
    except ValidationError as exc:
        raise ConfigError(_validation_problems(exc, plan.current_path)) from None
    except IntegrityError as exc:
        raise ConfigError([(plan.current_path, f"conflicts with existing data: {str(exc).splitlines()[0]}")]) from None


def _validation_problems(exc: ValidationError, path: str) -> list[tuple[str, str]]:
    if hasattr(exc, "error_dict"):
        return [(f"{path}.{name}", m) for name, errors in exc.error_dict.items() for e in errors for m in e.messages]
    return [(path, m) for m in exc.messages]


@dataclass
class _Plan:
    providers: list[dict] = field(default_factory=list)
    customers: list[dict] = field(default_factory=list)
    teams: list[dict] = field(default_factory=list)
    virtual_keys: list[dict] = field(default_factory=list)
    budgets: dict[str, dict] = field(default_factory=dict)
    rate_limits: dict[str, dict] = field(default_factory=dict)
    # (owner kind, owner config id, budget id / rate limit id, path of the reference)
    budget_links: list[tuple[str, str, str, str]] = field(default_factory=list)
    rate_limit_links: list[tuple[str, str, str, str]] = field(default_factory=list)
    mcp_clients: list[dict] = field(default_factory=list)
    pricing_overrides: list[dict] = field(default_factory=list)
    routing_rules: list[dict] = field(default_factory=list)
    model_configs: list[dict] = field(default_factory=list)
    governed_providers: list[dict] = field(default_factory=list)
    # Owners whose budgets are calendar-aligned (``(kind, config id)``: model configs' flag).
    calendar_owners: set[tuple[str, str]] = field(default_factory=set)
    ignored: list[str] = field(default_factory=list)
    current_path: str = "$"


def _azure_config(c: _Checker, key: dict, kpath: str, provider_type: str) -> dict:
    """A key's ``azure_key_config``: required for an Azure provider's keys, refused on others."""
    raw = key.get("azure_key_config")
    if provider_type != ProviderType.AZURE:
        if raw is not None:
            c.fail(f"{kpath}.azure_key_config", "is only for keys of a provider of type 'azure'")
        return {}
    problem = azure_key_config_problem(raw if raw is not None else None)
    if problem:
        field, message = problem
        c.fail(f"{kpath}.azure_key_config" + (f".{field}" if field else ""), message)
        return {}
    assert isinstance(raw, dict)
    return raw


def _validate(data: dict) -> _Plan:  # noqa: C901 - one linear walk over the file's sections
    c = _Checker()
    plan = _Plan()
    known = {"providers", "governance", "mcp", "$schema", "encryption_key", "client", "config_store", "logs_store"}
    plan.ignored += [key for key in data if key not in known]

    providers = c.obj(data.get("providers", {}), "providers")
    for name, raw in providers.items():
        path = f"providers.{name}"
        spec = c.obj(raw, path)
        network = c.obj(spec.get("network_config", {}), f"{path}.network_config")
        custom = spec.get("custom_provider_config")
        type_field = next((f for f in ("provider_type", "api_format") if spec.get(f) is not None), None)
        provider_type = (
            spec.get(type_field)
            if type_field
            else (custom if isinstance(custom, dict) else {}).get("base_provider_type")
        )
        type_path = f"{path}.{type_field or 'custom_provider_config.base_provider_type'}"
        if provider_type is not None and provider_type not in ProviderType.values:
            c.fail(type_path, f"must be one of {', '.join(ProviderType.values)}")
            provider_type = None
        provider_type = provider_type or default_type(name)
        base_url = c.string(network, "base_url", f"{path}.network_config", max_length=500)
        problem = base_url_problem(provider_type, base_url or "")
        if problem and "base_url" not in network:
            c.fail(f"{path}.network_config.base_url", problem)
        headers_path = f"{path}.network_config.extra_headers"
        headers = {}
        for header, raw_value in c.obj(network.get("extra_headers", {}), headers_path).items():
            headers[header] = value = c.env(raw_value, f"{headers_path}.{header}")
            env_unset = value is None and isinstance(raw_value, str)  # already reported by c.env
            problem = None if env_unset else extra_header_problem(header, value)
            if problem:
                c.fail(f"{headers_path}.{header}", problem)
        keys = []
        seen_keys: set[str | None] = set()  # None: a key without a valid name (already reported)
        for index, raw_key in enumerate(c.items(spec.get("keys"), f"{path}.keys")):
            kpath = f"{path}.keys[{index}]"
            key = c.obj(raw_key, kpath)
            key_name = c.string(key, "name", kpath, required=True)
            if key_name in seen_keys:
                c.fail(f"{kpath}.name", f"duplicate key name {key_name!r}")
            seen_keys.add(key_name)
            keys.append(
                {
                    "name": key_name,
                    "value": c.string(key, "value", kpath, required=True, max_length=4096),
                    "models": c.string_list(key, "models", kpath),
                    "weight": c.number(key, "weight", kpath, positive=False),
                    "enabled": c.boolean(key, "enabled", kpath, True),
                    "azure_key_config": _azure_config(c, key, kpath, provider_type),
                    "path": kpath,
                }
            )
        plan.providers.append(
            {
                "name": name,
                "provider_type": provider_type,
                "base_url": base_url,
                "timeout": c.number(network, "default_request_timeout_in_seconds", f"{path}.network_config"),
                "extra_headers": headers,
                "keys": keys,
                "path": path,
            }
        )
    provider_names = {p["name"] for p in plan.providers} | set(Provider.objects.values_list("name", flat=True))
    mcp_names = _validate_mcp(c, plan, c.obj(data.get("mcp", {}), "mcp"))
    mcp_names |= set(McpClient.objects.values_list("name", flat=True))
    keys_by_provider = {p["name"]: {k["name"] for k in p["keys"]} for p in plan.providers}

    gov = c.obj(data.get("governance", {}), "governance")
    known_gov = {"budgets", "rate_limits", "customers", "teams", "virtual_keys", "pricing_overrides"}
    known_gov |= {"routing_rules"}
    known_gov |= {"model_configs", "providers"}
    plan.ignored += [f"governance.{key}" for key in gov if key not in known_gov]

    seen_rl: dict = {}
    for index, raw in enumerate(c.items(gov.get("rate_limits"), "governance.rate_limits")):
        path = f"governance.rate_limits[{index}]"
        item = c.obj(raw, path)
        rl_id = _config_id(c, item, path, seen_rl, "rate limit")
        spec = {"path": path}
        for kind in ("token", "request"):
            limit = c.number(item, f"{kind}_max_limit", path, integer=True)
            duration = c.duration(item, f"{kind}_reset_duration", path, required=limit is not None)
            if duration is not None and limit is None:
                c.fail(f"{path}.{kind}_max_limit", f"is required with {kind}_reset_duration")
            spec[f"{kind}_max_limit"], spec[f"{kind}_reset_duration"] = limit, duration or ""
        if rl_id:
            plan.rate_limits[rl_id] = spec

    seen_budget: dict = {}
    for index, raw in enumerate(c.items(gov.get("budgets"), "governance.budgets")):
        path = f"governance.budgets[{index}]"
        item = c.obj(raw, path)
        budget_id = _config_id(c, item, path, seen_budget, "budget")
        max_limit = item.get("max_limit")
        try:
            if isinstance(max_limit, bool) or not isinstance(max_limit, int | float | str):
                raise InvalidOperation
            amount = Decimal(str(max_limit))
            if not amount.is_finite() or amount <= 0:
                raise InvalidOperation
        except InvalidOperation:
            c.fail(f"{path}.max_limit", "must be a number greater than 0")
            amount = None
        duration = c.duration(item, "reset_duration", path, required=True)
        owners = [(f, str(item[f])) for f in OWNER_FIELDS if item.get(f) is not None]
        if len(owners) > 1:
            c.fail(path, f"set at most one owner field, not {', '.join(f for f, _ in owners)}")
        if budget_id:
            thresholds = item.get("alert_thresholds")
            problem = None if thresholds is None else alert_thresholds_problem(thresholds)
            if problem is not None:
                c.fail(f"{path}.alert_thresholds", problem)
            plan.budgets[budget_id] = {
                "max_limit": amount,
                "reset_duration": duration,
                "calendar_aligned": c.boolean(item, "calendar_aligned", path, False),
                "alert_thresholds": sorted(thresholds) if thresholds is not None and problem is None else None,
                "path": path,
            }
            if len(owners) == 1:
                kind, owner_id = owners[0]
                plan.budget_links.append((kind.removesuffix("_id"), owner_id, budget_id, f"{path}.{kind}"))

    def link(kind: str, owner_id: str, item: dict, path: str) -> None:
        if item.get("budget_id") is not None:
            plan.budget_links.append((kind, owner_id, str(item["budget_id"]), f"{path}.budget_id"))
        if item.get("rate_limit_id") is not None:
            plan.rate_limit_links.append((kind, owner_id, str(item["rate_limit_id"]), f"{path}.rate_limit_id"))

    seen_customer: dict = {}
    for index, raw in enumerate(c.items(gov.get("customers"), "governance.customers")):
        path = f"governance.customers[{index}]"
        item = c.obj(raw, path)
        customer_id = _config_id(c, item, path, seen_customer, "customer")
        name = c.string(item, "name", path, required=True)
        if customer_id:
            plan.customers.append({"id": customer_id, "name": name, "path": path})
            link("customer", customer_id, item, path)

    seen_team: dict = {}
    for index, raw in enumerate(c.items(gov.get("teams"), "governance.teams")):
        path = f"governance.teams[{index}]"
        item = c.obj(raw, path)
        team_id = _config_id(c, item, path, seen_team, "team")
        customer_ref = item.get("customer_id")
        if customer_ref is not None and not _exists(Customer, "customer", customer_ref, seen_customer):
            c.fail(f"{path}.customer_id", f"customer {customer_ref!r} is not defined in the file or the database")
        if team_id:
            plan.teams.append(
                {
                    "id": team_id,
                    "name": c.string(item, "name", path, required=True),
                    "customer_id": str(customer_ref) if customer_ref is not None else None,
                    "path": path,
                }
            )
            link("team", team_id, item, path)

    seen_vk: dict = {}
    seen_pc: dict = {}
    for index, raw in enumerate(c.items(gov.get("virtual_keys"), "governance.virtual_keys")):
        path = f"governance.virtual_keys[{index}]"
        item = c.obj(raw, path)
        vk_id = _config_id(c, item, path, seen_vk, "virtual key")
        team_ref, customer_ref = item.get("team_id"), item.get("customer_id")
        if team_ref is not None and customer_ref is not None:
            c.fail(path, VirtualKey.ATTACH_BOTH_MESSAGE)
        if team_ref is not None and not _exists(Team, "team", team_ref, seen_team):
            c.fail(f"{path}.team_id", f"team {team_ref!r} is not defined in the file or the database")
        if customer_ref is not None and not _exists(Customer, "customer", customer_ref, seen_customer):
            c.fail(f"{path}.customer_id", f"customer {customer_ref!r} is not defined in the file or the database")
        value = c.string(item, "value", path, max_length=255)
        configs = []
        seen_providers: set[str | None] = set()
        for pc_index, raw_pc in enumerate(c.items(item.get("provider_configs"), f"{path}.provider_configs")):
            pc_path = f"{path}.provider_configs[{pc_index}]"
            pc = c.obj(raw_pc, pc_path)
            provider = pc.get("provider")
            if provider not in provider_names:
                c.fail(f"{pc_path}.provider", f"provider {provider!r} is not configured")
            elif provider in seen_providers:
                c.fail(f"{pc_path}.provider", f"duplicate provider {provider!r}")
            seen_providers.add(provider)
            key_names = c.string_list(pc, "key_ids", pc_path)
            known_keys = keys_by_provider.get(provider)
            if key_names and key_names != ["*"]:
                if known_keys is None:
                    known_keys = set(ProviderKey.objects.filter(provider__name=provider).values_list("name", flat=True))
                for key_name in key_names:
                    if key_name not in known_keys:
                        c.fail(f"{pc_path}.key_ids", f"provider {provider!r} has no key named {key_name!r}")
            pc_id = str(pc["id"]) if pc.get("id") is not None else f"{vk_id}:{provider}"
            if pc.get("id") is not None:
                if pc_id in seen_pc:
                    c.fail(f"{pc_path}.id", f"duplicate provider config id {pc_id!r}")
                seen_pc[pc_id] = pc_path
            configs.append(
                {
                    "config_id": pc_id,
                    "provider": provider,
                    "weight": c.number(pc, "weight", pc_path, positive=False),
                    "allowed_models": c.string_list(pc, "allowed_models", pc_path),
                    "key_names": key_names,
                    "path": pc_path,
                }
            )
            link("provider_config", pc_id, pc, pc_path)
        mcp_configs = _vk_mcp_configs(c, item, path, mcp_names)
        if vk_id:
            plan.virtual_keys.append(
                {
                    "id": vk_id,
                    "name": c.string(item, "name", path, required=True),
                    "value": value,
                    "description": c.string(item, "description", path, max_length=10_000) or "",
                    "is_active": c.boolean(item, "is_active", path, True),
                    "allow_all_providers": c.boolean(item, "allow_all_providers", path, False),
                    "team_id": str(team_ref) if team_ref is not None else None,
                    "customer_id": str(customer_ref) if customer_ref is not None else None,
                    "provider_configs": configs,
                    "mcp_configs": mcp_configs,
                    "path": path,
                }
            )
            link("virtual_key", vk_id, item, path)

    _validate_pricing_overrides(c, plan, gov, seen_vk, provider_names, keys_by_provider)
    entities_in_file = {"virtual_key": seen_vk, "team": seen_team, "customer": seen_customer}
    _validate_routing_rules(c, plan, gov, entities_in_file, provider_names, keys_by_provider)
    seen_mc = _validate_model_configs(c, plan, gov, provider_names, link)
    governed = _validate_governed_providers(c, plan, gov, provider_names, link)
    defined = {"virtual_key": seen_vk, "team": seen_team, "customer": seen_customer, "provider_config": seen_pc}
    defined |= {"model_config": seen_mc, "provider": governed}
    all_pc_ids = set(seen_pc) | {pc["config_id"] for vk in plan.virtual_keys for pc in vk["provider_configs"]}
    for kind, owner_id, ref, path in plan.budget_links:
        if ref not in plan.budgets:
            c.fail(path, f"budget {ref!r} is not defined in governance.budgets")
        if kind == "provider_config" and owner_id not in all_pc_ids:
            c.fail(path, f"provider config {owner_id!r} is not defined in the file")
        elif kind != "provider_config" and owner_id not in defined[kind]:
            c.fail(path, f"{kind.replace('_', ' ')} {owner_id!r} is not defined in the file")
    for _kind, _owner_id, ref, path in plan.rate_limit_links:
        if ref not in plan.rate_limits:
            c.fail(path, f"rate limit {ref!r} is not defined in governance.rate_limits")
    if c.problems:
        raise ConfigError(c.problems)
    return plan


def _validate_mcp(c: _Checker, plan: _Plan, mcp: dict) -> set[str]:
    """``mcp.client_configs[]``: each client checked by the service's rules, errors under its path.
    Returns the names the file defines."""
    plan.ignored += [f"mcp.{key}" for key in mcp if key != "client_configs"]
    seen: dict[str, str] = {}
    for index, raw in enumerate(c.items(mcp.get("client_configs"), "mcp.client_configs")):
        path = f"mcp.client_configs[{index}]"
        item = c.obj(raw, path)
        plan.ignored += [f"{path}.{key}" for key in item if key not in CLIENT_FIELDS]
        for key in ("name", "connection_type"):
            if key not in item:
                c.fail(f"{path}.{key}", "is required")
        name = item.get("name")
        if isinstance(name, str) and name in seen:
            c.fail(f"{path}.name", f"duplicate MCP client name {name!r} (first at {seen[name]})")
        elif isinstance(name, str):
            seen[name] = path
        fields = {key: item[key] for key in CLIENT_FIELDS if key in item}
        headers = item.get("headers")
        if isinstance(headers, dict):  # secrets: read from the environment now, stored encrypted
            fields["headers"] = {h: c.env(v, f"{path}.headers.{h}") for h, v in headers.items()}
            if any(v is None for v in fields["headers"].values()):
                continue  # already reported by c.env
        if "auth_type" not in fields:
            fields["auth_type"] = "headers" if fields.get("headers") else "none"
        if not {"name", "connection_type"} <= set(fields):
            continue
        try:
            cleaned = clean_client_fields(fields)
        except ValidationError as exc:
            for problem_path, message in _validation_problems(exc, path):
                c.fail(problem_path, message)
            continue
        plan.mcp_clients.append({"name": cleaned["name"], "fields": cleaned, "path": path})
    return set(seen)


def _vk_mcp_configs(c: _Checker, item: dict, path: str, mcp_names: set[str]) -> list[dict]:
    """A VK's ``mcp_configs[]``: ``mcp_client_name`` of the file or the database, its tools."""
    configs = []
    seen: set[str] = set()
    for index, raw in enumerate(c.items(item.get("mcp_configs"), f"{path}.mcp_configs")):
        mpath = f"{path}.mcp_configs[{index}]"
        spec = c.obj(raw, mpath)
        name = spec.get("mcp_client_name")
        if not isinstance(name, str) or name not in mcp_names:
            c.fail(
                f"{mpath}.mcp_client_name", f"MCP client {name!r} is not defined in mcp.client_configs or the database"
            )
            continue
        if name in seen:
            c.fail(f"{mpath}.mcp_client_name", f"duplicate MCP client {name!r}")
            continue
        seen.add(name)
        tools, problems = clean_whitelist_problems(spec.get("tools_to_execute"))
        for message in problems:
            c.fail(f"{mpath}.tools_to_execute", message)
        configs.append({"mcp_client_name": name, "tools_to_execute": tools or []})
    return configs


def _exists(model: type[Customer | Team], kind: str, ref: Any, in_file: dict) -> bool:
    return str(ref) in in_file or model.objects.filter(pk=stable_id(kind, ref)).exists()


def _apply(plan: _Plan) -> ImportResult:
    result = ImportResult(ignored=list(plan.ignored))
    providers: dict[str, Provider] = {}
    for spec in plan.providers:
        plan.current_path = spec["path"]
        provider, created = imports.provider_import(
            name=spec["name"],
            provider_type=spec["provider_type"],
            base_url=spec["base_url"],
            timeout_seconds=spec["timeout"],
            extra_headers=spec["extra_headers"],
        )
        result.count("providers", created)
        providers[provider.name] = provider
        for key_spec in spec["keys"]:
            plan.current_path = key_spec["path"]
            _key, key_created = imports.provider_key_import(
                provider=provider,
                name=key_spec["name"],
                value=key_spec["value"],
                models=key_spec["models"],
                weight=key_spec["weight"],
                enabled=key_spec["enabled"],
                azure_key_config=key_spec["azure_key_config"],
            )
            result.count("provider_keys", key_created)

    for spec in plan.mcp_clients:
        plan.current_path = spec["path"]
        _client, created = imports.mcp_client_import(name=spec["name"], fields=spec["fields"])
        result.count("mcp_clients", created)

    owners: dict[tuple[str, str], Any] = {}
    for spec in plan.customers:
        plan.current_path = spec["path"]
        customer, created = imports.customer_import(pk=stable_id("customer", spec["id"]), name=spec["name"])
        result.count("customers", created)
        owners[("customer", spec["id"])] = customer
    for spec in plan.teams:
        plan.current_path = spec["path"]
        team, created = imports.team_import(
            pk=stable_id("team", spec["id"]), name=spec["name"], customer=_customer(spec["customer_id"])
        )
        result.count("teams", created)
        owners[("team", spec["id"])] = team
    for spec in plan.virtual_keys:
        owners[("virtual_key", spec["id"])] = vk = _apply_virtual_key(spec, result, plan)
        for pc_spec in spec["provider_configs"]:
            plan.current_path = pc_spec["path"]
            owners[("provider_config", pc_spec["config_id"])] = imports.provider_config_import(
                vk=vk,
                provider=providers.get(pc_spec["provider"]) or Provider.objects.get(name=pc_spec["provider"]),
                weight=pc_spec["weight"],
                allowed_models=pc_spec["allowed_models"],
                key_names=pc_spec["key_names"],
            )
        plan.current_path = spec["path"]
        imports.virtual_key_mcp_configs_import(vk=vk, configs=spec["mcp_configs"])
    _apply_pricing_overrides(plan, result, providers)
    _apply_routing_rules(plan, result)
    owners |= _apply_model_limits(plan, result, providers)

    for kind, owner_id, ref, path in plan.budget_links:
        plan.current_path = path
        budget_spec = plan.budgets[ref]
        calendar = (kind, owner_id) in plan.calendar_owners and budget_spec["reset_duration"][-1:] in CALENDAR_UNITS
        # Usage and the window start are not written: a re-import never resets them.
        _budget, created = imports.budget_import(
            pk=stable_id("budget", f"{ref}:{kind}:{owner_id}"),
            owner=owners[(kind, owner_id)],
            max_limit=budget_spec["max_limit"],
            reset_duration=budget_spec["reset_duration"],
            calendar_aligned=budget_spec["calendar_aligned"] or calendar,
            alert_thresholds=budget_spec["alert_thresholds"],
        )
        result.count("budgets", created)
    for kind, owner_id, ref, path in plan.rate_limit_links:
        plan.current_path = path
        limits = {k: v for k, v in plan.rate_limits[ref].items() if k != "path"}
        _rate_limit, created = imports.rate_limit_import(
            pk=stable_id("rate_limit", f"{ref}:{kind}:{owner_id}"), owner=owners[(kind, owner_id)], **limits
        )
        result.count("rate_limits", created)
    return result


def _customer(config_id: str | None) -> Customer | None:
    return Customer.objects.get(pk=stable_id("customer", config_id)) if config_id else None


def _apply_virtual_key(spec: dict, result: ImportResult, plan: _Plan) -> VirtualKey:
    plan.current_path = spec["path"]
    vk, created, generated = imports.virtual_key_import(
        pk=stable_id("virtual_key", spec["id"]),
        name=spec["name"],
        description=spec["description"],
        is_active=spec["is_active"],
        allow_all_providers=spec["allow_all_providers"],
        team=Team.objects.get(pk=stable_id("team", spec["team_id"])) if spec["team_id"] else None,
        customer=_customer(spec["customer_id"]),
        value=spec["value"],
        providers={pc["provider"] for pc in spec["provider_configs"]},
    )
    if generated is not None:
        result.generated_values[spec["name"]] = generated
    result.count("virtual_keys", created)
    return vk


# --- pricing overrides ---------------------------------------------------------------------------

SCOPE_ID_KEYS = {"virtual_key": "virtual_key_id", "provider": "provider_id", "provider_key": "provider_key_id"}
MAX_PRICE_DIGITS, MAX_PRICE_PLACES = 24, 15


def _price(c: _Checker, value: Any, path: str) -> Decimal | None:
    """A price of a pricing patch: a JSON number, finite, >= 0, at most 15 decimal places."""
    if value is None:
        return None
    try:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise InvalidOperation
        amount = Decimal(str(value))
        if not amount.is_finite() or amount < 0:
            raise InvalidOperation
    except InvalidOperation:
        c.fail(path, "must be a number >= 0")
        return None
    exponent = amount.as_tuple().exponent
    assert isinstance(exponent, int)  # finite
    if -exponent > MAX_PRICE_PLACES:
        c.fail(path, f"must have at most {MAX_PRICE_PLACES} decimal places")
        return None
    if amount >= Decimal(10) ** (MAX_PRICE_DIGITS - MAX_PRICE_PLACES):
        c.fail(path, "is too large")
        return None
    return amount


def _pricing_patch(c: _Checker, item: dict, path: str) -> dict[str, Decimal]:
    """The override's prices by model field, from ``pricing_patch`` (a JSON string, as Bifrost
    writes it, or an object) or ``patch``."""
    key = "patch" if item.get("pricing_patch") is None and item.get("patch") is not None else "pricing_patch"
    raw, ppath = item.get(key), f"{path}.{key}"
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError:
            c.fail(ppath, "must be a JSON object, or a string holding one")
            return {}
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        c.fail(ppath, "must be a JSON object, or a string holding one")
        return {}
    prices: dict[str, Decimal] = {}
    problems = len(c.problems)
    for name, value in raw.items():
        if name not in PATCH_FIELDS:
            c.fail(f"{ppath}.{name}", f"not a price this gateway applies (supported: {', '.join(PATCH_FIELDS)})")
            continue
        amount = _price(c, value, f"{ppath}.{name}")
        if amount is not None:
            prices[PATCH_FIELDS[name]] = amount
    if not prices and len(c.problems) == problems:
        c.fail(ppath, "set at least one price field")
    return prices


def _provider_key_ref(c: _Checker, ref: Any, path: str, keys_by_provider: dict[str, set]) -> tuple[str, str] | None:
    """``(provider name, key name)`` of a key named by its database id or by its name."""
    if not isinstance(ref, str) or not ref:
        c.fail(path, "must be a provider key's id or name")
        return None
    try:
        key = ProviderKey.objects.select_related("provider").filter(pk=uuid.UUID(ref)).first()
    except ValueError:
        key = None
    if key is not None:
        return key.provider.name, key.name
    owners = {provider for provider, names in keys_by_provider.items() if ref in names}
    owners |= set(ProviderKey.objects.filter(name=ref).values_list("provider__name", flat=True))
    if len(owners) > 1:
        c.fail(path, f"key name {ref!r} is ambiguous (providers {', '.join(sorted(owners))}): use the key's id")
        return None
    if not owners:
        c.fail(path, f"provider key {ref!r} is not defined in the file or the database")
        return None
    return owners.pop(), ref


def _validate_pricing_overrides(
    c: _Checker,
    plan: _Plan,
    gov: dict,
    seen_vk: dict,
    provider_names: set[str],
    keys_by_provider: dict[str, set],
) -> None:
    seen: dict = {}
    for index, raw in enumerate(c.items(gov.get("pricing_overrides"), "governance.pricing_overrides")):
        path = f"governance.pricing_overrides[{index}]"
        item = c.obj(raw, path)
        override_id = _config_id(c, item, path, seen, "pricing override")
        name = c.string(item, "name", path, required=True)
        scope_kind = item.get("scope_kind")
        if scope_kind not in ScopeKind.values:
            c.fail(f"{path}.scope_kind", f"must be one of {', '.join(ScopeKind.values)}")
            continue
        wanted = SCOPE_FIELDS[scope_kind]
        refs: dict[str, Any] = {}
        for field_name, key in SCOPE_ID_KEYS.items():
            value, kpath = item.get(key), f"{path}.{key}"
            if field_name not in wanted:
                if value is not None:
                    c.fail(kpath, f"is not used by scope_kind {scope_kind!r}")
                continue
            if value is None:
                c.fail(kpath, f"is required for scope_kind {scope_kind!r}")
            elif field_name == "virtual_key":
                in_db = VirtualKey.objects.filter(pk=stable_id("virtual_key", value)).exists()
                if str(value) not in seen_vk and not in_db:
                    c.fail(kpath, f"virtual key {value!r} is not defined in the file or the database")
                refs[field_name] = str(value)
            elif field_name == "provider":
                if value not in provider_names:
                    c.fail(kpath, f"provider {value!r} is not configured")
                refs[field_name] = value
            else:
                refs[field_name] = _provider_key_ref(c, value, kpath, keys_by_provider)
        match_type = item.get("match_type")
        if match_type not in ("exact", "wildcard", "pattern"):
            c.fail(f"{path}.match_type", "must be one of exact, wildcard, pattern")
        else:
            problem = pattern_problem(match_type, item.get("pattern"))
            if problem:
                c.fail(f"{path}.pattern", problem)
        request_types = item.get("request_types") or []
        problem = request_types_problem(request_types)
        if problem:
            c.fail(f"{path}.request_types", problem)
        prices = _pricing_patch(c, item, path)
        if override_id:
            plan.pricing_overrides.append(
                {
                    "id": override_id,
                    "name": name,
                    "scope_kind": scope_kind,
                    "refs": refs,
                    "match_type": match_type,
                    "pattern": item.get("pattern"),
                    "request_types": request_types,
                    "prices": prices,
                    "path": path,
                }
            )


def _apply_pricing_overrides(plan: _Plan, result: ImportResult, providers: dict[str, Provider]) -> None:
    for spec in plan.pricing_overrides:
        plan.current_path = spec["path"]
        refs = spec["refs"]
        scope: dict[str, Any] = {}
        if "virtual_key" in refs:
            scope["virtual_key"] = VirtualKey.objects.get(pk=stable_id("virtual_key", refs["virtual_key"]))
        if "provider" in refs:
            scope["provider"] = providers.get(refs["provider"]) or Provider.objects.get(name=refs["provider"])
        if "provider_key" in refs:
            provider_name, key_name = refs["provider_key"]
            scope["provider_key"] = ProviderKey.objects.get(provider__name=provider_name, name=key_name)
        _override, created = pricing_override_import(
            pk=stable_id("pricing_override", spec["id"]),
            name=spec["name"],
            scope_kind=spec["scope_kind"],
            match_type=spec["match_type"],
            pattern=spec["pattern"],
            request_types=spec["request_types"],
            prices=spec["prices"],
            **scope,
        )
        result.count("pricing_overrides", created)


# --- routing rules -------------------------------------------------------------------------------

ROUTING_RULE_KEYS = frozenset({*RULE_FIELDS, "id", "provider", "model"})


def _rule_fields(item: dict) -> dict[str, Any]:
    """A file's rule as the service takes it; Bifrost's single-target form read as one target."""
    fields = {key: item[key] for key in RULE_FIELDS if key in item}
    if "targets" not in item and (item.get("provider") or item.get("model")):
        fields["targets"] = [{"provider": item.get("provider"), "model": item.get("model"), "weight": 1}]
    return fields


def _file_key_of(keys_by_provider: dict[str, set]) -> Any:
    """A target's ``key_id`` as the file may give it: a key name of the provider (of the file or
    the database) or a key's database id. Validation only: the apply step resolves it."""

    def key_of(provider: str, ref: str) -> str | None:
        if ref in keys_by_provider.get(provider, set()):
            return ref
        if ProviderKey.objects.filter(provider__name=provider, name=ref).exists():
            return ref
        try:
            pk = uuid.UUID(ref)
        except ValueError:
            return None
        return ref if ProviderKey.objects.filter(pk=pk, provider__name=provider).exists() else None

    return key_of


def _db_key_of(provider: str, ref: str) -> str | None:
    """At apply: a key name or id of ``provider``, as the key's id."""
    try:
        found = ProviderKey.objects.filter(pk=uuid.UUID(ref), provider__name=provider).first()
    except ValueError:
        found = None
    found = found or ProviderKey.objects.filter(provider__name=provider, name=ref).first()
    return str(found.pk) if found is not None else None


def _validate_routing_rules(
    c: _Checker,
    plan: _Plan,
    gov: dict,
    entities_in_file: dict[str, dict],
    provider_names: set[str],
    keys_by_provider: dict[str, set],
) -> None:
    """``governance.routing_rules[]``: each rule checked by the service's rules, errors under its path."""

    def scope_entity(scope: str, scope_id: str) -> Any:
        if scope_id in entities_in_file.get(scope, {}):
            return True
        return SCOPE_MODELS[scope].objects.filter(pk=stable_id(scope, scope_id)).first()

    lookups = Lookups(
        provider_exists=lambda name: name in provider_names,
        key_of=_file_key_of(keys_by_provider),
        scope_entity=scope_entity,
    )
    seen: dict = {}
    names: dict[tuple[str, str, str], str] = {}
    for index, raw in enumerate(c.items(gov.get("routing_rules"), "governance.routing_rules")):
        path = f"governance.routing_rules[{index}]"
        item = c.obj(raw, path)
        rule_id = _config_id(c, item, path, seen, "routing rule")
        plan.ignored += [f"{path}.{key}" for key in item if key not in ROUTING_RULE_KEYS]
        fields = _rule_fields(item)
        for key in ("name", "targets"):
            if key not in fields:
                c.fail(f"{path}.{key}", "is required")
        try:
            clean_rule_fields(fields, lookups=lookups)
        except ValidationError as exc:
            for problem_path, message in _validation_problems(exc, path):
                c.fail(problem_path, message)
            continue
        scope_key = (str(fields.get("scope") or "global"), str(fields.get("scope_id") or ""), str(fields["name"]))
        if scope_key in names:
            message = f"duplicate routing rule name {scope_key[2]!r} in its scope (first at {names[scope_key]})"
            c.fail(f"{path}.name", message)
            continue
        names[scope_key] = path
        if rule_id and {"name", "targets"} <= set(fields):
            plan.routing_rules.append({"id": rule_id, "fields": fields, "path": path})


def _apply_routing_rules(plan: _Plan, result: ImportResult) -> None:
    """After the providers, keys and entities: scope ids and key names resolve to rows now."""

    def scope_entity(scope: str, scope_id: str) -> Any:
        return SCOPE_MODELS[scope].objects.filter(pk=stable_id(scope, scope_id)).first()

    lookups = Lookups(key_of=_db_key_of, scope_entity=scope_entity)
    for spec in plan.routing_rules:
        plan.current_path = spec["path"]
        pk = stable_id("routing_rule", spec["id"])
        _rule, created = routing_rule_import(pk=pk, lookups=lookups, **spec["fields"])
        result.count("routing_rules", created)


# --- limits on all traffic: model configs and provider governance ------------------------------


def _validate_model_configs(
    c: _Checker, plan: _Plan, gov: dict, provider_names: set[str], link: Callable[[str, str, dict, str], None]
) -> dict:
    """``governance.model_configs[]``; returns the config ids the file defines."""
    seen: dict = {}
    pairs: dict[tuple[str, str | None], str] = {}
    for index, raw in enumerate(c.items(gov.get("model_configs"), "governance.model_configs")):
        path = f"governance.model_configs[{index}]"
        item = c.obj(raw, path)
        config_id = _config_id(c, item, path, seen, "model config")
        model_name = c.string(item, "model_name", path, required=True)
        if model_name == "*":
            c.fail(
                f"{path}.model_name",
                "'*' is not a model: limits on all of a provider's traffic go in governance.providers",
            )
        provider = item.get("provider")
        if provider is not None and (not isinstance(provider, str) or provider not in provider_names):
            c.fail(f"{path}.provider", f"provider {provider!r} is not configured")
        scope = item.get("scope", "global")
        if scope not in (None, "global"):
            c.fail(f"{path}.scope", f"only 'global' model configs are supported, not {scope!r}")
        calendar = c.boolean(item, "calendar_aligned", path, False)
        budget_ids = c.string_list(item, "budget_ids", path) or []
        if item.get("budget_id") is not None:
            budget_ids = [str(item["budget_id"]), *budget_ids]
        if model_name is not None and model_name != "*":
            pair = (model_name, provider if isinstance(provider, str) else None)
            if pair in pairs:
                c.fail(f"{path}.model_name", f"duplicate model config for {model_name!r} (first at {pairs[pair]})")
            pairs[pair] = path
        if not config_id:
            continue
        plan.model_configs.append({"id": config_id, "model_name": model_name, "provider": provider, "path": path})
        if calendar:
            plan.calendar_owners.add(("model_config", config_id))
        for budget_index, ref in enumerate(budget_ids):
            ref_path = f"{path}.budget_ids[{budget_index}]" if "budget_ids" in item else f"{path}.budget_id"
            plan.budget_links.append(("model_config", config_id, ref, ref_path))
        link("model_config", config_id, {"rate_limit_id": item.get("rate_limit_id")}, path)
    return seen


def _validate_governed_providers(
    c: _Checker, plan: _Plan, gov: dict, provider_names: set[str], link: Callable[[str, str, dict, str], None]
) -> dict:
    """``governance.providers[]``: each provider's budget and rate limit; returns the names."""
    seen: dict = {}
    for index, raw in enumerate(c.items(gov.get("providers"), "governance.providers")):
        path = f"governance.providers[{index}]"
        item = c.obj(raw, path)
        plan.ignored += [f"{path}.{key}" for key in item if key not in GOVERNED_PROVIDER_FIELDS]
        name = item.get("name")
        if not isinstance(name, str) or name not in provider_names:
            c.fail(f"{path}.name", f"provider {name!r} is not configured")
            continue
        if name in seen:
            c.fail(f"{path}.name", f"duplicate provider {name!r} (first at {seen[name]})")
            continue
        seen[name] = path
        plan.governed_providers.append({"name": name, "path": path})
        link("provider", name, item, path)
    return seen


def _apply_model_limits(
    plan: _Plan, result: ImportResult, providers: dict[str, Provider]
) -> dict[tuple[str, str], Any]:
    """Model configs and governed providers, as owners of the budgets and rate limits linked to them."""
    owners: dict[tuple[str, str], Any] = {}
    for spec in plan.model_configs:
        plan.current_path = spec["path"]
        name = spec["provider"]
        config, created = imports.model_config_import(
            pk=stable_id("model_config", spec["id"]),
            model_name=spec["model_name"],
            provider=(providers.get(name) or Provider.objects.get(name=name)) if name else None,
        )
        result.count("model_configs", created)
        owners[("model_config", spec["id"])] = config
    for spec in plan.governed_providers:
        owners[("provider", spec["name"])] = providers.get(spec["name"]) or Provider.objects.get(name=spec["name"])
    return owners
