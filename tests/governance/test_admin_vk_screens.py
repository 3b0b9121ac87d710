"""The virtual key screens' logic: the list's budget-use and rate-limited filters and columns, the
"no provider" flag and its rules, the add page's defaults, the provider-config key picker, the
snippets of the one-time page, and what the key's page says about its use."""

from __future__ import annotations

import re
import uuid
from datetime import timedelta
from decimal import Decimal

import pytest
from django.urls import reverse
from django.utils import timezone

from governance.limitspec import RateLimitSpec
from governance.metering import enforcement
from governance.metering.counters.base import Admission, Rejection
from governance.models import Budget, ProviderConfig, ProviderKey, RateLimit, UsageRecord, VirtualKey
from governance.pricing import seed_model_prices
from governance.selectors import (
    provider_reach,
    virtual_keys_at_budget_use,
    virtual_keys_rate_limited_now,
)
from governance.services import (
    provider_create,
    provider_key_create,
    team_create,
    virtual_key_create,
)
from tests.governance.test_admin_helpers import inline_rows, vk_body

pytestmark = pytest.mark.django_db

ADD_URL = reverse("admin:governance_virtualkey_add")
LIST_URL = reverse("admin:governance_virtualkey_changelist")
ONE_TIME_URL = reverse("admin:governance_virtualkey_one_time_value")


@pytest.fixture
def admin_client(client, alice):
    client.force_login(alice)
    return client


@pytest.fixture
def openai():
    provider = provider_create(name="openai", base_url="http://upstream.invalid")
    provider_key_create(provider=provider, name="primary", value="sk-upstream-primary-0001")
    return provider


def change_url(vk: VirtualKey) -> str:
    return reverse("admin:governance_virtualkey_change", args=[vk.pk])


def key_with_budget(name: str, used: str, *, limit: str = "10", **extra) -> VirtualKey:
    vk, _ = virtual_key_create(name=name, budgets=[{"max_limit": Decimal(limit), "reset_duration": "1d"}], **extra)
    Budget.objects.filter(virtual_key=vk).update(current_usage=Decimal(used))
    return vk


def listed(response) -> list[str]:
    assert response.status_code == 200
    return sorted(vk.name for vk in response.context["cl"].result_list)


# --- budget use ----------------------------------------------------------------------------------


def test_budget_use_selector_counts_a_key_from_the_percent_of_its_own_budget():
    key_with_budget("at-90", "9")  # exactly 90 %
    key_with_budget("below-90", "8.9999999999")
    key_with_budget("spent", "10")
    team = team_create(name="t", budgets=[{"max_limit": Decimal("1"), "reset_duration": "1d"}])
    Budget.objects.filter(team=team).update(current_usage=Decimal("1"))
    virtual_key_create(name="team-only", team=team)  # its team's budget is spent, not its own

    assert sorted(vk.name for vk in virtual_keys_at_budget_use(90)) == ["at-90", "spent"]
    assert sorted(vk.name for vk in virtual_keys_at_budget_use(100)) == ["spent"]
    assert sorted(vk.name for vk in virtual_keys_at_budget_use(50)) == ["at-90", "below-90", "spent"]


def test_budget_use_selector_ignores_usage_of_a_window_that_has_ended():
    vk = key_with_budget("yesterday", "9.5")
    Budget.objects.filter(virtual_key=vk).update(last_reset=timezone.now() - timedelta(days=2))

    assert not virtual_keys_at_budget_use(90).exists()


def test_budget_use_filter_of_the_list(admin_client):
    key_with_budget("at-92", "9.2")
    key_with_budget("at-50", "5")
    virtual_key_create(name="no-budget")

    assert listed(admin_client.get(LIST_URL, {"budget_use": "90"})) == ["at-92"]
    assert listed(admin_client.get(LIST_URL, {"budget_use": "50"})) == ["at-50", "at-92"]
    assert listed(admin_client.get(LIST_URL, {"budget_use": "100"})) == []
    # Not a percent: the list is shown unfiltered, as for any unknown choice.
    assert listed(admin_client.get(LIST_URL, {"budget_use": "lots"})) == ["at-50", "at-92", "no-budget"]


