"""Budgets (USD per window) and rate limits (tokens and requests per window), and model configs.

Each belongs to exactly one owner: a virtual key, a provider config, a team, a customer, a model
config (limits on all traffic for one model, ``ModelConfig``) or a provider (limits on all traffic
to that provider account: provider governance).
``current_usage`` / ``*_current_usage`` are the durable counters; in production mode Redis holds
the hot copy and the database catches up within seconds (see ``governance.metering.counters``).
"""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any, TypedDict

from django.core.exceptions import ValidationError
from django.core.validators import MinValueValidator
from django.db import models
from django.db.models import Q
from django.utils import timezone

from governance.durations import validate_calendar_alignment, validate_duration


class DecimalShape(TypedDict):
    """The ``max_digits`` / ``decimal_places`` pair of a ``DecimalField``, spread into it."""

    max_digits: int
    decimal_places: int


MONEY: DecimalShape = {"max_digits": 24, "decimal_places": 10}
OWNER_FIELDS = ("virtual_key", "provider_config", "team", "customer", "model_config", "provider")
MODEL_NAME_MAX = 255

DEFAULT_ALERT_THRESHOLDS = (50, 80, 100)
MAX_ALERT_THRESHOLDS = 10
# Percents of the budget's limit (``governance.models.alerts``). Not above 100: admission refuses at
# the limit, so usage past it comes only from requests that cost more than their estimate.
THRESHOLD_RANGE = (1, 100)


def default_alert_thresholds() -> list[int]:
    return list(DEFAULT_ALERT_THRESHOLDS)


def alert_thresholds_problem(value: Any) -> str | None:
    """Why ``value`` is not a list of alert thresholds, or None when it is."""
    if not isinstance(value, list):
        return "must be a list of percents (integers from 1 to 100), e.g. [50, 80, 100]"
    if len(value) > MAX_ALERT_THRESHOLDS:
        return f"must have at most {MAX_ALERT_THRESHOLDS} thresholds"
    low, high = THRESHOLD_RANGE
    for item in value:
        if isinstance(item, bool) or not isinstance(item, int):
            return f"each threshold must be an integer percent from {low} to {high}, not {str(item)[:32]!r}"
        if not low <= item <= high:
            return f"each threshold must be a percent from {low} to {high}, not {item}"
    duplicates = sorted({item for item in value if value.count(item) > 1})
    if duplicates:
        return f"duplicate threshold {duplicates[0]}"
    return None


def validate_alert_thresholds(value: Any) -> None:
    problem = alert_thresholds_problem(value)
    if problem is not None:
        raise ValidationError(problem, code="invalid_alert_thresholds")


def _exactly_one_owner(prefix: str) -> models.CheckConstraint:
    options = []
    for owner in OWNER_FIELDS:
        condition = Q(**{f"{owner}__isnull": False})
        for other in OWNER_FIELDS:
            if other != owner:
                condition &= Q(**{f"{other}__isnull": True})
        options.append(condition)
    condition = options[0]
    for option in options[1:]:
        condition |= option
    return models.CheckConstraint(condition=condition, name=f"{prefix}_exactly_one_owner")


