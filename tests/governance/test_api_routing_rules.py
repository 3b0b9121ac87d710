"""The routing rules API: Bifrost's shapes and messages, validation (CEL compiled when saved, weights,
providers, keys, scopes), 409 on a name taken in its scope, patch semantics, OpenAPI.

The CRUD contract (envelopes, 404s, permissions) is ``test_api_crud_contract.py``'s table."""

from __future__ import annotations

import pytest
from drf_spectacular.generators import SchemaGenerator

from governance.models import RoutingRule
from governance.services import (
    customer_create,
    provider_create,
    provider_key_create,
    routing_rule_create,
    team_create,
    team_delete,
    virtual_key_create,
)

pytestmark = pytest.mark.django_db

URL = "/api/governance/routing-rules"
EXPRESSION = 'model == "gpt-4o" && team.budget_used_percent > 90.0'


@pytest.fixture
def world():
    openai = provider_create(name="openai", base_url="http://127.0.0.1:9")
    azure = provider_create(name="azure-east", provider_type="openai", base_url="http://127.0.0.1:9")
    key = provider_key_create(provider=azure, name="east", value="sk-east-secret-0001")
    other_key = provider_key_create(provider=openai, name="main", value="sk-openai-secret-0002")
    customer = customer_create(name="acme")
    team = team_create(name="research", customer=customer)
    vk, _ = virtual_key_create(name="svc", team=team)
    return {"openai": openai, "azure": azure, "key": key, "other_key": other_key, "team": team, "vk": vk}


def body(**changes) -> dict:
    return {
        "name": "overflow",
        "description": "send gpt-4o elsewhere when the team is nearly out of budget",
        "cel_expression": EXPRESSION,
        "targets": [
            {"provider": "azure-east", "model": "gpt-4o", "weight": 0.7},
            {"provider": "openai", "weight": 0.3},
        ],
        "fallbacks": ["openai/gpt-4o-mini"],
        "priority": 10,
        **changes,
    }


def message(response, status: int = 400) -> str:
    assert response.status_code == status, response.content
    return response.json()["error"]["message"]


def test_create_answers_bifrost_s_shape_and_get_and_list_agree(alice_api, world):
    team = world["team"]
    response = alice_api.post(URL, body(scope="team", scope_id=str(team.pk)), format="json")
    assert response.status_code == 200, response.content
    assert response.json()["message"] == "Routing rule created successfully"
    rule = response.json()["rule"]
    assert {k: v for k, v in rule.items() if k not in ("id", "created_at", "updated_at")} == {
        "name": "overflow",
        "description": "send gpt-4o elsewhere when the team is nearly out of budget",
        "enabled": True,
        "cel_expression": EXPRESSION,
        "targets": [
            {"provider": "azure-east", "model": "gpt-4o", "key_id": None, "weight": 0.7},
            {"provider": "openai", "model": None, "key_id": None, "weight": 0.3},
        ],
        "fallbacks": ["openai/gpt-4o-mini"],
        "scope": "team",
        "scope_id": str(team.pk),
        "priority": 10,
    }
    assert alice_api.get(f"{URL}/{rule['id']}").json() == {"rule": rule}
    listed = alice_api.get(URL).json()
    assert listed == {"rules": [rule], "count": 1, "total_count": 1, "limit": 1, "offset": 0}
    row = RoutingRule.objects.get(pk=rule["id"])
    assert (row.team, row.scope_id, row.virtual_key, row.customer) == (team, str(team.pk), None, None)


def test_defaults_global_scope_enabled_priority_0_and_a_single_target_weighs_1(alice_api, world):
    response = alice_api.post(URL, {"name": "all", "targets": [{"provider": "openai"}]}, format="json")
    rule = response.json()["rule"]
    assert (rule["scope"], rule["scope_id"], rule["enabled"], rule["priority"]) == ("global", None, True, 0)
    assert (rule["cel_expression"], rule["fallbacks"], rule["description"]) == ("", [], "")
    assert rule["targets"] == [{"provider": "openai", "model": None, "key_id": None, "weight": 1.0}]


