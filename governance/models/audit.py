"""The audit trail of configuration writes: who changed which object, how, and when.

One row per created, changed or deleted configuration object (the models
``governance.audit.AUDITED_MODELS`` names), written by ``governance.audit`` in the transaction of
the change itself, so a rolled-back write leaves no row. Rows are never edited. Only field
*names* are kept, never values: a secret field (a key's value, an MCP client's headers) shows up
as its public name ("value", "headers") and nothing more.
"""

from __future__ import annotations

from django.contrib.contenttypes.models import ContentType
from django.db import models
from django.utils import timezone


class Via(models.TextChoices):
    ADMIN = "admin", "admin"
    API = "api", "API"
    IMPORT = "import", "config import"
    COMMAND = "command", "manage.py command"
    SYSTEM = "system", "system"


class AuditAction(models.TextChoices):
    CREATED = "created", "created"
    CHANGED = "changed", "changed"
    DELETED = "deleted", "deleted"


class AuditEntry(models.Model):
    """One write of one configuration object."""

    at = models.DateTimeField(default=timezone.now, db_index=True)
    # The user name; "manage.py <command>" for a command; "system" when nothing is known.
    user = models.CharField(max_length=255)
    # The name of the admin API token the request used, when it used one.
    api_token = models.CharField(max_length=255, blank=True, default="")
    via = models.CharField(max_length=16, choices=Via.choices)
    action = models.CharField(max_length=16, choices=AuditAction.choices)
    # SET_NULL: a content type disappears only with its model; the row keeps its name and id.
    content_type = models.ForeignKey(
        ContentType, null=True, on_delete=models.SET_NULL, related_name="+", verbose_name="object type"
    )
    object_id = models.CharField(max_length=64)
    object_repr = models.CharField("object", max_length=255)
    changed_fields = models.JSONField(default=list, blank=True)

    class Meta:
        ordering = ["-at", "-id"]
        verbose_name = "audit trail entry"
        verbose_name_plural = "audit trail entries"
        indexes = [models.Index(fields=["content_type", "object_id"], name="audit_entry_object")]

    def __str__(self) -> str:
        return f"{self.user} {self.action} {self.object_repr}"
