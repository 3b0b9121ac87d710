"""Routing rules: create, update, delete, and the validation the API, the admin and the config
import share.

Every problem is a field error naming the field as the API names it (``cel_expression``,
``targets[1].weight``, ``fallbacks[0]``, ``scope_id``), all of them reported at once; Bifrost's
wording where it has one ("target weights must sum to 1, got 0.9000", "scope_id field is required
when scope is not global"). An expression the CEL compiler refuses is a ``cel_expression`` error
quoting the compiler. A name already used in the same scope is a ``RoutingRuleConflict`` (a
``ValidationError``; the API answers it 409).

Rules are validated against the database as it is: target and fallback providers must be
configured, a target's ``key_id`` must be a key of its provider, ``scope_id`` must name an
existing virtual key, team or customer. The config import passes its own ``Lookups`` so that it
can validate a file whose providers and entities are not written yet.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Model

from governance.models import Customer, Provider, ProviderKey, RoutingRule, RoutingScope, Team, VirtualKey
from governance.routing_rules import MAX_EXPRESSION, CelError, compile_expression
from governance.services.validation import FieldProblems

RULE_FIELDS = (
    "name",
    "description",
    "enabled",
    "cel_expression",
    "targets",
    "fallbacks",
    "scope",
    "scope_id",
    "priority",
)
MAX_TARGETS = 32
MAX_FALLBACKS = 32
WEIGHT_TOLERANCE = 1e-9
PRIORITY_RANGE = (-(2**31), 2**31 - 1)
SCOPE_MODELS: dict[str, type[VirtualKey] | type[Team] | type[Customer]] = {
    RoutingScope.VIRTUAL_KEY: VirtualKey,
    RoutingScope.TEAM: Team,
    RoutingScope.CUSTOMER: Customer,
}
SCOPE_LABELS: dict[str, str] = {
    RoutingScope.VIRTUAL_KEY: "virtual key",
    RoutingScope.TEAM: "team",
    RoutingScope.CUSTOMER: "customer",
}
TARGET_KEYS = ("provider", "model", "key_id", "weight")


class RoutingRuleConflict(ValidationError):
    """The name is taken by another rule of the same scope: the API answers 409."""


def _db_scope_entity(scope: str, scope_id: str) -> Model | None:
    try:
        pk = uuid.UUID(scope_id)
    except ValueError:
        return None
    return SCOPE_MODELS[scope].objects.filter(pk=pk).first()


def _db_key_of(provider: str, key_ref: str) -> str | None:
    try:
        pk = uuid.UUID(key_ref)
    except ValueError:
        return None
    found = ProviderKey.objects.filter(pk=pk, provider__name=provider).values_list("pk", flat=True).first()
    return str(found) if found is not None else None


@dataclass(frozen=True)
class Lookups:
    """What validation asks the configuration: the database's answers by default."""

    provider_exists: Callable[[str], bool] = lambda name: Provider.objects.filter(name=name).exists()
    # (provider name, key reference) -> the key's id as stored in the rule, or None when unknown
    key_of: Callable[[str, str], str | None] = _db_key_of
    # (scope, scope_id) -> the entity, or None when unknown
    scope_entity: Callable[[str, str], Any] = _db_scope_entity


def _optional_text(problems: FieldProblems, field: str, value: Any, *, max_length: int) -> str | None:
    """A string that may be absent: None or "" both mean absent (returned as None)."""
    if value is None or value == "":
        return None
    return problems.text(field, value, max_length=max_length, blank=False)


def _clean_expression(problems: FieldProblems, value: Any) -> str | None:
    if value is None:
        return ""
    text = problems.text("cel_expression", value, max_length=MAX_EXPRESSION)
    if text is None:
        return None
    try:
        compile_expression(text)
    except CelError as exc:
        problems.add("cel_expression", f"invalid CEL expression: {exc}")
        return None
    return text


def _clean_weight(problems: FieldProblems, field: str, value: Any) -> float | None:
    if value is None:
        return 1.0
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        problems.add(field, "must be a number")
        return None
    if value < 0:
        problems.add(field, "each target weight must be positive")
        return None
    return float(value)