def test_a_target_may_keep_the_provider_and_pin_a_key(alice_api, world):
    response = alice_api.post(
        URL,
        body(
            targets=[
                {"model": "gpt-4o-mini", "weight": 0.5},
                {"provider": "azure-east", "key_id": str(world["key"].pk), "weight": 0.5},
            ],
            fallbacks=["azure-east/"],
        ),
        format="json",
    )
    assert response.status_code == 200, response.content
    targets = response.json()["rule"]["targets"]
    assert targets[0] == {"provider": None, "model": "gpt-4o-mini", "key_id": None, "weight": 0.5}
    assert targets[1]["key_id"] == str(world["key"].pk)


def test_weights_that_sum_to_1_within_1e9_are_accepted(alice_api, world):
    thirds = [{"provider": "openai", "model": f"m{i}", "weight": w} for i, w in enumerate((0.7, 0.2, 0.1))]
    assert alice_api.post(URL, body(targets=thirds), format="json").status_code == 200  # 0.9999999999999999


@pytest.mark.parametrize(
    ("expression", "field_message"),
    [
        ('model == "gpt-4o" &&', "Syntax error"),
        ('modle == "gpt-4o"', "undeclared reference to 'modle'"),
        ("model == 1", "found no matching overload for '_==_' applied to '(string, int)'"),
        ("model", "the expression must evaluate to a boolean, not string"),
    ],
)
def test_an_invalid_expression_is_400_quoting_the_compiler_and_writes_nothing(
    alice_api, world, expression, field_message
):
    text = message(alice_api.post(URL, body(cel_expression=expression), format="json"))
    assert text.startswith("cel_expression: invalid CEL expression: ")
    assert field_message in text
    assert not RoutingRule.objects.exists()


def test_the_compiler_s_position_is_in_the_message(alice_api, world):
    text = message(alice_api.post(URL, body(cel_expression='model == "x" && '), format="json"))
    assert "<input>:1:" in text and "^" in text


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"targets": []}, "targets: at least one target is required"),
        ({"targets": "openai"}, "targets: must be a list"),
        (
            {"targets": [{"provider": "openai", "weight": 0.5}, {"provider": "azure-east", "weight": 0.4}]},
            "targets: target weights must sum to 1, got 0.9000",
        ),
        ({"targets": [{"provider": "openai", "weight": -1}]}, "targets[0].weight: each target weight must be positive"),
        ({"targets": [{"provider": "openai", "weight": "1"}]}, "targets[0].weight: must be a number"),
        ({"targets": [{"provider": "nope", "weight": 1}]}, "targets[0].provider: provider 'nope' is not configured"),
        ({"targets": [{"model": "x", "key_id": "k", "weight": 1}]}, "targets[0].key_id: key_id requires provider"),
        ({"targets": [{"provider": "openai", "weight": 0.5}, {"provider": "OpenAI", "weight": 0.5}]}, "duplicate"),
        ({"targets": ["openai"]}, "targets[0]: must be an object"),
        ({"fallbacks": ["gpt-4o"]}, "fallbacks[0]: 'gpt-4o' is invalid: use \"provider/model\""),
        ({"fallbacks": ["nope/gpt-4o"]}, "fallbacks[0]: provider 'nope' is not configured"),
        ({"fallbacks": "openai/x"}, "fallbacks: must be a list"),
        ({"scope": "user"}, "scope: invalid scope 'user': must be one of: global, customer, team, virtual_key"),
        ({"scope": "team"}, "scope_id: scope_id field is required when scope is not global"),
        ({"scope": "team", "scope_id": "6f1c2a57-0000-4000-8000-000000000000"}, "scope_id: team '6f1c2a57"),
        ({"scope": "team", "scope_id": "not-a-uuid"}, "scope_id: team 'not-a-uuid' not found"),
        ({"priority": 1.5}, "priority: must be an integer"),
        ({"priority": 2**40}, "priority: must be between"),
        ({"enabled": "yes"}, "enabled: must be true or false"),
        ({"name": ""}, "name: must not be blank"),
        ({"name": 7}, "name: must be a string"),
    ],
    ids=lambda value: str(value)[:60] if isinstance(value, dict) else None,
)
def test_bad_input_is_400_naming_the_field(alice_api, world, changes, expected):
    assert expected in message(alice_api.post(URL, body(**changes), format="json"))
    assert not RoutingRule.objects.exists()