def test_percent_of_budget_column_shows_the_highest_budget_and_sorts(admin_client):
    two, _ = virtual_key_create(
        name="two-budgets",
        budgets=[
            {"max_limit": Decimal("10"), "reset_duration": "1d"},
            {"max_limit": Decimal("100"), "reset_duration": "1M"},
        ],
    )
    Budget.objects.filter(virtual_key=two, reset_duration="1d").update(current_usage=Decimal("2"))
    Budget.objects.filter(virtual_key=two, reset_duration="1M").update(current_usage=Decimal("91.5"))
    key_with_budget("almost", "9.999")
    key_with_budget("low", "1")

    first = admin_client.get(LIST_URL)
    html = first.content.decode()
    assert re.search(r'gov-pct-over">91 %<', html)  # the monthly budget, the higher of the two
    assert re.search(r'gov-pct-over">99 %<', html)  # rounded down: "100 %" only once spent
    assert re.search(r'gov-pct-ok">10 %<', html)
    column = first.context["cl"].list_display.index("budget_use")
    descending = admin_client.get(LIST_URL, {"o": f"-{column}"}).context["cl"].result_list
    assert [vk.name for vk in descending] == ["almost", "two-budgets", "low"]


def test_the_filters_show_their_counts(admin_client):
    key_with_budget("at-92", "9.2")
    key_with_budget("at-50", "5")

    response = admin_client.get(LIST_URL, {"_facets": "True"})

    html = response.content.decode()
    assert response.status_code == 200
    assert "≥ 90 % of a budget (1)" in html and "≥ 50 % of a budget (2)" in html
    assert "At its rate limit now (0)" in html


# --- rate limited ----------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["database", "local"])
def test_rate_limited_now_lists_a_key_whose_limit_admission_refuses(admin_client, settings, backend):
    settings.GOVERNANCE_COUNTERS = backend
    limits = {"request_max_limit": 2, "request_reset_duration": "1h"}
    full, _ = virtual_key_create(name="full", rate_limit=limits)
    half, _ = virtual_key_create(name="half", rate_limit=limits)
    virtual_key_create(name="unlimited")

    def admit(vk: VirtualKey) -> Admission | Rejection:
        spec = RateLimitSpec.of(RateLimit.objects.get(virtual_key=vk), "VK")
        return enforcement.admit(
            request_id=uuid.uuid4(), budgets=(), rate_limits=(spec,), estimated_cost=Decimal(0), estimated_tokens=0
        )

    assert all(isinstance(admit(full), Admission) for _ in range(2))
    assert isinstance(admit(full), Rejection)  # the counter is at its maximum: the next request is refused
    assert isinstance(admit(half), Admission)

    assert [vk.name for vk in virtual_keys_rate_limited_now()] == ["full"]
    assert listed(admin_client.get(LIST_URL, {"rate_limited": "now"})) == ["full"]
    assert listed(admin_client.get(LIST_URL, {"rate_limited": "soon"})) == ["full", "half", "unlimited"]


def test_a_used_up_token_limit_counts_and_an_ended_window_does_not():
    tokens, _ = virtual_key_create(name="tokens", rate_limit={"token_max_limit": 1000, "token_reset_duration": "1m"})
    RateLimit.objects.filter(virtual_key=tokens).update(token_current_usage=1000, token_last_reset=timezone.now())
    old, _ = virtual_key_create(name="old", rate_limit={"request_max_limit": 5, "request_reset_duration": "1m"})
    RateLimit.objects.filter(virtual_key=old).update(
        request_current_usage=5, request_last_reset=timezone.now() - timedelta(minutes=3)
    )

    assert [vk.name for vk in virtual_keys_rate_limited_now()] == ["tokens"]


# --- last used, expiry ------------------------------------------------------------------------------


