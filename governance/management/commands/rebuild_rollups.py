from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from governance.metering import rollups


class Command(BaseCommand):
    help = (
        "Recompute the hourly and daily usage rollups (what the dashboard, /api/logs/stats and the usage endpoint "
        "read) from the usage records, or with --check only compare them. Rollups are kept as usage is recorded; "
        "run this after restoring a ledger, or to prove the rollups exact. Rollups of days whose records "
        "purge_usage deleted are kept (their history stays on the dashboard), so rebuild with --days within the "
        "retention period."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--days", type=int, default=None, help="only the last N UTC days (default: everything)")
        parser.add_argument(
            "--check", action="store_true", help="compare with the ledger, write nothing; exit 1 on a difference"
        )

    def handle(self, *args: Any, days: int | None, check: bool, **options: Any) -> None:
        if days is not None and days < 1:
            raise CommandError("--days must be at least 1")
        since = timezone.now() - timedelta(days=days - 1) if days is not None else None
        if check:
            wrong = rollups.differences(since)
            if wrong:
                for key in wrong[:20]:
                    self.stderr.write(f"differs: {key[0]} {key[1]:%Y-%m-%d %H:00} {key[5]}/{key[6]} status {key[7]}")
                raise CommandError(f"{len(wrong)} rollup rows differ from the usage records")
            self.stdout.write("rollups match the usage records")
            return
        written = rollups.rebuild(since)
        self.stdout.write(f"rebuilt {written} rollup rows")
