"""The MCP client management API: Bifrost's paths, bodies and messages, with the gateway's
upstream replaced by a fake (``tests/governance/mcp_fakes.py``).

Bifrost's MCP paths do not fit the table of ``test_api_crud_contract.py`` (the list is
``/api/mcp/clients``, one client ``/api/mcp/client/{client_id}``, no GET of one client, successes
carry ``status``): the contract's clauses are restated for them at the end of this file.
"""

from __future__ import annotations

import json
import logging

import pytest
from django.contrib.auth.models import Permission
from rest_framework.test import APIClient

from governance import mcp_upstream
from governance.models import McpClient, VirtualKey, VirtualKeyMcpConfig
from governance.services import api_token_create, virtual_key_create
from tests.governance.mcp_fakes import TOOLS, FakeUpstream, install

pytestmark = pytest.mark.django_db

LIST = "/api/mcp/clients"
CREATE = "/api/mcp/client"
URL = "https://docs.example.test/mcp"
SECRET = "Bearer sk-upstream-TOP-SECRET-7781"
OAUTH_SECRET = "oauth-client-secret-XYZ-9932"
BODY = {
    "name": "docs",
    "connection_type": "http",
    "connection_string": URL,
    "auth_type": "headers",
    "headers": {"Authorization": SECRET},
    "tools_to_execute": ["*"],
    "allowed_extra_headers": ["x-tenant"],
    "tool_pricing": {"search": 0.01, "read": "0.5"},
    "timeout_seconds": 12.5,
}


@pytest.fixture
def upstream(monkeypatch) -> FakeUpstream:
    fake = install(monkeypatch)
    fake.serve(URL)
    return fake


def one(client: McpClient) -> str:
    return f"/api/mcp/client/{client.client_id}"


def create(api, **changes):
    return api.post(CREATE, {**BODY, **changes}, format="json")


def rows() -> dict[str, list[dict]]:
    """Every row an MCP client write can touch, ``updated_at`` included: "nothing written" is exact."""
    return {
        model.__name__: list(model.objects.order_by("pk").values())
        for model in (McpClient, VirtualKeyMcpConfig, VirtualKey)
    }


def error(response, status: int) -> str:
    assert response.status_code == status, response.content
    body = response.json()
    assert body["is_bifrost_error"] is False and body["status_code"] == status
    return body["error"]["message"]


# --- create ----------------------------------------------------------------------------------------


def test_create_tries_the_server_before_saving_and_answers_the_client(alice_api, upstream):
    response = create(alice_api)

    assert response.status_code == 200, response.content
    body = response.json()
    assert set(body) == {"status", "message", "client"}
    assert (body["status"], body["message"]) == ("success", "MCP client connected successfully")
    client = McpClient.objects.get()
    spec, refresh = upstream.probes()[0]
    assert refresh is True and spec.saved is False  # listed with the unsaved configuration
    assert spec.headers == (("Authorization", SECRET),)
    config = body["client"]["config"]
    assert config == {
        "client_id": client.client_id,
        "name": "docs",
        "connection_type": "http",
        "connection_string": URL,
        "stdio_config": None,
        "auth_type": "headers",
        "headers": {"Authorization": "…7781"},
        "oauth_config": None,
        "tools_to_execute": ["*"],
        "allowed_extra_headers": ["x-tenant"],
        "tool_pricing": {"search": 0.01, "read": 0.5},
        "timeout_seconds": 12.5,
        "allow_on_all_virtual_keys": False,
        "created_at": config["created_at"],
        "updated_at": config["updated_at"],
    }
    assert body["client"]["state"] == "connected"
    assert body["client"]["tools"] == [
        {"name": "docs_read", "description": "Read one page.", "parameters": {"type": "object", "required": ["id"]}},
        {"name": "docs_search", "description": "Search the docs.", "parameters": {"type": "object"}},
    ]
    assert body["client"]["vk_configs"] == []
    assert client.headers == {"Authorization": SECRET} and SECRET not in client.headers_encrypted
    assert client.tool_pricing == {"search": "0.01", "read": "0.5"}  # stored as decimal strings
    assert SECRET not in response.content.decode()


def test_create_stdio_keeps_env_references_as_written(alice_api, upstream):
    upstream.serve("python3")
    body = {
        "name": "local_tools",
        "connection_type": "stdio",
        "stdio_config": {"command": "python3", "args": ["-m", "server"], "envs": ["HOME", "API_TOKEN"]},
    }
    response = alice_api.post(CREATE, body, format="json")

    assert response.status_code == 200, response.content
    client = McpClient.objects.get()
    assert client.stdio_config == {
        "command": "python3",
        "args": ["-m", "server"],
        "envs": {"HOME": "env.HOME", "API_TOKEN": "env.API_TOKEN"},  # Bifrost's list of names
    }
    assert client.auth_type == "none"
    assert response.json()["client"]["config"]["stdio_config"] == client.stdio_config


