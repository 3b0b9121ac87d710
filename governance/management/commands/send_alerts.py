"""``manage.py send_alerts``: send the budget alert deliveries that are due, once, and exit.

For cron on hosts that run no gateway worker, and for tests. Gateway workers send them on their
own (``governance.metering.alert_delivery``); running both is safe: each delivery is claimed by
one sender at a time.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from governance.metering import alert_delivery


class Command(BaseCommand):
    help = "Send the budget alert webhook deliveries that are due now (retries included), then exit."

    def handle(self, *args: Any, **options: Any) -> None:
        counts = alert_delivery.drain()
        self.stdout.write(
            f"alerts: {counts['sent']} sent, {counts['pending']} failed and retried later, {counts['failed']} given up"
        )
