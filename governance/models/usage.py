"""The durable usage ledger: one row per finished inference request."""

from __future__ import annotations

import uuid

from django.db import models

from governance.models.limits import MONEY


class UsageRecord(models.Model):
    """What one request cost. Counters can be rebuilt from these rows.

    ``request_id`` is unique so that a retried ledger write (after a crash between writing and
    acknowledging) can never count a request twice.
    """

    request_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    created_at = models.DateTimeField(db_index=True)
    virtual_key = models.ForeignKey(
        "governance.VirtualKey", null=True, blank=True, on_delete=models.SET_NULL, related_name="usage_records"
    )
    team = models.ForeignKey("governance.Team", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    customer = models.ForeignKey(
        "governance.Customer", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    provider = models.CharField(max_length=63)
    model = models.CharField(max_length=255)
    provider_key = models.ForeignKey(
        "governance.ProviderKey", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    request_type = models.CharField(max_length=32, default="chat_completion")
    status_code = models.PositiveSmallIntegerField()
    prompt_tokens = models.PositiveIntegerField(default=0)
    completion_tokens = models.PositiveIntegerField(default=0)
    total_tokens = models.PositiveIntegerField(default=0)
    cached_tokens = models.PositiveIntegerField(default=0)
    cost = models.DecimalField(**MONEY, default=0)
    latency_ms = models.PositiveIntegerField(default=0)
    streamed = models.BooleanField(default=False)
    priced = models.BooleanField(default=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["virtual_key", "created_at"]),
            models.Index(fields=["team", "created_at"]),
            models.Index(fields=["customer", "created_at"]),
        ]

    def __str__(self) -> str:
        return f"{self.created_at:%Y-%m-%d %H:%M:%S} {self.provider}/{self.model} {self.status_code}"
