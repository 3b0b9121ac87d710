from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from governance.models import RequestContent, UsageRecord


class Command(BaseCommand):
    help = (
        "Delete usage records older than the retention period (BIFROST_USAGE_RETENTION_DAYS), and stored request "
        "bodies (content logging) older than BIFROST_CONTENT_RETENTION_DAYS."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--days", type=int, default=None, help="override the retention period in days")
        parser.add_argument("--batch-size", type=int, default=5000, help="rows deleted per transaction")

    def handle(self, *args: Any, days: int | None, batch_size: int, **options: Any) -> None:
        days = settings.USAGE_RETENTION_DAYS if days is None else days
        if days < 1:
            raise CommandError("--days must be at least 1")
        if batch_size < 1:
            raise CommandError("--batch-size must be at least 1")
        cutoff = timezone.now() - timedelta(days=days)
        total = 0
        # Small batches keep each delete transaction short on a busy ledger table.
        while True:
            ids = list(UsageRecord.objects.filter(created_at__lt=cutoff).values_list("pk", flat=True)[:batch_size])
            if not ids:
                break
            total += UsageRecord.objects.filter(pk__in=ids).delete()[0]
        self.stdout.write(f"deleted {total} usage records older than {days} days")
        content_cutoff = timezone.now() - timedelta(days=settings.CONTENT_RETENTION_DAYS)
        bodies = RequestContent.objects.filter(created_at__lt=content_cutoff).delete()[0]
        self.stdout.write(f"deleted {bodies} stored request bodies older than {settings.CONTENT_RETENTION_DAYS} days")
