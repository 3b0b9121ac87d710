"""What every counter backend shares: counters, admissions, rejections and their messages.

``build_counters`` turns a request's budgets and rate limits into :class:`Counter` objects, one per
thing that is counted (a budget's dollars, a rate limit's tokens, a rate limit's requests): rate
limits first, then budgets, each in path order (provider config -> VK -> team -> customer ->
provider -> model). A backend checks all of them and reserves on all of them in one atomic step,
or on none.

Check rules (the same in every backend):

- budget: rejected when ``usage >= limit`` or ``usage + worst-case estimate > limit``; the
  estimate is reserved, so concurrent requests never take the budget past its limit as long as
  each request's actual cost is within its estimate;
- requests: rejected when ``usage >= limit``; admission takes the slot at once, so a limit of N
  admits exactly N requests per window;
- tokens: rejected when ``usage >= limit`` (Bifrost's rule: the size of an answer is only known
  afterwards). The estimated tokens are reserved, so a burst sees the requests in flight and
  does not all pass on a stale count; the last admitted request may exceed the limit by its
  own size, which the SPEC's ``1500/1000`` message shows.

Usage includes the reservations of requests in flight; settling replaces a reservation by the
actual amount. :func:`rejection_for` names every refusing counter in one 402/429 answer;
:data:`UNAVAILABLE` is the 503 when no backend can check.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from typing import Any

from governance.durations import window_end, window_start
from governance.limitspec import MODEL, PATH, PROVIDER, BudgetSpec, RateLimitSpec

BUDGET = "budget"
TOKENS = "tokens"
REQUESTS = "requests"
# Backends holding a hot copy of the counters in front of the database rows.
HOT_BACKENDS = ("redis", "local")

NANO = Decimal(1_000_000_000)
# Lua numbers are IEEE doubles: integers are exact up to 2**53. Nano-dollars allow budgets up to
# about $9 million; larger limits are clamped there (documented in governance.metering.counters.redis_backend).
MAX_EXACT_UNITS = 2**53 - 1


class CountersUnavailable(Exception):
    """The counter store could not be reached (Redis down, database down)."""


def dollars_to_units(amount: Decimal | int, *, rounding: str = ROUND_CEILING) -> int:
    """Exact integer nano-dollars for Redis; costs round up so the hot copy never under-counts."""
    return min(int((Decimal(amount) * NANO).to_integral_value(rounding=rounding)), MAX_EXACT_UNITS)


def units_to_dollars(units: int) -> Decimal:
    return Decimal(int(units)) / NANO


def limit_units(amount: Decimal | int) -> int:
    return dollars_to_units(amount, rounding=ROUND_FLOOR)


@dataclass(frozen=True, slots=True)
class Counter:
    """One counted quantity on the request's path and what this request reserves on it."""

    kind: str  # BUDGET, TOKENS or REQUESTS
    spec_id: str  # Budget or RateLimit primary key
    entity: str  # "VK", "Team", "Customer", the provider name, or the model (``limitspec``)
    limit: Decimal | int  # Decimal dollars for budgets, int for tokens and requests
    duration: str
    calendar_aligned: bool
    reserve: Decimal | int
    level: str = PATH  # the path family, for the refusal's wording (``limitspec``)

    def window(self, last_reset: datetime, now: datetime) -> tuple[datetime, datetime]:
        """(start, end) of the window containing ``now`` for a counter last reset at ``last_reset``."""
        start = window_start(self.duration, last_reset, now, self.calendar_aligned)
        return start, window_end(self.duration, start, self.calendar_aligned)

    def rejects(self, usage: Decimal | int) -> bool:
        if self.kind == TOKENS:
            return usage >= self.limit
        return usage >= self.limit or usage + self.reserve > self.limit


