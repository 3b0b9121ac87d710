"""Customers, teams, virtual keys and admin API tokens."""

from __future__ import annotations

import uuid
from typing import ClassVar

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Q
from django.utils import timezone

from governance.keys import mask_secret, mask_virtual_key


class Customer(models.Model):
    """The top of the hierarchy: an organisation with teams and directly attached keys."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(max_length=255)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Team(models.Model):
    """A group of virtual keys with its own budgets, optionally inside a customer."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(max_length=255)
    customer = models.ForeignKey(Customer, null=True, blank=True, on_delete=models.SET_NULL, related_name="teams")
    profile = models.JSONField(default=dict, blank=True)
    config = models.JSONField(default=dict, blank=True)
    claims = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class VirtualKey(models.Model):
    """A governed credential for inference calls.

    The secret value is never stored: only its SHA-256 digest (for lookup) and its last four
    characters (for recognition). A key belongs to a team, a customer, or neither.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(max_length=255, unique=True)
    description = models.TextField(blank=True, default="")
    value_digest = models.CharField(max_length=64, unique=True, editable=False)
    value_last4 = models.CharField(max_length=4, editable=False)
    is_active = models.BooleanField(default=True)
    team = models.ForeignKey(Team, null=True, blank=True, on_delete=models.SET_NULL, related_name="virtual_keys")
    customer = models.ForeignKey(
        Customer, null=True, blank=True, on_delete=models.SET_NULL, related_name="virtual_keys"
    )
    allow_all_providers = models.BooleanField(
        default=False, help_text="Without provider configs, a key may use no provider unless this is set."
    )
    expires_at = models.DateTimeField(null=True, blank=True)
    log_content = models.BooleanField(
        default=False,
        help_text="Store this key's request and response bodies (up to BIFROST_CONTENT_MAX_BYTES each, kept "
        "BIFROST_CONTENT_RETENTION_DAYS days) so that /api/logs content_search finds them. Off: only usage is kept.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(
                condition=Q(team__isnull=True) | Q(customer__isnull=True),
                name="virtualkey_team_xor_customer",
                violation_error_message="VirtualKey cannot be attached to both Team and Customer",
            ),
        ]

    ATTACH_BOTH_MESSAGE: ClassVar[str] = "VirtualKey cannot be attached to both Team and Customer"

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        super().clean()
        if self.team_id and self.customer_id:
            raise ValidationError({"customer": self.ATTACH_BOTH_MESSAGE, "team": self.ATTACH_BOTH_MESSAGE})

    @property
    def masked_value(self) -> str:
        return mask_virtual_key(self.value_last4)

    @property
    def is_expired(self) -> bool:
        return self.expires_at is not None and self.expires_at <= timezone.now()


class ApiToken(models.Model):
    """A bearer token for the management API, acting as ``user``. Stored as a digest only."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=255)
    token_digest = models.CharField(max_length=64, unique=True, editable=False)
    token_last4 = models.CharField(max_length=4, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "admin API token"

    def __str__(self) -> str:
        return f"{self.name} ({mask_secret(self.token_last4)})"