class ModelConfig(models.Model):
    """Limits on all traffic for one model (with or without a virtual key): its ``budgets`` and
    ``rate_limit``. ``provider`` None means the model on every provider; a config for the model on
    one provider and one for every provider both apply to a request (see ``snapshot``)."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    # The model as the provider is asked for it (``openai/gpt-4o`` is matched as ``gpt-4o``).
    model_name = models.CharField(max_length=MODEL_NAME_MAX)
    provider = models.ForeignKey(
        "governance.Provider", null=True, blank=True, on_delete=models.CASCADE, related_name="model_configs"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["model_name", "created_at"]
        verbose_name = "model config"
        constraints = [
            models.UniqueConstraint(
                fields=["model_name", "provider"],
                condition=Q(provider__isnull=False),
                name="model_config_unique_model_provider",
            ),
            # NULLs are distinct in a unique index: "every provider" needs its own.
            models.UniqueConstraint(
                fields=["model_name"], condition=Q(provider__isnull=True), name="model_config_unique_model_any"
            ),
        ]

    def __str__(self) -> str:
        return self.label

    @property
    def label(self) -> str:
        """``gpt-4o`` (every provider) or ``openai/gpt-4o``: how refusals and lists name it."""
        return f"{self.provider.name}/{self.model_name}" if self.provider is not None else self.model_name

    def clean(self) -> None:
        super().clean()
        name = self.model_name or ""
        if name != name.strip():
            raise ValidationError({"model_name": "must not start or end with whitespace"})
        if name == "*":
            raise ValidationError(
                {"model_name": "'*' is not a model: a limit on all of a provider's traffic is provider governance"}
            )


class Budget(models.Model):
    """A spending cap in USD that resets every ``reset_duration``."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    max_limit = models.DecimalField(**MONEY, validators=[MinValueValidator(Decimal("0.0000000001"))])
    reset_duration = models.CharField(max_length=16, validators=[validate_duration])
    calendar_aligned = models.BooleanField(default=False)
    # Percents of max_limit that send an alert when usage reaches them (once per window); [] = none.
    alert_thresholds = models.JSONField(
        default=default_alert_thresholds, blank=True, validators=[validate_alert_thresholds]
    )
    current_usage = models.DecimalField(**MONEY, default=Decimal("0"))
    last_reset = models.DateTimeField(default=timezone.now)
    virtual_key = models.ForeignKey(
        "governance.VirtualKey", null=True, blank=True, on_delete=models.CASCADE, related_name="budgets"
    )
    provider_config = models.ForeignKey(
        "governance.ProviderConfig", null=True, blank=True, on_delete=models.CASCADE, related_name="budgets"
    )
    team = models.ForeignKey("governance.Team", null=True, blank=True, on_delete=models.CASCADE, related_name="budgets")
    customer = models.ForeignKey(
        "governance.Customer", null=True, blank=True, on_delete=models.CASCADE, related_name="budgets"
    )
    model_config = models.ForeignKey(
        ModelConfig, null=True, blank=True, on_delete=models.CASCADE, related_name="budgets"
    )
    provider = models.ForeignKey(
        "governance.Provider", null=True, blank=True, on_delete=models.CASCADE, related_name="budgets"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["created_at"]
        constraints = [
            _exactly_one_owner("budget"),
            models.CheckConstraint(condition=Q(max_limit__gt=0), name="budget_max_limit_positive"),
            *[
                models.UniqueConstraint(fields=[owner, "reset_duration"], name=f"budget_one_per_duration_per_{owner}")
                for owner in OWNER_FIELDS
            ],
        ]

    def __str__(self) -> str:
        return f"${self.max_limit} / {self.reset_duration}"

    def clean(self) -> None:
        super().clean()
        if alert_thresholds_problem(self.alert_thresholds) is None:
            self.alert_thresholds = sorted(self.alert_thresholds)  # ascending, as alerts are sent
        if self.reset_duration:
            try:
                validate_calendar_alignment(self.reset_duration, self.calendar_aligned)
            except ValidationError as exc:
                raise ValidationError({"calendar_aligned": exc.messages}) from None

    @property
    def owner_id(self) -> uuid.UUID | int | None:  # a provider config has an integer key
        return (
            self.virtual_key_id
            or self.provider_config_id
            or self.team_id
            or self.customer_id
            or self.model_config_id
            or self.provider_id
        )


class RateLimit(models.Model):
    """Token and/or request limits per window; each pair (limit, duration) is optional."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    token_max_limit = models.BigIntegerField(null=True, blank=True, validators=[MinValueValidator(1)])
    token_reset_duration = models.CharField(max_length=16, blank=True, default="", validators=[validate_duration])
    token_current_usage = models.BigIntegerField(default=0)
    token_last_reset = models.DateTimeField(default=timezone.now)
    request_max_limit = models.BigIntegerField(null=True, blank=True, validators=[MinValueValidator(1)])
    request_reset_duration = models.CharField(max_length=16, blank=True, default="", validators=[validate_duration])
    request_current_usage = models.BigIntegerField(default=0)
    request_last_reset = models.DateTimeField(default=timezone.now)
    virtual_key = models.OneToOneField(
        "governance.VirtualKey", null=True, blank=True, on_delete=models.CASCADE, related_name="rate_limit"
    )
    provider_config = models.OneToOneField(
        "governance.ProviderConfig", null=True, blank=True, on_delete=models.CASCADE, related_name="rate_limit"
    )
    team = models.OneToOneField(
        "governance.Team", null=True, blank=True, on_delete=models.CASCADE, related_name="rate_limit"
    )
    customer = models.OneToOneField(
        "governance.Customer", null=True, blank=True, on_delete=models.CASCADE, related_name="rate_limit"
    )
    model_config = models.OneToOneField(
        ModelConfig, null=True, blank=True, on_delete=models.CASCADE, related_name="rate_limit"
    )
    provider = models.OneToOneField(
        "governance.Provider", null=True, blank=True, on_delete=models.CASCADE, related_name="rate_limit"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["created_at"]
        constraints = [
            _exactly_one_owner("ratelimit"),
            models.CheckConstraint(
                condition=Q(token_max_limit__isnull=True) | Q(token_max_limit__gt=0), name="ratelimit_token_positive"
            ),
            models.CheckConstraint(
                condition=Q(request_max_limit__isnull=True) | Q(request_max_limit__gt=0),
                name="ratelimit_request_positive",
            ),
        ]

    def __str__(self) -> str:
        parts = []
        if self.token_max_limit:
            parts.append(f"{self.token_max_limit} tokens/{self.token_reset_duration}")
        if self.request_max_limit:
            parts.append(f"{self.request_max_limit} requests/{self.request_reset_duration}")
        return ", ".join(parts) or "no limits"

    def clean(self) -> None:
        super().clean()
        errors = {}
        for kind in ("token", "request"):
            limit = getattr(self, f"{kind}_max_limit")
            duration = getattr(self, f"{kind}_reset_duration")
            if limit is not None and not duration:
                errors[f"{kind}_reset_duration"] = f"{kind}_reset_duration is required with {kind}_max_limit"
            if duration and limit is None:
                errors[f"{kind}_max_limit"] = f"{kind}_max_limit is required with {kind}_reset_duration"
        if errors:
            raise ValidationError(errors)
