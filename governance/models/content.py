"""Request and response bodies, stored only when content logging is on (``BIFROST_CONTENT_LOGGING``
or a virtual key's ``log_content``), for ``/api/logs``'s ``content_search``.

One row per attempt, keyed by its usage record's ``request_id`` and written in the same
transaction (``governance.metering.usage_rows``). Each body is cut at ``BIFROST_CONTENT_MAX_BYTES``
(``truncated`` says so) and kept ``BIFROST_CONTENT_RETENTION_DAYS`` (``manage.py purge_usage``).
Only bodies: no header, so neither the virtual key nor a provider key is ever stored here.
"""

from __future__ import annotations

from django.db import models


class RequestContent(models.Model):
    request_id = models.UUIDField(unique=True, help_text="The attempt's UsageRecord.request_id.")
    created_at = models.DateTimeField(db_index=True)
    request_body = models.TextField(blank=True, default="")
    response_body = models.TextField(blank=True, default="")
    truncated = models.BooleanField(default=False)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"content of {self.request_id}"
