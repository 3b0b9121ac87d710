"""Budget alerts: thresholds crossed on settle are recorded exactly once per window (threads and
processes included), then delivered to webhooks, signed, retried while the receiver is down."""

from __future__ import annotations

import hashlib
import hmac
import http.server
import json
import logging
import multiprocessing
import socket
import threading
import time
from datetime import timedelta
from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError
from django.core.management import call_command
from django.db import ProgrammingError, connections
from django.utils import timezone

from governance.metering import alert_delivery, alerts
from governance.models import AlertDelivery, AlertWebhook, Budget, BudgetAlert, UsageRecord
from governance.services import alert_webhook_create, alert_webhook_update, team_create
from governance.services.limits import budget_reset_usage
from tests.governance.conftest_counters import T0, admit, anchor_windows, path_specs, run_concurrently, settle

pytestmark = pytest.mark.django_db(transaction=True)

SECRET = "test-signing-secret-0123456789"
ONE_DOLLAR_A_DAY = {"budgets": [{"max_limit": "1", "reset_duration": "1d"}]}


@pytest.fixture(autouse=True)
def fresh_process_memory():
    alerts.forget_known()
    yield
    alerts.forget_known()


def spend(vk, cost: str, *, now=T0) -> None:
    admission = admit(path_specs(vk), cost="0.01", now=now)
    assert settle(admission, cost=cost, vk=vk, now=now)


def crossed(budget=None) -> list[int]:
    rows = BudgetAlert.objects.all() if budget is None else BudgetAlert.objects.filter(budget=budget)
    return sorted(rows.values_list("threshold", flat=True))


# --- detection ------------------------------------------------------------------------------------


def test_each_threshold_is_recorded_once_when_usage_reaches_it(counter_mode, make_vk):
    vk = make_vk(**ONE_DOLLAR_A_DAY)
    anchor_windows()
    budget = Budget.objects.get()

    spend(vk, "0.3")
    assert crossed() == []
    spend(vk, "0.25")  # 0.55
    assert crossed() == [50]
    spend(vk, "0.01")  # still past 50 only: nothing new
    assert crossed() == [50]
    spend(vk, "0.44")  # 1.00: 80 and 100 at once
    assert crossed() == [50, 80, 100]

    first = BudgetAlert.objects.get(threshold=50)
    assert (first.spend, first.limit, first.window_start, first.crossed_at) == (
        Decimal("0.55"),
        Decimal("1"),
        T0,
        T0,
    )
    assert first.budget_id == budget.pk
    assert UsageRecord.objects.count() == 4  # the ledger's own writes are untouched


def test_deliveries_are_made_for_each_enabled_webhook(make_vk):
    on = alert_webhook_create(name="on", url="http://127.0.0.1:9/a", secret=SECRET)
    off = alert_webhook_create(name="off", url="http://127.0.0.1:9/b", secret=SECRET, enabled=False)
    vk = make_vk(budgets=[{"max_limit": "1", "reset_duration": "1d", "alert_thresholds": [50]}])
    anchor_windows()

    spend(vk, "0.6")

    delivery = AlertDelivery.objects.get()
    assert delivery.webhook_id == on.pk != off.pk
    assert delivery.status == "pending" and delivery.attempts == 0
    assert delivery.next_attempt_at <= timezone.now()


def test_no_thresholds_no_alerts(make_vk):
    vk = make_vk(budgets=[{"max_limit": "1", "reset_duration": "1d", "alert_thresholds": []}])
    anchor_windows()
    spend(vk, "0.99")
    assert crossed() == []


def test_a_new_window_and_a_manual_reset_alert_again(make_vk):
    vk = make_vk(budgets=[{"max_limit": "1", "reset_duration": "1d", "alert_thresholds": [50]}])
    anchor_windows()
    budget = Budget.objects.get()

    spend(vk, "0.6")
    spend(vk, "0.1", now=T0 + timedelta(days=1, hours=1))  # the new window restarts from 0
    assert crossed() == [50]
    spend(vk, "0.5", now=T0 + timedelta(days=1, hours=2))  # 0.6 in the second window
    windows = sorted(BudgetAlert.objects.values_list("window_start", flat=True))
    assert windows == [T0, T0 + timedelta(days=1)]

    reset_at = T0 + timedelta(days=1, hours=3)
    budget_reset_usage(budget=budget, now=reset_at)
    spend(vk, "0.7", now=reset_at + timedelta(minutes=1))
    assert crossed() == [50, 50, 50]
    assert BudgetAlert.objects.filter(window_start=reset_at).count() == 1


