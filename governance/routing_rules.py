"""Routing rules' CEL: the environment, compiling, evaluating, and the compiled rule book.

The CEL engine is ``cel-expr-python``, the CEL team's Python binding of the C++ CEL runtime (the
choice and its measurements are beside its pin in ``requirements.txt``). Expressions are
**type-checked** against :data:`VARIABLES` when a rule is saved, so an unknown variable, a type
mismatch (``model == 1``) or a result that cannot be a boolean is a 400 quoting the compiler, not
a rule that silently never matches.

Variables (the README's "Routing rules" section documents them for operators):

- ``model`` (the model asked for, without a ``provider/`` prefix), ``provider`` (the provider
  asked for: the prefix, or the provider the route names, e.g. ``anthropic`` on
  ``/anthropic/v1/messages``; ``""`` when neither), ``request_type`` (``chat_completion``, ...);
- ``headers``: the request's headers, names lower-cased, credentials never included
  (:data:`HIDDEN_HEADERS`); ``params``: the body's top-level scalar fields (``max_tokens``,
  ``temperature``, ``stream``, ...);
- ``virtual_key``, ``team``, ``customer``: maps with ``id``, ``name`` (``""`` when the request has
  no such level), ``budget_used_percent`` (the highest of that level's budgets, reservations of
  requests in flight included), ``rate_limit_used_percent`` (its request limit) and
  ``token_rate_limit_used_percent`` (its token limit), each 0.0 when the level has none;
- Bifrost's flat names, so that rules written for Bifrost compile unchanged: ``virtual_key_id``,
  ``virtual_key_name``, ``team_id``, ``team_name``, ``customer_id``, ``customer_name``, and
  ``budget_used``, ``request``, ``tokens_used`` (here the highest figure over the key's levels).

A header or parameter the request does not carry makes ``headers["x"]`` an evaluation error;
an error is a non-match (as in Bifrost), so ``headers["x-tier"] == "gold"`` is simply false
without the header (``"x-tier" in headers`` tests for it). Header names in ``headers["..."]`` and
``"..." in headers`` are lower-cased at compile time, as Bifrost does.

The rule book (:class:`RuleBook`) is built once per configuration generation by
``governance.metering.snapshot.routing_rules`` (one query, every enabled rule compiled), grouped
by scope and sorted by priority. :attr:`CompiledRule.uses` over-approximates the variables an
expression reads (identifiers outside string literals), so that a request builds only those.
"""

from __future__ import annotations

import logging
import math
import re
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cel_expr_python import cel

    from governance.models import RoutingRule

logger = logging.getLogger("bifrost.routing")

MAX_EXPRESSION = 10_000

# Request headers a rule never sees: the caller's credentials (the VK in any of the headers that
# carry one, provider keys) and cookies.
HIDDEN_HEADERS = frozenset(
    {
        "authorization",
        "proxy-authorization",
        "x-bf-vk",
        "x-api-key",
        "x-goog-api-key",
        "api-key",
        "cookie",
        "set-cookie",
    }
)

LEVELS = ("virtual_key", "team", "customer")
# The flat names of Bifrost's routing variables, and the level map each one reads.
FLAT_IDS = {
    "virtual_key_id": ("virtual_key", "id"),
    "virtual_key_name": ("virtual_key", "name"),
    "team_id": ("team", "id"),
    "team_name": ("team", "name"),
    "customer_id": ("customer", "id"),
    "customer_name": ("customer", "name"),
}
FLAT_CAPACITY = {
    "budget_used": "budget_used_percent",
    "request": "rate_limit_used_percent",
    "tokens_used": "token_rate_limit_used_percent",
}
VARIABLES = frozenset({"model", "provider", "request_type", "headers", "params", *LEVELS, *FLAT_IDS, *FLAT_CAPACITY})
CAPACITY_FIELDS = ("budget_used_percent", "rate_limit_used_percent", "token_rate_limit_used_percent")

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# String and bytes literals, raw or not, triple-quoted or not (stripped before looking for identifiers).
_LITERAL = re.compile(r"""[rRbB]{0,2}(?:\"\"\"[\s\S]*?\"\"\"|'''[\s\S]*?'''|"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*')""")
_QUOTED = r"""(?:"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*')"""
_HEADER_INDEX = re.compile(r"(\bheaders\s*\[\s*)(" + _QUOTED + r")(\s*\])")
_HEADER_IN = re.compile(r"(" + _QUOTED + r")(\s+in\s+headers\b)")


