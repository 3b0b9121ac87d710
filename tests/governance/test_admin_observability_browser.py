"""The admin's observability screens in a real browser at 1400 and 1920 px: the usage records list
(refusals visible, charts, no horizontal scroll), a usage record's page, the dashboard with its
links, and a provider's keys with the connection test against the mock upstream."""

from __future__ import annotations

import os

# Playwright's sync API runs an event loop in this thread; the ORM calls below are deliberate.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

from datetime import timedelta  # noqa: E402
from decimal import Decimal  # noqa: E402

import pytest  # noqa: E402
from django.db import connections  # noqa: E402
from django.utils import timezone  # noqa: E402

from bench import mock_upstream  # noqa: E402
from governance.models import Budget, RateLimit, UsageRecord  # noqa: E402
from governance.services import (  # noqa: E402
    customer_create,
    provider_create,
    provider_key_create,
    team_create,
    virtual_key_create,
)
from tests.browser import WIDTHS, chromium_browser, log_in, screenshots  # noqa: E402

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]
FOLDER = "admin-observability"
SECRET = "sk-mock-observability-SECRET-7731"


@pytest.fixture(scope="module")
def mock_port() -> int:
    return mock_upstream.serve_in_thread()


@pytest.fixture
def traffic(django_user_model, mock_port):
    """Two keys' requests of today and the days before: successes, upstream errors and refusals."""
    django_user_model.objects.create_superuser("root", "root@example.com", "root-password-123")
    acme = customer_create(name="Acme Corporation")
    team = team_create(
        name="Search", customer=acme, rate_limit={"request_max_limit": 60, "request_reset_duration": "1m"}
    )
    search, _ = virtual_key_create(name="search-api", team=team, budgets=[{"max_limit": 5, "reset_duration": "1d"}])
    billing, _ = virtual_key_create(name="billing-assistant-production", customer=acme)
    Budget.objects.filter(virtual_key=search).update(current_usage=Decimal("4.2"))
    openai = provider_create(name="openai", base_url=f"http://127.0.0.1:{mock_port}")
    provider_key_create(provider=openai, name="primary", value=SECRET, models=["gpt-4o", "gpt-4o-mini"])
    provider_key_create(provider=openai, name="backup", value="sk-mock-backup-0042", weight=0.5)
    provider_create(name="anthropic", base_url=f"http://127.0.0.1:{mock_port}")
    budget = Budget.objects.get(virtual_key=search)
    team_limit = RateLimit.objects.get(team=team)
    now = timezone.now()

    def add(minutes_ago: float, vk, model="gpt-4o", provider="openai", status=200, cost="0.0125", **fields):
        fields.setdefault("http_request_id", f"req-{minutes_ago:g}")
        return UsageRecord.objects.create(
            created_at=now - timedelta(minutes=minutes_ago),
            virtual_key=vk,
            team=vk.team,
            customer=vk.customer or (vk.team.customer if vk.team else None),
            provider=provider,
            model=model,
            status_code=status,
            prompt_tokens=1200 if status < 400 else 0,
            completion_tokens=350 if status < 400 else 0,
            total_tokens=1550 if status < 400 else 0,
            cost=Decimal(cost) if status < 400 else Decimal(0),
            latency_ms=840,
            reasoning_tokens=120 if model.startswith("gpt") and status < 400 else 0,
            input_cost=Decimal(cost) / 4 if status < 400 else None,
            output_cost=Decimal(cost) * 3 / 4 if status < 400 else None,
            price_source=f"catalog:{provider}/{model}" if status < 400 else None,
            **fields,
        )

    for n in range(30):
        add(
            n * 17,
            search if n % 3 else billing,
            model="gpt-4o" if n % 2 else "claude-3-5-haiku-20241022",
            provider="openai" if n % 2 else "anthropic",
            streamed=n % 4 == 0,
        )
    for day in range(1, 6):
        add(day * 24 * 60, search, cost="0.5")
    add(3, search, status=502, error_type="upstream_error", error_message="upstream provider 'openai' failed")
    add(
        5,
        search,
        status=402,
        error_type="budget_exceeded",
        error_message="Budget exceeded: VK search-api budget exceeded: $5.00 of $5.00 used",
        refused_by=f"virtual_key:budget:{budget.pk}",
        upstream_reached=False,
    )
    add(
        8,
        billing,
        status=429,
        error_type="request_limited",
        error_message="Rate limit check failed: team Search request limit exceeded (60/60 per 1m)",
        refused_by=f"team:rate_limit:{team_limit.pk}",
        upstream_reached=False,
    )
    return {"search": search, "billing": billing, "openai": openai, "budget": budget}


def hidden_columns(page) -> list[int]:
    """At each width, how many pixels of the list scroll sideways inside its box (0: every column shows)."""
    out = []
    for width in WIDTHS:
        page.set_viewport_size({"width": width, "height": 1000})
        out.append(
            page.evaluate(
                "() => { const r = document.querySelector('#changelist .results'); "
                "return r.scrollWidth - r.clientWidth; }"
            )
        )
    return out