def test_create_http_with_an_env_connection_string_keeps_it_unresolved(alice_api, upstream, monkeypatch):
    monkeypatch.setenv("DOCS_MCP_URL", "https://resolved.example.test/mcp")
    upstream.serve("env.DOCS_MCP_URL")
    response = create(alice_api, connection_string="env.DOCS_MCP_URL")
    assert response.status_code == 200, response.content
    assert McpClient.objects.get().connection_string == "env.DOCS_MCP_URL"
    listed = alice_api.get(LIST).json()["clients"][0]["config"]
    assert listed["connection_string"] == "env.DOCS_MCP_URL"
    assert "resolved.example.test" not in json.dumps(listed)


def test_create_with_headers_and_no_auth_type_authenticates_with_them(alice_api, upstream):
    body = {k: v for k, v in BODY.items() if k != "auth_type"}
    assert alice_api.post(CREATE, body, format="json").status_code == 200
    assert McpClient.objects.get().auth_type == "headers"


def test_an_unreachable_server_is_a_400_saying_why_and_nothing_is_written(alice_api, upstream):
    vk, _ = virtual_key_create(name="app")
    upstream.down[URL] = "connection refused (errno 111)"
    before = rows()

    response = create(alice_api, vk_configs=[{"virtual_key_id": str(vk.pk), "tools_to_execute": ["*"]}])

    assert error(response, 400) == "could not connect to MCP server 'docs': connection refused (errno 111)"
    assert rows() == before
    assert upstream.named("forget") == [upstream.probes()[0][0].client_id]  # the gateway keeps nothing of it
    assert SECRET not in response.content.decode()


def test_per_user_oauth_is_created_without_a_connection_of_the_gateways_own(alice_api, upstream):
    body = {
        "name": "github",
        "connection_type": "http",
        "connection_string": "https://github.example.test/mcp",
        "auth_type": "per_user_oauth",
        "oauth_config": {"client_id": "gh-app", "client_secret": OAUTH_SECRET, "scopes": ["repo"]},
    }
    response = alice_api.post(CREATE, body, format="json")

    assert response.status_code == 200, response.content
    assert response.json()["message"] == "MCP client created successfully"
    assert upstream.probes() == []
    client = McpClient.objects.get()
    assert client.per_user_oauth is True and client.oauth_config["client_secret"] == OAUTH_SECRET
    shown = response.json()["client"]["config"]["oauth_config"]
    assert shown == {"client_id": "gh-app", "client_secret": "…9932", "scopes": ["repo"]}
    assert OAUTH_SECRET not in response.content.decode()
    assert OAUTH_SECRET not in alice_api.get(LIST).content.decode()


def test_an_oauth_secret_given_as_env_reference_is_shown_as_written(alice_api, upstream):
    body = {
        **BODY,
        "auth_type": "oauth",
        "headers": {},
        "oauth_config": {
            "client_id": "gw",
            "client_secret": "env.DOCS_OAUTH_SECRET",
            "authorize_url": "https://auth.example.test/authorize",
            "token_url": "https://auth.example.test/token",
        },
    }
    response = alice_api.post(CREATE, body, format="json")
    assert response.status_code == 200, response.content
    assert response.json()["client"]["config"]["oauth_config"]["client_secret"] == "env.DOCS_OAUTH_SECRET"


def test_create_assigns_virtual_keys(alice_api, upstream):
    vk, _ = virtual_key_create(name="app")
    response = create(alice_api, vk_configs=[{"virtual_key_id": str(vk.pk), "tools_to_execute": ["search"]}])
    assert response.status_code == 200, response.content
    assert response.json()["client"]["vk_configs"] == [
        {"virtual_key_id": str(vk.pk), "virtual_key_name": "app", "tools_to_execute": ["search"]}
    ]
    assert VirtualKeyMcpConfig.objects.get().tools_to_execute == ["search"]


def test_a_chosen_client_id_is_kept(alice_api, upstream):
    response = create(alice_api, client_id="docs-prod-1")
    assert response.status_code == 200, response.content
    assert response.json()["client"]["config"]["client_id"] == "docs-prod-1"
    assert alice_api.post("/api/mcp/client/docs-prod-1/reconnect").status_code == 200


# --- validation ----------------------------------------------------------------------------------

