"""Sending budget alerts: pending ``AlertDelivery`` rows POSTed to their webhooks, retried with back-off.

One thread per gateway process (``start``, from gunicorn's ``post_worker_init`` as the lease
reaper; ``manage.py send_alerts`` runs one pass for cron and tests). Each pass:

1. lists the due deliveries (``status = pending AND next_attempt_at <= now``: one indexed query,
   which is all a pass costs when nothing is due);
2. claims each with one conditional UPDATE that sets ``claimed_until`` only if no one holds an
   unexpired claim. The database decides between processes and hosts (PostgreSQL re-checks the
   condition on the locked row; SQLite writers are serialised), so one delivery is never sent by
   two at once. A process that dies mid-send leaves a claim that expires after ``CLAIM_SECONDS``
   (far above the ``TIMEOUT_SECONDS`` a send may take), and the delivery is sent again then:
   receivers de-duplicate on ``alert_id``;
3. POSTs the JSON body (:func:`payload`) with ``X-Bifrost-Timestamp`` and ``X-Bifrost-Signature:
   sha256=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>``; a 2xx answer is ``sent``;
   anything else (connection refused, timeout, another status, a redirect, which is not followed)
   is retried after 5 s, 10 s, 20 s … at most ``MAX_DELAY_SECONDS`` apart, and given up
   (``failed``) once the next try would fall more than ``GIVE_UP_AFTER`` after the delivery was
   created. Each outcome is written only while the claim is still this process's.

Between passes the thread sleeps ``POLL_SECONDS``, or less: a process that commits a delivery
wakes its own thread (``alerts.delivery_due``). A delivery to a webhook disabled since the alert
is given up at its next pass.

Secrets: the webhook's secret is only used to sign; ``last_error`` and the log lines name the
webhook and the error's kind, never the URL (a Slack incoming-webhook URL is a credential) or
the secret.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from django.db import InterfaceError, OperationalError, connection
from django.db.models import F, Q
from django.utils import timezone

from governance.durations import window_end, window_start
from governance.metering.alerts import delivery_due
from governance.metering.sqlite_lock import write_transaction
from governance.models import AlertDelivery, Budget, BudgetAlert, DeliveryStatus
from governance.models.limits import OWNER_FIELDS

logger = logging.getLogger("bifrost.alerts")

TIMEOUT_SECONDS = 5
CLAIM_SECONDS = 60
POLL_SECONDS = 5.0
BATCH = 50
FIRST_DELAY_SECONDS = 5
MAX_DELAY_SECONDS = 600
GIVE_UP_AFTER = timedelta(hours=24)
SIGNATURE_HEADER = "X-Bifrost-Signature"
TIMESTAMP_HEADER = "X-Bifrost-Timestamp"
EVENT_TYPE = "budget.threshold_crossed"
OWNER_LABELS = {
    "virtual_key": "virtual key",
    "provider_config": "provider config",
    "team": "team",
    "customer": "customer",
    "model_config": "model",
    "provider": "provider",
}
# Only the kind of a failure is kept: exceptions of other kinds may quote the URL.
_QUOTABLE = (urllib.error.URLError, TimeoutError, ConnectionError)


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The ``X-Bifrost-Signature`` value of ``body`` sent at ``timestamp``."""
    mac = hmac.new(secret.encode("utf-8"), timestamp.encode("ascii") + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def retry_delay(attempts: int) -> int:
    """Seconds before the next try after ``attempts`` failed ones: 5, 10, 20 … capped."""
    return min(FIRST_DELAY_SECONDS * 2 ** min(attempts - 1, 20), MAX_DELAY_SECONDS)


# --- the body -----------------------------------------------------------------------------------


def _owner(budget: Budget) -> dict[str, Any]:
    for kind in OWNER_FIELDS:
        owner_id = getattr(budget, f"{kind}_id")
        if owner_id is None:
            continue
        owner = getattr(budget, kind)
        if kind == "provider_config":
            name = f"{owner.virtual_key.name}/{owner.provider.name}"
        elif kind == "model_config":
            name = owner.label
        else:
            name = owner.name
        return {"type": kind, "id": str(owner_id), "name": name}
    return {"type": None, "id": None, "name": None}


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def _dollars(amount: Decimal) -> str:
    """Cents, or up to six decimals for amounts under a cent (small test budgets)."""
    if amount == 0 or abs(amount) >= Decimal("0.01"):
        return f"{amount.quantize(Decimal('0.01')):f}"
    return f"{amount.quantize(Decimal('0.000001')).normalize():f}"


def _slack_escape(text: str) -> str:
    # Slack's mrkdwn treats &, < and > as control characters.
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def payload(alert: BudgetAlert) -> dict[str, Any]:
    """The JSON body of an alert (the same for every webhook and every try)."""
    budget = alert.budget
    start = window_start(budget.reset_duration, alert.window_start, alert.crossed_at, budget.calendar_aligned)
    resets_at = window_end(budget.reset_duration, start, budget.calendar_aligned)
    owner = _owner(budget)
    label = OWNER_LABELS.get(owner["type"] or "", "budget owner")
    text = (
        f"Budget alert: {label} '{_slack_escape(owner['name'] or '?')}' has reached {alert.threshold}% of its "
        f"{budget.reset_duration} budget: ${_dollars(alert.spend)} of ${_dollars(alert.limit)} "
        f"(window resets {_iso(resets_at)})."
    )
    return {
        "type": EVENT_TYPE,
        "alert_id": alert.pk,
        "budget_id": str(budget.pk),
        "owner": owner,
        "threshold_percent": alert.threshold,
        "spend": float(alert.spend),
        "limit": float(alert.limit),
        "window": {
            "reset_duration": budget.reset_duration,
            "calendar_aligned": budget.calendar_aligned,
            "start": _iso(start),
            "resets_at": _iso(resets_at),
        },
        "crossed_at": _iso(alert.crossed_at),
        "text": text,
    }


# --- one pass -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    sent: bool
    response_status: int | None
    error: str


def _post(url: str, secret: str, body: bytes) -> Outcome:
    timestamp = str(int(time.time()))
    request = urllib.request.Request(  # noqa: S310 - the URL is validated as http(s) when saved
        url,
        data=body,
        method="POST",
        headers={
            "Content-Type": "application/json",
            "User-Agent": "bifrost-gateway-alerts/1",
            TIMESTAMP_HEADER: timestamp,
            SIGNATURE_HEADER: sign(secret, timestamp, body),
        },
    )
    try:
        with _opener.open(request, timeout=TIMEOUT_SECONDS) as response:
            response.read(65536)
            status = response.status
    except urllib.error.HTTPError as exc:
        exc.close()
        return Outcome(False, exc.code, f"HTTP {exc.code}")
    except _QUOTABLE as exc:
        reason = getattr(exc, "reason", None) or exc
        return Outcome(False, None, f"{type(exc).__name__}: {str(reason)[:200]}")
    except (OSError, ValueError) as exc:
        return Outcome(False, None, type(exc).__name__)
    if 200 <= status < 300:
        return Outcome(True, status, "")
    return Outcome(False, status, f"HTTP {status}")


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A redirect is an answer that is not 2xx: not followed (it would turn the POST into a GET)."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_opener = urllib.request.build_opener(_NoRedirects())


def _due(now: datetime) -> Q:
    return Q(status=DeliveryStatus.PENDING, next_attempt_at__lte=now) & (
        Q(claimed_until__isnull=True) | Q(claimed_until__lt=now)
    )


def _claim(pk: int, now: datetime) -> datetime | None:
    """Claim one delivery for this process: its claim's expiry (the token), or None if taken."""
    until = now + timedelta(seconds=CLAIM_SECONDS)
    with write_transaction():
        claimed = AlertDelivery.objects.filter(_due(now), pk=pk).update(claimed_until=until)
    return until if claimed else None


def _finish(pk: int, token: datetime, **fields: Any) -> None:
    with write_transaction():
        AlertDelivery.objects.filter(pk=pk, claimed_until=token).update(
            claimed_until=None, attempts=F("attempts") + 1, **fields
        )


def _deliver(pk: int, token: datetime) -> str:
    delivery = AlertDelivery.objects.select_related(
        "webhook",
        "alert__budget__virtual_key",
        "alert__budget__team",
        "alert__budget__customer",
        "alert__budget__provider",
        "alert__budget__model_config__provider",
        "alert__budget__provider_config__virtual_key",
        "alert__budget__provider_config__provider",
    ).get(pk=pk)
    webhook = delivery.webhook
    if not webhook.enabled:
        _finish(pk, token, status=DeliveryStatus.FAILED, last_error="webhook disabled", next_attempt_at=timezone.now())
        return DeliveryStatus.FAILED
    try:
        body = json.dumps(payload(delivery.alert), separators=(",", ":")).encode("utf-8")
        secret = webhook.secret
    except Exception as exc:  # noqa: BLE001 - counted as a failed try, so that it is given up in time
        logger.exception("budget alert body not built", extra={"delivery_id": pk, "webhook": webhook.name})
        outcome = Outcome(False, None, f"not sent: {type(exc).__name__}")
    else:
        outcome = _post(webhook.url, secret, body)
    now = timezone.now()
    attempts = delivery.attempts + 1
    if outcome.sent:
        _finish(
            pk,
            token,
            status=DeliveryStatus.SENT,
            sent_at=now,
            response_status=outcome.response_status,
            last_error="",
        )
        logger.info(
            "budget alert sent",
            extra={"delivery_id": pk, "webhook": webhook.name, "attempts": attempts, "alert_id": delivery.alert_id},
        )
        return DeliveryStatus.SENT
    delay = retry_delay(attempts)
    next_attempt = now + timedelta(seconds=delay)
    status = DeliveryStatus.FAILED if next_attempt > delivery.created_at + GIVE_UP_AFTER else DeliveryStatus.PENDING
    _finish(
        pk,
        token,
        status=status,
        next_attempt_at=next_attempt,
        response_status=outcome.response_status,
        last_error=outcome.error[:300],
    )
    logger.warning(
        "budget alert not delivered; retrying" if status == DeliveryStatus.PENDING else "budget alert given up",
        extra={
            "delivery_id": pk,
            "webhook": webhook.name,
            "attempts": attempts,
            "error": outcome.error,
            "retry_in_seconds": delay if status == DeliveryStatus.PENDING else None,
        },
    )
    return status


def run_once(*, limit: int = BATCH) -> dict[str, int]:
    """Send the deliveries due now that this process can claim (at most ``limit``); counts by
    outcome (``sent``, ``pending``: failed and retried later, ``failed``: given up)."""
    now = timezone.now()
    ids = list(
        AlertDelivery.objects.filter(_due(now)).order_by("next_attempt_at", "pk").values_list("pk", flat=True)[:limit]
    )
    counts = {"sent": 0, "pending": 0, "failed": 0}
    for pk in ids:
        token = _claim(pk, now)
        if token is None:
            continue  # another process has it
        counts[_deliver(pk, token)] += 1
    return counts


def drain(*, max_passes: int = 100) -> dict[str, int]:
    """Passes until nothing due is left to claim (``manage.py send_alerts``)."""
    total = {"sent": 0, "pending": 0, "failed": 0}
    for _ in range(max_passes):
        counts = run_once()
        for key, value in counts.items():
            total[key] += value
        if sum(counts.values()) < BATCH:
            break
    return total


# --- the thread ---------------------------------------------------------------------------------

_lock = threading.Lock()
_thread: threading.Thread | None = None
_stop = threading.Event()


def start() -> None:
    """Start this process's sender thread (once per process; gunicorn's ``post_worker_init``)."""
    global _thread
    with _lock:
        if _thread is not None and _thread.is_alive():
            return
        _stop.clear()
        _thread = threading.Thread(target=_loop, name="bifrost-alerts", daemon=True)
        _thread.start()


def stop() -> None:
    """At exit: stop after the send in progress (claims left behind expire)."""
    _stop.set()
    delivery_due.set()


def _loop() -> None:
    outage = False
    while not _stop.is_set():
        delivery_due.clear()
        try:
            while sum(run_once().values()) >= BATCH and not _stop.is_set():
                pass
        except (OperationalError, InterfaceError) as exc:
            if not outage:
                logger.warning("alert sender waiting for the database", extra={"error": type(exc).__name__})
            outage = True
            connection.close()
        except Exception:  # noqa: BLE001 - the thread must outlive any one failure; retried next poll
            logger.exception("alert sender pass failed")
            connection.close()
        else:
            outage = False
        delivery_due.wait(POLL_SECONDS)
