"""Routing rules: a CEL condition on a request, and where a request that meets it goes.

Field names and meanings follow Bifrost's routing rules (``/api/governance/routing-rules``):

- ``cel_expression`` is compiled when the rule is saved (``governance.routing_rules``); an
  empty expression matches every request.
- ``targets``: ``[{"provider", "model", "key_id", "weight"}]``, weights summing to 1. A target
  without ``provider`` keeps the provider the request would have gone to, without ``model`` the
  model it asked for, without ``key_id`` the usual key choice.
- ``fallbacks``: ``"provider/model"`` strings (``"provider/"`` keeps the asked model), tried after
  the targets and before the request's own ``fallbacks``.
- ``scope`` ``global``, ``customer``, ``team`` or ``virtual_key``; the non-global scopes name their
  entity through the matching foreign key, and ``scope_id`` repeats its id as text so that one
  unique constraint covers "name unique per scope" (global included, where the keys are null).
  A rule goes with the entity it is scoped to.
- ``priority``: lower first, within a scope.
"""

from __future__ import annotations

import uuid
from typing import Any

from django.db import models


class RoutingScope(models.TextChoices):
    GLOBAL = "global", "Global"
    CUSTOMER = "customer", "Customer"
    TEAM = "team", "Team"
    VIRTUAL_KEY = "virtual_key", "Virtual key"


class RoutingRule(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(max_length=255)
    description = models.TextField(blank=True, default="")
    enabled = models.BooleanField(default=True)
    cel_expression = models.TextField(blank=True, default="")
    targets = models.JSONField(default=list)
    fallbacks = models.JSONField(default=list, blank=True)
    scope = models.CharField(max_length=16, choices=RoutingScope.choices, default=RoutingScope.GLOBAL)
    scope_id = models.CharField(max_length=64, blank=True, default="", editable=False)
    virtual_key = models.ForeignKey(
        "governance.VirtualKey", null=True, blank=True, on_delete=models.CASCADE, related_name="routing_rules"
    )
    team = models.ForeignKey(
        "governance.Team", null=True, blank=True, on_delete=models.CASCADE, related_name="routing_rules"
    )
    customer = models.ForeignKey(
        "governance.Customer", null=True, blank=True, on_delete=models.CASCADE, related_name="routing_rules"
    )
    priority = models.IntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["scope", "scope_id", "priority", "created_at"]
        constraints = [
            models.UniqueConstraint(fields=["scope", "scope_id", "name"], name="routing_rule_unique_name_per_scope"),
        ]

    def __str__(self) -> str:
        return self.name

    def save(self, *args: Any, **kwargs: Any) -> None:
        # ``scope_id`` mirrors the one foreign key the scope uses (the services keep the others null).
        owner_id = {"virtual_key": self.virtual_key_id, "team": self.team_id, "customer": self.customer_id}.get(
            self.scope
        )
        self.scope_id = str(owner_id) if owner_id else ""
        super().save(*args, **kwargs)

    @property
    def scope_entity(self) -> Any:
        """The virtual key, team or customer the rule is scoped to (None for global)."""
        return {"virtual_key": self.virtual_key, "team": self.team, "customer": self.customer}.get(self.scope)