BAD_CREATE = [
    ({"name": "has space"}, "name: letters, digits, '_' or '-'"),
    ({"name": "x" * 64}, "name: must be at most 63 characters"),
    ({"name": 7}, "name: must be a string"),
    ({"connection_type": "websocket"}, "connection_type: must be one of http, sse, stdio"),
    ({"connection_string": ""}, "connection_string: is required for connection_type 'http'"),
    ({"connection_string": "ftp://files.example.test"}, "connection_string: must be an http(s) URL or env.NAME"),
    ({"connection_string": "env.NOT-A-NAME"}, "connection_string: env.NAME must name an environment variable"),
    ({"stdio_config": {"command": "npx"}}, "stdio_config: is only for connection_type 'stdio'"),
    (
        {"connection_type": "stdio", "connection_string": "", "auth_type": "none", "headers": {}},
        "stdio_config.command: is required for connection_type 'stdio'",
    ),
    (
        {"connection_type": "stdio", "connection_string": "", "auth_type": "none", "stdio_config": {"command": 1}},
        "stdio_config.command: must be a string",
    ),
    (
        {
            "connection_type": "stdio",
            "connection_string": "",
            "auth_type": "none",
            "stdio_config": {"command": "x", "args": "-v"},
        },
        "stdio_config.args: must be a list of strings",
    ),
    (
        {
            "connection_type": "stdio",
            "connection_string": "",
            "auth_type": "none",
            "stdio_config": {"command": "x", "envs": {"A": 1}},
        },
        "stdio_config.envs: the value of 'A' must be a string",
    ),
    (
        {
            "connection_type": "stdio",
            "connection_string": "",
            "auth_type": "none",
            "stdio_config": {"command": "x", "cwd": "/"},
        },
        "stdio_config: unknown keys 'cwd'",
    ),
    ({"auth_type": "kerberos"}, "auth_type: must be one of none, headers, oauth, per_user_oauth"),
    ({"headers": {}}, "headers: at least one header is required when auth_type is 'headers'"),
    ({"headers": {"Bad Name": "x"}}, "headers: invalid header name 'Bad Name'"),
    ({"headers": {"Authorization": "a\r\nX-Injected: 1"}}, "headers: invalid value for header 'Authorization'"),
    ({"headers": {"Authorization": 5}}, "headers: the value of header 'Authorization' must be a string"),
    ({"headers": {"Host": "evil"}}, "headers: header 'Host' is not allowed"),
    ({"headers": ["Authorization"]}, "headers: must be an object of header name to string value"),
    ({"auth_type": "oauth"}, None),  # oauth with no config but a URL to discover from: valid
    ({"auth_type": "none", "headers": {}, "oauth_config": {"client_id": "x"}}, "oauth_config: is only for auth_type"),
    (
        {"auth_type": "oauth", "headers": {}, "oauth_config": {"token_url": "nope"}},
        "oauth_config.token_url: must be an http(s) URL",
    ),
    ({"auth_type": "oauth", "headers": {}, "oauth_config": {"secret": "x"}}, "oauth_config: unknown keys 'secret'"),
    ({"tools_to_execute": ["*", "search"]}, "tools_to_execute: '*' cannot be combined with other entries"),
    ({"tools_to_execute": ["search", "search"]}, "tools_to_execute: duplicate entries are not allowed: 'search'"),
    ({"tools_to_execute": "search"}, "tools_to_execute: must be a list of strings"),
    ({"tools_to_execute": [""]}, "tools_to_execute: '' is not a valid name"),
    ({"allowed_extra_headers": ["x tenant"]}, "allowed_extra_headers: 'x tenant' is not a valid header name"),
    ({"allowed_extra_headers": ["x-a", "x-a"]}, "allowed_extra_headers: duplicate entries are not allowed"),
    ({"tool_pricing": {"search": -1}}, "tool_pricing.search: must be a finite number of dollars, 0 or more"),
    ({"tool_pricing": {"search": "NaN"}}, "tool_pricing.search: must be a finite number of dollars, 0 or more"),
    ({"tool_pricing": {"search": "cheap"}}, "tool_pricing.search: must be a number (dollars per call)"),
    ({"tool_pricing": {"search": True}}, "tool_pricing.search: must be a number (dollars per call)"),
    ({"tool_pricing": {"search": "0.00000000001"}}, "tool_pricing.search: must have at most 10 decimal places"),
    ({"tool_pricing": ["search"]}, "tool_pricing: must be an object of tool name to price"),
    ({"timeout_seconds": 0.05}, "timeout_seconds: must be between 0.1 and 600 seconds"),
    ({"timeout_seconds": 601}, "timeout_seconds: must be between 0.1 and 600 seconds"),
    ({"timeout_seconds": "30"}, "timeout_seconds: must be a number of seconds"),
    ({"allow_on_all_virtual_keys": "yes"}, "allow_on_all_virtual_keys: must be true or false"),
    (
        {"vk_configs": [{"virtual_key_id": "6f1c2a57-0000-4000-8000-000000000000"}]},
        "vk_configs[0].virtual_key_id: virtual key",
    ),
    (
        {"vk_configs": [{"virtual_key_id": "not-a-uuid"}]},
        "vk_configs[0].virtual_key_id: virtual key 'not-a-uuid' does not exist",
    ),
    ({"vk_configs": {"a": 1}}, "vk_configs: must be a list"),
    ({"client_id": "has/slash"}, "client_id: letters, digits, '_' or '-'"),
]