def test_a_threshold_added_when_usage_is_already_past_it_alerts_on_the_next_settle(make_vk):
    vk = make_vk(budgets=[{"max_limit": "1", "reset_duration": "1d", "alert_thresholds": [90]}])
    anchor_windows()
    spend(vk, "0.6")
    assert crossed() == []
    Budget.objects.update(alert_thresholds=[50, 90])
    spend(vk, "0.01")
    assert crossed() == [50]


def test_every_level_of_the_path_alerts_on_its_own_budget(make_vk):
    team = team_create(name="core", budgets=[{"max_limit": "2", "reset_duration": "1d"}])
    vk = make_vk(team=team, **ONE_DOLLAR_A_DAY)
    anchor_windows()
    spend(vk, "1")
    assert crossed(Budget.objects.get(virtual_key=vk)) == [50, 80, 100]
    assert crossed(Budget.objects.get(team=team)) == [50]


def test_the_insert_is_exactly_once_even_when_every_process_forgets(make_vk):
    """Other processes know nothing of this one's alerts: the unique constraint decides."""
    vk = make_vk(**ONE_DOLLAR_A_DAY)
    anchor_windows()
    spend(vk, "0.9")
    alert_webhook_create(name="ops", url="http://127.0.0.1:9/a", secret=SECRET)
    for _ in range(3):
        alerts.forget_known()
        spend(vk, "0.01")
    assert crossed() == [50, 80]
    assert AlertDelivery.objects.count() == 0  # the alerts were recorded before the webhook existed


def test_a_failing_alert_insert_never_costs_the_ledger_its_write(make_vk, monkeypatch, caplog):
    def broken(candidates, now):
        raise ProgrammingError("boom")

    monkeypatch.setattr(alerts, "_record", broken)
    vk = make_vk(**ONE_DOLLAR_A_DAY)
    anchor_windows()
    spend(vk, "0.9")
    assert Budget.objects.get().current_usage == Decimal("0.9")
    assert UsageRecord.objects.count() == 1 and crossed() == []
    assert "budget alert not recorded" in caplog.text


def test_concurrent_settles_record_each_threshold_once(counter_mode, make_vk):
    alert_webhook_create(name="a", url="http://127.0.0.1:9/a", secret=SECRET)
    alert_webhook_create(name="b", url="http://127.0.0.1:9/b", secret=SECRET)
    vk = make_vk(budgets=[{"max_limit": "10", "reset_duration": "1d"}])
    anchor_windows()
    specs = path_specs(vk)

    def request(i: int) -> None:
        if i % 5 == 0:
            alerts.forget_known()  # as if each came from a fresh process
        admission = admit(specs, cost="0.1")
        assert settle(admission, cost="0.25", vk=vk)

    run_concurrently(request, 40, threads=8)

    assert Budget.objects.get().current_usage == Decimal("10")
    assert crossed() == [50, 80, 100]
    assert AlertDelivery.objects.count() == 6


def _settle_in_child(vk_id, specs, count: int, queue) -> None:
    from governance.models import VirtualKey

    connections.close_all()
    alerts.forget_known()
    vk = VirtualKey.objects.get(pk=vk_id)
    for _ in range(count):
        admission = admit(specs, cost="0.1")
        settle(admission, cost="0.25", vk=vk)
    connections.close_all()
    queue.put(count)


@pytest.mark.slow
def test_four_processes_settling_one_budget_record_each_threshold_once(make_vk):
    alert_webhook_create(name="ops", url="http://127.0.0.1:9/a", secret=SECRET)
    vk = make_vk(budgets=[{"max_limit": "10", "reset_duration": "1d"}])
    anchor_windows()
    specs = path_specs(vk)
    connections.close_all()  # the children must not share this process's connection
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    children = [context.Process(target=_settle_in_child, args=(vk.pk, specs, 10, queue)) for _ in range(4)]

    for child in children:
        child.start()
    assert sum(queue.get(timeout=60) for _ in children) == 40
    for child in children:
        child.join(10)

    assert all(child.exitcode == 0 for child in children)
    assert Budget.objects.get().current_usage == Decimal("10")
    assert crossed() == [50, 80, 100]
    assert AlertDelivery.objects.count() == 3


