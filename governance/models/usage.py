"""The durable usage ledger: one row per finished inference request."""

from __future__ import annotations

import os
import time
import uuid

from django.db import models

from governance.models.limits import MONEY

# The most a token or latency column holds on every supported database (a 32-bit signed integer).
INT_COLUMN_MAX = 2**31 - 1


# The ``type`` of every answer that is governance saying no: each leaves a ledger entry
# (``proxy.accounting.refused``) with this ``error_type`` and ``upstream_reached`` false.
REFUSAL_TYPES = frozenset(
    {
        "virtual_key_required",
        "virtual_key_not_found",
        "virtual_key_blocked",
        "provider_blocked",
        "model_blocked",
        "key_blocked",
        "budget_exceeded",
        "request_limited",
        "token_limited",
        "rate_limited",
        "model_unpriced",
        "governance_unavailable",
    }
)


class UsageQuerySet(models.QuerySet["UsageRecord"]):
    def refusals(self) -> UsageQuerySet:
        """Requests governance refused: they never reached an upstream and cost nothing."""
        return self.filter(error_type__in=REFUSAL_TYPES)

    def attempts(self) -> UsageQuerySet:
        """Everything but refusals: one row per attempt to call an upstream."""
        return self.exclude(error_type__in=REFUSAL_TYPES)


def new_request_id() -> uuid.UUID:
    """A time-ordered UUID (version 7: 48 bits of Unix milliseconds, the version and variant,
    74 random bits). Rows are inserted in nearly ascending ``request_id`` order, so the unique index grows at
    its end instead of touching a random page per row; on a big ledger that keeps inserts cheap."""
    rand = int.from_bytes(os.urandom(10), "big")
    millis = time.time_ns() // 1_000_000
    value = millis << 80 | 0x7 << 76 | (rand >> 68) << 64 | 0b10 << 62 | rand & (1 << 62) - 1
    return uuid.UUID(int=value)


class UsageRecord(models.Model):
    """What one request cost. Counters can be rebuilt from these rows.

    ``request_id`` is unique so that a retried ledger write (after a crash between writing and
    acknowledging) can never count a request twice.
    """

    request_id = models.UUIDField(default=new_request_id, unique=True, editable=False)
    created_at = models.DateTimeField(db_index=True)
    # No single-column indexes on these three: the (reference, created_at) indexes below serve
    # the same lookups, and each index is one more B-tree to update per request.
    virtual_key = models.ForeignKey(
        "governance.VirtualKey",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="usage_records",
        db_index=False,
    )
    team = models.ForeignKey(
        "governance.Team", null=True, blank=True, on_delete=models.SET_NULL, related_name="+", db_index=False
    )
    customer = models.ForeignKey(
        "governance.Customer", null=True, blank=True, on_delete=models.SET_NULL, related_name="+", db_index=False
    )
    provider = models.CharField(max_length=63)
    model = models.CharField(max_length=255)
    provider_key = models.ForeignKey(
        "governance.ProviderKey", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    request_type = models.CharField(max_length=32, default="chat_completion")
    status_code = models.PositiveSmallIntegerField(
        help_text="HTTP status of the attempt. 0: no answer, the worker serving the request died (SIGKILL, out of "
        "memory) and the lease reaper settled it (see upstream_reached)."
    )
    prompt_tokens = models.PositiveIntegerField(default=0)
    completion_tokens = models.PositiveIntegerField(default=0)
    total_tokens = models.PositiveIntegerField(default=0)
    cached_tokens = models.PositiveIntegerField(default=0)
    reasoning_tokens = models.PositiveIntegerField(
        default=0, help_text="The part of completion_tokens the model spent thinking, when the upstream reports it."
    )
    cost = models.DecimalField(**MONEY, default=0)
    input_cost = models.DecimalField(
        **MONEY,
        null=True,
        blank=True,
        help_text="The input tokens' part of cost (cached ones included); empty when the upstream reported "
        "the cost or nothing was priced.",
    )
    output_cost = models.DecimalField(**MONEY, null=True, blank=True, help_text="The output tokens' part of cost.")
    latency_ms = models.PositiveIntegerField(default=0)
    streamed = models.BooleanField(default=False)
    priced = models.BooleanField(default=True)
    # Null, not "": rows written before prices were recorded, and rows that have none, say nothing.
    price_source = models.CharField(  # noqa: DJ001
        max_length=400,
        null=True,
        blank=True,
        help_text="The price the request was charged at: catalog:<provider>/<model> (the price catalog's row), "
        "override:<id> (a pricing override), override:<id>+catalog:<provider>/<model> (an override that leaves "
        "some token price to the catalog row) or upstream (the cost the upstream reported). Empty: unpriced, "
        "or not an inference request (MCP tool calls).",
    )
    estimated = models.BooleanField(
        default=False,
        help_text="Tokens are the gateway's estimate, not the upstream's report: an answer whose usage "
        "could not be read, or a stream cut off before its usage arrived (status 499 = the client "
        "left, 502/504 = the upstream broke off).",
    )
    upstream_reached = models.BooleanField(
        null=True,
        default=True,
        help_text="Whether the attempt reached the upstream (a request then counts against request limits). "
        "For a request settled by the lease reaper (status 0): true = the worker had started the upstream call, "
        "so the request is charged its reservation (worst-case cost and tokens); false = it had not, so it "
        "costs nothing and gives its request slot back; empty = unknown (the worker's host could not tell), "
        "charged like true.",
    )

    http_request_id = models.CharField(
        max_length=128,
        blank=True,
        default="",
        help_text="The request's id as the client sees it (x-request-id): the client's own when it sent a sane "
        "one, else one the gateway made. Every attempt of one request (fallbacks) shares it.",
    )
    fallback_index = models.PositiveSmallIntegerField(
        default=0, help_text="Which candidate of the request this attempt was: 0 the primary, 1 the first fallback…"
    )
    error_type = models.CharField(
        max_length=64,
        blank=True,
        default="",
        help_text="Why the request failed: a governance refusal (budget_exceeded, request_limited, token_limited, "
        "rate_limited, model_blocked, virtual_key_invalid, …) or the upstream's error type.",
    )
    error_message = models.TextField(blank=True, default="")
    refused_by = models.CharField(
        max_length=500,
        blank=True,
        default="",
        help_text="For a governance refusal: the limits that refused, as level:kind:id words "
        "(e.g. team:budget:<uuid> virtual_key:rate_limit:<uuid>).",
    )

    objects = UsageQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["http_request_id"], name="usage_http_request_id"),
            models.Index(fields=["virtual_key", "created_at"]),
            models.Index(fields=["team", "created_at"]),
            models.Index(fields=["customer", "created_at"]),
        ]

    def __str__(self) -> str:
        return f"{self.created_at:%Y-%m-%d %H:%M:%S} {self.provider}/{self.model} {self.status_code}"
