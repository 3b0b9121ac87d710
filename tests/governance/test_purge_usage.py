from __future__ import annotations

from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from governance.models import UsageRecord

pytestmark = pytest.mark.django_db


def record(age_days: float) -> UsageRecord:
    return UsageRecord.objects.create(
        created_at=timezone.now() - timedelta(days=age_days), provider="openai", model="gpt-4o", status_code=200
    )


def test_purge_deletes_only_records_older_than_retention(settings):
    settings.USAGE_RETENTION_DAYS = 30
    old = [record(31), record(400)]
    recent = record(29)
    out = StringIO()
    call_command("purge_usage", "--batch-size", "1", stdout=out)
    assert list(UsageRecord.objects.all()) == [recent]
    assert f"deleted {len(old)} usage records older than 30 days" in out.getvalue()


def test_purge_rejects_a_zero_retention():
    with pytest.raises(CommandError, match="--days must be at least 1"):
        call_command("purge_usage", "--days", "0")
