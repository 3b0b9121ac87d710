"""``/mcp`` in-process, with the upstream connections replaced by a fake: the JSON-RPC protocol,
who may call, which tools each caller sees, governance of tool calls and their ledger rows.
The real upstream servers and the official client are in ``test_live.py``."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import pytest
from django.test import Client

from consent.models import ConsentSession, Identity
from consent.services import oauth_client_register
from governance.keys import digest
from governance.models import McpClient, UsageRecord, VirtualKeyMcpConfig
from governance.services import virtual_key_create, virtual_key_rotate, virtual_key_set_active
from mcp_gateway import upstream

TOOLS = {
    "files": [
        {"name": "read", "inputSchema": {"type": "object"}},
        {"name": "write", "inputSchema": {"type": "object"}},
    ],
    "web": [{"name": "search", "description": "Search", "inputSchema": {"type": "object"}}],
}


@dataclass
class FakeUpstream:
    calls: list[tuple[str, str, dict, Any]] = field(default_factory=list)
    down: set[str] = field(default_factory=set)
    result: dict[str, Any] = field(
        default_factory=lambda: {
            "content": [{"type": "image", "data": "iVBO", "mimeType": "image/png"}],
            "isError": False,
        }
    )


@pytest.fixture
def fake(monkeypatch) -> FakeUpstream:
    state = FakeUpstream()

    def tools(spec, refresh=False):
        if spec.name in state.down:
            raise upstream.UpstreamError(f"could not connect to MCP server '{spec.name}'")
        return [dict(t) for t in TOOLS.get(spec.name, [])]

    def call_tool(spec, name, arguments, headers=None, bearer=None):
        state.calls.append((spec.name, name, arguments, headers))
        if name == "slow":
            raise upstream.ToolTimeout(f"tool '{name}' on MCP client '{spec.name}' did not answer within 30s")
        return state.result

    monkeypatch.setattr(upstream, "spec_of", lambda client: client)
    monkeypatch.setattr(upstream, "tools", tools)
    monkeypatch.setattr(upstream, "call_tool", call_tool)
    return state


@pytest.fixture
def clients(db) -> dict[str, McpClient]:
    return {
        "files": McpClient.objects.create(name="files", tools_to_execute=["*"]),
        "web": McpClient.objects.create(
            name="web", tools_to_execute=["search"], allow_on_all_virtual_keys=True, tool_pricing={"search": "0.25"}
        ),
    }


def rpc(client: Client, method: str, params: dict | None = None, *, id_: Any = 1, **headers: str):
    message: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
    if id_ is not None:
        message["id"] = id_
    if params is not None:
        message["params"] = params
    return client.post("/mcp", json.dumps(message), content_type="application/json", headers=headers)


def vk_with(configs: list[tuple[McpClient, list[str]]], name: str = "agent", **kwargs: Any) -> tuple[Any, str]:
    vk, value = virtual_key_create(name=name, **kwargs)
    for mcp_client, tools in configs:
        VirtualKeyMcpConfig.objects.create(virtual_key=vk, mcp_client=mcp_client, tools_to_execute=tools)
    return vk, value


def tool_names(response) -> list[str]:
    assert response.status_code == 200, response.content
    return sorted(t["name"] for t in response.json()["result"]["tools"])


# --- protocol ------------------------------------------------------------------------------------


def test_initialize_names_the_key_and_echoes_a_known_protocol_version(client, clients, fake):
    vk, value = vk_with([])
    answer = rpc(client, "initialize", {"protocolVersion": "2025-06-18", "capabilities": {}}, x_bf_vk=value).json()
    assert answer["result"]["protocolVersion"] == "2025-06-18"
    assert answer["result"]["serverInfo"]["name"] == "agent"
    assert answer["result"]["capabilities"] == {"tools": {"listChanged": False}}
    newest = rpc(client, "initialize", {"protocolVersion": "1999-01-01"}, x_bf_vk=value).json()
    assert newest["result"]["protocolVersion"] == "2025-11-25"


def test_notifications_are_202_and_other_methods_minus_32601(client, clients, fake):
    _, value = vk_with([])
    note = rpc(client, "notifications/initialized", id_=None, x_bf_vk=value)
    assert note.status_code == 202 and note.content == b""
    for method in ("server/discover", "resources/list", "prompts/list"):
        answer = rpc(client, method, x_bf_vk=value)
        assert answer.status_code == 200
        assert answer.json()["error"]["code"] == -32601 and answer.json()["id"] == 1
    assert rpc(client, "ping", x_bf_vk=value).json() == {"jsonrpc": "2.0", "id": 1, "result": {}}


@pytest.mark.parametrize(
    "body, code",
    [
        (b"{not json", -32700),
        (b"[]", -32600),
        (b'[{"jsonrpc":"2.0","id":1,"method":"ping"}]', -32600),
        (b'{"id":1}', -32600),
        # A lone UTF-16 surrogate, escaped or as its bytes: no character, so no JSON text.
        (b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a\\ud800"}}', -32700),
        (b'{"jsonrpc":"2.0","id":1,"method":"ping","params":{"x":"\xed\xa0\x80"}}', -32700),
    ],
)
def test_malformed_messages_are_json_rpc_errors_with_400(client, clients, fake, body, code):
    answer = client.post("/mcp", body, content_type="application/json")
    assert answer.status_code == 400 and answer.json()["error"]["code"] == code


def test_get_is_405_with_allow_post(client, db):
    answer = client.get("/mcp")
    assert answer.status_code == 405 and answer["Allow"] == "POST"


# --- who may call --------------------------------------------------------------------------------


def test_no_credentials_is_401_with_discovery_when_a_per_user_client_exists(client, clients, fake):
    assert "WWW-Authenticate" not in rpc(client, "tools/list")
    McpClient.objects.create(name="github", auth_type="per_user_oauth")
    answer = rpc(client, "tools/list")
    assert answer.status_code == 401
    assert (
        answer["WWW-Authenticate"]
        == 'Bearer resource_metadata="http://testserver/.well-known/oauth-protected-resource"'
    )


def test_public_url_setting_names_the_metadata(client, clients, fake, settings):
    settings.BIFROST_PUBLIC_URL = "https://gw.example.com"
    McpClient.objects.create(name="github", auth_type="per_user_oauth")
    assert rpc(client, "tools/list")["WWW-Authenticate"].endswith(
        '"https://gw.example.com/.well-known/oauth-protected-resource"'
    )


def test_unknown_inactive_and_expired_keys_are_refused(client, clients, fake):
    assert rpc(client, "tools/list", x_bf_vk="sk-bf-unknown").status_code == 401
    vk, value = vk_with([(clients["files"], ["*"])])
    virtual_key_set_active(vk=vk, active=False)
    answer = rpc(client, "tools/list", x_bf_vk=value)
    assert answer.status_code == 403 and answer.json()["error"]["data"]["type"] == "virtual_key_blocked"


def test_anonymous_caller_without_enforcement_sees_only_allow_on_all_tools(client, clients, fake, settings):
    settings.GOVERNANCE_ENFORCE_VIRTUAL_KEYS = False
    assert tool_names(rpc(client, "tools/list")) == ["web_search"]


def _session(vk=None, user_id: str = "") -> str:
    token = "tok-" + ("vk" if vk else "user") + user_id
    oauth = oauth_client_register(redirect_uris=["http://127.0.0.1:1/cb"], client_name="Claude")
    from django.utils import timezone

    ConsentSession.objects.create(
        client=oauth,
        identity=Identity.VIRTUAL_KEY if vk else Identity.USER_ID,
        virtual_key=vk,
        virtual_key_digest=vk.value_digest if vk else "",
        user_id=user_id,
        access_token_digest=digest(token),
        expires_at=timezone.now() + timezone.timedelta(hours=1),
    )
    return token


def test_a_consent_session_acts_as_its_key_until_the_key_is_rotated(client, clients, fake):
    vk, _ = vk_with([(clients["files"], ["read"])])
    token = _session(vk)
    assert tool_names(rpc(client, "tools/list", authorization=f"Bearer {token}")) == ["files_read", "web_search"]
    virtual_key_rotate(vk=vk)
    answer = rpc(client, "tools/list", authorization=f"Bearer {token}")
    assert answer.status_code == 401 and "rotated" in answer.json()["error"]["message"]
    assert answer.json()["error"]["code"] == -32001


def test_a_user_id_session_needs_a_key_when_keys_are_enforced(client, clients, fake, settings):
    token = _session(user_id="alice")
    answer = rpc(client, "tools/list", authorization=f"Bearer {token}")
    assert answer.status_code == 401 and "re-authenticate" in answer.json()["error"]["message"]
    settings.GOVERNANCE_ENFORCE_VIRTUAL_KEYS = False
    assert tool_names(rpc(client, "tools/list", authorization=f"Bearer {token}")) == ["web_search"]


def test_a_revoked_or_unknown_session_token_is_401(client, clients, fake):
    vk, _ = vk_with([(clients["files"], ["*"])])
    token = _session(vk)
    ConsentSession.objects.update(revoked_at="2026-01-01T00:00:00Z")
    assert rpc(client, "tools/list", authorization=f"Bearer {token}").status_code == 401
    assert rpc(client, "tools/list", authorization="Bearer nope").status_code == 401


# --- which tools ---------------------------------------------------------------------------------


def test_filtering_intersects_the_key_config_and_the_client_list(client, clients, fake):
    _, star = vk_with([(clients["files"], ["*"])])
    assert tool_names(rpc(client, "tools/list", x_bf_vk=star)) == ["files_read", "files_write", "web_search"]
    _, some = vk_with([(clients["files"], ["write"])], name="some")
    assert tool_names(rpc(client, "tools/list", x_bf_vk=some)) == ["files_write", "web_search"]
    _, none = vk_with([(clients["files"], []), (clients["web"], [])], name="none")
    assert tool_names(rpc(client, "tools/list", x_bf_vk=none)) == []  # an explicit [] excludes allow-on-all too
    clients["files"].tools_to_execute = []
    clients["files"].save()
    assert tool_names(rpc(client, "tools/list", x_bf_vk=star)) == ["web_search"]


def test_headers_only_narrow(client, clients, fake):
    _, value = vk_with([(clients["files"], ["read"])])
    narrowed = rpc(client, "tools/list", x_bf_vk=value, x_bf_mcp_include_clients="files,other")
    assert tool_names(narrowed) == ["files_read"]
    only = rpc(client, "tools/list", x_bf_vk=value, x_bf_mcp_include_tools="files_write,web_search")
    assert tool_names(only) == ["web_search"]  # files_write is not the key's to widen into


def test_one_server_down_does_not_hide_the_others(client, clients, fake):
    fake.down.add("files")
    _, value = vk_with([(clients["files"], ["*"])])
    assert tool_names(rpc(client, "tools/list", x_bf_vk=value)) == ["web_search"]


# --- tools/call ----------------------------------------------------------------------------------


def test_a_call_passes_the_result_through_and_is_recorded(client, clients, fake):
    vk, value = vk_with([(clients["files"], ["read"])])
    answer = rpc(client, "tools/call", {"name": "files_read", "arguments": {"path": "/a"}}, x_bf_vk=value)
    assert answer.json()["result"] == fake.result  # content blocks and isError unchanged
    assert fake.calls == [("files", "read", {"path": "/a"}, None)]
    row = UsageRecord.objects.get()
    assert (row.provider, row.model, row.request_type, row.status_code) == ("files", "read", "mcp_tool_call", 200)
    assert row.virtual_key_id == vk.pk and row.cost == 0 and row.priced is False


def test_unknown_tools_are_minus_32602_and_blocked_ones_a_tool_error(client, clients, fake):
    _, value = vk_with([(clients["files"], ["read"])])
    for name in ("nothing_here", "files_delete"):
        answer = rpc(client, "tools/call", {"name": name}, x_bf_vk=value).json()
        assert answer["error"]["code"] == -32602 and name in answer["error"]["message"]
    blocked = rpc(client, "tools/call", {"name": "files_write"}, x_bf_vk=value).json()["result"]
    assert blocked["isError"] is True
    assert (
        blocked["content"][0]["text"] == "mcp_tool_blocked: tool 'files_write' is not allowed for virtual key 'agent'"
    )
    assert fake.calls == [] and not UsageRecord.objects.exists()


def test_bad_params_are_minus_32602(client, clients, fake):
    _, value = vk_with([(clients["files"], ["*"])])
    for params in ({}, {"name": 3}, {"name": "files_read", "arguments": [1]}):
        assert rpc(client, "tools/call", params, x_bf_vk=value).json()["error"]["code"] == -32602


def test_request_limits_and_tool_prices_govern_calls(client, clients, fake):
    vk, value = vk_with(
        [],
        rate_limit={"request_max_limit": 2, "request_reset_duration": "1m"},
        budgets=[{"max_limit": "10", "reset_duration": "1d"}],
    )
    for _ in range(2):
        assert rpc(client, "tools/call", {"name": "web_search"}, x_bf_vk=value).json()["result"]["isError"] is False
    refused = rpc(client, "tools/call", {"name": "web_search"}, x_bf_vk=value).json()["result"]
    assert refused["isError"] is True and refused["content"][0]["text"].startswith("request_limited:")
    rows = UsageRecord.objects.filter(virtual_key_id=vk.pk)
    assert rows.count() == 2 and sum(r.cost for r in rows) == Decimal("0.50")


def test_budget_refuses_a_priced_tool(client, clients, fake):
    _, value = vk_with([], budgets=[{"max_limit": "0.30", "reset_duration": "1d"}])
    assert rpc(client, "tools/call", {"name": "web_search"}, x_bf_vk=value).json()["result"]["isError"] is False
    refused = rpc(client, "tools/call", {"name": "web_search"}, x_bf_vk=value).json()["result"]
    assert refused["isError"] is True and refused["content"][0]["text"].startswith("budget_exceeded:")


def test_timeouts_are_tool_errors_naming_the_tool(client, clients, fake):
    TOOLS["files"].append({"name": "slow", "inputSchema": {"type": "object"}})
    try:
        _, value = vk_with([(clients["files"], ["*"])])
        answer = rpc(client, "tools/call", {"name": "files_slow"}, x_bf_vk=value).json()["result"]
    finally:
        TOOLS["files"].pop()
    assert (
        answer["isError"] is True and "'slow'" in answer["content"][0]["text"] and "30s" in answer["content"][0]["text"]
    )
    assert UsageRecord.objects.get().status_code == 504


def test_only_allowed_extra_headers_travel_and_never_credentials(client, clients, fake):
    clients["files"].allowed_extra_headers = ["x-trace-id", "authorization", "cookie"]
    clients["files"].save()
    _, value = vk_with([(clients["files"], ["*"])])
    rpc(
        client,
        "tools/call",
        {"name": "files_read"},
        x_bf_vk=value,
        x_trace_id="t-1",
        x_other="no",
        cookie="session=secret",
    )
    assert fake.calls[-1][3] == {"x-trace-id": "t-1"}


def test_an_unsupported_protocol_version_header_is_a_400(client, clients, fake):
    _, value = vk_with([])
    answer = rpc(client, "tools/list", x_bf_vk=value, mcp_protocol_version="2099-01-01")
    assert answer.status_code == 400 and answer.json()["error"]["code"] == -32600
    assert rpc(client, "tools/list", x_bf_vk=value, mcp_protocol_version="2025-06-18").status_code == 200


def test_a_request_decided_on_changed_configuration_starts_over(client, clients, fake, monkeypatch):
    """As inference does: a StaleConfig (seen before the upstream call) restarts the request."""
    from governance.metering import freshness

    _, value = vk_with([(clients["files"], ["read"])])
    real_confirm, stale = freshness.confirm, ["list", "call"]

    def confirm() -> None:
        if stale:
            stale.pop(0)
            raise freshness.StaleConfig
        real_confirm()

    monkeypatch.setattr(freshness, "confirm", confirm)
    assert tool_names(rpc(client, "tools/list", x_bf_vk=value)) == ["files_read", "web_search"]
    answer = rpc(client, "tools/call", {"name": "files_read"}, x_bf_vk=value).json()
    assert answer["result"] == fake.result
    assert len(fake.calls) == 1 and UsageRecord.objects.count() == 1  # the first attempt called nothing


def test_the_metadata_and_the_challenge_name_the_same_public_url(client, db, settings):
    settings.BIFROST_PUBLIC_URL = "https://gw.example.com/"
    metadata = client.get("/.well-known/oauth-protected-resource").json()
    assert metadata["resource"] == "https://gw.example.com"
    assert metadata["authorization_servers"] == ["https://gw.example.com"]
    server = client.get("/.well-known/oauth-authorization-server").json()
    assert server["token_endpoint"].startswith("https://gw.example.com/")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            b'{"id": "c1", "function": {"name": "a_b", "arguments": "{\\"q\\": \\"\\\\ud800\\"}"}}',
            "function.arguments: ",
        ),
        (b'{"id": "c1", "function": {"name": "a\\udfff", "arguments": "{}"}}', ""),
    ],
)
def test_execute_refuses_a_lone_surrogate_in_the_call_or_its_arguments_string(client, db, body, message):
    answer = client.post("/v1/mcp/tool/execute", body, content_type="application/json")
    assert answer.status_code == 400
    assert (
        answer.json()["error"]["message"]
        == message + "Invalid JSON: a \\u escape names a lone UTF-16 surrogate, not a character"
    )
