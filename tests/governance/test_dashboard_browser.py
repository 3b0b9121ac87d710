"""The usage dashboard in a real browser: charts and bars render, filters apply, CSV downloads."""

from __future__ import annotations

import os

# Playwright's sync API runs an event loop in this thread; the ORM calls below are deliberate.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

from datetime import timedelta  # noqa: E402
from decimal import Decimal  # noqa: E402

import pytest  # noqa: E402
from django.db import connections  # noqa: E402
from django.utils import timezone  # noqa: E402

from governance.models import Budget, UsageRecord  # noqa: E402
from governance.services import team_create, virtual_key_create  # noqa: E402
from tests.browser import chromium_browser  # noqa: E402

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def traffic(django_user_model):
    django_user_model.objects.create_superuser("root", "root@example.com", "root-password-123")
    team = team_create(name="Search")
    vk, _ = virtual_key_create(name="search-api", team=team, budgets=[{"max_limit": 5, "reset_duration": "1d"}])
    Budget.objects.filter(virtual_key=vk).update(current_usage=Decimal("4.2"))
    now = timezone.now()
    for day in range(10):
        UsageRecord.objects.create(
            created_at=now - timedelta(days=day),
            virtual_key=vk,
            team=team,
            provider="openai",
            model="gpt-4o",
            status_code=200,
            prompt_tokens=100 * day,
            completion_tokens=50,
            total_tokens=100 * day + 50,
            cost=Decimal("0.25") * (day + 1),
        )
    return vk


def test_dashboard_renders_charts_bars_and_filters_in_chromium(live_server, traffic):
    with chromium_browser("dashboard") as (browser, folder):
        context = browser.new_context(viewport={"width": 1280, "height": 1000}, accept_downloads=True)
        context.set_default_timeout(15_000)
        page = context.new_page()
        page.goto(f"{live_server.url}/admin/login/?next=/admin/")
        page.fill("#id_username", "root")
        page.fill("#id_password", "root-password-123")
        page.click("input[type=submit]")
        page.click("text=Usage dashboard")
        assert page.locator("#total-spend").inner_text() == "$13.75"
        assert page.locator("#total-requests").inner_text() == "10"
        assert page.locator("svg.bf-chart").count() == 3  # requests, spend, tokens
        assert page.locator("svg.bf-chart rect").count() >= 30
        bar = page.locator("#budget-bars .bf-bar span")
        assert "bf-warn" in bar.get_attribute("class")  # 4.20 of 5.00: amber between 70 % and 90 %
        page.screenshot(path=str(folder / "dashboard.png"), full_page=True)
        start = (timezone.now() - timedelta(days=2)).date().isoformat()
        page.fill("#id_start", start)
        page.click("input[value=Apply]")
        assert page.locator("#total-requests").inner_text() == "3"
        page.screenshot(path=str(folder / "dashboard-filtered.png"), full_page=True)
        with page.expect_download() as download:
            page.click("text=Export CSV")
        lines = open(download.value.path()).read().strip().splitlines()
        assert len(lines) == 1 + 3 and lines[0].startswith("created_at,request_id")
        context.close()
    connections.close_all()
