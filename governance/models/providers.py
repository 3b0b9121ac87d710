"""Upstream providers, their keys, per-VK provider configs and model prices."""

from __future__ import annotations

import re
import uuid

from django.core.exceptions import ValidationError
from django.core.validators import MinValueValidator, RegexValidator
from django.db import models
from django.db.models import JSONField, Q

from governance import crypto
from governance.keys import mask_secret
from governance.models.limits import DecimalShape
from governance.provider_types import (
    ProviderType,
    azure_key_config_problem,
    base_url_problem,
    default_base_url,
    wire_format,
)

PROVIDER_NAME_RE = r"^[a-z0-9][a-z0-9._-]{0,62}$"
PRICE: DecimalShape = {"max_digits": 24, "decimal_places": 15}


def validate_model_list(value: object) -> None:
    """``["*"]`` = all, ``[]`` = none, otherwise distinct non-empty names; ``*`` stands alone."""
    if not isinstance(value, list) or not all(isinstance(item, str) and item.strip() for item in value):
        raise ValidationError("must be a list of non-empty strings")
    if "*" in value and len(value) > 1:
        raise ValidationError("'*' cannot be combined with other entries")
    if len(set(value)) != len(value):
        raise ValidationError("duplicate entries are not allowed")


# RFC 9110 token characters: anything else (spaces, colons, control characters) is refused.
HEADER_NAME_RE = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,128}")
MAX_HEADER_VALUE = 4096
# Extra headers that frame the message or manage the connection (hop-by-hop, RFC 9110 section
# 7.6.1): a second Host, Content-Length or Transfer-Encoding would let the upstream read the
# request differently from how the gateway sent it.
FRAMING_HEADERS = frozenset(
    {
        "host",
        "content-length",
        "transfer-encoding",
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "upgrade",
    }
)
# Extra headers the gateway sets itself on every upstream call: the provider key's credential
# (keys belong in provider keys, encrypted and write-only; extra headers are stored and shown in
# clear), the JSON body's type, and identity encoding (usage is read from the answer).
GATEWAY_HEADERS = frozenset(
    {"authorization", "x-api-key", "api-key", "x-goog-api-key", "content-type", "accept-encoding"}
)
RESERVED_EXTRA_HEADERS = FRAMING_HEADERS | GATEWAY_HEADERS


def extra_header_problem(name: object, value: object) -> str | None:
    """Why ``name: value`` may not be a provider's extra header, or None when it may.

    The one rule for the provider API, the admin form and the config import (all three reach it
    through ``Provider.clean``; the API and the import also call it directly, to name the path).
    """
    if not isinstance(name, str) or not HEADER_NAME_RE.fullmatch(name):
        return f"invalid header name {str(name)[:128]!r}"
    if not isinstance(value, str):
        return f"the value of header {name!r} must be a string"
    if any(ch in value for ch in "\r\n\x00"):
        return f"invalid value for header {name!r}: no line breaks or NUL"
    if len(value) > MAX_HEADER_VALUE:
        return f"the value of header {name!r} is longer than {MAX_HEADER_VALUE} characters"
    if name.lower() in FRAMING_HEADERS:
        return f"header {name!r} is not allowed: it frames the message or manages the connection"
    if name.lower() in GATEWAY_HEADERS:
        return f"header {name!r} is not allowed: the gateway sets it on every upstream call"
    return None


def validate_extra_headers(value: object) -> None:
    if not isinstance(value, dict):
        raise ValidationError("must be an object of header name to string value")
    for name, header_value in value.items():
        problem = extra_header_problem(name, header_value)
        if problem:
            raise ValidationError(problem)