def test_last_used_and_expiry_columns(admin_client):
    used, _ = virtual_key_create(name="used", expires_at=timezone.now() + timedelta(days=30))
    virtual_key_create(name="expired", expires_at=timezone.now() - timedelta(days=1))
    virtual_key_create(name="idle")
    moment = timezone.now().replace(year=2030, month=1, day=15, hour=12, minute=3)
    UsageRecord.objects.create(
        created_at=moment - timedelta(days=1), virtual_key=used, provider="o", model="m", status_code=200
    )
    UsageRecord.objects.create(created_at=moment, virtual_key=used, provider="o", model="m", status_code=200)

    response = admin_client.get(LIST_URL)
    rows = {vk.name: vk for vk in response.context["cl"].result_list}
    html = response.content.decode()
    assert rows["used"].last_used_at == moment and rows["idle"].last_used_at is None
    assert '<span class="gov-when">2030-01-15 <span>12:03 UTC</span></span>' in html
    assert ">expired</span>" in html
    assert html.count(">never<") == 2
    column = response.context["cl"].list_display.index("last_used_at")
    ordered = admin_client.get(LIST_URL, {"o": f"-{column}"}).context["cl"].result_list
    assert ordered[0].name == "used"


# --- which providers a key can call --------------------------------------------------------------


def reach(vk: VirtualKey):
    return provider_reach([vk])[vk.pk]


def test_a_key_without_configs_nor_all_providers_can_call_nothing(openai):
    vk, _ = virtual_key_create(name="k")

    found = reach(vk)
    assert found.providers == ()
    assert "no provider config" in found.problem and "allow all providers" in found.problem


def test_all_providers_needs_a_provider_with_an_enabled_key():
    vk, _ = virtual_key_create(name="k", allow_all_providers=True)
    assert "no provider has an enabled key" in reach(vk).problem

    provider = provider_create(name="openai", base_url="http://upstream.invalid")
    key = provider_key_create(provider=provider, name="off", value="sk-upstream-off-0001", enabled=False)
    assert reach(vk).providers == ()

    ProviderKey.objects.filter(pk=key.pk).update(enabled=True)
    assert [p.name for p in reach(vk).providers] == ["openai"] and reach(vk).problem == ""


def test_a_config_without_keys_nor_all_keys_allows_no_key(openai):
    vk, _ = virtual_key_create(name="k", provider_configs=[{"provider": "openai", "allowed_models": ["*"]}])

    found = reach(vk)
    assert found.providers == ()
    assert "openai: its config allows none of the provider's keys" in found.problem

    ProviderConfig.objects.filter(virtual_key=vk).update(allow_all_keys=True)
    assert [p.name for p in reach(vk).providers] == ["openai"]


def test_a_config_that_allows_no_model_or_whose_keys_are_disabled_is_unusable(openai):
    vk, _ = virtual_key_create(
        name="k", provider_configs=[{"provider": "openai", "allowed_models": [], "key_ids": ["*"]}]
    )
    assert "openai: its config allows no model" in reach(vk).problem

    ProviderConfig.objects.filter(virtual_key=vk).update(allowed_models=["*"])
    ProviderKey.objects.update(enabled=False)
    assert "openai: the provider has no enabled key" in reach(vk).problem


def test_keys_that_serve_none_of_the_allowed_models_are_unusable():
    provider = provider_create(name="openai", base_url="http://upstream.invalid")
    key = provider_key_create(provider=provider, name="mini", value="sk-upstream-mini-0001", models=["gpt-4o-mini"])
    vk, _ = virtual_key_create(
        name="k", provider_configs=[{"provider": "openai", "allowed_models": ["gpt-4o"], "key_ids": [str(key.pk)]}]
    )
    assert "none of its allowed keys serves the models the config allows" in reach(vk).problem

    ProviderConfig.objects.filter(virtual_key=vk).update(allowed_models=["gpt-4o", "gpt-4o-mini"])
    (found,) = reach(vk).providers
    assert found.models == ("gpt-4o-mini",)


def test_with_all_providers_a_config_governs_only_its_own_provider(openai):
    other = provider_create(name="anthropic", provider_type="anthropic", base_url="http://anthropic.invalid")
    provider_key_create(provider=other, name="claude", value="sk-ant-upstream-0001")
    # The config for openai allows no key; anthropic has no config and stays callable.
    vk, _ = virtual_key_create(
        name="k", allow_all_providers=True, provider_configs=[{"provider": "openai", "allowed_models": ["*"]}]
    )
    assert [p.name for p in reach(vk).providers] == ["anthropic"]

    ProviderKey.objects.filter(provider=other).delete()
    assert "no other provider has an enabled key" in reach(vk).problem


