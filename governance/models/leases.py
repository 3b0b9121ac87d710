"""Leases of reservations held in the database counters (``governance.metering.counters.leases``)."""

from __future__ import annotations

from django.db import models


class CounterLease(models.Model):
    """A reservation that a database-counter admission holds in the Budget/RateLimit rows.

    Written in the admission's own transaction and deleted in its settle's, so a row exists exactly
    while the reservation is in the rows. ``owner`` names the gateway process that holds it; while
    that process lives it renews ``expires_at``. When the owner is dead (its lease file on this
    host is unlocked, or ``expires_at`` has passed), the lease reaper settles the reservation and
    deletes the row (see ``governance.metering.reaper``). ``payload`` holds what that takes: the counters,
    the windows the reservation was made in, the estimates and the request's ledger fields.
    The id orders leases against a hot counter's rebuild from the rows (``lease_watermark``).
    """

    id = models.BigAutoField(primary_key=True)
    request_id = models.UUIDField(unique=True)
    owner = models.CharField(max_length=200, db_index=True)
    expires_at = models.DateTimeField(db_index=True)
    payload = models.TextField()

    def __str__(self) -> str:
        return f"lease {self.request_id} held by {self.owner}"
