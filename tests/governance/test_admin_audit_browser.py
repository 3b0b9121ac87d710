"""The audit trail's admin list in a real browser: who, how, what and when, links, filters, widths."""

from __future__ import annotations

import os

# Playwright's sync API runs an event loop in this thread; the ORM calls below are deliberate.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

import pytest  # noqa: E402
import requests  # noqa: E402
from django.db import connections  # noqa: E402
from django.urls import reverse  # noqa: E402

from governance import audit  # noqa: E402
from governance.models import AuditEntry, Team, Via  # noqa: E402
from governance.services import api_token_create, team_create, team_delete, virtual_key_create  # noqa: E402
from tests.browser import WIDTHS, chromium_browser, log_in, screenshots  # noqa: E402

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def assert_table_fits(page) -> None:
    """At each width, the list fits the changelist's own box too (it scrolls there, hiding columns)."""
    for width in WIDTHS:
        page.set_viewport_size({"width": width, "height": 1000})
        hidden = page.evaluate(
            "() => { const box = document.querySelector('#changelist .results');"
            " return box.scrollWidth - box.clientWidth; }"
        )
        assert hidden <= 0, f"the audit list scrolls sideways by {hidden} px at {width} px"
        assert page.locator("#result_list th.column-changed").is_visible()


@pytest.fixture
def history(live_server, django_user_model):
    """Writes through the API (with a named token), the import, a command and a deleted team."""
    root = django_user_model.objects.create_superuser("root", "root@example.com", "root-password-123")
    token = api_token_create(user=root, name="terraform")[1]
    headers = {"Authorization": f"Bearer {token}"}
    provider = {"provider": "openai", "network_config": {"base_url": "http://127.0.0.1:9/v1"}}
    assert requests.post(f"{live_server.url}/api/providers", json=provider, headers=headers, timeout=10).ok
    key = {"name": "primary", "value": "sk-live-secret-0000aaaa", "models": ["*"]}
    created = requests.post(f"{live_server.url}/api/providers/openai/keys", json=key, headers=headers, timeout=10)
    assert created.ok, created.text
    key_url = f"{live_server.url}/api/providers/openai/keys/{created.json()['key']['id']}"
    assert requests.put(key_url, json={"value": "sk-live-secret-1111bbbb"}, headers=headers, timeout=10).ok
    with audit.acting_as(via=Via.IMPORT, user="manage.py import_bifrost_config"):
        team = team_create(name="Search team")
        virtual_key_create(
            name="search-api-production-key", team=team, budgets=[{"max_limit": 25, "reset_duration": "1M"}]
        )
    with audit.acting_as(via=Via.COMMAND, user="manage.py shell"):
        team_delete(team=team_create(name="Short-lived team"))
    return team


def test_audit_list_shows_who_changed_what_with_links_and_fits_at_1400(live_server, history):
    with chromium_browser("admin-audit") as (browser, folder):
        context = browser.new_context(viewport={"width": 1400, "height": 1000})
        context.set_default_timeout(15_000)
        page = context.new_page()
        log_in(page, live_server.url)
        page.goto(f"{live_server.url}/admin/")
        page.get_by_role("link", name="Audit trail entries").click()
        assert page.locator("#content h1").inner_text() == "Audit trail"
        page.wait_for_selector("#result_list")

        rows = page.locator("#result_list tbody tr")
        assert rows.count() == AuditEntry.objects.count() == 9  # the token, 3 API, 3 import, 2 command
        first = rows.nth(0).inner_text()
        assert "manage.py shell" in first and "deleted" in first and "Short-lived team" in first
        assert "(no longer exists)" in first
        newest = AuditEntry.objects.first()
        assert newest is not None
        assert rows.nth(0).locator("th.field-when").inner_text() == f"{newest.at:%Y-%m-%d %H:%M} UTC"

        key_row = page.locator("#result_list tbody tr", has_text="changed").filter(has_text="openai/primary")
        assert key_row.count() == 1
        assert key_row.locator("td.field-who").inner_text().splitlines() == ["root", "API · token “terraform”"]
        assert key_row.locator("td.field-changed").inner_text().split() == ["value", "secret"]
        assert "sk-live-secret" not in page.content()

        team_link = page.locator("#result_list td.field-object_link a", has_text="Search team")
        assert team_link.get_attribute("href") == reverse("admin:governance_team_change", args=[history.pk])
        budget_row = page.locator("#result_list tbody tr", has_text="on virtual key search-api-production-key")
        assert "$25.00 / 1M on virtual key search-api-production-key" in budget_row.inner_text()
        assert "config import" in budget_row.inner_text()
        assert_table_fits(page)
        screenshots(page, folder, "audit-list", fits="#result_list")

        page.get_by_role("link", name="API", exact=True).click()
        page.wait_for_selector("#result_list")
        assert page.locator("#result_list tbody tr").count() == 3
        assert "Search team" not in page.locator("#result_list").inner_text()
        assert_table_fits(page)
        screenshots(page, folder, "audit-list-api", fits="#result_list")

        page.goto(f"{live_server.url}{reverse('admin:governance_auditentry_changelist')}?q=search")
        assert page.locator("#result_list tbody tr").count() == 3  # the team, the key, its budget
        team_link = page.locator("#result_list td.field-object_link a", has_text="Search team")
        team_link.click()
        page.wait_for_selector("#content h1")
        assert page.url.endswith(reverse("admin:governance_team_change", args=[history.pk]))
        assert Team.objects.filter(pk=history.pk).exists()
        context.close()
    connections.close_all()
