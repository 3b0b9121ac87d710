"""Rebuild the Redis hot counters from the database (``manage.py rebuild_counters``)."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from governance.counters import CountersUnavailable, redis_counters


class Command(BaseCommand):
    help = (
        "Invalidate every budget and rate-limit counter held in Redis; each is rebuilt from its "
        "database row (kept up to date by the ledger) on its next use. Safe at any time."
    )

    def handle(self, *args, **options) -> None:
        backend = redis_counters()
        if backend is None:
            self.stdout.write("counters live in the database (no REDIS_URL): nothing to rebuild")
            return
        try:
            epoch = backend.bump_epoch()
        except CountersUnavailable as exc:
            raise CommandError(f"Redis is unreachable: {exc}") from None
        self.stdout.write(f"Redis counters invalidated (epoch {epoch}); they are rebuilt from the database on next use")
