"""Rebuild the hot counters (Redis or the local table) from the database (``manage.py rebuild_counters``)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from governance.metering.counters import CountersUnavailable, hot_counters


class Command(BaseCommand):
    help = (
        "Invalidate every budget and rate-limit counter held in Redis or the local table; each is rebuilt from its "
        "database row (kept up to date by the ledger) on its next use. Safe at any time."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        backend = hot_counters()
        if backend is None:
            self.stdout.write("counters live in the database rows: nothing to rebuild")
            return
        try:
            epoch = backend.bump_epoch()
        except CountersUnavailable as exc:
            raise CommandError(f"the {backend.name} counters are unavailable: {exc}") from None
        self.stdout.write(
            f"{backend.name} counters invalidated (epoch {epoch}); they are rebuilt from the database on next use"
        )
