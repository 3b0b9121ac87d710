"""Forms of the governance admin.

Model forms include every field a model invariant touches (``team`` and ``customer`` together) so
that ``full_clean()`` reports a broken invariant on the offending field instead of the database
rejecting the row later. Secret values have no field at all (virtual keys, API tokens) or a
write-only password field that is never pre-filled (provider keys, alert webhook secrets).
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.core.exceptions import ValidationError

from governance.models import (
    AlertWebhook,
    ApiToken,
    Budget,
    McpClient,
    Provider,
    ProviderConfig,
    ProviderKey,
    RateLimit,
    VirtualKey,
    VirtualKeyMcpConfig,
)
from governance.models.limits import DEFAULT_ALERT_THRESHOLDS, validate_alert_thresholds
from governance.models.providers import validate_model_list
from governance.provider_types import AZURE_DEFAULT_API_VERSION, TYPES, ProviderType, default_type
from governance.services.mcp_clients import masked_secret

DURATION_HELP = "e.g. 30s, 5m, 1h, 1d, 1w, 1M, 1Y"
# The types without a default URL, Azure aside (its keys carry their endpoints): ollama, vllm.
TYPES_NEEDING_BASE_URL = [t for t, facts in TYPES.items() if not facts.default_base_url and t != ProviderType.AZURE]
PROVIDER_TYPE_HELP = (
    "Which API the provider speaks and where it lives by default. "
    f"Needs a base URL: {', '.join(TYPES_NEEDING_BASE_URL)}. "
    "Azure: no base URL; each key carries its endpoint and deployments. "
    "Every other type has a default URL (blank base URL = the default)."
)
AZURE_KEY_CONFIG_EXAMPLE = (
    f'{{"endpoint": "https://my-resource.openai.azure.com", "api_version": "{AZURE_DEFAULT_API_VERSION}", '
    '"deployments": {"gpt-4o": "my-gpt-4o-deployment"}}'
)


class NameListField(forms.CharField):
    """A list of names typed as comma-separated text; ``*`` stands for all."""

    def __init__(self, *, empty_means: str, **kwargs: Any) -> None:
        kwargs.setdefault("required", False)
        kwargs.setdefault("help_text", f"Comma-separated; * = all; empty = {empty_means}.")
        kwargs.setdefault("widget", forms.TextInput(attrs={"size": 30}))
        super().__init__(**kwargs)

    def prepare_value(self, value: Any) -> Any:
        if isinstance(value, list):
            return ", ".join(value)
        return value

    # A list, where CharField's hint says text: the field's value is the list the model stores.
    def to_python(self, value: Any) -> list[str]:  # type: ignore[override]
        if isinstance(value, list):
            return value
        text = super().to_python(value) or ""
        return [part.strip() for part in text.replace("\n", ",").split(",") if part.strip()]

    def validate(self, value: Any) -> None:
        super().validate(value)
        try:
            validate_model_list(value)
        except ValidationError as exc:
            raise ValidationError(exc.messages) from None

    def has_changed(self, initial: Any, data: Any) -> bool:
        return self.to_python(initial or []) != self.to_python(data)


class ThresholdListField(forms.CharField):
    """Budget alert thresholds typed as comma-separated percents (``50, 80, 100``); empty = none."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("required", False)
        kwargs.setdefault("help_text", "Percents of the limit that send a budget alert, once per window; empty = none.")
        kwargs.setdefault("widget", forms.TextInput(attrs={"size": 10, "placeholder": "50, 80, 100"}))
        super().__init__(**kwargs)

    def prepare_value(self, value: Any) -> Any:
        if isinstance(value, list):
            return ", ".join(str(item) for item in value)
        return value

    # A list, where CharField's hint says text: the field's value is the list the model stores.
    def to_python(self, value: Any) -> list[int]:  # type: ignore[override]
        if isinstance(value, list):
            return value
        text = super().to_python(value) or ""
        parts = [part.strip().removesuffix("%").strip() for part in text.split(",") if part.strip()]
        try:
            return [int(part) for part in parts]
        except ValueError:
            raise ValidationError("Enter whole percents separated by commas, e.g. 50, 80, 100.") from None

    def validate(self, value: Any) -> None:
        super().validate(value)
        try:
            validate_alert_thresholds(value)
        except ValidationError as exc:
            raise ValidationError(exc.messages) from None

    def has_changed(self, initial: Any, data: Any) -> bool:
        try:
            return self.to_python(initial if initial is not None else []) != self.to_python(data)
        except ValidationError:
            return True