def test_the_list_flags_a_key_that_can_call_nothing_and_the_key_page_says_why(admin_client, openai):
    virtual_key_create(name="works", allow_all_providers=True)
    stuck, _ = virtual_key_create(name="stuck", provider_configs=[{"provider": "openai"}])
    virtual_key_create(name="off", is_active=False)

    html = admin_client.get(LIST_URL).content.decode()
    flags = re.findall(r'<span class="gov-badge gov-badge-(\w+)" title="([^"]*)">([^<]+)</span>', html)
    assert [(level, text) for level, _, text in flags] == [
        ("off", "inactive"),
        ("warn", "no provider"),
        ("ok", "active"),
    ]
    assert "its config allows none of the provider&#x27;s keys" in flags[1][1]
    page = admin_client.get(change_url(stuck)).content.decode()
    assert "This key can call no provider: openai: its config allows none" in page


# --- add page ---------------------------------------------------------------------------------------


def test_add_page_starts_with_one_blank_budget_and_all_providers_when_a_provider_has_a_key(admin_client, openai):
    response = admin_client.get(ADD_URL)

    assert response.status_code == 200
    formsets = {f.formset.prefix: f.formset for f in response.context["inline_admin_formsets"]}
    assert formsets["budgets"].total_form_count() == 1
    assert response.context["adminform"].form.initial["allow_all_providers"] is True
    html = response.content.decode()
    assert 'id="no-provider-notice"' not in html
    assert re.search(r'<input type="checkbox" name="allow_all_providers"[^>]* checked', html)
    # Other owners' pages keep no blank budget row.
    team_page = admin_client.get(reverse("admin:governance_team_add"))
    assert {f.formset.prefix: f.formset for f in team_page.context["inline_admin_formsets"]}[
        "budgets"
    ].total_form_count() == 0


def test_a_budget_row_left_blank_adds_no_budget(admin_client, openai):
    blank = {"max_limit": "", "reset_duration": "", "alert_thresholds": "50, 80, 100"}  # as the page sends it
    body = vk_body(name="no-budget", allow_all_providers="on") | inline_rows("budgets", [blank])

    response = admin_client.post(ADD_URL, body)

    assert response.status_code == 302 and response["Location"] == ONE_TIME_URL
    vk = VirtualKey.objects.get(name="no-budget")
    assert not vk.budgets.exists() and vk.allow_all_providers
    assert reach(vk).providers and reach(vk).problem == ""


def test_add_page_says_plainly_that_nothing_can_be_called_without_a_provider_key(admin_client):
    response = admin_client.get(ADD_URL)

    html = response.content.decode()
    assert 'id="no-provider-notice"' in html
    assert "refused on every request until a provider with an enabled key exists" in html
    assert reverse("admin:governance_provider_add") in html
    assert response.context["adminform"].form.initial["allow_all_providers"] is False


# --- provider-config key picker ----------------------------------------------------------------------


def test_a_saved_config_offers_only_its_providers_keys(admin_client, openai):
    other = provider_create(name="anthropic", provider_type="anthropic", base_url="http://anthropic.invalid")
    provider_key_create(provider=other, name="claude", value="sk-ant-upstream-0001")
    vk, _ = virtual_key_create(name="k", provider_configs=[{"provider": "openai", "key_ids": ["*"]}])

    html = admin_client.get(change_url(vk)).content.decode()

    select = re.search(r'<select name="provider_configs-0-keys".*?</select>', html, re.S).group(0)
    assert re.findall(r">([^<>]+)</option>", select) == ["openai/primary"]
    # The template row for a new config lists every key, each marked with its provider.
    template = re.search(r'<select name="provider_configs-__prefix__-keys".*?</select>', html, re.S).group(0)
    assert f'data-provider="{other.pk}"' in template and f'data-provider="{openai.pk}"' in template
    assert re.search(r'name="provider_configs-__prefix__-allow_all_keys"[^>]*checked', html)


