"""Live budget and rate-limit usage, as the API, the quota endpoint, the admin and the dashboard show it.

Usage is that of the *current* window, reservations of requests in flight included, read from
the hot counters where they exist and from the database rows otherwise. A counter whose window has
ended reads as 0 with the new window's start, even before any request has rolled it over.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from django.utils import timezone

from governance.limitspec import BudgetSpec, RateLimitSpec
from governance.metering.counters import CountersUnavailable, hot_counters
from governance.metering.counters.base import REQUESTS, TOKENS, Counter, build_counters
from governance.metering.counters.rows import counter_state
from governance.models import Budget, RateLimit


@dataclass(frozen=True, slots=True)
class CounterState:
    """Live usage of one counter in its current window (reservations of requests in flight included)."""

    usage: Decimal | int
    limit: Decimal | int
    reset_duration: str
    window_start: datetime
    resets_at: datetime


@dataclass(frozen=True, slots=True)
class RateLimitState:
    tokens: CounterState | None
    requests: CounterState | None


def budget_counter(budget: Budget) -> Counter:
    """The counter that reads (or resets) a budget row's live usage."""
    (counter,) = build_counters([BudgetSpec.of(budget)], [], estimated_cost=Decimal("0"), estimated_tokens=0)
    return counter


def rate_limit_counters(rate_limit: RateLimit) -> list[Counter]:
    """The token and request counters of a rate-limit row (those it has a limit for)."""
    return build_counters([], [RateLimitSpec.of(rate_limit)], estimated_cost=Decimal("0"), estimated_tokens=0)


def _states(pairs: Sequence[tuple[Counter, Budget | RateLimit]], now: datetime) -> list[CounterState]:
    """Database state for each (counter, row), replaced by the Redis hot copy where one exists."""
    states = []
    for counter, row in pairs:
        usage, start, end = counter_state(counter, row, now)
        states.append(CounterState(usage, counter.limit, counter.duration, start, end))
    backend = hot_counters()
    if backend is None or not pairs:
        return states
    try:
        hot = backend.read([c for c, _ in pairs], now)
    except CountersUnavailable:
        return states
    return [
        CounterState(h[0], s.limit, s.reset_duration, h[1], h[2]) if h is not None else s
        for s, h in zip(states, hot, strict=True)
    ]


def budget_states(budget_ids: Iterable[str | uuid.UUID], *, now: datetime | None = None) -> dict[str, CounterState]:
    """Live usage, limit and current window of each budget (unknown ids are left out)."""
    now = now or timezone.now()
    budgets = list(Budget.objects.filter(pk__in=list(budget_ids)))
    pairs = [(budget_counter(b), b) for b in budgets]
    return {str(b.pk): state for b, state in zip(budgets, _states(pairs, now), strict=True)}


def budget_usage(budget_ids: Iterable[str | uuid.UUID], *, now: datetime | None = None) -> dict[str, Decimal]:
    """Live usage in USD of each budget in its current window: ``{budget_id: Decimal}``."""
    return {pk: Decimal(state.usage) for pk, state in budget_states(budget_ids, now=now).items()}


def rate_limit_usage(
    rate_limit_ids: Iterable[str | uuid.UUID], *, now: datetime | None = None
) -> dict[str, RateLimitState]:
    """Live token and request usage of each rate limit, with window start and reset time."""
    now = now or timezone.now()
    limits = list(RateLimit.objects.filter(pk__in=list(rate_limit_ids)))
    pairs = [(c, r) for r in limits for c in rate_limit_counters(r)]
    by_key = {(c.spec_id, c.kind): s for (c, _), s in zip(pairs, _states(pairs, now), strict=True)}
    return {
        str(r.pk): RateLimitState(by_key.get((str(r.pk), TOKENS)), by_key.get((str(r.pk), REQUESTS))) for r in limits
    }


def live_usage(
    budgets: Iterable[Budget], rate_limits: Iterable[RateLimit], now: datetime | None = None
) -> dict[tuple[str, Any], dict[str, Any]]:
    """``{("budget", pk): {usage, window_start, resets_at}, ("rate_limit", pk): {...}}``."""
    now = now or timezone.now()
    budgets, rate_limits = list(budgets), list(rate_limits)
    out: dict[tuple[str, Any], dict[str, Any]] = {}
    if budgets:
        states = budget_states([b.pk for b in budgets], now=now)
        for budget in budgets:
            state = states.get(str(budget.pk))
            if state is not None:
                out[("budget", budget.pk)] = {
                    "usage": state.usage,
                    "window_start": state.window_start,
                    "resets_at": state.resets_at,
                }
    if rate_limits:
        limit_states = rate_limit_usage([r.pk for r in rate_limits], now=now)
        for rate_limit in rate_limits:
            limit_state = limit_states.get(str(rate_limit.pk))
            if limit_state is None:
                continue
            entry: dict[str, Any] = {
                "tokens": rate_limit.token_current_usage,
                "requests": rate_limit.request_current_usage,
                "token_window_start": rate_limit.token_last_reset,
                "request_window_start": rate_limit.request_last_reset,
            }
            for kind, counter in (("token", limit_state.tokens), ("request", limit_state.requests)):
                if counter is not None:
                    entry[f"{kind}s"] = counter.usage
                    entry[f"{kind}_window_start"] = counter.window_start
                    entry[f"{kind}_resets_at"] = counter.resets_at
            out[("rate_limit", rate_limit.pk)] = entry
    return out