class CelError(ValueError):
    """An expression the compiler refused; the message is the compiler's."""


_env_lock = threading.Lock()
_env: list[Any] = []


def _environment() -> Any:
    """The CEL environment (built once: declaring the variables and the strings extension)."""
    if _env:
        return _env[0]
    with _env_lock:
        if not _env:
            from cel_expr_python import cel
            from cel_expr_python.ext.ext_strings import ExtStrings

            t = cel.Type
            level = t.Map(t.STRING, t.DYN)
            declared = {
                "model": t.STRING,
                "provider": t.STRING,
                "request_type": t.STRING,
                "headers": t.Map(t.STRING, t.STRING),
                "params": t.Map(t.STRING, t.DYN),
                **dict.fromkeys(LEVELS, level),
                **dict.fromkeys(FLAT_IDS, t.STRING),
                **dict.fromkeys(FLAT_CAPACITY, t.DOUBLE),
            }
            _env.append(cel.NewEnv(variables=declared, extensions=[ExtStrings()]))
    return _env[0]


def normalized(expression: str) -> str:
    """The expression as compiled: blank = ``true``; header names in ``headers["..."]`` and
    ``"..." in headers`` lower-cased (the map's keys are)."""
    if not expression.strip():
        return "true"
    expression = _HEADER_INDEX.sub(lambda m: m.group(1) + m.group(2).lower() + m.group(3), expression)
    return _HEADER_IN.sub(lambda m: m.group(1).lower() + m.group(2), expression)


def _compiler_message(exc: Exception) -> str:
    """The compiler's words, without the status wrapper the binding puts around them."""
    text = str(exc).strip()
    text = re.sub(r"^[A-Z_]+: ", "", text)
    return re.sub(r"\s*\[[A-Z_]+\]$", "", text).strip()


def compile_expression(expression: str) -> cel.Expression:
    """The type-checked program of ``expression``; ``CelError`` with the compiler's message."""
    if not isinstance(expression, str):
        raise CelError("must be a string")
    if len(expression) > MAX_EXPRESSION:
        raise CelError(f"must be at most {MAX_EXPRESSION} characters")
    if "\x00" in expression:
        raise CelError("must not contain NUL characters")
    try:
        program = _environment().compile(normalized(expression))
    except RuntimeError as exc:  # the compiler's refusal
        raise CelError(_compiler_message(exc)) from None
    except (ValueError, TypeError) as exc:  # text the binding cannot take (an unpaired surrogate)
        raise CelError(f"cannot be compiled: {type(exc).__name__}") from None
    result = program.return_type().name()
    if result not in ("BOOL", "DYN"):
        raise CelError(f"the expression must evaluate to a boolean, not {result.lower()}")
    return program


def references(expression: str) -> frozenset[str]:
    """The variables ``expression`` may read: every identifier outside string literals that names
    one (a field name such as ``params.model`` counts too: reading more is only slower)."""
    return frozenset(_IDENTIFIER.findall(_LITERAL.sub(" ", expression))) & VARIABLES


def uses_capacity(expression: str) -> bool:
    """Whether ``expression`` may read a capacity figure (``*_used*`` anywhere, string keys
    included, or Bifrost's ``request``): only then does a request read the counters."""
    return "_used" in expression or "request" in references(expression)


class MissingVariable(Exception):
    """The activation lacks a variable the expression reads (the caller builds them all and retries)."""


