"""Live budget and rate-limit usage as the API, the quota endpoint and the dashboard show it.

Usage is that of the *current* window, reservations of requests in flight included, read from
the hot counters (Redis) where they exist and from the database otherwise
(``governance.enforcement`` owns the rules). A counter whose window has ended reads as 0 with
the new window's start, even before any request has rolled it over.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from django.utils import timezone

from governance import enforcement
from governance.models import Budget, RateLimit


def live_usage(budgets: Iterable[Budget], rate_limits: Iterable[RateLimit], now: datetime | None = None) -> dict:
    """``{("budget", pk): {usage, window_start, resets_at}, ("rate_limit", pk): {...}}``."""
    now = now or timezone.now()
    budgets, rate_limits = list(budgets), list(rate_limits)
    out: dict[tuple[str, Any], dict[str, Any]] = {}
    if budgets:
        states = enforcement.live_budget_state([b.pk for b in budgets], now=now)
        for budget in budgets:
            state = states.get(str(budget.pk))
            if state is not None:
                out[("budget", budget.pk)] = {
                    "usage": state.usage,
                    "window_start": state.window_start,
                    "resets_at": state.resets_at,
                }
    if rate_limits:
        states = enforcement.live_rate_limit_usage([r.pk for r in rate_limits], now=now)
        for rate_limit in rate_limits:
            state = states.get(str(rate_limit.pk))
            if state is None:
                continue
            entry: dict[str, Any] = {
                "tokens": rate_limit.token_current_usage,
                "requests": rate_limit.request_current_usage,
                "token_window_start": rate_limit.token_last_reset,
                "request_window_start": rate_limit.request_last_reset,
            }
            for kind, counter in (("token", state.tokens), ("request", state.requests)):
                if counter is not None:
                    entry[f"{kind}s"] = counter.usage
                    entry[f"{kind}_window_start"] = counter.window_start
                    entry[f"{kind}_resets_at"] = counter.resets_at
            out[("rate_limit", rate_limit.pk)] = entry
    return out