@pytest.mark.parametrize(("changes", "message"), BAD_CREATE, ids=[m or "valid" for _, m in BAD_CREATE])
def test_every_bad_field_is_a_400_naming_it_and_nothing_is_written(alice_api, upstream, changes, message):
    before = rows()
    response = create(alice_api, **changes)
    if message is None:
        assert response.status_code == 200, response.content
        return
    assert error(response, 400).startswith(message), response.json()["error"]["message"]
    assert response.json()["error"]["details"]
    assert rows() == before
    assert upstream.probes() == []  # refused before any connection


def test_every_problem_is_reported_at_once(alice_api, upstream):
    response = create(alice_api, name="bad name", timeout_seconds=0, tools_to_execute=["*", "x"])
    message = error(response, 400)
    for field in ("name:", "timeout_seconds:", "tools_to_execute:"):
        assert field in message


def test_vk_configs_tools_follow_the_same_rules(alice_api, upstream):
    vk, _ = virtual_key_create(name="app")
    response = create(alice_api, vk_configs=[{"virtual_key_id": str(vk.pk), "tools_to_execute": ["*", "read"]}])
    assert error(response, 400) == "vk_configs[0].tools_to_execute: '*' cannot be combined with other entries"
    response = create(alice_api, vk_configs=[{"virtual_key_id": str(vk.pk)}, {"virtual_key_id": str(vk.pk)}])
    assert error(response, 400) == f"vk_configs[1].virtual_key_id: duplicate virtual key {vk.pk}"
    assert not McpClient.objects.exists()


def test_required_fields_and_the_body_shape(alice_api, upstream):
    assert error(alice_api.post(CREATE, {"name": "docs"}, format="json"), 400) == (
        "connection_type: This field is required."
    )
    assert error(alice_api.post(CREATE, [BODY], format="json"), 400) == "the body must be a JSON object"
    assert not McpClient.objects.exists()


def test_a_duplicate_name_or_client_id_is_a_409(alice_api, upstream):
    create(alice_api, client_id="docs-1")
    before = rows()
    assert error(create(alice_api), 409) == "name: MCP client 'docs' already exists"
    assert error(create(alice_api, name="docs2", client_id="docs-1"), 409) == (
        "client_id: MCP client id 'docs-1' is already used"
    )
    other = create(alice_api, name="other").json()["client"]["config"]["client_id"]
    before = rows()
    response = alice_api.put(f"/api/mcp/client/{other}", {"name": "docs"}, format="json")
    assert error(response, 409) == "name: MCP client 'docs' already exists"
    assert rows() == before


# --- list ------------------------------------------------------------------------------------------


def test_list_shape_masks_secrets_and_is_paginated_with_search(alice_api, upstream):
    for name in ("alpha", "beta", "docs"):
        assert create(alice_api, name=name).status_code == 200

    body = alice_api.get(LIST).json()
    assert set(body) == {"clients", "count", "total_count", "limit", "offset"}
    assert (body["count"], body["total_count"], body["limit"], body["offset"]) == (3, 3, 25, 0)
    assert [c["config"]["name"] for c in body["clients"]] == ["alpha", "beta", "docs"]
    assert all(set(c) == {"config", "tools", "state", "vk_configs"} for c in body["clients"])
    assert body["clients"][0]["config"]["headers"] == {"Authorization": "…7781"}
    assert SECRET not in json.dumps(body)

    page = alice_api.get(LIST, {"limit": 1, "offset": 1}).json()
    assert [c["config"]["name"] for c in page["clients"]] == ["beta"]
    assert (page["count"], page["total_count"], page["limit"], page["offset"]) == (1, 3, 1, 1)
    found = alice_api.get(LIST, {"search": "ET"}).json()
    assert [c["config"]["name"] for c in found["clients"]] == ["beta"] and found["total_count"] == 1
    assert error(alice_api.get(LIST, {"limit": "x"}), 400) == "limit: limit must be a non-negative integer"