def _clean_targets(problems: FieldProblems, value: Any, lookups: Lookups) -> list[dict[str, Any]] | None:
    if not isinstance(value, list):
        problems.add("targets", "must be a list of {provider, model, key_id, weight}")
        return None
    if not value:
        problems.add("targets", "at least one target is required")
        return None
    if len(value) > MAX_TARGETS:
        problems.add("targets", f"must have at most {MAX_TARGETS} targets")
        return None
    targets: list[dict[str, Any]] = []
    seen: set[tuple[str, str, str]] = set()
    bad = False
    for index, raw in enumerate(value):
        path = f"targets[{index}]"
        if not isinstance(raw, dict):
            problems.add(path, "must be an object with provider, model, key_id and weight")
            bad = True
            continue
        provider = _optional_text(problems, f"{path}.provider", raw.get("provider"), max_length=63)
        model = _optional_text(problems, f"{path}.model", raw.get("model"), max_length=255)
        key_ref = _optional_text(problems, f"{path}.key_id", raw.get("key_id"), max_length=255)
        weight = _clean_weight(problems, f"{path}.weight", raw.get("weight"))
        if any(f"{path}.{key}" in problems.errors for key in TARGET_KEYS):
            bad = True
            continue
        key_id = None
        if provider is not None and not lookups.provider_exists(provider):
            problems.add(f"{path}.provider", f"provider '{provider}' is not configured")
            bad = True
        elif key_ref is not None:
            if provider is None:
                problems.add(f"{path}.key_id", "key_id requires provider to be set")
                bad = True
            else:
                key_id = lookups.key_of(provider, key_ref)
                if key_id is None:
                    problems.add(f"{path}.key_id", f"provider '{provider}' has no key '{key_ref}'")
                    bad = True
        identity = ((provider or "").lower(), (model or "").lower(), key_id or "")
        if identity in seen:
            problems.add(
                path,
                f"duplicate target entry: provider={provider or ''!r} model={model or ''!r} key_id={key_id or ''!r}",
            )
            bad = True
        seen.add(identity)
        targets.append({"provider": provider, "model": model, "key_id": key_id, "weight": weight})
    if bad:
        return None
    total = math.fsum(t["weight"] for t in targets)
    if abs(total - 1.0) > WEIGHT_TOLERANCE:
        problems.add("targets", f"target weights must sum to 1, got {total:.4f}")
        return None
    return targets


def _clean_fallbacks(problems: FieldProblems, value: Any, lookups: Lookups) -> list[str] | None:
    if value is None:
        return []
    if not isinstance(value, list):
        problems.add("fallbacks", 'must be a list of "provider/model" strings')
        return None
    if len(value) > MAX_FALLBACKS:
        problems.add("fallbacks", f"must have at most {MAX_FALLBACKS} entries")
        return None
    out: list[str] = []
    for index, entry in enumerate(value):
        path = f"fallbacks[{index}]"
        text = problems.text(path, entry, max_length=320, blank=False)
        if text is None:
            continue
        provider, sep, _model = text.partition("/")
        if not sep or not provider:
            problems.add(path, f'{text!r} is invalid: use "provider/model" (or "provider/" for the incoming model)')
        elif not lookups.provider_exists(provider):
            problems.add(path, f"provider '{provider}' is not configured")
        else:
            out.append(text)
    return out if len(out) == len(value) else None


def _clean_priority(problems: FieldProblems, value: Any) -> int | None:
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int):
        problems.add("priority", "must be an integer")
        return None
    if not PRIORITY_RANGE[0] <= value <= PRIORITY_RANGE[1]:
        problems.add("priority", f"must be between {PRIORITY_RANGE[0]} and {PRIORITY_RANGE[1]}")
        return None
    return value


def clean_rule_fields(
    data: dict[str, Any], *, current: RoutingRule | None = None, lookups: Lookups | None = None
) -> dict[str, Any]:
    """Validate the rule fields in ``data`` (raw JSON values, as the API and the import give them)
    and return them cleaned, ``scope_id`` resolved to ``scope_entity``. Fields missing from
    ``data`` are taken from ``current`` for the rules between fields (scope and scope_id).
    Raises ``ValidationError`` naming every bad field."""
    lookups = lookups or Lookups()
    problems = FieldProblems()
    cleaned: dict[str, Any] = {}
    if "name" in data:
        cleaned["name"] = problems.text("name", data["name"], max_length=255, blank=False)
    if "description" in data:
        cleaned["description"] = (
            "" if data["description"] is None else problems.text("description", data["description"], max_length=10_000)
        )
    if "enabled" in data:
        if not isinstance(data["enabled"], bool):
            problems.add("enabled", "must be true or false")
        cleaned["enabled"] = data["enabled"]
    if "cel_expression" in data:
        cleaned["cel_expression"] = _clean_expression(problems, data["cel_expression"])
    if "targets" in data:
        cleaned["targets"] = _clean_targets(problems, data["targets"], lookups)
    if "fallbacks" in data:
        cleaned["fallbacks"] = _clean_fallbacks(problems, data["fallbacks"], lookups)
    if "priority" in data:
        cleaned["priority"] = _clean_priority(problems, data["priority"])
    _clean_scope(problems, cleaned, data, current, lookups)
    problems.raise_if_any()
    return cleaned


