"""Routing rules: the list (scope, priority, enabled, condition, targets) and the edit page.

The form runs the service's validation (``governance.services.routing_rules.clean_rule_fields``)
in its ``clean()``, so a CEL expression the compiler refuses is shown on the expression field with
the compiler's message, a bad target on the targets field, a bad scope id on the scope's entity;
the save then goes through the services like every admin save.
"""

from __future__ import annotations

import json
from typing import Any

from django import forms
from django.contrib import admin
from django.core.exceptions import ValidationError
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe

from governance.admin.common import GovernanceModelAdmin, ServiceAdminMixin, Services, error_items
from governance.models import RoutingRule, RoutingScope
from governance.services import routing_rule_create, routing_rule_delete, routing_rule_update
from governance.services.routing_rules import clean_rule_fields

TARGETS_EXAMPLE = '[{"provider": "azure", "model": "gpt-4o", "weight": 0.7}, {"provider": "openai", "weight": 0.3}]'
SCOPE_FIELDS: dict[str, str] = {
    RoutingScope.VIRTUAL_KEY: "virtual_key",
    RoutingScope.TEAM: "team",
    RoutingScope.CUSTOMER: "customer",
}


class TargetsField(forms.JSONField):
    """The targets as JSON (the API's shape): a list of {provider, model, key_id, weight}."""

    def prepare_value(self, value: Any) -> Any:
        if isinstance(value, list):
            return json.dumps(value, indent=1)
        return super().prepare_value(value)


class LinesField(forms.CharField):
    """A list of strings typed one per line (or comma-separated)."""

    def prepare_value(self, value: Any) -> Any:
        return "\n".join(value) if isinstance(value, list) else value

    def to_python(self, value: Any) -> list[str]:  # type: ignore[override]
        if isinstance(value, list):
            return value
        text = super().to_python(value) or ""
        return [part.strip() for part in text.replace(",", "\n").splitlines() if part.strip()]


class RoutingRuleForm(forms.ModelForm):
    targets = TargetsField(
        widget=forms.Textarea(attrs={"rows": 4, "cols": 80, "placeholder": TARGETS_EXAMPLE}),
        help_text="JSON list of {provider, model, key_id, weight}; the weights sum to 1. A missing provider "
        "or model keeps the request's; key_id pins a key of the provider.",
    )
    fallbacks = LinesField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 2, "cols": 80, "placeholder": "openai/gpt-4o-mini"}),
        help_text='One "provider/model" per line ("provider/" keeps the model asked), tried after the targets.',
    )

    class Meta:
        model = RoutingRule
        fields = [
            "name",
            "description",
            "enabled",
            "scope",
            "virtual_key",
            "team",
            "customer",
            "priority",
            "cel_expression",
        ]
        widgets = {
            "description": forms.Textarea(attrs={"rows": 2, "cols": 80}),
            "cel_expression": forms.Textarea(attrs={"rows": 3, "cols": 80, "class": "vLargeTextField"}),
        }
        labels = {"cel_expression": "CEL expression"}
        help_texts = {
            "scope": "Evaluated virtual key → team → customer → global; the first matching rule wins.",
            "virtual_key": "For scope virtual key.",
            "team": "For scope team.",
            "customer": "For scope customer.",
            "priority": "Lower is evaluated first within the scope.",
            "cel_expression": 'CEL, e.g. model == "gpt-4o" && team.budget_used_percent > 90.0 — empty matches '
            "every request. Variables: model, provider, request_type, headers, params, virtual_key, team, "
            "customer (id, name, budget_used_percent, rate_limit_used_percent, token_rate_limit_used_percent).",
        }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not self.instance._state.adding:
            self.initial.update(targets=self.instance.targets, fallbacks=self.instance.fallbacks)

    def rule_data(self) -> dict[str, Any]:
        """The cleaned form as the service takes it (the API's raw JSON shape)."""
        data = self.cleaned_data
        scope = data.get("scope") or RoutingScope.GLOBAL
        entity = data.get(SCOPE_FIELDS[scope]) if scope in SCOPE_FIELDS else None
        return {
            "name": data.get("name"),
            "description": data.get("description") or "",
            "enabled": bool(data.get("enabled")),
            "cel_expression": data.get("cel_expression") or "",
            "targets": data.get("targets"),
            "fallbacks": data.get("fallbacks") or [],
            "scope": scope,
            "scope_id": str(entity.pk) if entity is not None else None,
            "priority": data.get("priority") if data.get("priority") is not None else 0,
        }

    def clean(self) -> dict[str, Any] | None:
        cleaned = super().clean()
        if self.errors:
            return cleaned
        scope = self.cleaned_data.get("scope")
        for other_scope, name in SCOPE_FIELDS.items():
            if other_scope != scope and self.cleaned_data.get(name) is not None:
                self.add_error(name, f"only for scope {RoutingScope(other_scope).label.lower()}")
        if self.errors:
            return cleaned
        current = None if self.instance._state.adding else self.instance
        try:
            clean_rule_fields(self.rule_data(), current=current)
        except ValidationError as exc:
            for field, messages in error_items(exc):
                self.add_error(self._field_of(field), messages)
        return cleaned

    def _field_of(self, error_path: str | None) -> str | None:
        if error_path is None:
            return None
        head = error_path.split("[")[0].split(".")[0]
        if head == "scope_id":
            return SCOPE_FIELDS.get(self.cleaned_data.get("scope") or "", "scope")
        return head if head in self.fields else None