def test_the_list_survives_unreachable_and_silent_servers(alice_api, upstream, monkeypatch):
    for name in ("alive", "broken", "silent"):
        upstream.serve(f"https://{name}.example.test/mcp")
        assert create(alice_api, name=name, connection_string=f"https://{name}.example.test/mcp").status_code == 200
    upstream.down["https://broken.example.test/mcp"] = "HTTP 502 from upstream"
    upstream.slow.add("https://silent.example.test/mcp")
    monkeypatch.setattr(mcp_upstream, "DISCOVERY_SECONDS", 0.2)
    try:
        clients = {c["config"]["name"]: c for c in alice_api.get(LIST).json()["clients"]}
    finally:
        upstream.release.set()

    assert clients["alive"]["state"] == "connected" and len(clients["alive"]["tools"]) == 2
    assert (clients["broken"]["state"], clients["broken"]["tools"]) == ("error", [])
    assert clients["broken"]["error"] == "HTTP 502 from upstream"
    assert (clients["silent"]["state"], clients["silent"]["tools"]) == ("error", [])
    assert clients["silent"]["error"] == "no answer within 0.2 s"


def test_the_list_survives_a_gateway_that_cannot_be_loaded(alice_api, upstream, monkeypatch):
    create(alice_api)

    def broken():
        raise ImportError("No module named 'mcp_gateway.upstream'")

    monkeypatch.setattr(mcp_upstream, "connector", broken)
    body = alice_api.get(LIST).json()
    assert body["clients"][0]["state"] == "error" and body["clients"][0]["tools"] == []
    assert "the MCP gateway is unavailable" in body["clients"][0]["error"]


# --- update ----------------------------------------------------------------------------------------


def test_update_patches_the_fields_given_without_reconnecting(alice_api, upstream):
    client_id = create(alice_api).json()["client"]["config"]["client_id"]
    before = alice_api.get(LIST).json()["clients"][0]
    probes = len(upstream.probes())

    response = alice_api.put(f"/api/mcp/client/{client_id}", {"tools_to_execute": ["search"]}, format="json")

    assert response.status_code == 200, response.content
    assert (response.json()["status"], response.json()["message"]) == ("success", "MCP client edited successfully")
    after = response.json()["client"]
    assert after["config"]["tools_to_execute"] == ["search"]
    unchanged = ("tools_to_execute", "updated_at")
    assert {k: v for k, v in after["config"].items() if k not in unchanged} == {
        k: v for k, v in before["config"].items() if k not in unchanged
    }
    assert [p for p, refresh in upstream.probes()[probes:] if refresh] == []  # no new connection tried
    assert McpClient.objects.get().headers == {"Authorization": SECRET}


def test_a_new_connection_is_tried_before_it_is_saved(alice_api, upstream):
    client_id = create(alice_api).json()["client"]["config"]["client_id"]
    client = McpClient.objects.get(client_id=client_id)
    moved = "https://moved.example.test/mcp"
    before = rows()

    response = alice_api.put(one(client), {"connection_string": moved}, format="json")
    assert error(response, 400) == f"could not connect to MCP server 'docs': connection refused: {moved}"
    assert rows() == before

    upstream.serve(moved, [{"name": "only", "description": "", "inputSchema": {}}])
    response = alice_api.put(one(client), {"connection_string": moved}, format="json")
    assert response.status_code == 200, response.content
    assert [t["name"] for t in response.json()["client"]["tools"]] == ["docs_only"]
    spec, refresh = upstream.probes()[-2]
    assert refresh and spec.endpoint == moved and spec.saved


def test_headers_replace_and_a_masked_value_sent_back_keeps_the_stored_one(alice_api, upstream):
    client = McpClient.objects.get(client_id=create(alice_api).json()["client"]["config"]["client_id"])

    shown = alice_api.get(LIST).json()["clients"][0]["config"]
    response = alice_api.put(one(client), shown, format="json")  # a GET body sent back unchanged
    assert response.status_code == 200, response.content
    client.refresh_from_db()
    assert client.headers == {"Authorization": SECRET}
    assert response.json()["client"]["config"]["headers"] == shown["headers"]

    response = alice_api.put(one(client), {"headers": {"X-Api-Key": "k-new-0042"}}, format="json")
    assert response.status_code == 200, response.content
    client.refresh_from_db()
    assert client.headers == {"X-Api-Key": "k-new-0042"}  # replaced, not merged

    response = alice_api.put(one(client), {"headers": {}}, format="json")
    assert error(response, 400) == "headers: at least one header is required when auth_type is 'headers'"
    response = alice_api.put(one(client), {"headers": {}, "auth_type": "none"}, format="json")
    assert response.status_code == 200
    client.refresh_from_db()
    assert client.headers == {} and client.headers_encrypted == ""


