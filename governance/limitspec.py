"""Immutable descriptions of the budgets and rate limits on a request's path.

The VK configuration snapshot (``governance.metering.snapshot``) produces them;
``governance.metering.counters.base.build_counters`` turns them into the counters that admission
checks and reserves on. Window state (usage, last reset) is not here: it belongs to the counters.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from governance.models import Budget, RateLimit


@dataclass(frozen=True, slots=True)
class BudgetSpec:
    id: str  # Budget primary key (UUID string)
    entity: str  # "VK", "Team", "Customer" or the provider name (provider config budgets)
    max_limit: Decimal
    reset_duration: str
    calendar_aligned: bool

    @classmethod
    def of(cls, row: Budget, entity: str = "") -> BudgetSpec:
        """The spec of a budget row (the one place specs are built from rows)."""
        return cls(str(row.pk), entity, row.max_limit, row.reset_duration, row.calendar_aligned)


@dataclass(frozen=True, slots=True)
class RateLimitSpec:
    id: str  # RateLimit primary key (UUID string)
    entity: str
    token_max_limit: int | None
    token_reset_duration: str
    request_max_limit: int | None
    request_reset_duration: str

    @classmethod
    def of(cls, row: RateLimit, entity: str = "") -> RateLimitSpec:
        """The spec of a rate-limit row."""
        return cls(
            str(row.pk),
            entity,
            row.token_max_limit,
            row.token_reset_duration,
            row.request_max_limit,
            row.request_reset_duration,
        )
