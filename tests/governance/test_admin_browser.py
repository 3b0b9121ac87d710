"""A real browser: log in, create a virtual key, see its value once with a copy button."""

from __future__ import annotations

import os
import re

import pytest
from django.db import connections

# Playwright's sync API runs an event loop in this thread; Django refuses ORM calls from a thread
# with a running loop unless told that this is deliberate.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

from django.utils import timezone  # noqa: E402

from governance.keys import digest  # noqa: E402
from governance.models import UsageRecord, VirtualKey  # noqa: E402
from tests.browser import ARTIFACTS as ALL_ARTIFACTS  # noqa: E402
from tests.browser import chromium_browser  # noqa: E402

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]
ARTIFACTS = ALL_ARTIFACTS / "admin"


@pytest.fixture
def page():
    with chromium_browser("admin") as (browser, _):
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        context.set_default_timeout(15_000)
        yield context.new_page()
        context.close()
        # ORM calls made while Playwright's loop runs get their own connection (Django keys
        # connections by async context); close it here, or PostgreSQL refuses to drop the test
        # database at the end of the session.
        connections.close_all()


def test_superuser_creates_a_key_and_sees_its_value_once(page, live_server, django_user_model):
    django_user_model.objects.create_superuser("root", "root@example.com", "root-password-123")

    page.goto(f"{live_server.url}/admin/login/?next=/admin/")
    page.fill("#id_username", "root")
    page.fill("#id_password", "root-password-123")
    page.click("input[type=submit]")
    page.wait_for_selector("#site-name")

    page.goto(f"{live_server.url}/admin/governance/virtualkey/add/")
    page.fill("#id_name", "browser-key")
    # The add page starts with one budget row.
    page.fill("#id_budgets-0-max_limit", "25")
    page.fill("#id_budgets-0-reset_duration", "1M")
    page.screenshot(path=str(ARTIFACTS / "vk-add.png"), full_page=True)
    page.click("input[name=_save]")

    page.wait_for_selector(".gov-secret-value")
    assert "will not be shown again" in page.inner_text(".gov-secret-warning")
    value = page.input_value(".gov-secret-value")
    assert re.fullmatch(r"sk-bf-[0-9a-f-]{36}", value)
    vk = VirtualKey.objects.get(name="browser-key")
    assert digest(value) == vk.value_digest
    page.click("button.gov-copy")
    page.wait_for_function("document.querySelector('.gov-copy-status').textContent.length > 0")
    page.screenshot(path=str(ARTIFACTS / "vk-one-time-value.png"), full_page=True)

    page.reload()
    assert page.locator(".gov-secret-value").count() == 0
    assert value not in page.content()

    page.goto(f"{live_server.url}/admin/governance/virtualkey/")
    assert f"sk-bf-…{vk.value_last4}" in page.inner_text("#result_list")
    assert page.locator(".gov-bar-fill.gov-ok").count() == 1
    page.screenshot(path=str(ARTIFACTS / "vk-list.png"), full_page=True)

    UsageRecord.objects.create(
        created_at=timezone.now(), virtual_key=vk, provider="openai", model="gpt-4o", status_code=200, total_tokens=30
    )
    page.goto(f"{live_server.url}/admin/governance/usagerecord/")
    assert page.locator("#usage-charts svg.bf-chart").count() == 2  # requests and spend
    assert "browser-key" in page.inner_text("#result_list")
    page.screenshot(path=str(ARTIFACTS / "usage-list.png"), full_page=True)
    page.goto(f"{live_server.url}/admin/governance/virtualkey/{vk.pk}/change/")
    page.screenshot(path=str(ARTIFACTS / "vk-change.png"), full_page=True)