def test_a_masked_oauth_secret_sent_back_keeps_the_stored_one(alice_api, upstream):
    body = {
        **BODY,
        "auth_type": "oauth",
        "headers": {},
        "oauth_config": {
            "client_id": "gw",
            "client_secret": OAUTH_SECRET,
            "authorize_url": "https://auth.example.test/authorize",
            "token_url": "https://auth.example.test/token",
        },
    }
    client_id = alice_api.post(CREATE, body, format="json").json()["client"]["config"]["client_id"]
    shown = alice_api.get(LIST).json()["clients"][0]["config"]
    assert shown["oauth_config"]["client_secret"] == "…9932"
    assert alice_api.put(f"/api/mcp/client/{client_id}", shown, format="json").status_code == 200
    assert McpClient.objects.get().oauth_config["client_secret"] == OAUTH_SECRET

    response = alice_api.put(f"/api/mcp/client/{client_id}", {"auth_type": "none"}, format="json")
    assert response.status_code == 200, response.content
    assert McpClient.objects.get().oauth_config == {}  # leaving OAuth drops its configuration


def test_vk_configs_given_on_update_replace_the_clients_assignments(alice_api, upstream):
    app, _ = virtual_key_create(name="app")
    ops, _ = virtual_key_create(name="ops")
    client_id = create(alice_api, vk_configs=[{"virtual_key_id": str(app.pk), "tools_to_execute": ["*"]}]).json()[
        "client"
    ]["config"]["client_id"]

    body = {"vk_configs": [{"virtual_key_id": str(ops.pk), "tools_to_execute": ["read"]}]}
    response = alice_api.put(f"/api/mcp/client/{client_id}", body, format="json")

    assert response.status_code == 200, response.content
    assert response.json()["client"]["vk_configs"] == [
        {"virtual_key_id": str(ops.pk), "virtual_key_name": "ops", "tools_to_execute": ["read"]}
    ]
    assert list(VirtualKeyMcpConfig.objects.values_list("virtual_key__name", "tools_to_execute")) == [("ops", ["read"])]
    assert alice_api.put(f"/api/mcp/client/{client_id}", {"name": "renamed"}, format="json").status_code == 200
    assert VirtualKeyMcpConfig.objects.count() == 1  # absent vk_configs: kept


def test_the_tool_price_round_trips_as_a_number(alice_api, upstream):
    client_id = create(alice_api, tool_pricing={"search": "0.0000000001", "read": 3}).json()["client"]["config"][
        "client_id"
    ]
    assert McpClient.objects.get().tool_pricing == {"search": "0.0000000001", "read": "3"}
    shown = alice_api.get(LIST).json()["clients"][0]["config"]["tool_pricing"]
    assert shown == {"search": 1e-10, "read": 3.0}
    assert alice_api.put(f"/api/mcp/client/{client_id}", {"tool_pricing": shown}, format="json").status_code == 200
    assert McpClient.objects.get().tool_pricing == {"search": "0.0000000001", "read": "3"}


# --- delete and reconnect --------------------------------------------------------------------------


def test_delete_removes_the_client_and_its_vk_configs_then_drops_the_connection(
    alice_api, upstream, django_capture_on_commit_callbacks
):
    vk, _ = virtual_key_create(name="app")
    client_id = create(alice_api, vk_configs=[{"virtual_key_id": str(vk.pk)}]).json()["client"]["config"]["client_id"]

    with django_capture_on_commit_callbacks(execute=True):
        response = alice_api.delete(f"/api/mcp/client/{client_id}")

    assert response.status_code == 200
    assert response.json() == {"status": "success", "message": "MCP client removed successfully"}
    assert not McpClient.objects.exists() and not VirtualKeyMcpConfig.objects.exists()
    assert VirtualKey.objects.filter(pk=vk.pk).exists()
    assert upstream.named("forget") == [client_id]


def test_reconnect_remakes_the_connection_and_lists_the_tools_again(alice_api, upstream):
    client_id = create(alice_api).json()["client"]["config"]["client_id"]
    response = alice_api.post(f"/api/mcp/client/{client_id}/reconnect")

    assert response.status_code == 200, response.content
    body = response.json()
    assert (body["status"], body["message"]) == ("success", "MCP client reconnected successfully")
    assert body["client"]["state"] == "connected" and len(body["client"]["tools"]) == len(TOOLS)
    assert len(upstream.named("reconnect")) == 1 and upstream.probes()[-2][1] is True

    upstream.down[URL] = "name or service not known"
    response = alice_api.post(f"/api/mcp/client/{client_id}/reconnect")
    assert error(response, 400) == "could not connect to MCP server 'docs': name or service not known"