def build_counters(
    budgets: tuple[BudgetSpec, ...] | list[BudgetSpec],
    rate_limits: tuple[RateLimitSpec, ...] | list[RateLimitSpec],
    *,
    estimated_cost: Decimal,
    estimated_tokens: int,
) -> list[Counter]:
    """The counters of one request, in path order (the order the specs were given in)."""
    counters: list[Counter] = []
    for spec in rate_limits:
        if spec.token_max_limit is not None and spec.token_reset_duration:
            counters.append(
                Counter(
                    TOKENS,
                    str(spec.id),
                    spec.entity,
                    int(spec.token_max_limit),
                    spec.token_reset_duration,
                    False,
                    max(int(estimated_tokens), 0),
                    spec.level,
                )
            )
        if spec.request_max_limit is not None and spec.request_reset_duration:
            counters.append(
                Counter(
                    REQUESTS,
                    str(spec.id),
                    spec.entity,
                    int(spec.request_max_limit),
                    spec.request_reset_duration,
                    False,
                    1,
                    spec.level,
                )
            )
    for budget in budgets:
        counters.append(
            Counter(
                BUDGET,
                str(budget.id),
                budget.entity,
                Decimal(budget.max_limit),
                budget.reset_duration,
                bool(budget.calendar_aligned),
                max(Decimal(estimated_cost), Decimal("0")),
                budget.level,
            )
        )
    return counters


@dataclass(frozen=True, slots=True)
class Violation:
    """One counter that refused the request: its usage at check time and when its window ends."""

    counter: Counter
    usage: Decimal | int
    resets_at: datetime


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why a request may not go upstream, in the SPEC section 6 shape: the one refusal type from
    the counters to the HTTP answer (``proxy.errors.refusal``). ``headers`` carries
    ``Retry-After`` for 429 and 503 answers."""

    status: int
    type: str
    message: str
    retry_after: int | None = None
    # The limits that refused, as ``level:kind:id`` words (``refused_by``), for the ledger's
    # refusal entry and the refusal metrics: levels virtual_key, team, customer,
    # provider_config, provider, model; kinds budget, rate_limit.
    refused_by: tuple[str, ...] = ()

    @property
    def levels(self) -> tuple[str, ...]:
        """The levels that refused, in path order, each once."""
        return tuple(dict.fromkeys(word.split(":", 1)[0] for word in self.refused_by))

    @property
    def headers(self) -> dict[str, str]:
        if self.retry_after is not None and self.status in (429, 503):
            return {"Retry-After": str(self.retry_after)}
        return {}


@dataclass(slots=True)
class Admission:
    """A granted request: what it reserved, where, and the marks needed to settle it exactly.

    ``marks`` holds, per counter, the window the reservation was made in (the database row's
    ``last_reset`` for the database backend; ``(generation, window anchor)`` for the hot
    backends, Redis and local). Settling
    removes the reservation only if that window is still the current one.
    """

    request_id: str
    backend: str  # "redis", "local", "database" or "none" (no limits on the path)
    counters: tuple[Counter, ...]
    marks: tuple[Any, ...]
    estimated_cost: Decimal
    estimated_tokens: int
    admitted_at: datetime
    state: str = field(default="open")  # open -> settled | released; retrying after a database outage
    lease: Any = None  # its ``governance.metering.counters.leases.Lease``: who holds the reservation, and where

    @property
    def budget_ids(self) -> list[str]:
        return sorted({c.spec_id for c in self.counters if c.kind == BUDGET})

    @property
    def rate_limit_ids(self) -> list[str]:
        return sorted({c.spec_id for c in self.counters if c.kind != BUDGET})


def retry_after_seconds(resets_at: datetime, now: datetime) -> int:
    return max(1, math.ceil((resets_at - now).total_seconds()))


def _money(amount: Decimal, rounding: str) -> str:
    """``$12.50``, ``$0.0001``, ``$0.000125``: cents at least, and as many places (up to
    micro-dollars) as it takes to show a small budget's figures instead of rounding them to 0."""
    exact = Decimal(amount).quantize(Decimal("0.000001"), rounding=rounding)
    text = f"{exact:f}".rstrip("0")
    whole, _, places = text.partition(".")
    return f"${whole}.{places.ljust(2, '0')}"


