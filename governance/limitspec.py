"""Immutable descriptions of the budgets and rate limits on a request's path.

The VK configuration snapshot (``governance.metering.snapshot``) produces them;
``governance.metering.counters.base.build_counters`` turns them into the counters that admission
checks and reserves on. Window state (usage, last reset) is not here: it belongs to the counters.

``level`` says which family of the path a spec belongs to, for the refusal's wording
(``counters.base.rejection_for``): ``""`` for the virtual key's path (provider config, VK, team,
customer; ``entity`` names which), ``"provider"`` for provider governance (``entity``: the provider
name) and ``"model"`` for a model config (``entity``: ``gpt-4o`` or ``openai/gpt-4o``).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from governance.models import Budget, RateLimit

PATH = ""  # the virtual key's path: provider config, VK, team, customer
PROVIDER = "provider"  # provider governance: all traffic to one provider
MODEL = "model"  # a model config: all traffic for one model


@dataclass(frozen=True, slots=True)
class BudgetSpec:
    id: str  # Budget primary key (UUID string)
    entity: str  # "VK", "Team", "Customer", the provider name (provider config, provider) or the model
    max_limit: Decimal
    reset_duration: str
    calendar_aligned: bool
    level: str = PATH

    @classmethod
    def of(cls, row: Budget, entity: str = "", level: str = PATH) -> BudgetSpec:
        """The spec of a budget row (the one place specs are built from rows)."""
        return cls(str(row.pk), entity, row.max_limit, row.reset_duration, row.calendar_aligned, level)


@dataclass(frozen=True, slots=True)
class RateLimitSpec:
    id: str  # RateLimit primary key (UUID string)
    entity: str
    token_max_limit: int | None
    token_reset_duration: str
    request_max_limit: int | None
    request_reset_duration: str
    level: str = PATH

    @classmethod
    def of(cls, row: RateLimit, entity: str = "", level: str = PATH) -> RateLimitSpec:
        """The spec of a rate-limit row."""
        return cls(
            str(row.pk),
            entity,
            row.token_max_limit,
            row.token_reset_duration,
            row.request_max_limit,
            row.request_reset_duration,
            level,
        )
