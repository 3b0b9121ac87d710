"""The virtual key screens in a real browser at 1400 and 1920 px: the list (every column visible,
no horizontal scroll, the "no provider" flag, the two filters), the add page's defaults, the
one-time page's snippets with their copy buttons, and the key's page (budgets once with their
calendar start, the picker of its provider's keys, the links to its usage and refusals)."""

from __future__ import annotations

import os

# Playwright's sync API runs an event loop in this thread; the ORM calls below are deliberate.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

from datetime import timedelta  # noqa: E402
from decimal import Decimal  # noqa: E402

import pytest  # noqa: E402
from django.db import connections  # noqa: E402
from django.utils import timezone  # noqa: E402

from governance.keys import digest  # noqa: E402
from governance.models import Budget, RateLimit, UsageRecord, VirtualKey  # noqa: E402
from governance.services import (  # noqa: E402
    customer_create,
    provider_create,
    provider_key_create,
    team_create,
    virtual_key_create,
)
from tests.browser import chromium_browser, log_in, screenshots  # noqa: E402

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]
FOLDER = "admin-keys"
TWO_BUDGETS = [
    {"max_limit": Decimal("50"), "reset_duration": "1d"},
    {"max_limit": Decimal("1000"), "reset_duration": "1M", "calendar_aligned": True},
]
RATE = {
    "request_max_limit": 600,
    "request_reset_duration": "1m",
    "token_max_limit": 200000,
    "token_reset_duration": "1h",
}


@pytest.fixture
def keys(django_user_model):
    """Several keys with two budgets, a rate limit, a team and long names; one that can call nothing."""
    django_user_model.objects.create_superuser("root", "root@example.com", "root-password-123")
    acme = customer_create(name="Acme Corporation International")
    team = team_create(name="Search and Recommendations", customer=acme)
    openai = provider_create(name="openai", base_url="http://upstream.invalid")
    anthropic = provider_create(name="anthropic", provider_type="anthropic", base_url="http://anthropic.invalid")
    primary = provider_key_create(provider=openai, name="primary", value="sk-upstream-primary-0001")
    provider_key_create(provider=openai, name="backup", value="sk-upstream-backup-0002")
    provider_key_create(provider=anthropic, name="claude", value="sk-ant-upstream-0003")
    configs = [
        {"provider": "openai", "weight": 1, "allowed_models": ["*"], "key_ids": [str(primary.pk)]},
        {"provider": "anthropic", "allowed_models": ["*"], "key_ids": ["*"]},
    ]
    made = {}
    for name, used in (
        ("search-recommendations-production-eu-west", "46"),
        ("search-recommendations-staging", "12.5"),
        ("billing-assistant-production-long-name", "49.99"),
    ):
        vk, _ = virtual_key_create(name=name, team=team, budgets=TWO_BUDGETS, rate_limit=RATE, provider_configs=configs)
        Budget.objects.filter(virtual_key=vk, reset_duration="1d").update(current_usage=Decimal(used))
        Budget.objects.filter(virtual_key=vk, reset_duration="1M").update(current_usage=Decimal("123.4567"))
        made[name] = vk
    made["nowhere"], _ = virtual_key_create(name="orphan-key-without-providers", customer=acme)
    # A rate limit used up in its current window: 600 of 600 requests.
    limited = made["search-recommendations-staging"]
    RateLimit.objects.filter(virtual_key=limited).update(request_current_usage=600, request_last_reset=timezone.now())
    now = timezone.now()
    busy = made["search-recommendations-production-eu-west"]
    UsageRecord.objects.create(
        created_at=now - timedelta(minutes=5),
        virtual_key=busy,
        provider="openai",
        model="gpt-4o",
        status_code=200,
        cost=Decimal("0.0125"),
    )
    for hours in (1, 30):
        UsageRecord.objects.create(
            created_at=now - timedelta(hours=hours),
            virtual_key=busy,
            provider="openai",
            model="gpt-4o",
            status_code=402,
            error_type="budget_exceeded",
            upstream_reached=False,
        )
    return made


