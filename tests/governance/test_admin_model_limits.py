"""Admin screens of the limits on all traffic: model configs (own page, budgets and rate limit
inline, usage bars) and provider governance (inline on the provider's page), written through the
services; their budgets on the overview and the usage dashboard."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.urls import reverse

from governance.models import Budget, ModelConfig, Provider, RateLimit
from governance.services import model_config_create, provider_create, provider_governance_set
from tests.governance.test_admin_helpers import OWNER_INLINES, form_body, inline_rows

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client(client, alice):
    client.force_login(alice)
    return client


@pytest.fixture
def openai():
    return provider_create(name="openai", base_url="http://upstream.invalid/v1")


def test_a_model_config_is_created_with_its_limits_inline(admin_client, openai):
    body = form_body(
        {"model_name": "gpt-4o", "provider": str(openai.pk)},
        OWNER_INLINES,
        budgets=[{"max_limit": "25", "reset_duration": "1d"}],
        rate_limit=[{"request_max_limit": "500", "request_reset_duration": "1m"}],
    )
    response = admin_client.post(reverse("admin:governance_modelconfig_add"), body)

    assert response.status_code == 302, response.context and response.context["adminform"].form.errors
    config = ModelConfig.objects.get()
    assert (config.model_name, config.provider) == ("gpt-4o", openai)
    assert config.budgets.get().max_limit == Decimal("25")
    assert (config.rate_limit.request_max_limit, config.rate_limit.request_reset_duration) == (500, "1m")


def test_a_duplicate_model_config_is_a_form_error_and_writes_nothing(admin_client):
    model_config_create(model_name="gpt-4o")
    body = form_body({"model_name": "gpt-4o", "provider": ""}, OWNER_INLINES)
    response = admin_client.post(reverse("admin:governance_modelconfig_add"), body)

    assert response.status_code == 200
    assert response.context["adminform"].form.errors
    assert ModelConfig.objects.count() == 1


def test_the_model_config_list_shows_live_usage_bars(admin_client, openai):
    config = model_config_create(
        model_name="gpt-4o",
        budgets=[{"max_limit": 10, "reset_duration": "1d"}],
        rate_limit={"request_max_limit": 100, "request_reset_duration": "1m"},
    )
    model_config_create(model_name="gpt-4o", provider=openai)
    Budget.objects.filter(model_config=config).update(current_usage=Decimal("8"))
    RateLimit.objects.filter(model_config=config).update(request_current_usage=40)

    html = admin_client.get(reverse("admin:governance_modelconfig_changelist")).content.decode()

    assert "$8.00 / $10.00" in html and "gov-bar-fill gov-warn" in html
    assert "40 / 100" in html
    assert "every provider" in html and "openai" in html
    page = admin_client.get(reverse("admin:governance_modelconfig_change", args=[config.pk])).content.decode()
    assert "$8.00 / $10.00" in page


def test_provider_governance_is_edited_inline_on_the_provider_page(admin_client, openai):
    url = reverse("admin:governance_provider_change", args=[openai.pk])
    fields = {"provider_type": "openai", "base_url": openai.base_url, "timeout_seconds": "60", "extra_headers": "{}"}
    body = fields | inline_rows("budgets", [{"max_limit": "2000", "reset_duration": "1M"}])
    body |= inline_rows("rate_limit", [{"token_max_limit": "100000", "token_reset_duration": "1h"}])

    response = admin_client.post(url, body)

    assert response.status_code == 302, response.context and response.context["adminform"].form.errors
    openai.refresh_from_db()
    assert openai.budgets.get().max_limit == Decimal("2000")
    assert openai.rate_limit.token_max_limit == 100000
    Budget.objects.filter(provider=openai).update(current_usage=Decimal("1900"))
    html = admin_client.get(reverse("admin:governance_provider_changelist")).content.decode()
    assert "$1,900.00 / $2,000.00" in html and "gov-bar-fill gov-over" in html


def test_budget_overview_names_and_filters_the_new_owners(admin_client, openai):
    provider_governance_set(provider=openai, budgets=[{"max_limit": 100, "reset_duration": "1M"}])
    model_config_create(model_name="gpt-4o", budgets=[{"max_limit": 5, "reset_duration": "1d"}])
    url = reverse("admin:governance_budget_changelist")

    html = admin_client.get(url).content.decode()
    assert "model config" in html and reverse("admin:governance_modelconfig_changelist") in html
    assert reverse("admin:governance_provider_change", args=[openai.pk]) in html
    only_models = admin_client.get(url, {"owner": "model_config"}).content.decode()
    assert "$5.00" in only_models and "$100.00" not in only_models


def test_the_usage_dashboard_lists_model_and_provider_limits(admin_client, openai):
    provider_governance_set(
        provider=openai,
        budgets=[{"max_limit": 100, "reset_duration": "1M"}],
        rate_limit={"request_max_limit": 10, "request_reset_duration": "1m"},
    )
    model_config_create(
        model_name="gpt-4o",
        provider=openai,
        budgets=[{"max_limit": 5, "reset_duration": "1d"}],
        rate_limit={"request_max_limit": 10, "request_reset_duration": "1m"},
    )
    html = admin_client.get("/admin/usage-dashboard/").content.decode()
    assert "Provider openai" in html and "Model openai/gpt-4o" in html


def test_deleting_a_provider_removes_its_governance_and_model_configs(admin_client, openai):
    provider_governance_set(provider=openai, budgets=[{"max_limit": 100, "reset_duration": "1M"}])
    model_config_create(model_name="gpt-4o", provider=openai, budgets=[{"max_limit": 5, "reset_duration": "1d"}])
    response = admin_client.post(reverse("admin:governance_provider_delete", args=[openai.pk]), {"post": "yes"})
    assert response.status_code == 302
    assert not Provider.objects.exists() and not ModelConfig.objects.exists() and not Budget.objects.exists()
