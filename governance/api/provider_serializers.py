"""Input validation for the provider management API (Bifrost's shapes, SPEC section 3)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rest_framework import serializers

from governance.api.serializers import StrictCharField, StrictFloatField
from governance.models.providers import MAX_HEADER_VALUE, PROVIDER_NAME_RE, extra_header_problem
from governance.provider_types import (
    WIRE_FORMATS,
    ProviderType,
    azure_key_config_problem,
    base_url_problem,
    default_type,
)

if TYPE_CHECKING:
    # What the mixin is put before: its ``fail`` and ``super().to_internal_value`` are a CharField's.
    class _TextField(serializers.CharField): ...

else:
    _TextField = object


class _StrictText(_TextField):
    """Takes only JSON strings (DRF would turn ``0`` into ``"0"``), like the governance API."""

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictURLField(_StrictText, serializers.URLField):
    pass


class StrictRegexField(_StrictText, serializers.RegexField):
    pass


def _strict_bool(value: object) -> bool:
    # Raised from a ``validate_<field>`` method: DRF files the message under that field already.
    if not isinstance(value, bool):
        raise serializers.ValidationError("must be true or false")
    return value


class NetworkConfigInput(serializers.Serializer):
    # Required on create only (``ProviderInput.validate``): an update patches, field by field.
    base_url = StrictURLField(max_length=500, required=False, allow_blank=True)  # blank: the type's default
    default_request_timeout_in_seconds = StrictFloatField(min_value=0.1, max_value=3600, required=False)
    extra_headers = serializers.DictField(
        child=StrictCharField(allow_blank=True, max_length=MAX_HEADER_VALUE), required=False
    )

    def validate_extra_headers(self, value: dict) -> dict:
        # The model's rule (also applied by the admin and the config import), reported here so
        # the error names ``network_config.extra_headers``.
        for name, header_value in value.items():
            problem = extra_header_problem(name, header_value)
            if problem:
                raise serializers.ValidationError(problem)
        return value


class ProviderInput(serializers.Serializer):
    """``POST /api/providers`` and ``PUT /api/providers/{name}`` (``provider`` only on create)."""

    provider = StrictRegexField(
        PROVIDER_NAME_RE,
        max_length=63,
        required=False,
        error_messages={"invalid": "lower-case letters, digits, '.', '_' or '-' (no '/'), at most 63 characters"},
    )
    provider_type = serializers.ChoiceField(choices=ProviderType.choices, required=False)
    # The old name of ``provider_type`` (when it had two values), still accepted.
    api_format = serializers.ChoiceField(choices=ProviderType.choices, required=False)
    network_config = NetworkConfigInput(required=False)
    # Bifrost's create takes the provider's keys too; each is checked as ``ProviderKeyInput``.
    keys = serializers.ListField(child=serializers.JSONField(), required=False, max_length=100)

    def validate_keys(self, value: list) -> list[dict]:
        if not self.context.get("creating", False):
            raise serializers.ValidationError("keys are changed through /api/providers/{name}/keys")
        checked: list[dict] = []
        problems: dict[int, Any] = {}
        for index, item in enumerate(value):
            key = ProviderKeyInput(data=item, context={"creating": True})
            if key.is_valid():
                checked.append(dict(key.validated_data))
            else:
                problems[index] = key.errors
        if problems:
            raise serializers.ValidationError(problems)
        names = [k["name"] for k in checked]
        duplicate = next((n for n in names if names.count(n) > 1), None)
        if duplicate is not None:
            raise serializers.ValidationError(f"key name {duplicate!r} appears twice")
        return checked

    def validate(self, attrs: dict) -> dict:
        creating = self.context.get("creating", False)
        if creating and not attrs.get("provider"):
            raise serializers.ValidationError({"provider": ["This field is required."]})
        given = attrs.get("provider_type")
        if given and attrs.get("api_format") and attrs["api_format"] != given:
            message = "contradicts provider_type (api_format is its old name)"
            raise serializers.ValidationError({"api_format": [message]})
        attrs["provider_type"] = given or attrs.pop("api_format", None)
        attrs.pop("api_format", None)
        if creating:
            kind = attrs["provider_type"] or default_type(attrs["provider"])
            problem = base_url_problem(kind, (attrs.get("network_config") or {}).get("base_url") or "")
            if problem:
                raise serializers.ValidationError({"network_config": {"base_url": [problem]}})
        return attrs


class ProviderKeyInput(serializers.Serializer):
    """``POST``/``PUT`` of ``/api/providers/{name}/keys[/{id}]``; ``value`` is write-only."""

    name = StrictCharField(max_length=255, required=False)
    value = StrictCharField(max_length=4096, required=False, trim_whitespace=True)
    models = serializers.ListField(child=StrictCharField(max_length=255), required=False)
    weight = StrictFloatField(min_value=0.0, required=False)
    enabled = serializers.JSONField(required=False)
    azure_key_config = serializers.JSONField(required=False)

    def validate_enabled(self, value: object) -> bool:
        return _strict_bool(value)

    def validate_azure_key_config(self, value: object) -> object:
        problem = azure_key_config_problem(value)
        if problem:
            field, message = problem
            raise serializers.ValidationError(f"{field}: {message}" if field else message)
        return value

    def validate_models(self, value: list[str]) -> list[str]:
        if "*" in value and len(value) > 1:
            raise serializers.ValidationError("'*' cannot be combined with other entries")
        if len(set(value)) != len(value):
            raise serializers.ValidationError("duplicate entries are not allowed")
        return value

    def validate(self, attrs: dict) -> dict:
        if self.context.get("creating"):
            missing = {f: ["This field is required."] for f in ("name", "value") if not attrs.get(f)}
            if missing:
                raise serializers.ValidationError(missing)
        return attrs


# --- response shapes, for the OpenAPI schema only (rendering is ``providers.key_json`` etc.) ---


class KeyOut(serializers.Serializer):
    id = serializers.UUIDField()
    provider = serializers.CharField()
    name = serializers.CharField()
    value = serializers.CharField(help_text="masked (…abcd); the value itself is write-only")
    models = serializers.ListField(child=serializers.CharField())
    weight = serializers.FloatField()
    enabled = serializers.BooleanField()
    azure_key_config = serializers.DictField(
        required=False, help_text="Azure keys only: endpoint, api_version and the model → deployment map"
    )
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()


class NetworkConfigOut(serializers.Serializer):
    base_url = serializers.CharField(help_text="as configured; blank = the type's default")
    effective_base_url = serializers.CharField(help_text="the URL calls go to: base_url, else the type's default")
    default_request_timeout_in_seconds = serializers.FloatField()
    extra_headers = serializers.DictField(child=serializers.CharField())


class ProviderOut(serializers.Serializer):
    id = serializers.UUIDField()
    name = serializers.CharField()
    provider_type = serializers.ChoiceField(choices=ProviderType.choices)
    api_format = serializers.CharField(
        help_text=f"the wire format its type speaks: {', '.join(WIRE_FORMATS)} (read-only)"
    )
    network_config = NetworkConfigOut()
    keys = KeyOut(many=True)
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()


class ProviderListOut(serializers.Serializer):
    providers = ProviderOut(many=True)
    total = serializers.IntegerField()


class ProviderOneOut(serializers.Serializer):
    provider = ProviderOut()


class ProviderMessageOut(ProviderOneOut):
    message = serializers.CharField()


class KeyListOut(serializers.Serializer):
    keys = KeyOut(many=True)
    count = serializers.IntegerField()


class KeyOneOut(serializers.Serializer):
    key = KeyOut()


class KeyMessageOut(KeyOneOut):
    message = serializers.CharField()
