"""Pricing overrides: the matching rule, the API (Bifrost's shapes, 201, bad input), the price the
snapshot hands out, the config import and the admin screen.

The proxy charging at an override's price end to end is ``tests/proxy/test_pricing_overrides.py``.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.urls import reverse

from governance.config_import import ConfigError, import_config
from governance.metering import snapshot
from governance.models import ModelPrice, PricingOverride, Provider, VirtualKey
from governance.price_overrides import OverrideIndex, OverrideSnapshot, glob_regex, scope_key
from governance.services import (
    pricing_override_create,
    provider_create,
    provider_key_create,
    provider_update,
    virtual_key_create,
)

URL = "/api/governance/pricing-overrides"
T0 = datetime(2026, 1, 1, tzinfo=UTC)


# --- the rule (no database) -----------------------------------------------------------------------


def snap(pattern: str, *, kind: str = "global", match: str = "exact", age: int = 0, types=(), ident=None, **ids):
    return OverrideSnapshot(
        id=ident or f"{kind}:{match}:{pattern}:{age}",
        scope=scope_key(kind, **ids),
        match_type=match,
        pattern=pattern,
        request_types=frozenset(types),
        created_at=T0 + timedelta(seconds=age),
        input_cost_per_token=Decimal("1"),
        regex=glob_regex(pattern) if match == "pattern" else None,
    )


def find(index: OverrideIndex, model: str = "gpt-4o-mini", request_type: str = "chat_completion", **request):
    request = {"provider": "openai", "virtual_key": "vk1", "provider_key": "key1", **request}
    found = index.find(model=model, request_type=request_type, **request)
    return found.id if found else None


def test_the_most_specific_scope_wins_whatever_the_match():
    kinds = {
        "virtual_key_provider_key": {"virtual_key": "vk1", "provider_key": "key1"},
        "virtual_key_provider": {"virtual_key": "vk1", "provider": "openai"},
        "virtual_key": {"virtual_key": "vk1"},
        "provider_key": {"provider_key": "key1"},
        "provider": {"provider": "openai"},
        "global": {},
    }
    overrides = [snap("*", kind=kind, match="pattern", ident=kind, **ids) for kind, ids in kinds.items()]
    overrides.append(snap("gpt-4o-mini", ident="global-exact"))  # an exact match in a broader scope
    for kind in list(kinds)[:-1]:
        assert find(OverrideIndex(overrides)) == kind
        overrides = [o for o in overrides if o.id != kind]
    assert find(OverrideIndex(overrides)) == "global-exact"  # in one scope, exact beats a glob


def test_within_a_scope_exact_beats_the_longest_prefix_beats_a_glob_then_the_newest_wins():
    overrides = [
        snap("gpt-*", match="pattern", ident="glob", age=9),
        snap("gpt*", match="wildcard", ident="short", age=8),
        snap("gpt-4o*", match="wildcard", ident="long-old", age=1),
        snap("gpt-4o*", match="wildcard", ident="long-new", age=2),
        snap("gpt-4o-mini", ident="exact-old", age=3),
        snap("gpt-4o-mini", ident="exact-new", age=4),
    ]
    for expected in ("exact-new", "exact-old", "long-new", "long-old", "short", "glob", None):
        assert find(OverrideIndex(overrides)) == expected
        overrides = [o for o in overrides if o.id != expected]


def test_scopes_of_other_keys_providers_and_vks_do_not_apply():
    index = OverrideIndex(
        [
            snap("gpt-4o-mini", kind="virtual_key", virtual_key="vk2"),
            snap("gpt-4o-mini", kind="provider", provider="azure"),
            snap("gpt-4o-mini", kind="provider_key", provider_key="key2"),
            snap("gpt-4o-mini", kind="virtual_key_provider", virtual_key="vk1", provider="azure"),
        ]
    )
    assert find(index) is None
    assert find(index, virtual_key=None, provider="azure") == "provider:exact:gpt-4o-mini:0"


def test_request_types_empty_means_all_and_chat_completion_covers_the_chat_formats():
    index = OverrideIndex([snap("m", types=["chat_completion"], ident="chat"), snap("m", types=["embedding"], age=1)])
    assert [find(index, "m", t) for t in ("chat_completion", "messages", "generate_content", "responses")] == [
        "chat",
        "chat",
        "chat",
        None,
    ]
    assert find(index, "m", "embedding") == "global:exact:m:1"
    narrow = OverrideIndex([snap("m", types=["messages"], ident="anthropic-only")])
    assert (find(narrow, "m", "messages"), find(narrow, "m", "chat_completion")) == ("anthropic-only", None)
    assert find(OverrideIndex([snap("m", ident="all")]), "m", "text_completion") == "all"


@pytest.mark.parametrize(
    ("pattern", "matches", "misses"),
    [
        ("gpt-4?-*", ["gpt-4o-mini", "gpt-4x-"], ["gpt-4-mini", "gpt-4oo-mini"]),
        ("*claude*", ["anthropic/claude-3", "claude"], ["Claude-3"]),
        ("llama[3]", ["llama[3]"], ["llama3"]),  # not a character class: a literal bracket
        ("a.b", ["a.b"], ["axb"]),  # not a regex
    ],
)
def test_a_glob_matches_the_whole_name_with_star_and_question_mark_only(pattern, matches, misses):
    index = OverrideIndex([snap(pattern, match="pattern", ident="g")])
    assert [find(index, m) for m in matches] == ["g"] * len(matches)
    assert [find(index, m) for m in misses] == [None] * len(misses)


def test_patched_prices_fall_back_field_by_field():
    base = snapshot.PriceSnapshot(Decimal("1"), Decimal("2"), Decimal("0.5"), source="catalog:openai/m")
    only_output = OverrideSnapshot("o1", ("global",), "exact", "m", frozenset(), T0, output_cost_per_token=Decimal(3))
    price = snapshot.patched(base, only_output)
    assert (price.input_cost_per_token, price.output_cost_per_token, price.cached_input_cost_per_token) == (1, 3, 0.5)
    assert (price.cost_per_request, price.source, price.is_override) == (0, "override:o1+catalog:openai/m", True)
    price = snapshot.patched(None, only_output)  # no catalog row: what it leaves empty costs 0
    assert (price.input_cost_per_token, price.output_cost_per_token, price.cached_input_cost_per_token) == (0, 3, None)
    assert price.source == "override:o1"
    whole = OverrideSnapshot(
        "o2",
        ("global",),
        "exact",
        "m",
        frozenset(),
        T0,
        Decimal(0),
        Decimal(0),
        Decimal(0),
        Decimal("0.01"),
    )
    assert snapshot.patched(base, whole).source == "override:o2"  # the catalog prices nothing here


# --- the snapshot ---------------------------------------------------------------------------------


@pytest.mark.django_db
def test_the_snapshot_prices_by_scope_and_sees_every_change_at_once():
    openai = provider_create(name="openai", base_url="http://127.0.0.1:9")
    key = provider_key_create(provider=openai, name="main", value="sk-x")
    vk, _ = virtual_key_create(name="team-a")
    ModelPrice.objects.create(
        provider="openai", model="gpt-4o", input_cost_per_token=Decimal(2), output_cost_per_token=Decimal(4)
    )
    provider = snapshot.providers()["openai"]

    def price(vk_id=None):
        return snapshot.price(
            provider, "gpt-4o", request_type="chat_completion", virtual_key_id=vk_id, provider_key_id=str(key.pk)
        )

    assert price(str(vk.pk)).source == "catalog:openai/gpt-4o"
    override = pricing_override_create(
        name="half",
        scope_kind="virtual_key",
        virtual_key=vk,
        match_type="exact",
        pattern="gpt-4o",
        prices={"input_cost_per_token": Decimal(1), "output_cost_per_token": Decimal(2)},
    )
    assert (price(str(vk.pk)).input_cost_per_token, price(str(vk.pk)).source) == (1, f"override:{override.pk}")
    assert price().source == "catalog:openai/gpt-4o"  # another key, or none
    override.delete()
    assert price(str(vk.pk)).source == "catalog:openai/gpt-4o"
    provider_update(provider=openai, timeout_seconds=5)  # any change drops the cache; nothing stale after
    assert snapshot.price(snapshot.providers()["openai"], "gpt-4o").source == "catalog:openai/gpt-4o"


# --- the API --------------------------------------------------------------------------------------


@pytest.fixture
def world(db):
    openai = provider_create(name="openai", base_url="http://127.0.0.1:9")
    key = provider_key_create(provider=openai, name="main", value="sk-upstream")
    vk, _ = virtual_key_create(name="team-a")
    return {"provider": openai, "key": key, "vk": vk}


BODY = {
    "name": "GPT-4o reduced input cost",
    "scope_kind": "global",
    "match_type": "exact",
    "pattern": "gpt-4o",
    "request_types": ["chat_completion"],
    "patch": {"input_cost_per_token": 0.0000025, "output_cost_per_token": 0.00001},
}


def message(response, status: int = 400) -> str:
    assert response.status_code == status, response.content
    return response.json()["error"]["message"]


@pytest.mark.django_db
def test_create_answers_201_with_bifrosts_shape(alice_api, world):
    response = alice_api.post(URL, BODY, format="json")
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["message"] == "Pricing override created successfully"
    created = body["pricing_override"]
    row = PricingOverride.objects.get()
    assert created == {
        "id": str(row.pk),
        "name": "GPT-4o reduced input cost",
        "scope_kind": "global",
        "virtual_key_id": None,
        "provider_id": None,
        "provider_key_id": None,
        "match_type": "exact",
        "pattern": "gpt-4o",
        "request_types": ["chat_completion"],
        "patch": {"input_cost_per_token": 2.5e-06, "output_cost_per_token": 1e-05},
        "pricing_patch": '{"input_cost_per_token":2.5e-06,"output_cost_per_token":1e-05}',
        "created_at": created["created_at"],
        "updated_at": created["updated_at"],
    }
    assert (row.input_cost_per_token, row.output_cost_per_token) == (Decimal("0.0000025"), Decimal("0.00001"))
    assert row.cached_input_cost_per_token is None and row.cost_per_request is None
    assert alice_api.get(f"{URL}/{row.pk}").json() == {"pricing_override": created}


@pytest.mark.django_db
def test_each_scope_takes_its_identifiers(alice_api, world):
    vk, key = str(world["vk"].pk), str(world["key"].pk)
    scopes = {
        "provider": {"provider_id": "openai"},
        "provider_key": {"provider_key_id": key},
        "virtual_key": {"virtual_key_id": vk},
        "virtual_key_provider": {"virtual_key_id": vk, "provider_id": "openai"},
        "virtual_key_provider_key": {"virtual_key_id": vk, "provider_key_id": key},
    }
    for kind, ids in scopes.items():
        response = alice_api.post(URL, {**BODY, "scope_kind": kind, **ids}, format="json")
        assert response.status_code == 201, (kind, response.content)
        shown = response.json()["pricing_override"]
        assert {k: shown[k] for k in ("virtual_key_id", "provider_id", "provider_key_id") if shown[k]} == ids
    assert PricingOverride.objects.count() == 5


@pytest.mark.django_db
def test_pricing_patch_as_a_json_string_and_per_request_cost(alice_api, world):
    body = {k: v for k, v in BODY.items() if k != "patch"}
    body["pricing_patch"] = json.dumps({"cache_read_input_token_cost": 0.000001, "cost_per_request": 0.002})
    created = alice_api.post(URL, body, format="json").json()["pricing_override"]
    assert created["patch"] == {"cache_read_input_token_cost": 1e-06, "cost_per_request": 0.002}
    row = PricingOverride.objects.get()
    assert (row.cached_input_cost_per_token, row.cost_per_request) == (Decimal("0.000001"), Decimal("0.002"))
    assert row.input_cost_per_token is None
    # A GET body sent back carries both forms, which agree.
    sent_back = alice_api.put(f"{URL}/{row.pk}", created, format="json")
    assert sent_back.status_code == 200, sent_back.content
    assert sent_back.json()["pricing_override"]["patch"] == created["patch"]


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"name": 0}, "name: Not a valid string."),
        ({"scope_kind": "team"}, 'scope_kind: "team" is not a valid choice.'),
        ({"match_type": "regex"}, 'match_type: "regex" is not a valid choice.'),
        ({"pattern": ""}, "pattern: This field may not be blank."),
        ({"match_type": "wildcard", "pattern": "gpt-4o"}, "pattern: a wildcard pattern is a prefix ending with *"),
        ({"match_type": "wildcard", "pattern": "g*t*"}, "pattern: a wildcard pattern has one *, at its end"),
        ({"request_types": ["chat"]}, 'request_types[0]: "chat" is not a valid choice.'),
        ({"request_types": "chat_completion"}, "request_types: Expected a list of items"),
        ({"patch": {"input_cost_per_token": -1}}, "patch.input_cost_per_token: Ensure this value is greater than"),
        ({"patch": {"input_cost_per_token": "0.1"}}, "patch.input_cost_per_token: A valid number is required."),
        ({"patch": {"input_cost_per_token": True}}, "patch.input_cost_per_token: A valid number is required."),
        (
            {"patch": {"input_cost_per_token": 1e-16}},
            "patch.input_cost_per_token: Ensure that there are no more than 15 decimal places.",
        ),
        (
            {"patch": {"input_cost_per_token": 1e12}},
            "patch.input_cost_per_token: Ensure that there are no more than 9 digits before",
        ),
        ({"patch": {"input_cost_per_image": 0.01}}, "patch.input_cost_per_image: not a price this gateway applies"),
        ({"patch": {}}, "patch: set at least one price field"),
        ({"patch": {"input_cost_per_token": None}}, "patch: set at least one price field"),
        ({"patch": None}, "patch: set at least one price field"),
        ({"pricing_patch": "{not json"}, "pricing_patch: must be a JSON object"),
        ({"pricing_patch": '{"output_cost_per_token": 1}'}, "pricing_patch: disagrees with patch"),
        ({"pricing_patch": '{"output_cost_per_token": -1}'}, "pricing_patch.output_cost_per_token: Ensure this"),
        ({"provider_id": "openai"}, "provider_id: is not used by scope_kind 'global'"),
        ({"scope_kind": "provider"}, "provider_id: is required for scope_kind 'provider'"),
        ({"scope_kind": "provider", "provider_id": "nope"}, "provider_id: provider 'nope' does not exist"),
        (
            {"scope_kind": "virtual_key", "virtual_key_id": "6f1c2a57-0000-4000-8000-000000000000"},
            "virtual_key_id: virtual key 6f1c2a57-0000-4000-8000-000000000000 does not exist",
        ),
        ({"scope_kind": "provider_key", "provider_key_id": "main"}, "provider_key_id: Must be a valid UUID."),
        (
            {
                "scope_kind": "virtual_key_provider",
                "virtual_key_id": "{vk}",
                "provider_id": "openai",
                "provider_key_id": "{key}",
            },
            "provider_key_id: is not used by scope_kind 'virtual_key_provider'",
        ),
    ],
)
@pytest.mark.django_db
def test_bad_input_is_a_400_naming_the_field_and_writes_nothing(alice_api, world, change, expected):
    ids = {"{vk}": str(world["vk"].pk), "{key}": str(world["key"].pk)}
    body = {**BODY, **{k: ids.get(v, v) if isinstance(v, str) else v for k, v in change.items()}}
    if "pricing_patch" in change and change["pricing_patch"].startswith("{not"):
        body.pop("patch")
    assert message(alice_api.post(URL, body, format="json")).startswith(expected)
    assert not PricingOverride.objects.exists()


@pytest.mark.django_db
def test_a_pattern_that_matches_no_model_is_allowed(alice_api, world):
    body = {**BODY, "match_type": "pattern", "pattern": "model-not-released-yet-?"}
    assert alice_api.post(URL, body, format="json").status_code == 201


@pytest.mark.django_db
def test_update_merges_omitted_fields_and_resets_the_scope_with_scope_kind(alice_api, world):
    vk, key = str(world["vk"].pk), str(world["key"].pk)
    body = {**BODY, "scope_kind": "virtual_key_provider_key", "virtual_key_id": vk, "provider_key_id": key}
    made = alice_api.post(URL, body, format="json").json()["pricing_override"]
    url = f"{URL}/{made['id']}"
    renamed = alice_api.put(url, {"name": "renamed"}, format="json")
    assert renamed.status_code == 200
    assert renamed.json()["message"] == "Pricing override updated successfully"
    kept = renamed.json()["pricing_override"]
    assert {k: v for k, v in kept.items() if k not in ("name", "updated_at")} == {
        k: v for k, v in made.items() if k not in ("name", "updated_at")
    }
    # scope_kind given: the identifiers are those sent with it, the others are cleared.
    moved = alice_api.put(url, {"scope_kind": "virtual_key", "virtual_key_id": vk}, format="json").json()
    assert (moved["pricing_override"]["virtual_key_id"], moved["pricing_override"]["provider_key_id"]) == (vk, None)
    refused = alice_api.put(url, {"scope_kind": "provider_key"}, format="json")
    assert message(refused) == "provider_key_id: is required for scope_kind 'provider_key'"
    # patch replaces the whole price patch.
    repriced = alice_api.put(url, {"patch": {"cost_per_request": 0.5}}, format="json").json()["pricing_override"]
    assert repriced["patch"] == {"cost_per_request": 0.5}
    row = PricingOverride.objects.get()
    assert (row.input_cost_per_token, row.output_cost_per_token, row.cost_per_request) == (None, None, Decimal("0.5"))


@pytest.mark.django_db
def test_list_filters_and_paginates_like_bifrost(alice_api, world):
    vk = str(world["vk"].pk)
    alice_api.post(URL, {**BODY, "name": "a"}, format="json")
    alice_api.post(URL, {**BODY, "name": "b", "scope_kind": "provider", "provider_id": "openai"}, format="json")
    alice_api.post(URL, {**BODY, "name": "c", "scope_kind": "virtual_key", "virtual_key_id": vk}, format="json")
    everything = alice_api.get(URL).json()
    assert set(everything) == {"pricing_overrides", "count"}
    assert [o["name"] for o in everything["pricing_overrides"]] == ["a", "b", "c"] and everything["count"] == 3
    assert [o["name"] for o in alice_api.get(URL, {"scope_kind": "provider"}).json()["pricing_overrides"]] == ["b"]
    assert [o["name"] for o in alice_api.get(URL, {"provider_id": "openai"}).json()["pricing_overrides"]] == ["b"]
    assert [o["name"] for o in alice_api.get(URL, {"virtual_key_id": vk}).json()["pricing_overrides"]] == ["c"]
    page = alice_api.get(URL, {"limit": 2, "offset": 1}).json()
    assert ([o["name"] for o in page["pricing_overrides"]], page["total_count"], page["count"]) == (["b", "c"], 3, 2)
    assert message(alice_api.get(URL, {"scope_kind": "team"})).startswith("scope_kind: scope_kind must be one of")
    assert message(alice_api.get(URL, {"virtual_key_id": "x"})) == "virtual_key_id: virtual_key_id must be a UUID"


@pytest.mark.django_db
def test_delete_and_cascade_with_the_scope(alice_api, world):
    made = alice_api.post(URL, {**BODY, "scope_kind": "provider", "provider_id": "openai"}, format="json").json()
    url = f"{URL}/{made['pricing_override']['id']}"
    assert alice_api.delete(url).json() == {"message": "Pricing override deleted successfully"}
    assert message(alice_api.get(url), 404) == "Pricing override not found"
    alice_api.post(URL, {**BODY, "scope_kind": "virtual_key", "virtual_key_id": str(world["vk"].pk)}, format="json")
    VirtualKey.objects.get().delete()
    assert not PricingOverride.objects.exists()  # an override of a deleted key goes with it


@pytest.mark.django_db
def test_the_openapi_schema_documents_the_resource_and_its_201():
    from drf_spectacular.generators import SchemaGenerator

    schema = SchemaGenerator().get_schema(request=None, public=True)
    create = schema["paths"][URL]["post"]
    assert set(create["responses"]) >= {"201", "400", "401", "403", "409", "413"}
    assert "200" not in create["responses"]
    assert set(schema["paths"][f"{URL}/{{id}}"]) == {"get", "put", "delete"}
    patch = schema["components"]["schemas"]["PatchInputRequest"]["properties"]
    assert set(patch) == {
        "input_cost_per_token",
        "output_cost_per_token",
        "cache_read_input_token_cost",
        "cost_per_request",
    }


# --- the config import ----------------------------------------------------------------------------


def config(*overrides: dict) -> dict:
    return {
        "providers": {"openai": {"keys": [{"name": "main", "value": "sk-x"}]}},
        "governance": {"virtual_keys": [{"id": "vk-a", "name": "team-a"}], "pricing_overrides": list(overrides)},
    }


IMPORTED = {
    "id": "vk-a-gpt4o",
    "name": "team A gpt-4o",
    "scope_kind": "virtual_key",
    "virtual_key_id": "vk-a",
    "match_type": "wildcard",
    "pattern": "gpt-4o*",
    "request_types": ["chat_completion"],
    "pricing_patch": '{"input_cost_per_token":0.000002,"output_cost_per_token":0.000008}',
}


@pytest.mark.django_db
def test_the_import_reads_pricing_overrides_and_is_idempotent():
    keyed = {
        "id": "key-rate",
        "name": "main key",
        "scope_kind": "provider_key",
        "provider_key_id": "main",
        "match_type": "exact",
        "pattern": "gpt-4o",
        "request_types": [],
        "patch": {"cost_per_request": 0.01},
    }
    result = import_config(config(IMPORTED, keyed))
    assert result.created["pricing_overrides"] == 2 and "governance.pricing_overrides" not in result.ignored
    vk_rate = PricingOverride.objects.get(name="team A gpt-4o")
    assert (vk_rate.virtual_key.name, vk_rate.match_type, vk_rate.pattern) == ("team-a", "wildcard", "gpt-4o*")
    assert (vk_rate.input_cost_per_token, vk_rate.output_cost_per_token) == (Decimal("0.000002"), Decimal("0.000008"))
    assert PricingOverride.objects.get(name="main key").provider_key.name == "main"
    again = import_config(config({**IMPORTED, "pricing_patch": '{"input_cost_per_token":0.000001}'}, keyed))
    assert again.updated["pricing_overrides"] == 2 and PricingOverride.objects.count() == 2
    vk_rate.refresh_from_db()
    assert (vk_rate.input_cost_per_token, vk_rate.output_cost_per_token) == (Decimal("0.000001"), None)


@pytest.mark.parametrize(
    ("change", "path", "text"),
    [
        ({"scope_kind": "user"}, "scope_kind", "must be one of"),
        ({"virtual_key_id": "vk-nope"}, "virtual_key_id", "virtual key 'vk-nope' is not defined"),
        ({"provider_id": "openai"}, "provider_id", "is not used by scope_kind 'virtual_key'"),
        ({"pattern": "gpt*4o"}, "pattern", "a wildcard pattern is a prefix ending with *"),
        ({"request_types": ["chat"]}, "request_types", "unknown request type 'chat'"),
        ({"pricing_patch": "nope"}, "pricing_patch", "must be a JSON object"),
        ({"pricing_patch": '{"input_cost_per_image": 1}'}, "pricing_patch.input_cost_per_image", "not a price"),
        (
            {"pricing_patch": '{"input_cost_per_token": -1}'},
            "pricing_patch.input_cost_per_token",
            "must be a number >= 0",
        ),
        (
            {"pricing_patch": '{"input_cost_per_token": 1e-16}'},
            "pricing_patch.input_cost_per_token",
            "15 decimal places",
        ),
        ({"pricing_patch": "{}"}, "pricing_patch", "set at least one price field"),
        ({"id": None}, "id", "is required"),
    ],
)
@pytest.mark.django_db
def test_import_problems_name_their_json_path_and_nothing_is_written(change, path, text):
    with pytest.raises(ConfigError) as error:
        import_config(config({**IMPORTED, **change}))
    problems = dict(error.value.problems)
    assert text in problems[f"governance.pricing_overrides[0].{path}"], problems
    assert not PricingOverride.objects.exists() and not Provider.objects.exists()


@pytest.mark.django_db
def test_import_refuses_an_ambiguous_key_name():
    data = config({**IMPORTED, "scope_kind": "provider_key", "virtual_key_id": None, "provider_key_id": "main"})
    data["providers"]["azure-x"] = {"keys": [{"name": "main", "value": "sk-y"}], "provider_type": "openai"}
    with pytest.raises(ConfigError) as error:
        import_config(data)
    assert "is ambiguous" in dict(error.value.problems)["governance.pricing_overrides[0].provider_key_id"]


# --- the admin ------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_the_admin_lists_and_edits_overrides_through_the_services(client, alice, world):
    client.force_login(alice)
    add = reverse("admin:governance_pricingoverride_add")
    assert client.get(add).status_code == 200
    form = {
        "name": "team A",
        "scope_kind": "virtual_key",
        "virtual_key": str(world["vk"].pk),
        "provider": "",
        "provider_key": "",
        "match_type": "wildcard",
        "pattern": "gpt-4o*",
        "request_types": ["chat_completion", "messages"],
        "input_cost_per_token": "0.000001",
        "output_cost_per_token": "",
        "cached_input_cost_per_token": "",
        "cost_per_request": "0.01",
    }
    response = client.post(add, form)
    assert response.status_code == 302, response.content.decode()[-3000:]
    row = PricingOverride.objects.get()
    assert (row.virtual_key_id, row.request_types, row.cost_per_request) == (
        world["vk"].pk,
        ["chat_completion", "messages"],
        Decimal("0.01"),
    )
    listing = client.get(reverse("admin:governance_pricingoverride_changelist")).content.decode()
    assert "gpt-4o*" in listing and "team-a" in listing and "chat_completion, messages" in listing
    change = reverse("admin:governance_pricingoverride_change", args=[row.pk])
    assert client.get(change).status_code == 200
    bad = client.post(change, {**form, "scope_kind": "provider"})
    assert bad.status_code == 200 and PricingOverride.objects.get().scope_kind == "virtual_key"
    assert "is required for scope_kind" in bad.content.decode()
