"""Immutable descriptions of the budgets and rate limits on a request's path.

The VK configuration snapshot (``governance.metering.snapshot``) produces them; the counter backends
(``governance.metering.counters``) check and reserve against them. Window state (usage, last reset)
is not here: it belongs to the counters.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal


@dataclass(frozen=True, slots=True)
class BudgetSpec:
    id: str  # Budget primary key (UUID string)
    entity: str  # "VK", "Team", "Customer" or the provider name (provider config budgets)
    max_limit: Decimal
    reset_duration: str
    calendar_aligned: bool


@dataclass(frozen=True, slots=True)
class RateLimitSpec:
    id: str  # RateLimit primary key (UUID string)
    entity: str
    token_max_limit: int | None
    token_reset_duration: str
    request_max_limit: int | None
    request_reset_duration: str
