from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from consent.services import consent_state_purge


class Command(BaseCommand):
    help = (
        "Delete expired consent flows, expired authorization codes and expired or revoked consent "
        "sessions. Safe to run at any time (e.g. every few minutes from cron): expired rows are "
        "already refused; this only reclaims the space."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        counts = consent_state_purge()
        self.stdout.write(
            f"purged {counts['flows']} flow(s), {counts['codes']} code(s), {counts['sessions']} session(s)"
        )
