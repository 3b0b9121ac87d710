"""Usage rolled up per hour and per day: what the dashboard, ``/api/logs/stats`` and the
self-service usage endpoint read instead of scanning the ledger.

One row per bucket and (virtual key, team, customer, provider, model, status code, refused). The
rows are maintained in the same transaction as the usage records they sum
(``governance.metering.rollups``), so they are exact: a rollup equals the sum of its ledger rows
at every commit. ``manage.py rebuild_rollups`` recomputes them from the ledger.

The owner columns are plain UUIDs, not foreign keys, with ``NONE`` standing for "no virtual key"
(unauthenticated requests, traffic without a VK): a unique constraint treats NULLs as distinct,
and the upsert that adds a request to its row needs one row per key. A deleted virtual key keeps
its rollups under its old id (the ledger's rows keep their usage with the key cleared); the
dashboard names it "deleted".
"""

from __future__ import annotations

import uuid
from decimal import Decimal

from django.db import models

COST_UNIT = Decimal("1e-10")  # the ledger's money precision (``limits.MONEY``'s decimal places)
NONE = uuid.UUID(int=0)

HOUR = "h"
DAY = "d"

# The columns a rollup row is keyed on, and those it sums.
KEY = (
    "granularity",
    "bucket",
    "virtual_key_id",
    "team_id",
    "customer_id",
    "provider",
    "model",
    "status_code",
    "refused",
)
SUMS = (
    "requests",
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "cached_tokens",
    "reasoning_tokens",
    "cost_units",
    "latency_ms",
    "streamed",
    "unpriced",
)


class UsageRollup(models.Model):
    granularity = models.CharField(max_length=1, choices=[(HOUR, "hour"), (DAY, "day")])
    bucket = models.DateTimeField(help_text="The start of the hour or of the UTC day.")
    virtual_key_id = models.UUIDField(default=NONE)
    team_id = models.UUIDField(default=NONE)
    customer_id = models.UUIDField(default=NONE)
    provider = models.CharField(max_length=63)
    model = models.CharField(max_length=255)
    status_code = models.PositiveSmallIntegerField()
    refused = models.BooleanField(default=False, help_text="Refused by governance: never reached an upstream.")
    requests = models.BigIntegerField(default=0)
    prompt_tokens = models.BigIntegerField(default=0)
    completion_tokens = models.BigIntegerField(default=0)
    total_tokens = models.BigIntegerField(default=0)
    cached_tokens = models.BigIntegerField(default=0)
    reasoning_tokens = models.BigIntegerField(default=0)
    cost_units = models.BigIntegerField(
        default=0,
        help_text="The cost in units of 1e-10 dollars (the ledger's precision): an integer, so that adding to it "
        "is exact on every database (SQLite has no exact decimal arithmetic).",
    )
    latency_ms = models.BigIntegerField(default=0, help_text="The sum of the requests' latencies.")
    streamed = models.BigIntegerField(default=0)
    unpriced = models.BigIntegerField(default=0, help_text="Successful requests of a model without a price.")

    class Meta:
        constraints = [models.UniqueConstraint(fields=list(KEY), name="usage_rollup_key")]
        indexes = [
            models.Index(fields=["granularity", "bucket"], name="usage_rollup_bucket"),
            models.Index(fields=["granularity", "virtual_key_id", "bucket"], name="usage_rollup_vk"),
        ]

    def __str__(self) -> str:
        return f"{self.bucket:%Y-%m-%d %H:00} {self.provider}/{self.model} {self.status_code} x{self.requests}"

    @property
    def cost(self) -> Decimal:
        return Decimal(self.cost_units) * COST_UNIT
