"""Input validation for the provider management API (Bifrost's shapes, SPEC section 3)."""

from __future__ import annotations

from rest_framework import serializers

from governance.models.providers import PROVIDER_NAME_RE, ApiFormat


def _strict_bool(value, field: str) -> bool:
    if not isinstance(value, bool):
        raise serializers.ValidationError({field: ["must be true or false"]})
    return value


class NetworkConfigInput(serializers.Serializer):
    base_url = serializers.URLField(max_length=500)
    default_request_timeout_in_seconds = serializers.FloatField(min_value=0.1, max_value=3600, required=False)
    extra_headers = serializers.DictField(child=serializers.CharField(allow_blank=True), required=False)

    def validate_extra_headers(self, value: dict) -> dict:
        for name in value:
            if not name or any(ch in name for ch in " :\r\n"):
                raise serializers.ValidationError(f"invalid header name {name!r}")
        return value


class ProviderInput(serializers.Serializer):
    """``POST /api/providers`` and ``PUT /api/providers/{name}`` (``provider`` only on create)."""

    provider = serializers.RegexField(
        PROVIDER_NAME_RE,
        max_length=63,
        required=False,
        error_messages={"invalid": "lower-case letters, digits, '.', '_' or '-' (no '/'), at most 63 characters"},
    )
    api_format = serializers.ChoiceField(choices=ApiFormat.choices, required=False)
    network_config = NetworkConfigInput(required=False)

    def validate(self, attrs: dict) -> dict:
        creating = self.context.get("creating", False)
        if creating and not attrs.get("provider"):
            raise serializers.ValidationError({"provider": ["This field is required."]})
        if creating and "network_config" not in attrs:
            raise serializers.ValidationError({"network_config": ["This field is required."]})
        return attrs


class ProviderKeyInput(serializers.Serializer):
    """``POST``/``PUT`` of ``/api/providers/{name}/keys[/{id}]``; ``value`` is write-only."""

    name = serializers.CharField(max_length=255, required=False)
    value = serializers.CharField(max_length=4096, required=False, trim_whitespace=True)
    models = serializers.ListField(child=serializers.CharField(max_length=255), required=False)
    weight = serializers.FloatField(min_value=0.0, required=False)
    enabled = serializers.JSONField(required=False)

    def validate_enabled(self, value):
        return _strict_bool(value, "enabled")

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