def test_observability_screens_in_chromium(live_server, traffic):
    base = live_server.url
    with chromium_browser(FOLDER) as (browser, folder):
        context = browser.new_context(viewport={"width": 1400, "height": 1000})
        context.set_default_timeout(15_000)
        page = context.new_page()
        log_in(page, base)

        # The logs: refusals are listed with their reason, the charts sit above, nothing scrolls sideways.
        page.goto(f"{base}/admin/governance/usagerecord/")
        rows = page.locator("#result_list tbody tr")
        assert rows.count() == 38
        refused = page.locator("#result_list tbody tr", has=page.locator(".gov-badge", has_text="refused · budget"))
        assert refused.count() == 1
        assert "402 · VK budget" in refused.inner_text()
        assert page.locator("#result_list .gov-badge", has_text="refused · rate limit").count() == 1
        assert page.locator("#result_list th", has_text="COST").is_visible()
        assert page.locator("#result_list th", has_text="LATENCY").is_visible()
        assert "per day" in page.inner_text("#usage-charts .gov-chart-range")
        screenshots(page, folder, "usage-list", fits="#result_list")
        assert hidden_columns(page) == [0, 0]

        page.set_viewport_size({"width": 1400, "height": 1000})
        page.click("#changelist-filter a:text-is('Last 24 hours')")
        assert "since=24h" in page.url
        assert "per hour" in page.inner_text("#usage-charts .gov-chart-range")
        assert page.locator("#usage-charts svg").first.locator("g.bf-bar-group").count() in (24, 25)
        screenshots(page, folder, "usage-list-24h", fits="#result_list")

        page.goto(f"{base}/admin/governance/usagerecord/?outcome=refused")
        assert page.locator("#result_list tbody tr").count() == 2
        screenshots(page, folder, "usage-list-refused", fits="#result_list")
        assert hidden_columns(page) == [0, 0]

        # A refused request's page: the reason, the limit that refused (a link), the message.
        page.set_viewport_size({"width": 1400, "height": 1000})
        page.locator("#result_list tr", has_text="refused · budget").locator("th a, td a").first.click()
        detail = page.inner_text("#content")
        assert "refused · budget" in detail and "VK budget" in detail
        assert "Budget exceeded: VK search-api budget exceeded: $5.00 of $5.00 used" in detail
        budget_link = page.locator(".field-refused_by_detail a", has_text="VK budget")
        assert budget_link.get_attribute("href").endswith(f"/admin/governance/budget/{traffic['budget'].pk}/change/")
        screenshots(page, folder, "usage-detail-refused")

        success = UsageRecord.objects.filter(status_code=200, model="gpt-4o").first()
        page.goto(f"{base}/admin/governance/usagerecord/{success.pk}/change/")
        detail = page.inner_text("#content")
        assert str(success.request_id) in detail and success.http_request_id in detail
        assert "1,200 (cached: 0)" in detail and "350 (reasoning: 120)" in detail and "1,550" in detail
        assert "input $0.003125 · output $0.009375" in detail and "$0.0125 at catalog:openai/gpt-4o" in detail
        assert "<span" not in detail  # no markup shown as text
        screenshots(page, folder, "usage-detail-success")

        # The dashboard: figures, names that lead to their filtered views, the logs behind a count.
        page.set_viewport_size({"width": 1400, "height": 1000})
        page.goto(f"{base}/admin/usage-dashboard/")
        assert page.inner_text("#total-requests") == "38"
        assert page.inner_text("#total-refused") == "2" and page.inner_text("#total-errors") == "1"
        screenshots(page, folder, "dashboard", fits="#by-model")
        page.set_viewport_size({"width": 1400, "height": 1000})
        page.click("#top-virtual-keys a:text-is('search-api')")
        assert f"virtual_key={traffic['search'].pk}" in page.url
        assert "Showing only VK search-api" in page.inner_text("#narrowed-to")
        assert page.inner_text("#total-requests") == str(
            UsageRecord.objects.filter(virtual_key=traffic["search"]).count()
        )
        screenshots(page, folder, "dashboard-vk", fits="#by-model")
        page.set_viewport_size({"width": 1400, "height": 1000})
        page.click("#total-refused a")
        page.wait_for_url("**outcome=refused**")  # count() below does not wait for a navigation
        page.wait_for_load_state()
        assert "outcome=refused" in page.url
        assert page.locator("#result_list tbody tr").count() == 1  # the VK's own refusal

        # A provider's keys, and a connection test against the mock upstream.
        page.goto(f"{base}/admin/governance/provider/{traffic['openai'].pk}/change/")
        keys = page.inner_text("#provider-keys")
        assert "primary" in keys and "…7731" in keys and SECRET not in page.content()
        page.locator("#provider-keys tr", has_text="primary").locator("button", has_text="Test connection").click()
        message = page.inner_text("ul.messagelist")
        assert "Connection test of openai / primary: OK: 200," in message and "models listed in" in message
        assert SECRET not in page.content()
        screenshots(page, folder, "provider-keys", fits="#provider-keys")

        context.close()
    connections.close_all()