def test_a_key_of_another_provider_is_rejected_by_name(admin_client, openai):
    other = provider_create(name="anthropic", provider_type="anthropic", base_url="http://anthropic.invalid")
    foreign = provider_key_create(provider=other, name="claude", value="sk-ant-upstream-0001")
    row = {"provider": str(openai.pk), "allowed_models": "*", "keys": [str(foreign.pk)]}

    response = admin_client.post(ADD_URL, vk_body(name="x", provider_configs=[row]))

    assert response.status_code == 200
    errors = {f.formset.prefix: f.formset for f in response.context["inline_admin_formsets"]}["provider_configs"].errors
    assert errors[0]["keys"] == ["anthropic/claude: not a key of provider 'openai'; pick its own keys"]
    assert not VirtualKey.objects.exists()


def test_all_keys_and_picked_keys_together_are_rejected(admin_client, openai):
    key = ProviderKey.objects.get(provider=openai)
    row = {"provider": str(openai.pk), "allowed_models": "*", "allow_all_keys": "on", "keys": [str(key.pk)]}

    response = admin_client.post(ADD_URL, vk_body(name="x", provider_configs=[row]))

    assert response.status_code == 200
    assert "Pick keys or tick “all keys”, not both." in response.content.decode()
    assert not VirtualKey.objects.exists()


# --- the one-time page's snippets ----------------------------------------------------------------------


def one_time_page(admin_client, **fields) -> tuple[str, str]:
    response = admin_client.post(ADD_URL, vk_body(**fields))
    assert response.status_code == 302, response.context["adminform"].form.errors if response.context else None
    html = admin_client.get(ONE_TIME_URL).content.decode()
    value = re.search(r'class="gov-secret-value" id="gov-secret-1" value="([^"]+)"', html).group(1)
    return html, value


def snippet(html: str, name: str) -> str:
    import html as html_lib

    found = re.search(rf'id="gov-snippet-1-{name}"[^>]*>(.*?)</textarea>', html, re.S)
    assert found, name
    return html_lib.unescape(found.group(1))


def test_snippets_call_this_gateway_with_the_new_value_and_a_priced_model(admin_client, openai):
    seed_model_prices()

    html, value = one_time_page(admin_client, name="snippets", allow_all_providers="on")

    openai_sdk = snippet(html, "openai")
    assert 'OpenAI(base_url="http://testserver/v1", api_key="' + value + '")' in openai_sdk
    assert 'model="openai/gpt-4o-mini"' in openai_sdk
    anthropic_sdk = snippet(html, "anthropic")
    assert 'Anthropic(base_url="http://testserver/anthropic", api_key="' + value + '")' in anthropic_sdk
    curl = snippet(html, "curl")
    assert curl.startswith("curl http://testserver/v1/chat/completions")
    assert f'-H "Authorization: Bearer {value}"' in curl
    assert '"model": "openai/gpt-4o-mini"' in curl
    assert html.count('data-copy-target="gov-snippet-1-') == 3
    # Shown once: the page read again has neither the value nor the snippets.
    again = admin_client.get(ONE_TIME_URL).content.decode()
    assert value not in again and "gov-snippet" not in again


def test_snippets_use_a_model_the_keys_config_allows_preferring_a_priced_one(admin_client, openai):
    seed_model_prices()
    anthropic = provider_create(name="claude-eu", provider_type="anthropic", base_url="http://anthropic.invalid")
    provider_key_create(provider=anthropic, name="claude", value="sk-ant-upstream-0001")
    rows = [
        {"provider": str(openai.pk), "allowed_models": "my-finetune, gpt-4o", "allow_all_keys": "on"},
        {"provider": str(anthropic.pk), "allowed_models": "*", "allow_all_keys": "on"},
    ]

    html, _ = one_time_page(admin_client, name="narrow", provider_configs=rows)

    assert 'model="openai/gpt-4o"' in snippet(html, "openai")  # priced, unlike my-finetune
    assert 'model="claude-eu/claude-3-5-haiku-latest"' in snippet(html, "anthropic")


def test_snippets_of_a_key_that_can_call_nothing_say_so(admin_client, openai):
    html, _ = one_time_page(admin_client, name="stuck")

    assert "This key can call no provider" in html and "These calls are refused until it can" in html
    assert "edit the key" in html