def _clean_scope(
    problems: FieldProblems,
    cleaned: dict[str, Any],
    data: dict[str, Any],
    current: RoutingRule | None,
    lookups: Lookups,
) -> None:
    """``scope`` and ``scope_id`` together: the scope after the change decides what scope_id must be."""
    if "scope" not in data and "scope_id" not in data:
        return
    scope = data.get("scope")
    if scope is None:
        scope = current.scope if current is not None else RoutingScope.GLOBAL
    if not isinstance(scope, str) or scope not in RoutingScope.values:
        shown = scope if isinstance(scope, str) else str(scope)
        problems.add("scope", f"invalid scope {shown[:64]!r}: must be one of: {', '.join(RoutingScope.values)}")
        return
    if "scope_id" in data:
        scope_id = data["scope_id"]
    elif "scope" in data and current is not None and scope != current.scope:
        scope_id = None  # a new scope needs its own scope_id
    else:
        scope_id = current.scope_id if current is not None else None
    if scope_id is not None and not isinstance(scope_id, str):
        problems.add("scope_id", "must be a string")
        return
    cleaned["scope"] = scope
    if scope == RoutingScope.GLOBAL:
        if scope_id is not None:  # "" too: scope_id is a key's, team's or customer's id, or absent
            problems.add("scope_id", "must be absent (or null) when scope is global")
        cleaned["scope_entity"] = None
        return
    if not scope_id:
        problems.add("scope_id", "scope_id field is required when scope is not global")
        return
    entity = lookups.scope_entity(scope, scope_id)
    if entity is None:
        problems.add("scope_id", f"{SCOPE_LABELS[scope]} '{scope_id[:64]}' not found")
        return
    cleaned["scope_entity"] = entity


def _assign(rule: RoutingRule, fields: dict[str, Any]) -> None:
    for name, value in fields.items():
        if name == "scope_entity":
            rule.virtual_key = value if rule.scope == RoutingScope.VIRTUAL_KEY else None
            rule.team = value if rule.scope == RoutingScope.TEAM else None
            rule.customer = value if rule.scope == RoutingScope.CUSTOMER else None
        elif name != "scope":
            setattr(rule, name, value)


def _apply_scope(rule: RoutingRule, fields: dict[str, Any]) -> None:
    if "scope" in fields:
        rule.scope = fields["scope"]
    _assign(rule, fields)
    owner = rule.virtual_key_id or rule.team_id or rule.customer_id
    rule.scope_id = str(owner) if owner else ""


def _check_unique(rule: RoutingRule) -> None:
    others = RoutingRule.objects.exclude(pk=rule.pk) if not rule._state.adding else RoutingRule.objects.all()
    if others.filter(scope=rule.scope, scope_id=rule.scope_id, name=rule.name).exists():
        where = "the global scope" if rule.scope == RoutingScope.GLOBAL else f"{rule.scope} {rule.scope_id}"
        raise RoutingRuleConflict({"name": [f"routing rule '{rule.name}' already exists in {where}"]})


@transaction.atomic
def routing_rule_create(*, pk: uuid.UUID | None = None, lookups: Lookups | None = None, **data: Any) -> RoutingRule:
    """Validate and save a new rule. ``data``: the fields of ``RULE_FIELDS`` as raw JSON values;
    ``name`` and ``targets`` are required."""
    unknown = set(data) - set(RULE_FIELDS)
    if unknown:
        raise TypeError(f"unexpected fields: {', '.join(sorted(unknown))}")
    missing = {name: ["This field is required."] for name in ("name", "targets") if name not in data}
    try:
        fields = clean_rule_fields({"scope": RoutingScope.GLOBAL, **data}, lookups=lookups)
    except ValidationError as exc:
        if missing:
            raise ValidationError({**missing, **exc.error_dict}) from None
        raise
    if missing:
        raise ValidationError(missing)
    rule = RoutingRule(pk=pk) if pk is not None else RoutingRule()
    _apply_scope(rule, fields)
    _check_unique(rule)
    rule.save(force_insert=True)
    return rule


@transaction.atomic
def routing_rule_update(*, rule: RoutingRule, lookups: Lookups | None = None, **changes: Any) -> RoutingRule:
    """Patch (Bifrost's update): a field absent, or null, keeps its value; ``targets`` and
    ``fallbacks`` given replace the lists; a new ``scope`` needs the ``scope_id`` that goes with it."""
    unknown = set(changes) - set(RULE_FIELDS)
    if unknown:
        raise TypeError(f"unexpected fields: {', '.join(sorted(unknown))}")
    given = {name: value for name, value in changes.items() if value is not None or name == "scope_id"}
    if given.get("scope_id") is None and "scope" not in given:
        given.pop("scope_id", None)  # null scope_id alone: kept (a GET body sent back has null on global rules)
    fields = clean_rule_fields(given, current=rule, lookups=lookups)
    _apply_scope(rule, fields)
    _check_unique(rule)
    rule.save()
    return rule


@transaction.atomic
def routing_rule_delete(*, rule: RoutingRule) -> None:
    rule.delete()


@transaction.atomic
def routing_rule_import(*, pk: uuid.UUID, lookups: Lookups | None = None, **data: Any) -> tuple[RoutingRule, bool]:
    """The config import's upsert by ``pk``: the rule is written whole from ``data`` (a field the
    file omits takes its default)."""
    rule = RoutingRule.objects.filter(pk=pk).first()
    if rule is None:
        return routing_rule_create(pk=pk, lookups=lookups, **data), True
    defaults: dict[str, Any] = {
        "description": "",
        "enabled": True,
        "cel_expression": "",
        "fallbacks": [],
        "scope": RoutingScope.GLOBAL,
        "scope_id": None,
        "priority": 0,
    }
    fields = clean_rule_fields({**defaults, **data}, current=rule, lookups=lookups)
    _apply_scope(rule, fields)
    _check_unique(rule)
    rule.save()
    return rule, False