def _when(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _rate_part(v: Violation) -> str:
    noun = "token" if v.counter.kind == TOKENS else "request"
    return (
        f"{v.counter.entity} {noun} limit exceeded ({int(v.usage)}/{int(v.counter.limit)}, "
        f"resets every {v.counter.duration})"
    )


# The sentence each family of rate limits is listed in, in path order: the virtual key's path,
# then provider governance, then model configs (``limitspec``).
RATE_HEADINGS = (
    (PATH, "Rate limit check failed: "),
    (PROVIDER, "Provider limit exceeded: "),
    (MODEL, "Model limit exceeded: "),
)


def _budget_part(v: Violation) -> str:
    """What a person needs to act on a refused budget: the spend so far against the limit, the
    worst case this request would have reserved when that is what did not fit (a sum of the two
    reads as overspending, which never happens), and when the window resets. A provider's or a
    model's budget says which it is."""
    usage = Decimal(v.usage)
    limit = Decimal(v.counter.limit)
    name = f"{v.counter.level} {v.counter.entity}" if v.counter.level else v.counter.entity
    # "Used" counts what requests still in flight have reserved, as the check does.
    used = f"{_money(usage, ROUND_CEILING)} of {_money(limit, ROUND_FLOOR)} used"
    if usage < limit:
        used += f", this request needs up to {_money(Decimal(v.counter.reserve), ROUND_CEILING)}"
    return f"{name} budget exceeded: {used} (resets at {_when(v.resets_at)})"


PATH_LEVELS = {"VK": "virtual_key", "Team": "team", "Customer": "customer"}


def refused_by(counter: Counter) -> str:
    """``level:kind:id`` of a counter that refused (``Rejection.refused_by``)."""
    level = counter.level or PATH_LEVELS.get(counter.entity, "provider_config")
    return f"{level}:{'budget' if counter.kind == BUDGET else 'rate_limit'}:{counter.spec_id}"


def rejection_for(violations: list[Violation], now: datetime) -> Rejection:
    """Turn violations into the SPEC section 6 answer, naming **every** counter that refused.

    Every backend checks all counters of the path and returns all that refuse, in path order
    (rate limits, then budgets; provider config -> VK -> team -> customer -> provider -> model),
    so a client learns in one answer everything that stands in its way:

    - any rate limit refused: 429. ``type`` is ``token_limited`` or ``request_limited`` when only
      one kind refused, ``rate_limited`` when both did. The message lists every refusing rate
      limit of the key's path (``Rate limit check failed: A; B``), then of provider governance
      (``Provider limit exceeded: openai request limit exceeded (...)``) and of model configs
      (``Model limit exceeded: gpt-4o request limit exceeded (...)``), each family a sentence of
      its own, and then, when budgets refused too, every one of them (``. Budget exceeded: C;
      D``; a provider's or a model's named ``provider openai`` / ``model gpt-4o``), so the client
      knows that waiting for the rate window will not be enough. ``Retry-After`` is the latest
      reset among the refusing rate limits: budgets never set it (a 402 carries none either; an
      exhausted budget is a spending decision an admin may change at any time, not only a window
      to wait for);
    - only budgets refused: 402 ``budget_exceeded`` listing every refusing budget
      (``Budget exceeded: A; B``).
    """
    rate = [v for v in violations if v.counter.kind != BUDGET]
    budgets = [v for v in violations if v.counter.kind == BUDGET]
    budget_message = "Budget exceeded: " + "; ".join(_budget_part(v) for v in budgets) if budgets else ""
    if rate:
        kinds = {v.counter.kind for v in rate}
        type_ = "rate_limited" if len(kinds) > 1 else ("token_limited" if TOKENS in kinds else "request_limited")
        sentences = []
        for level, heading in RATE_HEADINGS:
            parts = [_rate_part(v) for v in rate if v.counter.level == level]
            if parts:
                sentences.append(heading + "; ".join(parts))
        message = ". ".join(sentences)
        if budget_message:
            message += ". " + budget_message
        # Every refusing rate limit must clear before the request can pass: the latest reset wins.
        retry = max(retry_after_seconds(v.resets_at, now) for v in rate)
        return Rejection(429, type_, message, retry, _refused_by(violations))
    retry = max(retry_after_seconds(v.resets_at, now) for v in budgets)
    return Rejection(402, "budget_exceeded", budget_message, retry, _refused_by(violations))


def _refused_by(violations: list[Violation]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(refused_by(v.counter) for v in violations))


UNAVAILABLE = Rejection(
    503,
    "governance_unavailable",
    "Governance counters are unavailable, so budgets and rate limits cannot be checked; retry shortly",
    1,
)