@admin.register(RoutingRule)
class RoutingRuleAdmin(ServiceAdminMixin[RoutingRule], GovernanceModelAdmin[RoutingRule]):
    form = RoutingRuleForm
    list_display = ["name", "scope_shown", "priority", "enabled", "condition", "targets_shown", "updated_at"]
    list_filter = ["scope", "enabled"]
    search_fields = ["name", "description", "cel_expression"]
    list_select_related = ["virtual_key", "team", "customer"]
    autocomplete_fields = ["virtual_key", "team", "customer"]
    ordering = ["scope", "scope_id", "priority", "created_at"]
    fieldsets = [
        (None, {"fields": ["name", "description", "enabled"]}),
        ("Where it applies", {"fields": ["scope", "virtual_key", "team", "customer", "priority"]}),
        ("Condition and destination", {"fields": ["cel_expression", "targets", "fallbacks"]}),
    ]
    services = Services(
        create=routing_rule_create, update=routing_rule_update, delete=routing_rule_delete, instance="rule"
    )

    def service_data(self, form: forms.ModelForm[RoutingRule], change: bool) -> dict[str, Any]:
        assert isinstance(form, RoutingRuleForm)
        return form.rule_data()

    @admin.display(description="scope", ordering="scope")
    def scope_shown(self, rule: RoutingRule) -> str:
        entity = rule.scope_entity
        if entity is None:
            return "global"
        return format_html("{}<br><span class='quiet'>{}</span>", rule.get_scope_display(), entity)

    @admin.display(description="condition")
    def condition(self, rule: RoutingRule) -> str:
        text = rule.cel_expression.strip() or "(every request)"
        shown = text if len(text) <= 120 else text[:117] + "…"
        return format_html("<code>{}</code>", shown)

    @admin.display(description="targets")
    def targets_shown(self, rule: RoutingRule) -> str:
        rows = []
        for target in rule.targets or ():
            where = "/".join(part for part in (target.get("provider"), target.get("model")) if part) or "(as asked)"
            if target.get("key_id"):
                where += " (pinned key)"
            rows.append((where, f"{float(target.get('weight', 1.0)):g}"))
        fallbacks = ", ".join(rule.fallbacks or ())
        body = format_html_join(mark_safe("<br>"), "{} <span class='quiet'>× {}</span>", rows)  # noqa: S308
        if fallbacks:
            body = format_html("{}<br><span class='quiet'>then {}</span>", body, fallbacks)
        return body