def test_a_rotated_key_gets_snippets_and_an_api_token_does_not(admin_client, alice, openai):
    vk, _ = virtual_key_create(name="rot", allow_all_providers=True)
    admin_client.post(reverse("admin:governance_virtualkey_rotate", args=[vk.pk]))
    assert 'id="gov-snippet-1-curl"' in admin_client.get(ONE_TIME_URL).content.decode()

    admin_client.post(reverse("admin:governance_apitoken_add"), {"name": "ci", "user": str(alice.pk)})
    assert "gov-snippet" not in admin_client.get(reverse("admin:governance_apitoken_one_time_value")).content.decode()


# --- the key's page ----------------------------------------------------------------------------------------


def test_key_page_links_to_its_usage_and_counts_its_refusals(admin_client, openai):
    vk, _ = virtual_key_create(name="k", allow_all_providers=True)
    other, _ = virtual_key_create(name="other")
    now = timezone.now()

    def record(vk: VirtualKey, hours_ago: float, error_type: str = "", status: int = 200) -> None:
        UsageRecord.objects.create(
            created_at=now - timedelta(hours=hours_ago),
            virtual_key=vk,
            provider="openai",
            model="gpt-4o",
            status_code=status,
            error_type=error_type,
        )

    record(vk, 1, "budget_exceeded", 402)
    record(vk, 2, "request_limited", 429)
    record(vk, 48, "budget_exceeded", 402)
    record(vk, 24 * 40, "budget_exceeded", 402)  # older than 30 days
    record(vk, 3, "upstream_error", 502)  # an upstream error is not a refusal
    record(vk, 0.5)
    record(other, 1, "budget_exceeded", 402)

    html = admin_client.get(change_url(vk)).content.decode()

    records = f"/admin/governance/usagerecord/?virtual_key__id__exact={vk.pk}"
    assert f'<a id="vk-refusals" href="{records}&amp;outcome=refused">' in html
    assert "<strong>2</strong> in the last 24 h, <strong>3</strong> in the last 30 days" in html
    assert f'<a id="vk-usage-records" href="{records}">' in html
    assert f'<a id="vk-dashboard" href="{reverse("governance-usage-dashboard")}?virtual_key={vk.pk}">' in html
    last = (now - timedelta(hours=0.5)).strftime("%Y-%m-%d %H:%M UTC")
    assert f'<strong id="vk-last-used">{last}</strong>' in html


def test_key_page_shows_budgets_once_exactly_with_the_calendar_start(admin_client, alice_api):
    vk, _ = virtual_key_create(
        name="k",
        budgets=[
            {"max_limit": Decimal("1000"), "reset_duration": "1M", "calendar_aligned": True},
            {"max_limit": Decimal("50"), "reset_duration": "1d"},
        ],
    )
    Budget.objects.filter(virtual_key=vk, reset_duration="1M").update(current_usage=Decimal("123.4567"))

    html = admin_client.get(change_url(vk)).content.decode()

    assert html.count("$123.4567 / $1,000.00") == 1  # exact, and in the budget inline only
    assert 'id="panel-budgets"' not in html
    month_start = timezone.now().strftime("%Y-%m-01 00:00 UTC")
    assert f"since {month_start}<br>resets " in html and "calendar month" in html
    # The API reports the same start for the calendar budget.
    budget = Budget.objects.get(virtual_key=vk, reset_duration="1M")
    api = alice_api.get("/api/governance/budgets")
    assert api.status_code == 200
    (shown,) = [b for b in api.json()["budgets"] if b["id"] == str(budget.pk)]
    assert shown["last_reset"] == timezone.now().strftime("%Y-%m-01T00:00:00Z")


def test_key_page_dates_use_the_one_format(admin_client):
    vk, _ = virtual_key_create(name="k", rate_limit={"request_max_limit": 10, "request_reset_duration": "1h"})

    html = admin_client.get(change_url(vk)).content.decode()

    created = vk.created_at.strftime("%Y-%m-%d %H:%M UTC")
    assert f'<div class="readonly">{created}</div>' in html
    assert re.search(r"since \d{4}-\d\d-\d\d \d\d:\d\d UTC<br>resets \d{4}-\d\d-\d\d \d\d:\d\d UTC", html)
    assert " p.m." not in html and " a.m." not in html
