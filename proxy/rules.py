"""Routing rules on a request's path: which rule, if any, decides where it goes.

``routing.plan`` asks :func:`matching` before choosing providers. The rules come compiled from the
configuration snapshot (``snapshot.routing_rules``, once per configuration generation); with no
rule configured this is one cached lookup and nothing else.

Evaluation: the scope chain virtual key → team → customer → global (the VK's own customer, or its
team's), within a scope lowest ``priority`` first; the first rule whose expression is true wins;
an expression that fails to evaluate (a header the request lacks, a type error) does not match.

Variables (``governance.routing_rules`` lists them) are built lazily, only those some evaluated
rule reads: a request whose rules read ``model`` never assembles its headers, and the counters
are read only for the levels whose capacity figures a rule may read
(``governance.metering.capacity``: no database query on the embedded-mode path).
"""

from __future__ import annotations

import math
from collections.abc import Set as AbstractSet
from typing import Any

from governance.metering import capacity, snapshot
from governance.routing_rules import (
    CAPACITY_FIELDS,
    FLAT_CAPACITY,
    FLAT_IDS,
    HIDDEN_HEADERS,
    LEVELS,
    VARIABLES,
    CompiledRule,
    MissingVariable,
    evaluate,
)

MAX_PARAM_TEXT = 4096  # longer string parameters (a prompt sent as a string) are left out of ``params``
INT64 = (-(2**63), 2**63 - 1)


def matching(request: Any, asked_provider: str, model: str) -> CompiledRule | None:
    """The rule that decides ``request`` (an ``InferenceRequest``), or None. ``asked_provider``
    and ``model``: the provider and bare model the request asked for."""
    book = snapshot.routing_rules()
    if not book:
        return None
    vk = request.vk
    chain: list[tuple[str, str]] = []
    if vk is not None:
        chain.append(("virtual_key", vk.id))
        if vk.team_id:
            chain.append(("team", vk.team_id))
        if vk.customer_id:
            chain.append(("customer", vk.customer_id))
    chain.append(("global", ""))
    variables: _Variables | None = None
    for scope in chain:
        for rule in book.by_scope.get(scope, ()):
            if variables is None:
                variables = _Variables(request, asked_provider, model)
            try:
                matched = evaluate(rule.program, variables.for_rule(rule))
            except MissingVariable:  # ``uses`` missed one (it should not): build them all, once
                try:
                    matched = evaluate(rule.program, variables.everything())
                except MissingVariable:
                    matched = None
            if matched:
                return rule
    return None


class _Variables:
    """The activation of one request, grown as the rules evaluated need more of it."""

    __slots__ = ("request", "data", "capacity_levels")

    def __init__(self, request: Any, asked_provider: str, model: str) -> None:
        self.request = request
        self.data: dict[str, Any] = {"model": model, "provider": asked_provider}
        self.capacity_levels: set[str] = set()

    def for_rule(self, rule: CompiledRule) -> dict[str, Any]:
        data = self.data
        wanted_capacity = rule.capacity_levels - self.capacity_levels
        if wanted_capacity:
            self._capacity(wanted_capacity)
        for name in rule.uses:
            if name not in data:
                self._build(name)
        return data

    def everything(self) -> dict[str, Any]:
        self._capacity(set(LEVELS) - self.capacity_levels)
        for name in VARIABLES:
            if name not in self.data:
                self._build(name)
        return self.data

    def _build(self, name: str) -> None:
        data, request = self.data, self.request
        if name == "request_type":
            data[name] = request.route.request_type
        elif name == "headers":
            data[name] = headers_of(request.environ)
        elif name == "params":
            data[name] = params_of(request.body)
        elif name in LEVELS:
            data[name] = self._level(name)
        elif name in FLAT_IDS:
            level, key = FLAT_IDS[name]
            data[name] = self._identity(level)[key]
        elif name in FLAT_CAPACITY:
            self._capacity(set(LEVELS) - self.capacity_levels)

    def _identity(self, level: str) -> dict[str, Any]:
        vk = self.request.vk
        if vk is None:
            return {"id": "", "name": ""}
        if level == "virtual_key":
            return {"id": vk.id, "name": vk.name}
        if level == "team":
            return {"id": vk.team_id or "", "name": vk.team_name}
        return {"id": vk.customer_id or "", "name": vk.customer_name}

    def _level(self, level: str) -> dict[str, Any]:
        found = self.data.get(level)
        if found is None:
            found = self.data[level] = self._identity(level)
        return found

    def _capacity(self, levels: AbstractSet[str]) -> None:
        """The capacity figures of ``levels``, into their maps and the flat Bifrost names."""
        if levels:
            use = capacity.level_use(self.request.vk, sorted(levels))
            for level, figures in use.items():
                target = self._level(level)
                for name in CAPACITY_FIELDS:
                    target[name] = getattr(figures, name)
            self.capacity_levels |= levels
        if "budget_used" not in self.data and self.capacity_levels >= set(LEVELS):
            for flat, name in FLAT_CAPACITY.items():
                self.data[flat] = max(self.data[level][name] for level in LEVELS)


def headers_of(environ: dict[str, Any]) -> dict[str, str]:
    """The request's headers by lower-cased name, without credentials (``HIDDEN_HEADERS``)."""
    out: dict[str, str] = {}
    for key, value in environ.items():
        if key.startswith("HTTP_"):
            name = key[5:].replace("_", "-").lower()
            if name not in HIDDEN_HEADERS:
                out[name] = value
    content_type = environ.get("CONTENT_TYPE")
    if content_type:
        out["content-type"] = content_type
    return out


def params_of(body: dict[str, Any]) -> dict[str, Any]:
    """The body's top-level scalar fields: strings (up to ``MAX_PARAM_TEXT`` characters), numbers
    (integers within CEL's 64 bits, finite floats), booleans and nulls."""
    out: dict[str, Any] = {}
    for name, value in body.items():
        if value is None or isinstance(value, bool):
            out[name] = value
        elif isinstance(value, int):
            if INT64[0] <= value <= INT64[1]:
                out[name] = value
        elif isinstance(value, float):
            if math.isfinite(value):
                out[name] = value
        elif isinstance(value, str) and len(value) <= MAX_PARAM_TEXT:
            out[name] = value
    return out
