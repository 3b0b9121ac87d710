"""Budget alerts: the thresholds a budget alerts at, the webhooks alerts go to, and what was sent.

- ``Budget.alert_thresholds`` (``governance.models.limits``) lists percents of ``max_limit``;
  ``limits.validate_alert_thresholds`` is the one rule for the API, the admin and the config import.
- :class:`BudgetAlert` is one threshold crossed in one window of one budget. The unique
  ``(budget, window_start, threshold)`` makes it exactly once across workers and hosts: the ledger
  inserts it with ``ON CONFLICT DO NOTHING`` in the transaction that moved the budget's row
  (``governance.metering.alerts``). ``window_start`` is the row's ``last_reset`` in that window,
  so a new window (or a manual reset) alerts again.
- :class:`AlertDelivery` is one alert to one webhook: pending until sent (2xx) or given up
  (``governance.metering.alert_delivery``), with its attempts and last error kept for the admin.
- :class:`AlertWebhook` holds the destination. Its ``secret`` signs every body (HMAC-SHA256) and
  is stored encrypted like provider key values (``governance.crypto``); no API or page shows it.
  Its URL is shown to admins but never logged: a Slack incoming-webhook URL is itself a credential.
"""

from __future__ import annotations

import uuid

from django.db import models

from governance import crypto
from governance.models.limits import MONEY


class AlertWebhook(models.Model):
    """Where budget alerts are POSTed (a JSON body, signed with ``secret``)."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(max_length=255, unique=True)
    url = models.CharField(max_length=2048)
    secret_encrypted = models.TextField(editable=False)
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        verbose_name = "alert webhook"

    def __str__(self) -> str:
        return self.name

    def set_secret(self, value: str) -> None:
        self.secret_encrypted = crypto.encrypt(value)

    @property
    def secret(self) -> str:
        return crypto.decrypt(self.secret_encrypted)

    @property
    def secret_set(self) -> bool:
        return bool(self.secret_encrypted)


class BudgetAlert(models.Model):
    """One threshold of one budget crossed in one window: the fact, recorded once."""

    id = models.BigAutoField(primary_key=True)
    budget = models.ForeignKey("governance.Budget", on_delete=models.CASCADE, related_name="alerts")
    window_start = models.DateTimeField(help_text="The budget's last_reset in the window that crossed.")
    threshold = models.PositiveSmallIntegerField(help_text="Percent of the limit.")
    spend = models.DecimalField(**MONEY, help_text="The budget's usage when the threshold was crossed (USD).")
    limit = models.DecimalField(**MONEY, help_text="The budget's limit then (USD).")
    crossed_at = models.DateTimeField(db_index=True)

    class Meta:
        ordering = ["-crossed_at", "-id"]
        verbose_name = "budget alert"
        constraints = [
            models.UniqueConstraint(fields=["budget", "window_start", "threshold"], name="budget_alert_once_per_window")
        ]

    def __str__(self) -> str:
        return f"{self.threshold}% of budget {self.budget_id} at {self.crossed_at:%Y-%m-%d %H:%M:%S}"


class DeliveryStatus(models.TextChoices):
    PENDING = "pending", "pending"
    SENT = "sent", "sent"
    FAILED = "failed", "failed (gave up)"


class AlertDelivery(models.Model):
    """One alert to one webhook: retried with back-off until sent or given up."""

    id = models.BigAutoField(primary_key=True)
    alert = models.ForeignKey(BudgetAlert, on_delete=models.CASCADE, related_name="deliveries")
    webhook = models.ForeignKey(AlertWebhook, on_delete=models.CASCADE, related_name="deliveries")
    status = models.CharField(max_length=8, choices=DeliveryStatus.choices, default=DeliveryStatus.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField()
    # Set by the process sending it: no other process claims it before then (a send takes <= 5 s).
    claimed_until = models.DateTimeField(null=True, blank=True)
    last_error = models.CharField(max_length=300, blank=True, default="")
    response_status = models.PositiveSmallIntegerField(null=True, blank=True)
    created_at = models.DateTimeField()
    sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name = "alert delivery"
        verbose_name_plural = "alert deliveries"
        constraints = [models.UniqueConstraint(fields=["alert", "webhook"], name="alert_delivery_once_per_webhook")]
        # The sender's poll: due pending deliveries, one indexed range scan.
        indexes = [models.Index(fields=["status", "next_attempt_at"], name="alert_delivery_due")]

    def __str__(self) -> str:
        return f"alert {self.alert_id} -> {self.webhook_id}: {self.status}"
