"""Replay the ledger journals no live process holds (``manage.py replay_ledger_journal``)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError
from django.db import InterfaceError, OperationalError

from governance.metering import journal, writer


class Command(BaseCommand):
    help = (
        "Write the usage rows and settle the counters journaled by gateway workers while the database was away "
        "(BIFROST_DATA_DIR/ledger-journal). Every worker does this by itself at start and every few seconds; "
        "this is for a data directory whose gateway is not running. Safe at any time: each entry counts once."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        directory = journal.directory()
        try:
            done = journal.replay_pending(directory, write_rows=writer.write_rows)
        except (OperationalError, InterfaceError) as exc:
            raise CommandError(f"the database is unavailable ({type(exc).__name__}); the journals are kept") from None
        self.stdout.write(
            f"{directory}: {done.files} journal files replayed ({done.rows} usage rows, {done.settlements} "
            f"settlements); {done.failed} entries set aside in failed/"
        )
