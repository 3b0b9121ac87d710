"""Alert webhooks (where budget alerts are sent): create, update, delete, and their validation.

The API and the admin share these functions. Every problem is a field error naming the field
(``name``, ``url``, ``secret``, ``enabled``), all reported at once; a name another webhook has is
an ``AlertWebhookConflict`` (a ``ValidationError`` the API answers 409). ``secret`` is
write-only: stored encrypted, never returned, and an update without it keeps the stored one.
Error messages never quote the secret, nor more of a URL than its scheme.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from django.core.exceptions import ValidationError
from django.db import transaction

from governance.models import AlertWebhook
from governance.services.validation import FieldProblems

WEBHOOK_FIELDS = ("name", "url", "secret", "enabled")
MAX_URL = 2048
SECRET_LENGTH = (16, 1024)


class AlertWebhookConflict(ValidationError):
    """The name is taken by another webhook: the API answers 409."""


def _clean_url(problems: FieldProblems, value: Any) -> str | None:
    text = problems.text("url", value, max_length=MAX_URL, blank=False)
    if text is None:
        return None
    if text != text.strip() or any(ch.isspace() or ord(ch) < 32 or ord(ch) == 127 for ch in text):
        problems.add("url", "must not contain whitespace or control characters")
        return None
    try:
        parts = urlsplit(text)
        port = parts.port  # a malformed port raises here
    except ValueError:
        problems.add("url", "is not a valid URL")
        return None
    if parts.scheme not in ("http", "https"):
        problems.add("url", "must be an http:// or https:// URL")
        return None
    if not parts.hostname:
        problems.add("url", "must name a host")
        return None
    if parts.username is not None or parts.password is not None:
        problems.add("url", "must not carry credentials (user:password@); sign with the secret instead")
        return None
    if port == 0:
        problems.add("url", "is not a valid URL")
        return None
    return text


def _clean_secret(problems: FieldProblems, value: Any) -> str | None:
    low, high = SECRET_LENGTH
    if not isinstance(value, str):
        problems.add("secret", "must be a string")
        return None
    if len(value) < low:
        problems.add("secret", f"must be at least {low} characters (a random string, e.g. from `openssl rand -hex 32`)")
        return None
    # The rest of FieldProblems.text's checks, without its blank rule (length is checked above).
    return problems.text("secret", value, max_length=high)


def clean_webhook_fields(data: dict[str, Any], *, creating: bool) -> dict[str, Any]:
    """Validate the webhook fields in ``data`` (raw JSON values); ``name``, ``url`` and ``secret``
    are required when ``creating``. Raises ``ValidationError`` naming every bad field."""
    unknown = set(data) - set(WEBHOOK_FIELDS)
    if unknown:
        raise TypeError(f"unexpected fields: {', '.join(sorted(unknown))}")
    problems = FieldProblems()
    cleaned: dict[str, Any] = {}
    if creating:
        for name in ("name", "url", "secret"):
            if name not in data:
                problems.add(name, "This field is required.")
    if "name" in data:
        cleaned["name"] = problems.text("name", data["name"], max_length=255, blank=False)
    if "url" in data:
        cleaned["url"] = _clean_url(problems, data["url"])
    if "secret" in data:
        cleaned["secret"] = _clean_secret(problems, data["secret"])
    if "enabled" in data:
        if not isinstance(data["enabled"], bool):
            problems.add("enabled", "must be true or false")
        cleaned["enabled"] = data["enabled"]
    problems.raise_if_any()
    return cleaned


def _check_unique(webhook: AlertWebhook) -> None:
    others = AlertWebhook.objects.exclude(pk=webhook.pk) if not webhook._state.adding else AlertWebhook.objects.all()
    if others.filter(name=webhook.name).exists():
        raise AlertWebhookConflict({"name": [f"an alert webhook named '{webhook.name}' already exists"]})


def _apply(webhook: AlertWebhook, fields: dict[str, Any]) -> None:
    for name, value in fields.items():
        if name == "secret":
            webhook.set_secret(value)
        else:
            setattr(webhook, name, value)


@transaction.atomic
def alert_webhook_create(**data: Any) -> AlertWebhook:
    """A new webhook from raw field values (``name``, ``url``, ``secret``; ``enabled`` default true)."""
    fields = clean_webhook_fields(data, creating=True)
    webhook = AlertWebhook()
    _apply(webhook, fields)
    _check_unique(webhook)
    webhook.save(force_insert=True)
    return webhook


@transaction.atomic
def alert_webhook_update(*, webhook: AlertWebhook, **changes: Any) -> AlertWebhook:
    """Patch: a field absent, or null, keeps its value (the secret included)."""
    given = {name: value for name, value in changes.items() if value is not None}
    fields = clean_webhook_fields(given, creating=False)
    _apply(webhook, fields)
    _check_unique(webhook)
    webhook.save()
    return webhook


@transaction.atomic
def alert_webhook_delete(*, webhook: AlertWebhook) -> None:
    """Its deliveries go with it (the alerts stay)."""
    webhook.delete()
