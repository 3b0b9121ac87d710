"""Pricing overrides: scoped patches over the price catalog (Bifrost's "custom pricing").

One override names a *scope* (``scope_kind`` with the identifiers that kind takes), the models it
matches (``match_type`` + ``pattern``), optionally the request types it is limited to, and the
price fields it sets. Which override applies to a request, and how it combines with the catalog,
is ``governance.price_overrides`` (the rule is written down there and in the README).
"""

from __future__ import annotations

import uuid

from django.core.exceptions import NON_FIELD_ERRORS, ValidationError
from django.core.validators import MinValueValidator
from django.db import models
from django.db.models import Q

from governance.models.providers import PRICE


class ScopeKind(models.TextChoices):
    """Most specific first: the order in which a request's scopes are searched."""

    VIRTUAL_KEY_PROVIDER_KEY = "virtual_key_provider_key", "virtual key + provider key"
    VIRTUAL_KEY_PROVIDER = "virtual_key_provider", "virtual key + provider"
    VIRTUAL_KEY = "virtual_key", "virtual key"
    PROVIDER_KEY = "provider_key", "provider key"
    PROVIDER = "provider", "provider"
    GLOBAL = "global", "global"


class MatchType(models.TextChoices):
    EXACT = "exact", "exact model name"
    WILDCARD = "wildcard", "prefix (pattern ends with *)"
    PATTERN = "pattern", "glob pattern (* and ?)"


# The identifiers each scope kind takes (as model fields); any other one must be empty.
SCOPE_FIELDS: dict[str, tuple[str, ...]] = {
    ScopeKind.GLOBAL: (),
    ScopeKind.PROVIDER: ("provider",),
    ScopeKind.PROVIDER_KEY: ("provider_key",),
    ScopeKind.VIRTUAL_KEY: ("virtual_key",),
    ScopeKind.VIRTUAL_KEY_PROVIDER: ("virtual_key", "provider"),
    ScopeKind.VIRTUAL_KEY_PROVIDER_KEY: ("virtual_key", "provider_key"),
}
SCOPE_ID_FIELDS = ("virtual_key", "provider", "provider_key")
# The price fields an override may set, as the catalog (``ModelPrice``) names them, plus the flat
# per-request amount the catalog does not have.
PRICE_FIELDS = ("input_cost_per_token", "output_cost_per_token", "cached_input_cost_per_token", "cost_per_request")


def _scope_matches_fields() -> Q:
    options = Q()
    for kind, wanted in SCOPE_FIELDS.items():
        condition = Q(scope_kind=kind)
        for name in SCOPE_ID_FIELDS:
            condition &= Q(**{f"{name}__isnull": name not in wanted})
        options |= condition
    return options


class PricingOverride(models.Model):
    """A price patch for the models ``pattern`` matches, in one scope. A price field left empty
    keeps the catalog's value for that field (none: 0); ``cost_per_request`` is added once per
    successful request."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(max_length=255)
    scope_kind = models.CharField(max_length=32, choices=ScopeKind.choices, default=ScopeKind.GLOBAL)
    # Deleting the key, provider or provider key deletes the overrides scoped to it.
    virtual_key = models.ForeignKey(
        "governance.VirtualKey", null=True, blank=True, on_delete=models.CASCADE, related_name="pricing_overrides"
    )
    provider = models.ForeignKey(
        "governance.Provider", null=True, blank=True, on_delete=models.CASCADE, related_name="pricing_overrides"
    )
    provider_key = models.ForeignKey(
        "governance.ProviderKey", null=True, blank=True, on_delete=models.CASCADE, related_name="pricing_overrides"
    )
    match_type = models.CharField(max_length=16, choices=MatchType.choices, default=MatchType.EXACT)
    pattern = models.CharField(max_length=255, help_text="the model name, a prefix ending with *, or a glob")
    # Empty: every request type.
    request_types = models.JSONField(default=list, blank=True)
    input_cost_per_token = models.DecimalField(**PRICE, null=True, blank=True, validators=[MinValueValidator(0)])
    output_cost_per_token = models.DecimalField(**PRICE, null=True, blank=True, validators=[MinValueValidator(0)])
    cached_input_cost_per_token = models.DecimalField(**PRICE, null=True, blank=True, validators=[MinValueValidator(0)])
    cost_per_request = models.DecimalField(**PRICE, null=True, blank=True, validators=[MinValueValidator(0)])
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.CheckConstraint(condition=_scope_matches_fields(), name="pricing_override_scope_ids"),
            *(
                models.CheckConstraint(
                    condition=Q(**{f"{name}__isnull": True}) | Q(**{f"{name}__gte": 0}),
                    name=f"pricing_override_{name}_non_negative",
                )
                for name in PRICE_FIELDS
            ),
        ]

    def __str__(self) -> str:
        return self.name or f"{self.scope_kind}: {self.pattern}"

    def clean(self) -> None:
        super().clean()
        # The rules live with the matching code; imported here to keep the model module a leaf.
        from governance.price_overrides import pattern_problem, request_types_problem

        errors: dict[str, str | list[str]] = {}
        wanted = SCOPE_FIELDS.get(self.scope_kind, ())
        for name in SCOPE_ID_FIELDS:
            present = getattr(self, f"{name}_id") is not None
            if name in wanted and not present:
                errors[name] = f"is required for scope_kind '{self.scope_kind}'"
            elif name not in wanted and present:
                errors[name] = f"is not used by scope_kind '{self.scope_kind}'"
        problem = pattern_problem(self.match_type, self.pattern)
        if problem:
            errors["pattern"] = problem
        problem = request_types_problem(self.request_types)
        if problem:
            errors["request_types"] = problem
        if all(getattr(self, name) is None for name in PRICE_FIELDS):
            errors[NON_FIELD_ERRORS] = ["set at least one price field"]
        if errors:
            raise ValidationError(errors)

    @property
    def price_fields(self) -> dict[str, object]:
        """The price fields this override sets (the others keep the catalog's value)."""
        return {name: getattr(self, name) for name in PRICE_FIELDS if getattr(self, name) is not None}
