"""The routing rules admin: the list (scope, priority, enabled), the edit page with the CEL
compiler's message on the expression field, saves through the services."""

from __future__ import annotations

import json

import pytest
from django.urls import reverse

from governance.models import RoutingRule
from governance.services import provider_create, routing_rule_create, team_create

pytestmark = pytest.mark.django_db

ADD = "admin:governance_routingrule_add"


@pytest.fixture
def world():
    provider_create(name="openai", base_url="http://127.0.0.1:9")
    provider_create(name="cheap", provider_type="openai", base_url="http://127.0.0.1:9")
    return {"team": team_create(name="research")}


def form(**changes) -> dict:
    return {
        "name": "overflow",
        "description": "",
        "enabled": "on",
        "scope": "global",
        "virtual_key": "",
        "team": "",
        "customer": "",
        "priority": "0",
        "cel_expression": 'model == "gpt-4o"',
        "targets": json.dumps([{"provider": "cheap", "weight": 1}]),
        "fallbacks": "openai/gpt-4o-mini",
        **changes,
    }


def test_the_list_shows_scope_priority_and_enabled(client, alice, world):
    team = world["team"]
    routing_rule_create(
        name="team-rule", targets=[{"provider": "cheap"}], scope="team", scope_id=str(team.pk), priority=7
    )
    routing_rule_create(name="off", targets=[{"provider": "openai"}], enabled=False, cel_expression="true")
    client.force_login(alice)
    page = client.get(reverse("admin:governance_routingrule_changelist"))
    assert page.status_code == 200
    html = page.content.decode()
    assert "team-rule" in html and "research" in html and ">7<" in html
    assert "(every request)" in html and "icon-no.svg" in html and "cheap" in html
    change = client.get(reverse("admin:governance_routingrule_change", args=[RoutingRule.objects.get(name="off").pk]))
    assert change.status_code == 200 and "openai" in change.content.decode()


def test_adding_a_rule_saves_it_through_the_service(client, alice, world):
    client.force_login(alice)
    response = client.post(reverse(ADD), form(scope="team", team=str(world["team"].pk), priority="4"))
    assert response.status_code == 302, response.content.decode()[:2000]
    rule = RoutingRule.objects.get()
    assert (rule.scope, rule.team, rule.scope_id, rule.priority) == ("team", world["team"], str(world["team"].pk), 4)
    assert rule.targets == [{"provider": "cheap", "model": None, "key_id": None, "weight": 1.0}]
    assert rule.fallbacks == ["openai/gpt-4o-mini"]


def test_an_invalid_expression_is_shown_on_its_field_with_the_compiler_s_message(client, alice, world):
    client.force_login(alice)
    response = client.post(reverse(ADD), form(cel_expression='model == "gpt-4o" &&'))
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert list(errors) == ["cel_expression"]
    assert errors["cel_expression"][0].startswith("invalid CEL expression: ERROR: <input>:1:")
    assert "Syntax error" in errors["cel_expression"][0]
    assert not RoutingRule.objects.exists()


def test_bad_targets_scope_and_duplicates_are_shown_on_their_fields(client, alice, world):
    client.force_login(alice)
    bad_weights = json.dumps([{"provider": "cheap", "weight": 0.5}])
    errors = client.post(reverse(ADD), form(targets=bad_weights)).context["adminform"].form.errors
    assert errors["targets"] == ["target weights must sum to 1, got 0.5000"]
    errors = client.post(reverse(ADD), form(scope="team")).context["adminform"].form.errors
    assert errors["team"] == ["scope_id field is required when scope is not global"]
    errors = client.post(reverse(ADD), form(team=str(world["team"].pk))).context["adminform"].form.errors
    assert errors["team"] == ["only for scope team"]
    routing_rule_create(name="overflow", targets=[{"provider": "cheap"}])
    errors = client.post(reverse(ADD), form()).context["adminform"].form.errors
    assert errors["name"] == ["routing rule 'overflow' already exists in the global scope"]
    assert RoutingRule.objects.count() == 1


def test_editing_keeps_what_is_not_changed(client, alice, world):
    rule = routing_rule_create(name="edit-me", targets=[{"provider": "cheap"}], fallbacks=["openai/x"], priority=2)
    client.force_login(alice)
    url = reverse("admin:governance_routingrule_change", args=[rule.pk])
    page = client.get(url)
    initial = page.context["adminform"].form.initial
    assert json.loads(page.context["adminform"].form["targets"].value()) == rule.targets
    assert initial["fallbacks"] == ["openai/x"]
    response = client.post(url, form(name="edit-me", priority="9", fallbacks="openai/x", enabled=""))
    assert response.status_code == 302
    rule.refresh_from_db()
    assert (rule.priority, rule.enabled, rule.fallbacks) == (9, False, ["openai/x"])
