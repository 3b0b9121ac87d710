"""The admin index as a control room: headline figures from the ledger and the live counters,
each linking to the filtered list behind it; keys first in the Governance section."""

from __future__ import annotations

import os

os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")  # the browser test's ORM calls are deliberate

from datetime import timedelta  # noqa: E402
from decimal import Decimal  # noqa: E402

import pytest  # noqa: E402
from django.db import connections  # noqa: E402
from django.utils import timezone  # noqa: E402

from governance.dashboard.charts import money  # noqa: E402
from governance.models import Budget, UsageRecord  # noqa: E402
from governance.services import virtual_key_create  # noqa: E402
from tests.browser import chromium_browser, log_in, screenshots  # noqa: E402
from tests.governance.conftest_counters import admit, path_specs  # noqa: E402


def spent_since(moment) -> Decimal:
    return sum((record.cost for record in UsageRecord.objects.filter(created_at__gte=moment)), Decimal("0"))


def ledger(vk, now, **fields):
    defaults = {"provider": "openai", "model": "gpt-4o-mini", "status_code": 200, "total_tokens": 30}
    return UsageRecord.objects.create(created_at=now, virtual_key=vk, **{**defaults, **fields})


@pytest.fixture
def traffic(db):
    now = timezone.now()
    busy, _ = virtual_key_create(name="busy-app", budgets=[{"max_limit": "10", "reset_duration": "1M"}])
    Budget.objects.filter(virtual_key=busy).update(current_usage=Decimal("9.5"))  # 95 %
    limited, _ = virtual_key_create(
        name="chatty-bot", rate_limit={"request_max_limit": 1, "request_reset_duration": "1h"}
    )
    admit(path_specs(limited), now=now)  # its one request this hour is taken
    calm, _ = virtual_key_create(name="calm-svc", budgets=[{"max_limit": "10", "reset_duration": "1M"}])
    for minutes, extra in [
        (5, {"cost": Decimal("0.25"), "latency_ms": 100}),
        (10, {"cost": Decimal("0.50"), "latency_ms": 300}),
        (20, {"status_code": 502, "error_type": "upstream_error", "latency_ms": 200}),
        (30, {"status_code": 402, "error_type": "budget_exceeded", "refused_by": "virtual_key:budget:x"}),
        (40, {"priced": False, "model": "mystery-model"}),
    ]:
        ledger(calm, now - timedelta(minutes=minutes), **extra)
    ledger(calm, now - timedelta(hours=3), cost=Decimal("1.00"))  # today, but not the last hour
    return {"busy": busy, "limited": limited, "calm": calm, "now": now}


def tiles_of(content: str) -> dict[str, str]:
    import re

    found = re.findall(
        r'id="tile-([a-z-]+)" href="([^"]+)">\s*<span class="bf-tile-label">[^<]*</span>\s*'
        r'<span class="bf-tile-value">([^<]*)</span>',
        content,
    )
    return {name: (href.replace("&amp;", "&"), value) for name, href, value in found}


def test_the_index_shows_the_headline_figures_each_linking_to_its_list(admin_client, traffic):
    content = admin_client.get("/admin/").content.decode()
    tiles = tiles_of(content)
    today = traffic["now"].date().isoformat()

    # Near midnight (or a month's end) some of the traffic was yesterday's: what the UTC day and
    # month hold, in the one money format of the admin.
    since_midnight = traffic["now"].replace(hour=0, minute=0, second=0, microsecond=0)
    assert tiles["spend-today"] == (
        f"/admin/usage-dashboard/?start={today}&end={today}",
        money(spent_since(since_midnight)),
    )
    assert tiles["spend-month"][1] == money(spent_since(since_midnight.replace(day=1)))
    assert spent_since(traffic["now"] - timedelta(days=40)) == Decimal("1.75")
    assert tiles["requests-hour"] == ("/admin/governance/usagerecord/?since=1h", "5")
    assert tiles["errors-hour"] == ("/admin/governance/usagerecord/?since=1h&outcome=error", "20 %")
    assert tiles["refused-hour"] == ("/admin/governance/usagerecord/?since=1h&outcome=refused", "1")
    assert tiles["keys-near-budget"] == ("/admin/governance/virtualkey/?budget_use=90", "1")
    assert tiles["keys-rate-limited"] == ("/admin/governance/virtualkey/?rate_limited=now", "1")
    assert tiles["unpriced"] == ("/admin/governance/usagerecord/?priced__exact=0&since=24h", "1")
    assert "View site" not in content  # the gateway has no public site to view


def test_each_link_lands_on_a_list_of_exactly_the_rows_the_figure_counts(admin_client, traffic):
    tiles = tiles_of(admin_client.get("/admin/").content.decode())
    keys = admin_client.get(tiles["keys-near-budget"][0]).content.decode()
    assert "busy-app" in keys and "calm-svc" not in keys and "chatty-bot" not in keys
    limited = admin_client.get(tiles["keys-rate-limited"][0]).content.decode()
    assert "chatty-bot" in limited and "busy-app" not in limited
    errors = admin_client.get(tiles["errors-hour"][0])
    assert errors.status_code == 200
    assert [r.status_code for r in errors.context["cl"].result_list] == [502]
    refused = admin_client.get(tiles["refused-hour"][0])
    assert [r.status_code for r in refused.context["cl"].result_list] == [402]
    unpriced = admin_client.get(tiles["unpriced"][0])
    assert [r.model for r in unpriced.context["cl"].result_list] == ["mystery-model"]


def test_virtual_keys_come_first_in_the_governance_section(admin_client, db):
    apps = admin_client.get("/admin/").context["app_list"]
    governance = next(app for app in apps if app["app_label"] == "governance")
    assert [m["object_name"] for m in governance["models"][:4]] == ["VirtualKey", "Team", "Customer", "Provider"]


def test_a_user_without_the_ledger_permission_sees_no_figures(client, django_user_model, db):
    user = django_user_model.objects.create_user("viewer", password="viewer-password-123", is_staff=True)
    client.force_login(user)
    response = client.get("/admin/")
    assert response.status_code == 200
    assert 'id="bf-control-room"' not in response.content.decode()


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_the_control_room_in_chromium(live_server, traffic, django_user_model):
    django_user_model.objects.create_superuser("root", "root@example.com", "root-password-123")
    with chromium_browser("admin-index") as (browser, folder):
        context = browser.new_context(viewport={"width": 1400, "height": 1000})
        context.set_default_timeout(15_000)
        page = context.new_page()
        log_in(page, live_server.url)
        assert page.locator(".bf-tile").count() == 8
        assert page.inner_text("#tile-keys-near-budget .bf-tile-value") == "1"
        assert page.inner_text("#tile-errors-hour .bf-tile-note") == "1 failed upstream or here"
        # Model names in the app list never wrap: each link is one line high.
        heights = page.eval_on_selector_all(
            "#content-main .module th a", "links => links.map(a => a.getClientRects().length)"
        )
        assert heights and set(heights) == {1}
        screenshots(page, folder, "index", fits="#content-main")
        page.click("#tile-keys-near-budget")
        page.wait_for_selector("#result_list")
        assert "busy-app" in page.inner_text("#result_list")
        context.close()
    connections.close_all()