def evaluate(program: cel.Expression, data: dict[str, Any]) -> bool | None:
    """True or False; None when the evaluation failed (a missing key, a type error at run time):
    a failed rule does not match. ``MissingVariable`` when ``data`` lacks a variable it reads."""
    try:
        value = program.eval(data=data)
        result = value.value()
    except Exception:  # the binding reports errors as values; anything else is a non-match too
        logger.debug("routing rule evaluation raised", exc_info=True)
        return None
    if isinstance(result, bool):
        return result
    if isinstance(result, str) and "No value with name" in result and value.type() == _error_type():
        raise MissingVariable(result)
    return None


def _error_type() -> Any:
    from cel_expr_python import cel

    return cel.Type.ERROR


# --- the compiled rule book ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Target:
    provider: str  # "" = the provider the request would have gone to
    model: str  # "" = the model asked for
    key_id: str  # "" = the usual key choice
    weight: float


@dataclass(frozen=True, slots=True)
class CompiledRule:
    id: str
    name: str
    scope: str
    scope_id: str
    priority: int
    expression: str
    program: Any = field(repr=False, compare=False)  # ``cel.Expression``
    targets: tuple[Target, ...]
    fallbacks: tuple[str, ...]
    uses: frozenset[str]
    capacity_levels: frozenset[str]  # the levels whose capacity figures the expression may read


@dataclass(frozen=True, slots=True)
class RuleBook:
    """Enabled rules by ``(scope, scope_id)`` (``("global", "")`` for global), lowest priority first."""

    by_scope: dict[tuple[str, str], tuple[CompiledRule, ...]] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.by_scope)


def capacity_levels(expression: str, uses: frozenset[str]) -> frozenset[str]:
    if not uses_capacity(expression):
        return frozenset()
    if uses & set(FLAT_CAPACITY):
        return frozenset(LEVELS)
    return frozenset(uses & set(LEVELS))


def compile_rule(rule: RoutingRule) -> CompiledRule:
    """A stored rule, compiled (``CelError`` when its expression no longer compiles)."""
    expression = rule.cel_expression or ""
    program = compile_expression(expression)
    uses = references(normalized(expression))
    targets = tuple(
        Target(
            provider=str(t.get("provider") or ""),
            model=str(t.get("model") or ""),
            key_id=str(t.get("key_id") or ""),
            weight=_weight(t.get("weight", 1.0)),
        )
        for t in rule.targets or ()
        if isinstance(t, dict)
    )
    return CompiledRule(
        id=str(rule.pk),
        name=rule.name,
        scope=rule.scope,
        scope_id=rule.scope_id,
        priority=rule.priority,
        expression=expression,
        program=program,
        targets=targets,
        fallbacks=tuple(f for f in rule.fallbacks or () if isinstance(f, str) and f),
        uses=uses,
        capacity_levels=capacity_levels(expression, uses),
    )


def _weight(value: Any) -> float:
    try:
        weight = float(value)
    except (TypeError, ValueError):
        return 0.0
    return weight if math.isfinite(weight) and weight > 0 else 0.0


def load_rule_book() -> RuleBook:
    """Every enabled rule compiled, in evaluation order (one query). A stored expression that no
    longer compiles (saved by another version) is left out and logged, never a failed request."""
    from governance.models import RoutingRule

    grouped: dict[tuple[str, str], list[CompiledRule]] = {}
    for rule in RoutingRule.objects.filter(enabled=True).order_by("priority", "created_at", "name"):
        try:
            compiled = compile_rule(rule)
        except CelError as exc:
            logger.warning(
                "routing rule skipped: its expression does not compile", extra={"rule": rule.name, "error": str(exc)}
            )
            continue
        if compiled.targets:
            grouped.setdefault((compiled.scope, compiled.scope_id), []).append(compiled)
    return RuleBook({key: tuple(rules) for key, rules in grouped.items()})
