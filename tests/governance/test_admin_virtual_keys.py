"""The virtual key admin: create with one-time value, exclusive attachment, inlines, actions."""

from __future__ import annotations

import re
from datetime import timedelta
from decimal import Decimal

import pytest
from django.contrib.admin.models import LogEntry
from django.urls import reverse
from django.utils import timezone

from governance.keys import digest
from governance.models import Budget, ProviderConfig, RateLimit, VirtualKey
from governance.services import (
    customer_create,
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
VALUE_RE = re.compile(r"sk-bf-[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[0-9a-f]{4}-[0-9a-f]{12}")


@pytest.fixture
def admin_client(client, alice):
    client.force_login(alice)
    return client


def change_url(vk: VirtualKey) -> str:
    return reverse("admin:governance_virtualkey_change", args=[vk.pk])


def test_creating_a_key_stores_only_the_digest_and_shows_the_value_exactly_once(admin_client):
    response = admin_client.post(
        ADD_URL, vk_body(name="billing", budgets=[{"max_limit": "10", "reset_duration": "1M"}])
    )

    assert response.status_code == 302
    assert response["Location"] == ONE_TIME_URL
    vk = VirtualKey.objects.get(name="billing")
    assert vk.budgets.get().max_limit == Decimal("10")
    assert VALUE_RE.search(response.cookies.get("messages").value if "messages" in response.cookies else "") is None

    page = admin_client.get(ONE_TIME_URL)
    assert page.status_code == 200
    values = VALUE_RE.findall(page.content.decode())
    assert len(set(values)) == 1
    value = values[0]
    assert digest(value) == vk.value_digest and value.endswith(vk.value_last4)
    assert "will not be shown again" in page.content.decode()
    assert 'data-copy-target="gov-secret-1"' in page.content.decode()
    assert "no-store" in page["Cache-Control"]

    again = admin_client.get(ONE_TIME_URL)
    assert again.status_code == 200
    assert value not in again.content.decode()
    assert "There is no value to show" in again.content.decode()
    # Nowhere else: the change page, the list and the history show only the masked form.
    for url in (change_url(vk), LIST_URL, reverse("admin:governance_virtualkey_history", args=[vk.pk])):
        html = admin_client.get(url).content.decode()
        assert value not in html
    assert f"sk-bf-…{vk.value_last4}" in admin_client.get(LIST_URL).content.decode()
    assert not LogEntry.objects.filter(change_message__contains=value).exists()


def test_the_form_has_no_value_field(admin_client):
    html = admin_client.get(ADD_URL).content.decode()
    assert 'name="value"' not in html
    assert 'name="value_digest"' not in html


def test_key_attached_to_team_and_customer_shows_a_form_error_and_writes_nothing(admin_client):
    team = team_create(name="search")
    customer = customer_create(name="acme")

    response = admin_client.post(
        ADD_URL,
        vk_body(
            name="both",
            team=str(team.pk),
            customer=str(customer.pk),
            budgets=[{"max_limit": "5", "reset_duration": "1d"}],
        ),
    )

    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert "VirtualKey cannot be attached to both Team and Customer" in errors["team"]
    assert "VirtualKey cannot be attached to both Team and Customer" in errors["customer"]
    assert not VirtualKey.objects.exists()
    assert not Budget.objects.exists()


def test_changing_a_key_to_both_team_and_customer_is_rejected(admin_client):
    team = team_create(name="search")
    customer = customer_create(name="acme")
    vk, _ = virtual_key_create(name="k", team=team)

    response = admin_client.post(change_url(vk), vk_body(name="k", team=str(team.pk), customer=str(customer.pk)))

    assert response.status_code == 200
    assert "customer" in response.context["adminform"].form.errors
    vk.refresh_from_db()
    assert vk.team == team and vk.customer is None


def test_budget_with_a_bad_duration_shows_a_form_error_and_writes_nothing(admin_client):
    response = admin_client.post(
        ADD_URL, vk_body(name="bad", budgets=[{"max_limit": "10", "reset_duration": "1 month"}])
    )

    assert response.status_code == 200
    inline_errors = response.context["inline_admin_formsets"][0].formset.errors
    assert "invalid duration" in str(inline_errors[0]["reset_duration"])
    assert not VirtualKey.objects.exists()


def test_two_budgets_with_the_same_duration_are_rejected(admin_client):
    rows = [{"max_limit": "10", "reset_duration": "1d"}, {"max_limit": "20", "reset_duration": "1d"}]
    response = admin_client.post(ADD_URL, vk_body(name="dup", budgets=rows))

    assert response.status_code == 200
    assert not VirtualKey.objects.exists()


def test_negative_budget_and_half_a_rate_limit_are_form_errors(admin_client):
    response = admin_client.post(
        ADD_URL,
        vk_body(
            name="bad",
            budgets=[{"max_limit": "-1", "reset_duration": "1d"}],
            rate_limit=[{"token_max_limit": "1000", "token_reset_duration": ""}],
        ),
    )

    assert response.status_code == 200
    formsets = {f.formset.prefix: f.formset for f in response.context["inline_admin_formsets"]}
    assert formsets["budgets"].errors[0]["max_limit"]
    assert "token_reset_duration is required" in str(formsets["rate_limit"].errors[0])
    assert not VirtualKey.objects.exists()


def test_inline_limits_and_provider_configs_are_saved_through_the_services(admin_client):
    provider = provider_create(name="openai", base_url="http://upstream.invalid/v1")
    key = provider_key_create(provider=provider, name="k1", value="sk-upstream-secret-1")

    response = admin_client.post(
        ADD_URL,
        vk_body(
            name="full",
            budgets=[{"max_limit": "10", "reset_duration": "1M", "calendar_aligned": "on"}],
            rate_limit=[
                {
                    "token_max_limit": "5000",
                    "token_reset_duration": "1h",
                    "request_max_limit": "",
                    "request_reset_duration": "",
                }
            ],
            provider_configs=[
                {
                    "provider": str(provider.pk),
                    "weight": "1",
                    "allowed_models": "gpt-4o, gpt-4o-mini",
                    "keys": [str(key.pk)],
                }
            ],
        ),
    )

    assert response.status_code == 302
    vk = VirtualKey.objects.get(name="full")
    budget = vk.budgets.get()
    assert (budget.max_limit, budget.reset_duration, budget.calendar_aligned) == (Decimal("10"), "1M", True)
    assert (vk.rate_limit.token_max_limit, vk.rate_limit.token_reset_duration) == (5000, "1h")
    config = vk.provider_configs.get()
    assert config.allowed_models == ["gpt-4o", "gpt-4o-mini"]
    assert list(config.keys.all()) == [key]


def test_provider_config_with_a_key_of_another_provider_is_rejected(admin_client):
    openai = provider_create(name="openai", base_url="http://upstream.invalid/v1")
    other = provider_create(name="other", base_url="http://other.invalid/v1")
    foreign = provider_key_create(provider=other, name="k", value="sk-other-1234")

    response = admin_client.post(
        ADD_URL,
        vk_body(
            name="x", provider_configs=[{"provider": str(openai.pk), "allowed_models": "*", "keys": [str(foreign.pk)]}]
        ),
    )

    assert response.status_code == 200
    assert not VirtualKey.objects.exists()


def test_editing_a_budget_limit_keeps_its_usage(admin_client):
    vk, _ = virtual_key_create(name="k", budgets=[{"max_limit": Decimal("10"), "reset_duration": "1d"}])
    budget = vk.budgets.get()
    Budget.objects.filter(pk=budget.pk).update(current_usage=Decimal("4"))

    body = vk_body(name="k")
    body |= inline_rows(
        "budgets",
        [{"id": str(budget.pk), "virtual_key": str(vk.pk), "max_limit": "25", "reset_duration": "1d"}],
        initial=1,
    )
    response = admin_client.post(change_url(vk), body)

    assert response.status_code == 302
    budget.refresh_from_db()
    assert (budget.max_limit, budget.current_usage) == (Decimal("25"), Decimal("4"))


def test_deleting_the_rate_limit_inline_removes_it(admin_client):
    vk, _ = virtual_key_create(name="k", rate_limit={"request_max_limit": 10, "request_reset_duration": "1m"})
    rate_limit = vk.rate_limit

    body = vk_body(name="k")
    body |= inline_rows(
        "rate_limit",
        [
            {
                "id": str(rate_limit.pk),
                "virtual_key": str(vk.pk),
                "request_max_limit": "10",
                "request_reset_duration": "1m",
                "DELETE": "on",
            }
        ],
        initial=1,
    )
    response = admin_client.post(change_url(vk), body)

    assert response.status_code == 302
    assert not RateLimit.objects.exists()


def test_activate_and_deactivate_actions_change_the_database(admin_client):
    one, _ = virtual_key_create(name="one")
    two, _ = virtual_key_create(name="two")

    response = admin_client.post(LIST_URL, {"action": "deactivate", "_selected_action": [str(one.pk), str(two.pk)]})
    assert response.status_code == 302
    assert not VirtualKey.objects.filter(is_active=True).exists()

    admin_client.post(LIST_URL, {"action": "activate", "_selected_action": [str(one.pk)]})
    assert set(VirtualKey.objects.filter(is_active=True).values_list("name", flat=True)) == {"one"}


def test_rotate_action_asks_first_then_shows_the_new_values_once(admin_client):
    vk, old_value = virtual_key_create(name="rotating")
    old_digest = vk.value_digest

    confirm = admin_client.post(LIST_URL, {"action": "rotate", "_selected_action": [str(vk.pk)]})
    assert confirm.status_code == 200
    assert b"Yes, rotate" in confirm.content
    vk.refresh_from_db()
    assert vk.value_digest == old_digest

    done = admin_client.post(LIST_URL, {"action": "rotate", "_selected_action": [str(vk.pk)], "post": "yes"})
    assert done.status_code == 302 and done["Location"] == ONE_TIME_URL
    vk.refresh_from_db()
    assert vk.value_digest != old_digest
    assert not VirtualKey.objects.filter(value_digest=old_digest).exists()

    new_value = VALUE_RE.search(admin_client.get(ONE_TIME_URL).content.decode()).group(0)
    assert new_value != old_value and digest(new_value) == vk.value_digest
    assert new_value not in admin_client.get(ONE_TIME_URL).content.decode()


def test_rotating_several_keys_shows_every_new_value_on_one_page(admin_client):
    keys = [virtual_key_create(name=f"k{i}")[0] for i in range(3)]

    admin_client.post(LIST_URL, {"action": "rotate", "_selected_action": [str(k.pk) for k in keys], "post": "yes"})

    values = set(VALUE_RE.findall(admin_client.get(ONE_TIME_URL).content.decode()))
    assert {digest(v) for v in values} == set(VirtualKey.objects.values_list("value_digest", flat=True))


def test_rotate_button_on_the_change_page(admin_client):
    vk, _ = virtual_key_create(name="k")
    rotate_url = reverse("admin:governance_virtualkey_rotate", args=[vk.pk])
    assert rotate_url in admin_client.get(change_url(vk)).content.decode()
    assert admin_client.get(rotate_url).status_code == 200  # confirmation, nothing rotated yet
    old = vk.value_digest

    response = admin_client.post(rotate_url)

    assert response.status_code == 302
    vk.refresh_from_db()
    assert vk.value_digest != old


def test_reset_budget_usage_action_zeroes_usage(admin_client):
    vk, _ = virtual_key_create(
        name="k",
        budgets=[
            {"max_limit": Decimal("10"), "reset_duration": "1d"},
            {"max_limit": Decimal("100"), "reset_duration": "1M"},
        ],
    )
    untouched, _ = virtual_key_create(name="other", budgets=[{"max_limit": Decimal("10"), "reset_duration": "1d"}])
    Budget.objects.update(current_usage=Decimal("7.5"))

    response = admin_client.post(LIST_URL, {"action": "reset_budget_usage", "_selected_action": [str(vk.pk)]})

    assert response.status_code == 302
    assert set(vk.budgets.values_list("current_usage", flat=True)) == {Decimal("0")}
    assert untouched.budgets.get().current_usage == Decimal("7.5")


def test_list_shows_budget_bars_coloured_by_level(admin_client):
    for name, used in (("green", "1"), ("amber", "8"), ("red", "9.5")):
        vk, _ = virtual_key_create(name=name, budgets=[{"max_limit": Decimal("10"), "reset_duration": "1d"}])
        Budget.objects.filter(virtual_key=vk).update(current_usage=Decimal(used))

    html = admin_client.get(LIST_URL).content.decode()

    assert html.count("gov-bar-fill gov-ok") == 1
    assert html.count("gov-bar-fill gov-warn") == 1
    assert html.count("gov-bar-fill gov-over") == 1
    assert "$9.50 / $10.00" in html


def test_list_filters_and_search(admin_client):
    team = team_create(name="search-team")
    virtual_key_create(name="alpha", team=team)
    virtual_key_create(name="beta", is_active=False)

    by_team = admin_client.get(LIST_URL, {"team__id__exact": str(team.pk)})
    assert [vk.name for vk in by_team.context["cl"].result_list] == ["alpha"]
    inactive = admin_client.get(LIST_URL, {"is_active__exact": "0"})
    assert [vk.name for vk in inactive.context["cl"].result_list] == ["beta"]
    found = admin_client.get(LIST_URL, {"q": "search-team"})
    assert [vk.name for vk in found.context["cl"].result_list] == ["alpha"]
    assert admin_client.get(LIST_URL, {"expired": "yes"}).context["cl"].result_count == 0


def test_deleting_a_key_in_the_admin_removes_its_limits(admin_client):
    vk, _ = virtual_key_create(name="gone", budgets=[{"max_limit": Decimal("1"), "reset_duration": "1d"}])

    response = admin_client.post(reverse("admin:governance_virtualkey_delete", args=[vk.pk]), {"post": "yes"})

    assert response.status_code == 302
    assert not VirtualKey.objects.exists() and not Budget.objects.exists()
    assert not ProviderConfig.objects.exists()


def test_list_bars_show_the_current_window_not_a_stale_counter(admin_client):
    vk, _ = virtual_key_create(name="old-window", budgets=[{"max_limit": Decimal("10"), "reset_duration": "1d"}])
    Budget.objects.filter(virtual_key=vk).update(
        current_usage=Decimal("9.5"), last_reset=timezone.now() - timedelta(days=3)
    )

    html = admin_client.get(LIST_URL).content.decode()

    assert "$0.00 / $10.00" in html
    assert "$9.50" not in html


def test_sorting_by_budget_spend_counts_each_budget_once(admin_client):
    provider_create(name="openai", base_url="http://upstream.invalid/v1")
    provider_create(name="other", base_url="http://other.invalid/v1")
    budget = [{"max_limit": Decimal("10"), "reset_duration": "1d"}]
    configs = [{"provider": "openai"}, {"provider": "other"}]
    two_configs, _ = virtual_key_create(name="two-configs", budgets=budget, provider_configs=configs)
    no_config, _ = virtual_key_create(name="no-config", budgets=budget)
    Budget.objects.filter(virtual_key=two_configs).update(current_usage=Decimal("1"))
    Budget.objects.filter(virtual_key=no_config).update(current_usage=Decimal("1.5"))

    first = admin_client.get(LIST_URL)
    column = first.context["cl"].list_display.index("budgets_used")
    ordered = admin_client.get(LIST_URL, {"o": str(column)}).context["cl"].result_list

    assert [vk.name for vk in ordered] == ["two-configs", "no-config"]
    assert [vk.budget_spent for vk in ordered] == [Decimal("1"), Decimal("1.5")]