@pytest.fixture
def page():
    with chromium_browser(FOLDER) as (browser, folder):
        context = browser.new_context(viewport={"width": 1400, "height": 1000})
        context.set_default_timeout(15_000)
        yield context.new_page(), folder
        context.close()
    connections.close_all()


def scrolls_sideways(page) -> bool:
    """Whether the list's own box scrolls horizontally (columns hidden behind the filters)."""
    return page.evaluate(
        "(() => { const box = document.querySelector('.results'); return box.scrollWidth > box.clientWidth; })()"
    )


def test_list_shows_every_column_and_filters(live_server, keys, page):
    page, folder = page
    log_in(page, live_server.url)
    page.goto(f"{live_server.url}/admin/governance/virtualkey/")
    table = page.locator("#result_list")
    headers = table.locator("thead th").all_inner_texts()
    for title in ("NAME / VALUE", "STATUS", "BUDGETS", "% OF BUDGET", "RATE LIMIT", "PROVIDERS", "LAST USED", "EXPIRY"):
        assert any(title in header.upper() for header in headers), (title, headers)
    row = table.locator("tr", has_text="search-recommendations-production-eu-west")
    assert "92 %" in row.inner_text()  # $46 of the $50 daily budget
    assert "req/1m" in row.inner_text() and "tok/1h" in row.inner_text()
    assert "anthropic, openai" in row.inner_text()
    assert "UTC" in row.locator(".field-last_used_at").inner_text()
    orphan = table.locator("tr", has_text="orphan-key-without-providers")
    flag = orphan.locator(".gov-badge-warn")
    assert flag.inner_text() == "no provider"
    assert "no provider config" in flag.get_attribute("title")
    assert orphan.locator(".field-last_used_at").inner_text() == "never"
    screenshots(page, folder, "vk-list", fits="#result_list")
    for width in (1400, 1920):
        page.set_viewport_size({"width": width, "height": 1000})
        assert not scrolls_sideways(page), f"columns hidden behind the filters at {width} px"

    page.click("#changelist-filter a[href*='budget_use=90']")
    page.wait_for_url("**budget_use=90")  # all_inner_texts() below does not wait for a navigation
    page.wait_for_load_state()
    names = [text.splitlines()[0] for text in page.locator("#result_list .field-name_and_value").all_inner_texts()]
    assert sorted(names) == ["billing-assistant-production-long-name", "search-recommendations-production-eu-west"]
    page.goto(f"{live_server.url}/admin/governance/virtualkey/?rate_limited=now")
    assert page.locator("#result_list .field-name_and_value").inner_text().startswith("search-recommendations-staging")
    assert page.locator("#result_list tbody tr").count() == 1
    screenshots(page, folder, "vk-list-rate-limited", fits="#result_list")


def test_add_page_defaults_then_one_time_page_snippets(live_server, keys, page):
    page, folder = page
    log_in(page, live_server.url)
    page.goto(f"{live_server.url}/admin/governance/virtualkey/add/")
    assert page.is_checked("#id_allow_all_providers")
    assert page.locator("#budgets-group tr.form-row:not(.empty-form)").count() == 1
    assert page.locator("#no-provider-notice").count() == 0
    page.fill("#id_name", "browser-made-key")
    page.fill("#id_budgets-0-max_limit", "25")
    page.fill("#id_budgets-0-reset_duration", "1M")
    screenshots(page, folder, "vk-add")
    page.click("input[name=_save]")

    page.wait_for_selector(".gov-secret-value")
    value = page.input_value(".gov-secret-value")
    vk = VirtualKey.objects.get(name="browser-made-key")
    assert digest(value) == vk.value_digest and vk.allow_all_providers
    assert vk.budgets.get().max_limit == Decimal("25")
    openai_sdk = page.input_value("#gov-snippet-1-openai")
    assert f'base_url="{live_server.url}/v1"' in openai_sdk and f'api_key="{value}"' in openai_sdk
    assert 'model="openai/gpt-4o-mini"' in openai_sdk
    assert f'base_url="{live_server.url}/anthropic"' in page.input_value("#gov-snippet-1-anthropic")
    assert f"curl {live_server.url}/v1/chat/completions" in page.input_value("#gov-snippet-1-curl")
    page.click("button[data-copy-target='gov-snippet-1-curl']")
    page.wait_for_function(
        "document.querySelector(\"[data-copy-target='gov-snippet-1-curl']\").parentNode"
        ".querySelector('.gov-copy-status').textContent.length > 0"
    )
    screenshots(page, folder, "vk-one-time-value")
    page.reload()
    assert value not in page.content()