def test_a_pinned_key_must_belong_to_the_target_s_provider(alice_api, world):
    target = {"provider": "azure-east", "key_id": str(world["other_key"].pk), "weight": 1}
    text = message(alice_api.post(URL, body(targets=[target]), format="json"))
    assert text == f"targets[0].key_id: provider 'azure-east' has no key '{world['other_key'].pk}'"


def test_name_and_targets_are_required_on_create(alice_api, world):
    text = message(alice_api.post(URL, {"cel_expression": "true"}, format="json"))
    assert "name: This field is required." in text and "targets: This field is required." in text


def test_a_name_taken_in_the_same_scope_is_409_and_free_in_another(alice_api, world):
    team = world["team"]
    assert alice_api.post(URL, body(), format="json").status_code == 200
    text = message(alice_api.post(URL, body(), format="json"), 409)
    assert text == "name: routing rule 'overflow' already exists in the global scope"
    scoped = body(scope="team", scope_id=str(team.pk))
    assert alice_api.post(URL, scoped, format="json").status_code == 200
    assert message(alice_api.post(URL, scoped, format="json"), 409).startswith("name: routing rule 'overflow'")
    other = alice_api.post(URL, body(name="second"), format="json").json()["rule"]
    assert message(alice_api.put(f"{URL}/{other['id']}", {"name": "overflow"}, format="json"), 409)
    assert RoutingRule.objects.count() == 3


def test_update_patches_only_what_is_given(alice_api, world):
    rule = alice_api.post(URL, body(), format="json").json()["rule"]
    updated = alice_api.put(f"{URL}/{rule['id']}", {"priority": 3, "enabled": False}, format="json").json()
    assert updated["message"] == "Routing rule updated successfully"
    after = updated["rule"]
    assert (after["priority"], after["enabled"]) == (3, False)
    assert {k: v for k, v in after.items() if k not in ("priority", "enabled", "updated_at")} == {
        k: v for k, v in rule.items() if k not in ("priority", "enabled", "updated_at")
    }
    # A GET body sent back (nulls and all) changes nothing.
    again = alice_api.put(f"{URL}/{rule['id']}", after, format="json").json()["rule"]
    assert {k: v for k, v in again.items() if k != "updated_at"} == {
        k: v for k, v in after.items() if k != "updated_at"
    }


def test_update_to_a_scope_needs_its_id_and_back_to_global_clears_it(alice_api, world):
    team = world["team"]
    rule = alice_api.post(URL, body(), format="json").json()["rule"]
    url = f"{URL}/{rule['id']}"
    assert "scope_id field is required" in message(alice_api.put(url, {"scope": "team"}, format="json"))
    moved = alice_api.put(url, {"scope": "team", "scope_id": str(team.pk)}, format="json").json()["rule"]
    assert (moved["scope"], moved["scope_id"]) == ("team", str(team.pk))
    vk = world["vk"]
    moved = alice_api.put(url, {"scope": "virtual_key", "scope_id": str(vk.pk)}, format="json").json()["rule"]
    row = RoutingRule.objects.get(pk=rule["id"])
    assert (row.virtual_key, row.team, row.scope_id) == (vk, None, str(vk.pk))
    back = alice_api.put(url, {"scope": "global"}, format="json").json()["rule"]
    assert (back["scope"], back["scope_id"]) == ("global", None)


def test_an_invalid_expression_in_an_update_changes_nothing(alice_api, world):
    rule = alice_api.post(URL, body(), format="json").json()["rule"]
    before = RoutingRule.objects.filter(pk=rule["id"]).values().get()
    text = message(alice_api.put(f"{URL}/{rule['id']}", {"cel_expression": "model ==", "priority": 1}, format="json"))
    assert text.startswith("cel_expression: invalid CEL expression: ERROR: <input>:1:")
    assert RoutingRule.objects.filter(pk=rule["id"]).values().get() == before