# --- delivery -------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Receiver:
    """A local webhook receiver: records every POST; answers ``status`` (after ``delay`` seconds)."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or _free_port()
        self.received: list[dict] = []
        self.status = 200
        self.delay = 0.0
        self.server: http.server.ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/budget"

    def start(self) -> Receiver:
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers["Content-Length"]))
                time.sleep(receiver.delay)
                receiver.received.append({"path": self.path, "headers": dict(self.headers), "body": body})
                self.send_response(receiver.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None


@pytest.fixture
def receiver():
    server = Receiver().start()
    yield server
    server.stop()


def verified(secret: str, request: dict) -> dict:
    """The body, after checking the signature as a receiver would (README's recipe)."""
    timestamp = request["headers"]["X-Bifrost-Timestamp"]
    expected = hmac.new(secret.encode(), timestamp.encode() + b"." + request["body"], hashlib.sha256).hexdigest()
    assert hmac.compare_digest(request["headers"]["X-Bifrost-Signature"], f"sha256={expected}")
    assert abs(time.time() - int(timestamp)) < 60
    return json.loads(request["body"])


def alert_for(make_vk, url: str, *, thresholds=(50,), cost="0.6"):
    webhook = alert_webhook_create(name="ops", url=url, secret=SECRET)
    vk = make_vk(
        name="billing-svc", budgets=[{"max_limit": "1", "reset_duration": "1d", "alert_thresholds": list(thresholds)}]
    )
    anchor_windows()
    spend(vk, cost)
    return webhook, vk


def test_a_delivery_is_posted_signed_with_the_documented_body(make_vk, receiver):
    webhook, vk = alert_for(make_vk, receiver.url)

    assert alert_delivery.run_once() == {"sent": 1, "pending": 0, "failed": 0}

    [request] = receiver.received
    assert request["path"] == "/hooks/budget"
    assert request["headers"]["Content-Type"] == "application/json"
    body = verified(SECRET, request)
    budget, alert = Budget.objects.get(), BudgetAlert.objects.get()
    assert body == {
        "type": "budget.threshold_crossed",
        "alert_id": alert.pk,
        "budget_id": str(budget.pk),
        "owner": {"type": "virtual_key", "id": str(vk.pk), "name": "billing-svc"},
        "threshold_percent": 50,
        "spend": 0.6,
        "limit": 1.0,
        "window": {
            "reset_duration": "1d",
            "calendar_aligned": False,
            "start": "2030-01-15T12:00:00Z",
            "resets_at": "2030-01-16T12:00:00Z",
        },
        "crossed_at": "2030-01-15T12:00:00Z",
        "text": body["text"],
    }
    assert "virtual key 'billing-svc'" in body["text"] and "50%" in body["text"] and "$0.60 of $1.00" in body["text"]
    delivery = AlertDelivery.objects.get()
    assert (delivery.status, delivery.attempts, delivery.response_status) == ("sent", 1, 200)
    assert delivery.sent_at is not None and delivery.claimed_until is None
    assert alert_delivery.run_once() == {"sent": 0, "pending": 0, "failed": 0}  # sent once
    assert len(receiver.received) == 1


def test_a_receiver_that_is_down_then_up_gets_the_alert_once(make_vk, monkeypatch, caplog):
    caplog.set_level(logging.DEBUG)
    monkeypatch.setattr(alert_delivery, "FIRST_DELAY_SECONDS", 1)
    down = Receiver()  # its port has no listener yet: connection refused
    alert_for(make_vk, down.url)

    assert alert_delivery.run_once() == {"sent": 0, "pending": 1, "failed": 0}
    delivery = AlertDelivery.objects.get()
    assert delivery.attempts == 1 and delivery.status == "pending" and "refused" in delivery.last_error
    assert delivery.next_attempt_at > timezone.now()
    assert alert_delivery.run_once() == {"sent": 0, "pending": 0, "failed": 0}  # not due yet

    time.sleep(1.1)
    assert alert_delivery.run_once() == {"sent": 0, "pending": 1, "failed": 0}  # still down: 2 s now
    assert AlertDelivery.objects.get().attempts == 2
    down.start()
    try:
        time.sleep(2.1)
        assert alert_delivery.run_once() == {"sent": 1, "pending": 0, "failed": 0}
        assert alert_delivery.run_once() == {"sent": 0, "pending": 0, "failed": 0}
        assert len(down.received) == 1
        verified(SECRET, down.received[0])
    finally:
        down.stop()
    delivery = AlertDelivery.objects.get()
    assert (delivery.status, delivery.attempts, delivery.last_error) == ("sent", 3, "")
    assert SECRET not in caplog.text and "/hooks/budget" not in caplog.text
    assert "budget alert not delivered; retrying" in caplog.text


def test_the_sender_thread_retries_until_the_receiver_comes_up(make_vk, monkeypatch):
    monkeypatch.setattr(alert_delivery, "FIRST_DELAY_SECONDS", 0.2)
    monkeypatch.setattr(alert_delivery, "POLL_SECONDS", 0.1)
    down = Receiver()
    alert_for(make_vk, down.url)
    alert_delivery.start()
    try:
        deadline = time.monotonic() + 10
        while AlertDelivery.objects.get().attempts < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert AlertDelivery.objects.get().status == "pending"
        down.start()
        while AlertDelivery.objects.get().status != "sent" and time.monotonic() < deadline:
            time.sleep(0.05)
        assert AlertDelivery.objects.get().status == "sent"
        assert len(down.received) == 1
    finally:
        alert_delivery.stop()
        if alert_delivery._thread is not None:
            alert_delivery._thread.join(10)
        down.stop()
        connections.close_all()


def test_an_error_status_is_retried_and_given_up_after_a_day(make_vk, receiver):
    receiver.status = 500
    alert_for(make_vk, receiver.url)

    assert alert_delivery.run_once() == {"sent": 0, "pending": 1, "failed": 0}
    delivery = AlertDelivery.objects.get()
    assert (delivery.response_status, delivery.last_error) == (500, "HTTP 500")
    AlertDelivery.objects.update(
        next_attempt_at=timezone.now(), created_at=timezone.now() - alert_delivery.GIVE_UP_AFTER
    )
    assert alert_delivery.run_once() == {"sent": 0, "pending": 0, "failed": 1}
    assert AlertDelivery.objects.get().status == "failed"
    assert alert_delivery.run_once() == {"sent": 0, "pending": 0, "failed": 0}


def test_a_redirect_is_not_followed(make_vk, receiver):
    receiver.status = 302
    alert_for(make_vk, receiver.url)
    assert alert_delivery.run_once()["pending"] == 1
    assert AlertDelivery.objects.get().response_status == 302


def test_a_webhook_disabled_after_the_alert_is_given_up(make_vk, receiver):
    webhook, _ = alert_for(make_vk, receiver.url)
    alert_webhook_update(webhook=webhook, enabled=False)
    assert alert_delivery.run_once()["failed"] == 1
    assert receiver.received == [] and AlertDelivery.objects.get().last_error == "webhook disabled"


def test_two_senders_never_send_one_delivery_twice(make_vk, receiver):
    receiver.delay = 0.1
    alert_for(make_vk, receiver.url, thresholds=(10, 20, 30, 40, 50, 60), cost="0.7")
    assert AlertDelivery.objects.count() == 6

    results = run_concurrently(lambda i: alert_delivery.run_once(), 4, threads=4)

    assert sum(r["sent"] for r in results) == 6
    ids = [json.loads(r["body"])["alert_id"] for r in receiver.received]
    assert sorted(ids) == sorted(BudgetAlert.objects.values_list("pk", flat=True))


def test_a_claim_held_elsewhere_is_left_alone_until_it_expires(make_vk, receiver):
    alert_for(make_vk, receiver.url)
    AlertDelivery.objects.update(claimed_until=timezone.now() + timedelta(seconds=30))
    assert alert_delivery.run_once() == {"sent": 0, "pending": 0, "failed": 0}
    AlertDelivery.objects.update(claimed_until=timezone.now() - timedelta(seconds=1))  # its sender died
    assert alert_delivery.run_once()["sent"] == 1


def test_send_alerts_command_drains_what_is_due(make_vk, receiver, capsys):
    alert_for(make_vk, receiver.url, thresholds=(50, 80), cost="0.9")
    call_command("send_alerts")
    assert "2 sent, 0 failed and retried later, 0 given up" in capsys.readouterr().out
    assert len(receiver.received) == 2


def test_a_wrong_secret_does_not_verify(make_vk, receiver):
    alert_for(make_vk, receiver.url)
    alert_delivery.run_once()
    with pytest.raises(AssertionError):
        verified("some-other-secret-value", receiver.received[0])
    assert AlertWebhook.objects.get().secret == SECRET


# --- the admin and the config import ---------------------------------------------------------------


def test_the_admin_adds_a_webhook_never_shows_its_secret_and_lists_what_was_sent(alice, client, make_vk, receiver):
    client.force_login(alice)
    response = client.post(
        "/admin/governance/alertwebhook/add/",
        {"name": "ops", "url": receiver.url, "secret": SECRET, "enabled": "on"},
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    webhook = AlertWebhook.objects.get()
    assert webhook.secret == SECRET
    page = client.get(f"/admin/governance/alertwebhook/{webhook.pk}/change/").content.decode()
    assert SECRET not in page and webhook.secret_encrypted not in page

    # Blank on a change keeps the secret.
    response = client.post(
        f"/admin/governance/alertwebhook/{webhook.pk}/change/", {"name": "ops", "url": receiver.url, "secret": ""}
    )
    assert response.status_code == 302
    webhook.refresh_from_db()
    assert webhook.secret == SECRET and webhook.enabled is False

    alert_webhook_update(webhook=webhook, enabled=True)
    vk = make_vk(name="billing-svc", budgets=[{"max_limit": "1", "reset_duration": "1d", "alert_thresholds": [50]}])
    anchor_windows()
    spend(vk, "0.6")
    alert_delivery.run_once()
    alerts_page = client.get("/admin/governance/budgetalert/").content.decode()
    assert "billing-svc" in alerts_page and "50%" in alerts_page and "sent" in alerts_page
    deliveries_page = client.get("/admin/governance/alertdelivery/").content.decode()
    assert "ops" in deliveries_page and "sent" in deliveries_page
    assert SECRET not in alerts_page + deliveries_page
    assert client.get("/admin/governance/alertdelivery/add/").status_code == 403


def test_the_admin_refuses_a_short_secret_and_a_bad_url(alice, client):
    client.force_login(alice)
    response = client.post(
        "/admin/governance/alertwebhook/add/", {"name": "ops", "url": "ftp://x.example.com/", "secret": "short"}
    )
    assert response.status_code == 200
    assert "http:// or https://" in response.content.decode() or "at least 16" in response.content.decode()
    assert not AlertWebhook.objects.exists()


def test_the_budget_inline_reads_and_writes_thresholds():
    from governance.forms import ThresholdListField

    field = ThresholdListField()
    assert field.clean("50, 80%, 100") == [50, 80, 100]
    assert field.clean("") == []
    assert field.prepare_value([50, 80]) == "50, 80"
    for bad, message in (("50, x", "whole percents"), ("0", "from 1 to 100"), ("50, 50", "duplicate")):
        with pytest.raises(ValidationError, match=message):
            field.clean(bad)


def test_the_config_import_takes_thresholds_and_names_a_bad_list():
    from governance.config_import import ConfigError, import_config

    def config(thresholds):
        budget = {"id": "b1", "max_limit": 10, "reset_duration": "1d", "customer_id": "c1"}
        if thresholds is not ...:
            budget["alert_thresholds"] = thresholds
        return {"governance": {"budgets": [budget], "customers": [{"id": "c1", "name": "acme"}]}}

    import_config(config([90, 40]))
    assert Budget.objects.get().alert_thresholds == [40, 90]
    import_config(config(...))  # left out: kept
    assert Budget.objects.get().alert_thresholds == [40, 90]
    with pytest.raises(ConfigError) as raised:
        import_config(config([150]))
    assert raised.value.problems[0][0] == "governance.budgets[0].alert_thresholds"
    assert Budget.objects.get().alert_thresholds == [40, 90]