class OptionalObjectField(forms.JSONField):
    """A JSON object typed in a textarea where blank (shown for ``{}`` too) means ``{}``."""

    def prepare_value(self, value: Any) -> Any:
        return "" if value == {} or value is None else super().prepare_value(value)

    def to_python(self, value: Any) -> Any:
        converted = super().to_python(value)
        return {} if converted is None else converted

    def validate(self, value: Any) -> None:
        super().validate(value)
        if not isinstance(value, dict):
            raise ValidationError("must be a JSON object")


class VirtualKeyAdminForm(forms.ModelForm):
    """No value field: the server generates the secret and shows it once after saving."""

    class Meta:
        model = VirtualKey
        fields = [
            "name",
            "description",
            "is_active",
            "team",
            "customer",
            "allow_all_providers",
            "expires_at",
            "log_content",
        ]
        widgets = {"description": forms.Textarea(attrs={"rows": 2, "cols": 60})}
        help_texts = {
            "team": "A key belongs to a team, or a customer, or neither — never both.",
            "customer": "A key belongs to a team, or a customer, or neither — never both.",
            "allow_all_providers": "On: every provider, ones added later included; a provider config below then "
            "decides only for its own provider (models, keys). Off: only the providers that have a config below.",
        }


class BudgetInlineForm(forms.ModelForm):
    alert_thresholds = ThresholdListField(label="Alert at (%)", initial=list(DEFAULT_ALERT_THRESHOLDS))

    class Meta:
        model = Budget
        fields = ["max_limit", "reset_duration", "calendar_aligned", "alert_thresholds"]
        labels = {"max_limit": "Max limit (USD)"}
        help_texts = {"reset_duration": DURATION_HELP}
        widgets = {"reset_duration": forms.TextInput(attrs={"size": 6, "placeholder": "1M"})}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Show 25, not the column's 25.0000000000.
        if self.instance.max_limit is not None and not self.instance._state.adding:
            self.initial["max_limit"] = f"{self.instance.max_limit.normalize():f}"


class RateLimitInlineForm(forms.ModelForm):
    class Meta:
        model = RateLimit
        fields = ["token_max_limit", "token_reset_duration", "request_max_limit", "request_reset_duration"]
        help_texts = {"token_reset_duration": DURATION_HELP, "request_reset_duration": DURATION_HELP}
        widgets = {
            "token_reset_duration": forms.TextInput(attrs={"size": 6, "placeholder": "1h"}),
            "request_reset_duration": forms.TextInput(attrs={"size": 6, "placeholder": "1m"}),
        }