def test_list_filters_by_scope_and_paginates_on_request(alice_api, world):
    team = world["team"]
    routing_rule_create(name="g1", targets=[{"provider": "openai"}], priority=5)
    routing_rule_create(name="g0", targets=[{"provider": "openai"}], priority=1)
    routing_rule_create(name="t", targets=[{"provider": "openai"}], scope="team", scope_id=str(team.pk))
    everything = alice_api.get(URL).json()
    assert [r["name"] for r in everything["rules"]] == ["g0", "g1", "t"]
    assert [r["name"] for r in alice_api.get(URL, {"scope": "global"}).json()["rules"]] == ["g0", "g1"]
    assert [r["name"] for r in alice_api.get(URL, {"scope_id": str(team.pk)}).json()["rules"]] == ["t"]
    page = alice_api.get(URL, {"limit": 1, "offset": 1}).json()
    assert ([r["name"] for r in page["rules"]], page["total_count"], page["limit"]) == (["g1"], 3, 1)
    assert "scope: scope must be one of" in message(alice_api.get(URL, {"scope": "everyone"}))


def test_a_rule_goes_with_the_team_it_is_scoped_to(world):
    team = world["team"]
    routing_rule_create(name="t", targets=[{"provider": "openai"}], scope="team", scope_id=str(team.pk))
    team_delete(team=team)
    assert not RoutingRule.objects.exists()


def test_view_only_staff_may_list_but_not_create(bob_api, world):
    assert bob_api.get(URL).status_code == 200
    assert bob_api.post(URL, body(), format="json").status_code == 403


def test_openapi_documents_the_routes_and_bodies():
    schema = SchemaGenerator().get_schema(request=None, public=True)
    paths = schema["paths"]
    assert set(paths[URL]) == {"get", "post"}
    assert set(paths[URL + "/{id}"]) == {"get", "put", "delete"}
    create = paths[URL]["post"]
    assert {"200", "400", "401", "403", "409"} <= set(create["responses"])
    target = schema["components"]["schemas"]["RoutingTargetShapeRequest"]["properties"]
    assert set(target) == {"provider", "model", "key_id", "weight"}
    rule = schema["components"]["schemas"]["RoutingRuleOut"]["properties"]
    assert {"cel_expression", "targets", "fallbacks", "scope", "scope_id", "priority", "enabled"} <= set(rule)


@pytest.mark.fuzz
def test_random_rule_bodies_never_5xx_and_failures_write_nothing(alice_api, world):
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    text = st.one_of(st.none(), st.text(max_size=20), st.sampled_from(["openai", "azure-east", "nope", "", "gpt-4o"]))
    number = st.one_of(
        st.none(), st.integers(-5, 5), st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=3)
    )
    target = st.fixed_dictionaries(
        {},
        optional={
            "provider": text,
            "model": text,
            "key_id": st.one_of(text, st.just(str(world["key"].pk))),
            "weight": number,
        },
    )
    expression = st.one_of(
        st.text(max_size=40),
        st.sampled_from([EXPRESSION, "true", 'headers["x"] == "y"', "params.max_tokens > 1", "model ==", "1"]),
    )
    body_strategy = st.fixed_dictionaries(
        {},
        optional={
            "name": text,
            "cel_expression": st.one_of(st.none(), expression),
            "targets": st.one_of(st.lists(target, max_size=3), text),
            "fallbacks": st.one_of(st.lists(text, max_size=2), text),
            "scope": st.one_of(text, st.sampled_from(["global", "team", "customer", "virtual_key"])),
            "scope_id": st.one_of(text, st.just(str(world["team"].pk))),
            "priority": number,
            "enabled": st.one_of(st.booleans(), text),
        },
    )
    existing = routing_rule_create(name="existing", targets=[{"provider": "openai"}])

    @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
    @given(body=body_strategy, put=st.booleans())
    def run(body, put):
        before = list(RoutingRule.objects.order_by("pk").values())
        if put:
            response = alice_api.put(f"{URL}/{existing.pk}", body, format="json")
        else:
            response = alice_api.post(URL, body, format="json")
        assert response.status_code < 500, (body, response.content)
        if response.status_code >= 400:
            assert response.json()["error"]["message"]
            assert list(RoutingRule.objects.order_by("pk").values()) == before, body
        else:
            RoutingRule.objects.exclude(pk=existing.pk).delete()

    run()
