"""Every governance admin page renders; view-only staff can look but not change."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.contrib import admin
from django.urls import reverse
from django.utils import timezone

from governance.models import (
    ApiToken,
    Budget,
    Customer,
    McpClient,
    ModelConfig,
    ModelPrice,
    PricingOverride,
    Provider,
    ProviderConfig,
    ProviderKey,
    RateLimit,
    Team,
    UsageRecord,
    VirtualKey,
    VirtualKeyMcpConfig,
)
from governance.services import (
    api_token_create,
    customer_create,
    model_config_create,
    provider_create,
    provider_governance_set,
    provider_key_create,
    team_create,
    virtual_key_create,
)
from tests.governance.test_admin_helpers import OWNER_INLINES, form_body, vk_body

pytestmark = pytest.mark.django_db

GOVERNANCE_MODELS = [
    ApiToken,
    Budget,
    Customer,
    McpClient,
    ModelConfig,
    ModelPrice,
    PricingOverride,
    Provider,
    ProviderConfig,
    ProviderKey,
    RateLimit,
    Team,
    UsageRecord,
    VirtualKey,
    VirtualKeyMcpConfig,
]


@pytest.fixture
def world(alice):
    """One of everything, wired together."""
    customer = customer_create(
        name="acme", budgets=[{"max_limit": Decimal("100"), "reset_duration": "1M"}], rate_limit={}
    )
    team = team_create(
        name="search",
        customer=customer,
        budgets=[{"max_limit": Decimal("50"), "reset_duration": "1w"}],
        rate_limit={"request_max_limit": 100, "request_reset_duration": "1m"},
    )
    provider = provider_create(name="openai", base_url="http://upstream.invalid/v1")
    key = provider_key_create(provider=provider, name="main", value="sk-upstream-world-9999")
    provider_governance_set(
        provider=provider,
        budgets=[{"max_limit": Decimal("2000"), "reset_duration": "1M"}],
        rate_limit={"request_max_limit": 500, "request_reset_duration": "1m"},
    )
    model_config_create(
        model_name="gpt-4o",
        budgets=[{"max_limit": Decimal("300"), "reset_duration": "1d"}],
        rate_limit={"request_max_limit": 500, "request_reset_duration": "1m"},
    )
    McpClient.objects.create(name="files")
    vk, _ = virtual_key_create(
        name="app",
        team=team,
        budgets=[{"max_limit": Decimal("10"), "reset_duration": "1d"}],
        rate_limit={"token_max_limit": 1000, "token_reset_duration": "1h"},
        provider_configs=[
            {
                "provider": "openai",
                "weight": 1,
                "allowed_models": ["*"],
                "key_ids": [str(key.pk)],
                "budgets": [{"max_limit": Decimal("5"), "reset_duration": "1d"}],
            }
        ],
        mcp_configs=[{"mcp_client_name": "files", "tools_to_execute": ["*"]}],
    )
    ModelPrice.objects.create(
        provider="openai",
        model="gpt-4o",
        input_cost_per_token=Decimal("0.0000025"),
        output_cost_per_token=Decimal("0.00001"),
    )
    UsageRecord.objects.create(
        created_at=timezone.now(),
        virtual_key=vk,
        team=team,
        customer=customer,
        provider="openai",
        model="gpt-4o",
        provider_key=key,
        status_code=200,
        prompt_tokens=10,
        completion_tokens=5,
        total_tokens=15,
        cost=Decimal("0.0001"),
    )
    UsageRecord.objects.create(
        created_at=timezone.now() - timedelta(days=1),
        virtual_key=vk,
        provider="openai",
        model="mystery-model",
        status_code=200,
        total_tokens=40,
        priced=False,
    )
    PricingOverride.objects.create(
        name="app rate",
        scope_kind="virtual_key",
        virtual_key=vk,
        pattern="gpt-4o",
        input_cost_per_token=Decimal("1e-6"),
    )
    api_token_create(user=alice, name="ci")
    return {"vk": vk, "team": team, "customer": customer, "provider": provider, "key": key}


def _url(model, view: str, *args) -> str:
    return reverse(f"admin:governance_{model._meta.model_name}_{view}", args=args)


def test_every_governance_model_is_registered():
    assert set(GOVERNANCE_MODELS) <= set(admin.site._registry)


@pytest.mark.parametrize("model", GOVERNANCE_MODELS, ids=lambda m: m.__name__)
def test_changelist_and_change_pages_render(client, alice, world, model):
    client.force_login(alice)
    assert client.get(_url(model, "changelist")).status_code == 200
    obj = model.objects.first()
    assert client.get(_url(model, "change", obj.pk)).status_code == 200
    model_admin = admin.site._registry[model]
    request = type("R", (), {"user": alice})()
    if model_admin.has_add_permission(request):
        assert client.get(_url(model, "add")).status_code == 200


def test_admin_index_lists_the_governance_screens(client, alice):
    client.force_login(alice)
    html = client.get(reverse("admin:index")).content.decode()
    for label in ("Virtual keys", "Teams", "Customers", "Providers", "Provider keys", "Usage records", "MCP clients"):
        assert label in html


def test_usage_list_flags_unpriced_rows_and_charts_spend(client, alice, world):
    client.force_login(alice)
    response = client.get(_url(UsageRecord, "changelist"))
    html = response.content.decode()
    assert html.count(">unpriced</span>") == 1
    assert html.count('class="bf-chart"') == 2  # requests and spend
    # Two days of traffic: a bar per hour, not two bars across the chart.
    assert response.context["chart_step"] == "hour" and 24 < response.context["chart_bars"] <= 49
    assert html.count('class="bf-bar-group"') == 2 * response.context["chart_bars"]

    only_unpriced = client.get(_url(UsageRecord, "changelist"), {"priced__exact": "0"})
    assert [r.model for r in only_unpriced.context["cl"].result_list] == ["mystery-model"]
    by_team = client.get(_url(UsageRecord, "changelist"), {"team__id__exact": str(world["team"].pk)})
    assert [r.model for r in by_team.context["cl"].result_list] == ["gpt-4o"]
    by_status = client.get(_url(UsageRecord, "changelist"), {"status": "5xx"})
    assert by_status.context["cl"].result_count == 0


def test_usage_records_cannot_be_added_changed_or_deleted(client, alice, world):
    client.force_login(alice)
    record = UsageRecord.objects.first()
    assert client.get(_url(UsageRecord, "add")).status_code == 403
    assert client.post(_url(UsageRecord, "change", record.pk), {"model": "x"}).status_code == 403
    assert client.post(_url(UsageRecord, "delete", record.pk), {"post": "yes"}).status_code == 403
    assert UsageRecord.objects.filter(pk=record.pk, model=record.model).exists()


def test_view_only_staff_can_view_but_not_change(client, bob, world):
    client.force_login(bob)
    vk = world["vk"]
    assert client.get(_url(VirtualKey, "changelist")).status_code == 200
    page = client.get(_url(VirtualKey, "change", vk.pk))
    assert page.status_code == 200
    assert b'name="_save"' not in page.content

    assert client.post(_url(VirtualKey, "change", vk.pk), vk_body(name="renamed")).status_code == 403
    assert client.get(_url(VirtualKey, "add")).status_code == 403
    assert client.post(reverse("admin:governance_virtualkey_rotate", args=[vk.pk])).status_code == 403
    old_digest = vk.value_digest
    client.post(_url(VirtualKey, "changelist"), {"action": "rotate", "_selected_action": [str(vk.pk)], "post": "yes"})
    client.post(_url(VirtualKey, "changelist"), {"action": "deactivate", "_selected_action": [str(vk.pk)]})
    vk.refresh_from_db()
    assert (vk.name, vk.value_digest, vk.is_active) == ("app", old_digest, True)
    assert client.post(_url(Team, "change", world["team"].pk), {"name": "x"}).status_code == 403
    assert Team.objects.get(pk=world["team"].pk).name == "search"


def test_customer_and_team_are_created_with_inline_budgets(client, alice):
    client.force_login(alice)
    response = client.post(
        _url(Customer, "add"),
        form_body({"name": "globex"}, OWNER_INLINES, budgets=[{"max_limit": "200", "reset_duration": "1M"}]),
    )
    assert response.status_code == 302
    customer = Customer.objects.get(name="globex")
    assert customer.budgets.get().max_limit == Decimal("200")

    response = client.post(
        _url(Team, "add"),
        form_body(
            {"name": "research", "customer": str(customer.pk), "profile": "{}", "config": "{}", "claims": "{}"},
            OWNER_INLINES,
            rate_limit=[{"request_max_limit": "60", "request_reset_duration": "1m"}],
        ),
    )
    assert response.status_code == 302
    team = Team.objects.get(name="research")
    assert team.customer == customer
    assert (team.rate_limit.request_max_limit, team.rate_limit.request_reset_duration) == (60, "1m")


def test_team_with_a_bad_budget_duration_writes_nothing(client, alice):
    client.force_login(alice)
    response = client.post(
        _url(Team, "add"),
        form_body(
            {"name": "research", "customer": "", "profile": "{}", "config": "{}", "claims": "{}"},
            OWNER_INLINES,
            budgets=[{"max_limit": "5", "reset_duration": "2 weeks"}],
        ),
    )
    assert response.status_code == 200
    assert not Team.objects.exists()


def test_deleting_a_team_detaches_its_keys(client, alice, world):
    client.force_login(alice)
    response = client.post(_url(Team, "delete", world["team"].pk), {"post": "yes"})
    assert response.status_code == 302
    vk = VirtualKey.objects.get(pk=world["vk"].pk)
    assert vk.team is None


def test_team_and_customer_lists_show_usage_and_key_counts(client, alice, world):
    client.force_login(alice)
    Budget.objects.filter(team=world["team"]).update(current_usage=Decimal("40"))
    html = client.get(_url(Team, "changelist")).content.decode()
    assert "$40.00 / $50.00" in html and "gov-bar-fill gov-warn" in html
    assert f"?team__id__exact={world['team'].pk}" in html
    html = client.get(_url(Customer, "changelist")).content.decode()
    assert "$0.00 / $100.00" in html


def test_budget_overview_reset_action(client, alice, world):
    client.force_login(alice)
    Budget.objects.update(current_usage=Decimal("3"))
    ids = [str(pk) for pk in Budget.objects.filter(team=world["team"]).values_list("pk", flat=True)]
    response = client.post(_url(Budget, "changelist"), {"action": "reset_usage", "_selected_action": ids})
    assert response.status_code == 302
    assert Budget.objects.get(team=world["team"]).current_usage == 0
    assert Budget.objects.filter(current_usage=Decimal("3")).count() == Budget.objects.count() - 1


def test_a_service_rejection_is_shown_on_the_form_and_nothing_is_saved(admin_client, monkeypatch):
    """The admin writes through the services; what a service refuses comes back as form errors
    (a field's under it, the others above the form), on the page as it was filled in."""
    from dataclasses import replace

    from django.core.exceptions import ValidationError

    from governance.admin.entities import CustomerAdmin
    from governance.models import Customer

    def refuse(**kwargs):
        raise ValidationError({"name": ["taken by the service"], "budgets[0].max_limit": ["too large"]})

    monkeypatch.setattr(CustomerAdmin, "services", replace(CustomerAdmin.services, create=refuse))
    data = {"name": "acme"}
    for prefix in ("budgets", "rate_limit"):
        data.update({f"{prefix}-TOTAL_FORMS": "0", f"{prefix}-INITIAL_FORMS": "0"})
    response = admin_client.post(reverse("admin:governance_customer_add"), data)

    assert response.status_code == 200
    form = response.context["adminform"].form
    assert form.errors["name"] == ["taken by the service"]
    assert form.errors["__all__"] == ["budgets[0].max_limit: too large"]
    assert form["name"].value() == "acme"
    assert not Customer.objects.exists()