class ProviderKeysWidget(forms.SelectMultiple):
    """A key picker whose options carry their key's provider (``data-provider``), so that the
    page's script (``governance/provider_keys.js``) can show only the keys of the row's provider."""

    def __init__(self, attrs: dict[str, Any] | None = None) -> None:
        super().__init__(attrs)
        self.providers: dict[str, str] = {}  # key id → provider id

    def create_option(
        self,
        name: str,
        value: Any,
        label: Any,
        selected: bool,
        index: int,
        subindex: int | None = None,
        attrs: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        option = super().create_option(name, value, label, selected, index, subindex, attrs)
        provider = self.providers.get(str(value))
        if provider:
            option["attrs"]["data-provider"] = provider
        return option


class ProviderConfigInlineForm(forms.ModelForm):
    """One provider a key may use; ``keys`` must belong to that provider.

    A saved row offers only its provider's keys. A new row (and a row sent back with errors)
    lists every key, each marked with its provider for the page's script; the form rejects a
    key of another provider by name either way. "All keys" starts ticked on a new row: a config
    with no key ticked and no key picked allows no key, so every request to its provider fails.
    """

    allowed_models = NameListField(empty_means="no model", initial=["*"])

    class Meta:
        model = ProviderConfig
        fields = ["provider", "weight", "allowed_models", "allow_all_keys", "keys"]
        labels = {"allow_all_keys": "All keys"}
        widgets = {"keys": ProviderKeysWidget(attrs={"size": 4})}
        help_texts = {
            "weight": "Share in weighted routing; empty = used only when named explicitly.",
            "allow_all_keys": "Every enabled key of the provider, keys added later included. Unticked: only the keys "
            "picked; with none picked, this config allows no key and its provider refuses every request.",
            "keys": "Only this provider's keys; leave empty when “all keys” is ticked.",
        }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.instance._state.adding:
            self.fields["allow_all_keys"].initial = True
        if "keys" not in self.fields:
            return
        keys = ProviderKey.objects.select_related("provider")
        provider_id = self.instance.provider_id
        if provider_id and (not self.is_bound or "provider" not in self.fields):
            keys = keys.filter(provider_id=provider_id)
        keys_field = self.fields["keys"]
        assert isinstance(keys_field, forms.ModelMultipleChoiceField)  # the ``keys`` relation's field
        keys_field.queryset = keys
        keys_field.required = False
        # The admin wraps the widget in its add/change links wrapper; the options are drawn inside.
        widget = getattr(keys_field.widget, "widget", keys_field.widget)
        if isinstance(widget, ProviderKeysWidget):
            widget.providers = {str(key.pk): str(key.provider_id) for key in keys}

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        provider = cleaned.get("provider")
        if "provider" not in self.fields and self.instance.provider_id:
            provider = self.instance.provider
        keys = cleaned.get("keys") or []
        if provider is not None:
            foreign = [str(key) for key in keys if key.provider_id != provider.pk]
            if foreign:
                names = ", ".join(foreign)
                self.add_error("keys", f"{names}: not a key of provider {provider.name!r}; pick its own keys")
        if cleaned.get("allow_all_keys") and keys:
            self.add_error("keys", "Pick keys or tick “all keys”, not both.")
        return cleaned


class McpConfigInlineForm(forms.ModelForm):
    tools_to_execute = NameListField(empty_means="no tool", initial=["*"])

    class Meta:
        model = VirtualKeyMcpConfig
        fields = ["mcp_client", "tools_to_execute"]


class WriteOnlyTextarea(forms.Textarea):
    """A textarea that never shows a value, not even the one just typed when the form comes back."""

    def format_value(self, value: Any) -> str | None:
        return None


def parse_header_lines(text: str) -> dict[str, str]:
    """``Name: value`` lines (blank lines skipped) → a dict; the service checks names and values."""
    headers: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        name, colon, value = line.partition(":")
        if not colon or not name.strip():
            raise ValidationError(f"line {number}: expected 'Name: value'")
        headers[name.strip()] = value.strip()
    return headers


MCP_STDIO_EXAMPLE = (
    '{"command": "npx", "args": ["-y", "@modelcontextprotocol/server-filesystem", "/data"], '
    '"envs": {"TOKEN": "env.FS_TOKEN"}}'
)
MCP_OAUTH_EXAMPLE = (
    '{"client_id": "…", "client_secret": "env.MCP_SECRET", "authorize_url": "https://…", "token_url": "https://…"}'
)


class McpClientAdminForm(forms.ModelForm):
    """An upstream MCP server. Everything is checked by the service (``mcp_client_create`` and
    ``mcp_client_update``), which also tries the server before saving: the fields that are not
    plain columns are declared here and kept off the model instance until then.

    Headers are write-only: never shown, blank keeps the stored ones, typed ones replace them all.
    The OAuth client secret is shown masked; left as shown, the stored one is kept.
    """

    stdio_config = OptionalObjectField(
        label="stdio config",
        required=False,
        widget=forms.Textarea(attrs={"rows": 3, "cols": 80, "placeholder": MCP_STDIO_EXAMPLE}),
        help_text="stdio only: command, args, and envs (values or env.NAME, read when the command starts).",
    )
    headers = forms.CharField(
        label="Headers",
        required=False,
        strip=False,
        widget=WriteOnlyTextarea(attrs={"rows": 3, "cols": 80, "autocomplete": "off", "placeholder": "Name: value"}),
    )
    clear_headers = forms.BooleanField(label="Remove all headers", required=False)
    oauth_config = OptionalObjectField(
        label="OAuth config",
        required=False,
        widget=forms.Textarea(attrs={"rows": 3, "cols": 80, "placeholder": MCP_OAUTH_EXAMPLE}),
        help_text=(
            "auth types oauth and per_user_oauth: client_id, client_secret, authorize_url, token_url, "
            "registration_url, scopes; or leave blank to discover them from the connection string."
        ),
    )
    tools_to_execute = NameListField(label="Tools to execute", empty_means="no tool (deny by default)")
    allowed_extra_headers = NameListField(
        label="Allowed extra headers", empty_means="none", help_text="Request headers callers may forward; * = any."
    )
    tool_pricing = OptionalObjectField(
        label="Tool pricing",
        required=False,
        widget=forms.Textarea(attrs={"rows": 2, "cols": 80, "placeholder": '{"search": "0.01"}'}),
        help_text="Dollars per call by tool name (at most 10 decimals).",
    )

    class Meta:
        model = McpClient
        fields = [
            "name",
            "connection_type",
            "connection_string",
            "auth_type",
            "timeout_seconds",
            "allow_on_all_virtual_keys",
        ]
        help_texts = {
            "name": "Letters, digits, '_' or '-'; the gateway offers its tools as <name>_<tool>.",
            "connection_string": "http and sse: the server's URL, or env.NAME to read it from the environment.",
        }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        client = self.instance
        if client._state.adding:
            self.fields[
                "headers"
            ].help_text = (
                "One 'Name: value' per line (e.g. Authorization: Bearer …). Stored encrypted, never shown again."
            )
            del self.fields["clear_headers"]
            return
        stored = ", ".join(f"{name}: {value}" for name, value in client.masked_headers.items()) or "none"
        self.fields["headers"].help_text = (
            f"Stored: {stored}. Leave blank to keep them, "
            "or type all headers (one 'Name: value' per line) to replace them."
        )
        oauth = dict(client.oauth_config or {})
        if oauth.get("client_secret"):
            oauth["client_secret"] = masked_secret(oauth["client_secret"])
        self.initial.update(
            stdio_config=client.stdio_config,
            oauth_config=oauth,
            tools_to_execute=client.tools_to_execute,
            allowed_extra_headers=client.allowed_extra_headers,
            tool_pricing=client.tool_pricing,
        )

    def clean_headers(self) -> dict[str, str] | None:
        text = self.cleaned_data.get("headers") or ""
        return parse_header_lines(text) if text.strip() else None

    def service_fields(self) -> dict[str, Any]:
        """The cleaned data as the service takes it (``headers``: None keeps the stored ones)."""
        data = dict(self.cleaned_data)
        if data.pop("clear_headers", False):
            data["headers"] = {}
        elif data.get("headers") is None and self.instance._state.adding:
            data["headers"] = {}
        return data


class ProviderAdminForm(forms.ModelForm):
    provider_type = forms.ChoiceField(
        label="Type",
        choices=[("", "Default for the name (a type's name → that type, else OpenAI)"), *ProviderType.choices],
        required=False,
        help_text=PROVIDER_TYPE_HELP,
    )
    base_url = forms.URLField(
        label="Base URL",
        max_length=500,
        required=False,
        assume_scheme="https",
        help_text=(
            "The upstream API root without /v1, e.g. https://api.openai.com or http://localhost:11434 (ollama); "
            "a base URL that already ends in /v1 is accepted and not doubled. Blank = the type's default URL; "
            f"required for {', '.join(TYPES_NEEDING_BASE_URL)} and custom OpenAI-compatible servers; unused for "
            "azure (each key has its endpoint)."
        ),
    )

    class Meta:
        model = Provider
        fields = ["name", "provider_type", "base_url", "timeout_seconds", "extra_headers"]
        help_texts = {
            "extra_headers": 'Sent with every upstream request, e.g. {"OpenAI-Organization": "org-1"}.',
            "timeout_seconds": "How long to wait for the upstream's answer (each read, streams included) before "
            "answering 504.",
        }

    def clean_provider_type(self) -> str:
        value = self.cleaned_data["provider_type"]
        if value:
            return value
        if not self.instance._state.adding:
            return self.instance.provider_type
        return default_type(self.cleaned_data.get("name") or "")


class ProviderKeyAdminForm(forms.ModelForm):
    """The key value is write-only: a password input that is never pre-filled.

    On change, leaving it blank keeps the stored value.
    """

    value = forms.CharField(
        label="Key value",
        required=False,
        strip=True,
        max_length=4096,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password", "size": 60}),
    )
    models = NameListField(label="Models", empty_means="no restriction", initial=["*"])
    azure_key_config = OptionalObjectField(
        label="Azure key config",
        required=False,
        widget=forms.Textarea(attrs={"rows": 4, "cols": 80, "placeholder": AZURE_KEY_CONFIG_EXAMPLE}),
        help_text=(
            f"Keys of an Azure OpenAI provider only (required there), e.g. {AZURE_KEY_CONFIG_EXAMPLE}. "
            f"api_version (default {AZURE_DEFAULT_API_VERSION}) and deployments (model → deployment name; "
            "a model without one is called by its own name) are optional. Blank = none, for every other type."
        ),
    )

    class Meta:
        model = ProviderKey
        fields = ["provider", "name", "value", "models", "weight", "enabled", "azure_key_config"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not self.instance._state.adding:
            stored = self.instance.masked_value
            self.fields["value"].help_text = f"Stored: {stored}. Leave blank to keep it, or type a new value."
        else:
            self.fields["value"].required = True
            self.fields["value"].help_text = "Stored encrypted; it is never shown again, only its last four characters."


class ApiTokenAdminForm(forms.ModelForm):
    """Name and owner only: the token is generated by the server and shown once."""

    class Meta:
        model = ApiToken
        fields = ["name", "user"]
        help_texts = {"user": "The token acts with this user's permissions."}


class AlertWebhookAdminForm(forms.ModelForm):
    """The signing secret is write-only: a password input never pre-filled; blank on a change keeps it.

    The rules are the service's (``governance.services.alert_webhooks``), which the admin saves
    through: its errors come back on these fields.
    """

    secret = forms.CharField(
        label="Signing secret",
        required=False,
        strip=False,
        max_length=1024,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password", "size": 60}),
    )

    class Meta:
        model = AlertWebhook
        fields = ["name", "url", "secret", "enabled"]
        widgets = {"url": forms.URLInput(attrs={"size": 80})}
        help_texts = {"url": "http:// or https://; a Slack incoming webhook URL works as is."}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.instance._state.adding:
            self.fields["secret"].required = True
            self.fields["secret"].help_text = (
                "Signs every alert (X-Bifrost-Signature: HMAC-SHA256). At least 16 characters; stored encrypted "
                "and never shown again."
            )
        else:
            self.fields["secret"].help_text = "Set and never shown. Leave blank to keep it, or type a new one."