def test_a_per_user_oauth_client_has_no_shared_connection_to_reconnect(alice_api, upstream):
    body = {"name": "gh", "connection_type": "http", "connection_string": URL, "auth_type": "per_user_oauth"}
    client_id = alice_api.post(CREATE, body, format="json").json()["client"]["config"]["client_id"]
    message = error(alice_api.post(f"/api/mcp/client/{client_id}/reconnect"), 400)
    assert message.startswith("MCP client 'gh' uses per-user OAuth")


# --- secrets never in logs -------------------------------------------------------------------------


def test_header_values_never_reach_the_logs(alice_api, upstream, caplog):
    caplog.set_level(logging.DEBUG)
    client_id = create(alice_api).json()["client"]["config"]["client_id"]
    alice_api.get(LIST)
    alice_api.put(f"/api/mcp/client/{client_id}", {"headers": {"Authorization": SECRET + "-2"}}, format="json")
    alice_api.put(f"/api/mcp/client/{client_id}", {"headers": {"Authorization": SECRET + "\n"}}, format="json")
    upstream.down[URL] = "refused"
    alice_api.put(f"/api/mcp/client/{client_id}", {"connection_string": URL + "/v2"}, format="json")
    create(alice_api, name="again")

    logged = "\n".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records)
    assert SECRET not in logged


# --- authentication, permissions, OpenAPI ----------------------------------------------------------


def test_the_api_needs_credentials_and_the_model_permissions(alice_api, anon_api, bob_api, upstream, django_user_model):
    client_id = create(alice_api).json()["client"]["config"]["client_id"]
    url = f"/api/mcp/client/{client_id}"
    calls = [
        ("get", LIST, None),
        ("post", CREATE, {**BODY, "name": "other"}),
        ("put", url, {"tools_to_execute": []}),
        ("delete", url, None),
        ("post", f"{url}/reconnect", None),
    ]
    before = rows()
    for method, path, body in calls:
        assert error(getattr(anon_api, method)(path, body, format="json"), 401) == (
            "Authentication credentials were not provided."
        )
    assert bob_api.get(LIST).status_code == 200  # view-only staff can read
    for method, path, body in calls[1:]:
        assert error(getattr(bob_api, method)(path, body, format="json"), 403) == (
            "You do not have permission to perform this action."
        )
    assert rows() == before

    # Reconnect is a change of an existing client: ``add`` alone is not enough.
    user = django_user_model.objects.create_user("adder", password="pw-123456789", is_staff=True)
    user.user_permissions.set(Permission.objects.filter(codename__in=["add_mcpclient", "view_mcpclient"]))
    adder = APIClient()
    adder.credentials(HTTP_AUTHORIZATION=f"Bearer {api_token_create(user=user, name='t')[1]}")
    assert error(adder.post(f"{url}/reconnect"), 403)
    assert adder.post(CREATE, {**BODY, "name": "by-adder"}, format="json").status_code == 200


