"""Live budget and rate-limit usage as the API and admin show it.

Usage is reported for the *current* window: a stored counter whose window has already ended
reads as 0 with the new window's start, even before any request has rolled it over.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from decimal import Decimal
from typing import Any

from django.utils import timezone

from governance.durations import window_end, window_start
from governance.models import Budget, RateLimit


def _window(duration: str, last_reset: datetime, now: datetime, calendar_aligned: bool = False):
    start = window_start(duration, last_reset, now, calendar_aligned)
    # The stored window has rolled over when the current window began after it.
    return start, window_end(duration, start, calendar_aligned), last_reset < start


def budget_state(budget: Budget, usage: Decimal, last_reset: datetime, now: datetime) -> dict[str, Any]:
    start, end, rolled = _window(budget.reset_duration, last_reset, now, budget.calendar_aligned)
    return {"usage": Decimal("0") if rolled else usage, "window_start": start, "resets_at": end}


def rate_limit_state(rate_limit: RateLimit, tokens: int, requests: int, now: datetime) -> dict[str, Any]:
    state: dict[str, Any] = {"tokens": tokens, "requests": requests}
    for kind in ("token", "request"):
        duration = getattr(rate_limit, f"{kind}_reset_duration")
        last_reset = getattr(rate_limit, f"{kind}_last_reset")
        if not duration:
            state[f"{kind}_window_start"] = last_reset
            continue
        start, end, rolled = _window(duration, last_reset, now)
        state[f"{kind}_window_start"] = start
        state[f"{kind}_resets_at"] = end
        if rolled:
            state[f"{kind}s"] = 0
    return state


def live_usage(budgets: Iterable[Budget], rate_limits: Iterable[RateLimit], now: datetime | None = None) -> dict:
    """``{("budget", pk): {...}, ("rate_limit", pk): {...}}`` for the given rows."""
    now = now or timezone.now()
    out: dict = {}
    for budget in budgets:
        out[("budget", budget.pk)] = budget_state(budget, budget.current_usage, budget.last_reset, now)
    for rate_limit in rate_limits:
        out[("rate_limit", rate_limit.pk)] = rate_limit_state(
            rate_limit, rate_limit.token_current_usage, rate_limit.request_current_usage, now
        )
    return out