class Provider(models.Model):
    """An upstream API the proxy forwards to; its type (``governance.provider_types``) says which
    wire format it speaks and where it lives by default."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(
        max_length=63,
        unique=True,
        validators=[RegexValidator(PROVIDER_NAME_RE, "lower-case letters, digits, '.', '_' or '-' (no '/')")],
    )
    provider_type = models.CharField(max_length=16, choices=ProviderType.choices, default=ProviderType.OPENAI)
    # Blank = the type's default URL (``provider_types.TYPES``); Azure keys carry their own endpoint.
    base_url = models.URLField(max_length=500, blank=True)
    timeout_seconds = models.FloatField(default=60.0, validators=[MinValueValidator(0.1)])
    extra_headers = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        constraints = [models.CheckConstraint(condition=Q(timeout_seconds__gt=0), name="provider_timeout_positive")]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        super().clean()
        try:
            validate_extra_headers(self.extra_headers)
        except ValidationError as exc:
            raise ValidationError({"extra_headers": exc.messages}) from None
        problem = base_url_problem(self.provider_type, self.base_url)
        if problem:
            raise ValidationError({"base_url": problem})

    @property
    def wire_format(self) -> str:
        return wire_format(self.provider_type)

    @property
    def effective_base_url(self) -> str:
        return (self.base_url or default_base_url(self.provider_type)).rstrip("/")


class ProviderKey(models.Model):
    """An upstream API key. The value is encrypted at rest and never returned by any API."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    provider = models.ForeignKey(Provider, on_delete=models.CASCADE, related_name="keys")
    name = models.CharField(max_length=255)
    value_encrypted = models.TextField(editable=False)
    value_last4 = models.CharField(max_length=4, editable=False, default="")
    # Named like Bifrost's field; it shadows ``django.db.models`` below this line in the class body.
    weight = models.FloatField(default=1.0, validators=[MinValueValidator(0.0)])
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    models = JSONField(default=list, blank=True, validators=[validate_model_list])
    # Azure OpenAI only: ``{"endpoint", "api_version", "deployments": {model: deployment}}``.
    azure_key_config = JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["provider__name", "name"]
        constraints = [
            models.UniqueConstraint(fields=["provider", "name"], name="provider_key_unique_name"),
            models.CheckConstraint(condition=Q(weight__gte=0), name="provider_key_weight_non_negative"),
        ]

    def __str__(self) -> str:
        return f"{self.provider_id and self.provider.name}/{self.name}"

    def clean(self) -> None:
        super().clean()
        is_azure = self.provider_id is not None and self.provider.provider_type == ProviderType.AZURE
        if is_azure:
            problem = azure_key_config_problem(self.azure_key_config)
            if problem:
                field, message = problem
                raise ValidationError({"azure_key_config": f"{field}: {message}" if field else message})
        elif self.azure_key_config:
            raise ValidationError({"azure_key_config": "is only for keys of a provider of type 'azure'"})

    def set_value(self, value: str) -> None:
        self.value_encrypted = crypto.encrypt(value)
        self.value_last4 = value[-4:]

    @property
    def value(self) -> str:
        return crypto.decrypt(self.value_encrypted)

    @property
    def masked_value(self) -> str:
        return mask_secret(self.value_last4)

    def allows_model(self, model: str) -> bool:
        # An empty list on a provider key means "no restriction" (Bifrost's behaviour for keys).
        return not self.models or "*" in self.models or model in self.models


class ProviderConfig(models.Model):
    """What one virtual key may do with one provider: weight, models, keys, own limits."""

    virtual_key = models.ForeignKey("governance.VirtualKey", on_delete=models.CASCADE, related_name="provider_configs")
    provider = models.ForeignKey(Provider, on_delete=models.CASCADE, related_name="virtual_key_configs")
    weight = models.FloatField(null=True, blank=True, validators=[MinValueValidator(0.0)])
    allowed_models = models.JSONField(default=list, blank=True, validators=[validate_model_list])
    allow_all_keys = models.BooleanField(default=False)
    keys = models.ManyToManyField(ProviderKey, blank=True, related_name="virtual_key_configs")

    class Meta:
        ordering = ["id"]
        verbose_name = "VK provider config"
        constraints = [
            models.UniqueConstraint(fields=["virtual_key", "provider"], name="provider_config_unique_provider"),
            models.CheckConstraint(
                condition=Q(weight__isnull=True) | Q(weight__gte=0), name="provider_config_weight_non_negative"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.provider_id and self.provider.name}"

    def allows_model(self, model: str) -> bool:
        return "*" in self.allowed_models or model in self.allowed_models


class ModelPrice(models.Model):
    """USD per token for one provider/model; seeded for common models, editable in the admin."""

    provider = models.CharField(max_length=63)
    model = models.CharField(max_length=255)
    input_cost_per_token = models.DecimalField(**PRICE, validators=[MinValueValidator(0)])
    output_cost_per_token = models.DecimalField(**PRICE, validators=[MinValueValidator(0)])
    cached_input_cost_per_token = models.DecimalField(**PRICE, null=True, blank=True, validators=[MinValueValidator(0)])
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["provider", "model"]
        constraints = [models.UniqueConstraint(fields=["provider", "model"], name="model_price_unique")]

    def __str__(self) -> str:
        return f"{self.provider}/{self.model}"