def test_the_openapi_schema_documents_every_route(alice_api):
    document = alice_api.get("/api/governance/schema", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
    paths = document["paths"]
    expected = {
        ("/api/mcp/clients", "get"): ("McpClientListOut", None),
        ("/api/mcp/client", "post"): ("McpClientMessageOut", "McpClientInputRequest"),
        ("/api/mcp/client/{client_id}", "put"): ("McpClientMessageOut", "McpClientUpdateInputRequest"),
        ("/api/mcp/client/{client_id}", "delete"): ("McpStatusOut", None),
        ("/api/mcp/client/{client_id}/reconnect", "post"): ("McpClientMessageOut", None),
    }
    for (path, method), (out, body) in expected.items():
        operation = paths[path][method]
        schema = operation["responses"]["200"]["content"]["application/json"]["schema"]
        assert schema == {"$ref": f"#/components/schemas/{out}"}, (path, method)
        if body:
            assert operation["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith(body)
        assert "401" in operation["responses"] and "403" in operation["responses"]
    assert "400" in paths["/api/mcp/client/{client_id}/reconnect"]["post"]["responses"]
    assert "x-bifrost-may-refuse" not in json.dumps(document)
    assert "409" in paths["/api/mcp/client"]["post"]["responses"]
    config = document["components"]["schemas"]["McpClientConfigOut"]["properties"]
    assert {"client_id", "headers", "oauth_config", "tool_pricing", "stdio_config"} <= set(config)


# --- the CRUD contract, restated for Bifrost's MCP paths -------------------------------------------


def test_contract_create_answers_the_object_and_writes_the_row(alice_api, upstream):
    count = McpClient.objects.count()
    response = create(alice_api)
    assert response.status_code == 200 and response["Content-Type"] == "application/json"
    assert McpClient.objects.count() == count + 1
    row = McpClient.objects.get(client_id=response.json()["client"]["config"]["client_id"])
    stored = {f: getattr(row, f) for f in ("name", "connection_type", "connection_string", "tools_to_execute")}
    assert stored == {k: BODY[k] for k in stored}


def test_contract_list_contains_what_create_answered(alice_api, upstream):
    made = create(alice_api).json()["client"]
    listed = alice_api.get(LIST).json()["clients"]
    assert listed == [made]


@pytest.mark.parametrize(
    ("field", "value", "wrong"),
    [
        ("name", "renamed", 0),
        ("allow_on_all_virtual_keys", True, "yes"),
        ("timeout_seconds", 45.0, "45"),
        ("tools_to_execute", ["read"], "read"),
    ],
)
def test_contract_update_changes_one_field_keeps_the_others_and_refuses_the_wrong_type(
    alice_api, upstream, field, value, wrong
):
    made = create(alice_api).json()["client"]
    url = f"/api/mcp/client/{made['config']['client_id']}"
    before = rows()
    response = alice_api.put(url, {field: wrong}, format="json")
    assert error(response, 400).startswith(f"{field}: ")
    assert rows() == before

    response = alice_api.put(url, {field: value}, format="json")
    assert response.status_code == 200, response.content
    updated = response.json()["client"]
    assert updated["config"][field] == value
    tools = updated["tools"]
    if field == "name":  # the tools' prefix follows the name
        assert [t["name"] for t in tools] == ["renamed_read", "renamed_search"]
    keep = {field, "updated_at"}
    assert {k: v for k, v in updated["config"].items() if k not in keep} == {
        k: v for k, v in made["config"].items() if k not in keep
    }
    assert alice_api.get(LIST).json()["clients"] == [updated]


@pytest.mark.parametrize("ident", ["0" * 32, "not-a-client", "x" * 300, "1.2"])
def test_contract_an_unknown_id_is_404_with_the_resource_message(alice_api, upstream, ident):
    create(alice_api)
    before = rows()
    for method, suffix, body in (("put", "", {"name": "x"}), ("delete", "", None), ("post", "/reconnect", None)):
        response = getattr(alice_api, method)(f"/api/mcp/client/{ident}{suffix}", body, format="json")
        assert error(response, 404) == "MCP client not found", (method, suffix)
    assert rows() == before


def test_contract_delete_then_a_second_delete_is_404(alice_api, upstream):
    url = f"/api/mcp/client/{create(alice_api).json()['client']['config']['client_id']}"
    assert alice_api.delete(url).status_code == 200
    assert error(alice_api.delete(url), 404) == "MCP client not found"
    assert error(alice_api.post(f"{url}/reconnect"), 404) == "MCP client not found"


# The clause of test_api_permissions.py (its table lists every operation of the schema; these five
# rows belong there too): each route needs exactly its model permission.
PERMISSION_ROUTES = [
    ("get", "", "view", None),
    ("post", "create", "add", {**BODY, "name": "by-holder"}),
    ("put", "one", "change", {"tools_to_execute": ["read"]}),
    ("post", "reconnect", "change", None),
    ("delete", "one", "delete", None),
]


@pytest.mark.parametrize(("method", "where", "action", "body"), PERMISSION_ROUTES, ids=lambda v: str(v))
def test_each_route_needs_exactly_its_model_permission(
    alice_api, upstream, django_user_model, method, where, action, body
):
    client_id = create(alice_api).json()["client"]["config"]["client_id"]
    path = {
        "": LIST,
        "create": CREATE,
        "one": f"/api/mcp/client/{client_id}",
        "reconnect": f"/api/mcp/client/{client_id}/reconnect",
    }[where]

    def holder(codename: str) -> APIClient:
        user = django_user_model.objects.create_user(f"holder-{codename}", password="pw-123456789", is_staff=True)
        user.user_permissions.set(Permission.objects.filter(codename=codename))
        api = APIClient()
        api.credentials(HTTP_AUTHORIZATION=f"Bearer {api_token_create(user=user, name='t')[1]}")
        return api

    reconnects = len(upstream.named("reconnect"))
    for other in {"view", "add", "change", "delete"} - {action}:
        before = rows()
        response = getattr(holder(f"{other}_mcpclient"), method)(path, body, format="json")
        assert error(response, 403) == "You do not have permission to perform this action.", other
        assert rows() == before
    assert len(upstream.named("reconnect")) == reconnects
    response = getattr(holder(f"{action}_mcpclient"), method)(path, body, format="json")
    assert response.status_code == 200, response.content