def test_add_page_says_plainly_when_no_provider_can_be_called(live_server, django_user_model, page):
    page, folder = page
    django_user_model.objects.create_superuser("root", "root@example.com", "root-password-123")
    log_in(page, live_server.url)
    page.goto(f"{live_server.url}/admin/governance/virtualkey/add/")
    notice = page.locator("#no-provider-notice")
    assert "refused on every request" in notice.inner_text()
    assert notice.locator("a", has_text="add a provider").get_attribute("href") == "/admin/governance/provider/add/"
    assert not page.is_checked("#id_allow_all_providers")
    screenshots(page, folder, "vk-add-no-provider")


def test_change_page_budgets_keys_and_usage_links(live_server, keys, page):
    page, folder = page
    vk = keys["search-recommendations-production-eu-west"]
    log_in(page, live_server.url)
    page.goto(f"{live_server.url}/admin/governance/virtualkey/{vk.pk}/change/")
    budgets = page.locator("#budgets-group")
    assert "$46.00 / $50.00" in budgets.inner_text() and "$123.4567 / $1,000.00" in budgets.inner_text()
    month_start = timezone.now().strftime("%Y-%m-01 00:00 UTC")
    assert f"since {month_start}\nresets " in budgets.inner_text() and "calendar month" in budgets.inner_text()
    assert page.locator("#panel-budgets").count() == 0  # no second budget table
    openai_row = page.locator("#provider_configs-group tr.form-row", has_text="primary").first
    options = openai_row.locator("select[name$='-keys'] option").all_inner_texts()
    assert options == ["openai/backup", "openai/primary"]
    refusals = page.locator("#vk-refusals")
    assert refusals.inner_text() == "1 in the last 24 h, 2 in the last 30 days"
    assert refusals.get_attribute("href") == (
        f"/admin/governance/usagerecord/?virtual_key__id__exact={vk.pk}&outcome=refused"
    )
    assert page.locator("#vk-usage-records").get_attribute("href") == (
        f"/admin/governance/usagerecord/?virtual_key__id__exact={vk.pk}"
    )
    assert page.locator("#vk-dashboard").get_attribute("href") == f"/admin/usage-dashboard/?virtual_key={vk.pk}"
    assert "UTC" in page.locator("#vk-last-used").inner_text()
    screenshots(page, folder, "vk-change")

    # A new provider row: before a provider is chosen no key is offered, then only its keys.
    page.click("#provider_configs-group .add-row a")
    new_row = page.locator("#provider_configs-group tr.form-row.dynamic-provider_configs").last
    visible = "Array.from(document.querySelectorAll('#id_provider_configs-2-keys option')).filter(o => !o.hidden)"
    assert page.evaluate(f"{visible}.length") == 0
    new_row.locator("select[name$='-provider']").select_option(label="anthropic")
    assert page.evaluate(f"{visible}.map(o => o.textContent)") == ["anthropic/claude"]
    assert new_row.locator("input[name$='-allow_all_keys']").is_checked()
