"""``/mcp`` of a live gateway (gunicorn on the test database) driven by the official ``mcp`` 2.x
client, with two real upstreams: the streamable-HTTP test server (``demo``) and ``mcp-server-time``
over stdio (``time``).

Covered: the 2.x client's connect (``server/discover`` probe answered ``-32601``, fallback to the
``initialize`` handshake), listing and calling the granted tools, the ledger rows and governance
(request limits, budgets from ``tool_pricing``), revocation and rotation taking effect at once,
what reaches an upstream (configured headers and allowed caller headers, never the caller's
credentials) and what reaches the gateway's log (no secret), the 401 discovery and the consent flow
driven by the SDK's ``OAuthClientProvider`` with Chromium playing the user, ``/v1/mcp/tool/execute``,
and an upstream that is down or too slow.

One gateway serves the module, with ``BIFROST_LOG_LEVEL=DEBUG``; its output goes to one file
(``GatewayProcess.log``), which the secrets test scans, and which is scanned again, whole, for
every VK value and upstream secret of the module once the gateway has stopped.
"""

from __future__ import annotations

import asyncio
import base64
import http.server
import json
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qs, urlsplit

import anyio
import httpx2
import pytest
import requests
from django.db import connection
from mcp.client import Client
from mcp.client.auth import AuthorizationCodeResult, OAuthClientProvider
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import OAuthClientInformationFull, OAuthClientMetadata, OAuthToken
from mcp.shared.exceptions import MCPError

from governance.models import McpClient, UsageRecord
from governance.services import virtual_key_create, virtual_key_rotate, virtual_key_set_active
from tests.browser import CHROMIUM, CHROMIUM_ARGS
from tests.mcp.conftest import TIME_STDIO, McpHttpServer, free_port
from tests.mcp.servers.http_server import PNG_1X1
from tests.proxy.conftest import wait_for
from tests.proxy.conftest_enforcement import GatewayProcess

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

UPSTREAM_SECRET = "upstream-secret"
DOWN_TOKEN = "down-upstream-token-42"
COOKIE_SECRET = "cookie-secret-77"
QUERY_SECRET = "query-secret-55"
URL_PASSWORD = "url-password-66"
METHOD_NOT_FOUND, INVALID_PARAMS = -32601, -32602


# --- the gateway and the upstreams ---------------------------------------------------------------


# Every VK value and upstream secret the module's tests use: none may appear in the gateway's log.
SECRETS: list[str] = [UPSTREAM_SECRET, DOWN_TOKEN, COOKIE_SECRET, QUERY_SECRET, URL_PASSWORD]


def secret(value: str) -> str:
    SECRETS.append(value)
    return value


@pytest.fixture(scope="module")
def gateway(django_db_setup, tmp_path_factory) -> Iterator[GatewayProcess]:
    """One gateway for the module (2 workers), logging at DEBUG into ``gateway.log``; once it has
    stopped, its whole log is checked for every secret the module's tests used."""
    log = tmp_path_factory.mktemp("mcp-live") / "gateway.log"
    process = GatewayProcess(log, {"BIFROST_LOG_LEVEL": "DEBUG"}, workers=2)
    yield process
    process.stop()
    text = log.read_text(errors="replace")
    leaked = [value for value in SECRETS if value in text]
    if leaked:
        pytest.fail(f"{len(leaked)} secret(s) found in the gateway's log {log}")


@pytest.fixture
def demo(make_mcp_client, mcp_http_server: McpHttpServer) -> McpClient:
    """The HTTP test server as client ``demo``, every tool executable."""
    return make_mcp_client(
        name="demo", connection_type="http", connection_string=mcp_http_server.url, tools_to_execute=["*"]
    )


@pytest.fixture
def time_client(make_mcp_client) -> McpClient:
    """``mcp-server-time`` over stdio as client ``time``, every tool executable."""
    return make_mcp_client(name="time", connection_type="stdio", stdio_config=TIME_STDIO, tools_to_execute=["*"])


def make_vk(name: str, grants: dict[str, list[str]], **options: Any) -> tuple[Any, str]:
    configs = [{"mcp_client_name": client, "tools_to_execute": tools} for client, tools in grants.items()]
    vk, value = virtual_key_create(name=name, mcp_configs=configs, **options)
    return vk, secret(value)


# --- the official client ------------------------------------------------------------------------


@dataclass
class Traffic:
    """What the client's HTTP client sent to the gateway and what it got back."""

    exchanges: list[tuple[str, str, str | None, int]] = field(default_factory=list)
    # For each POST /mcp: (the JSON-RPC method, its Authorization header or None, whether x-bf-vk was sent).
    credentials: list[tuple[str | None, str | None, bool]] = field(default_factory=list)

    async def on_response(self, response: httpx2.Response) -> None:
        request = response.request
        method = None
        if request.method == "POST" and request.url.path.endswith("/mcp"):
            try:
                method = json.loads(request.content).get("method")
            except ValueError:
                method = None
        self.exchanges.append((request.method, request.url.path, method, response.status_code))
        if request.method == "POST" and request.url.path.endswith("/mcp"):
            self.credentials.append((method, request.headers.get("authorization"), "x-bf-vk" in request.headers))

    def rpc_methods(self) -> list[str | None]:
        return [method for verb, path, method, _ in self.exchanges if verb == "POST" and path == "/mcp"]


def run_client(
    url: str,
    body: Callable[[Client], Awaitable[Any]],
    *,
    headers: dict[str, str] | None = None,
    auth: httpx2.Auth | None = None,
    traffic: Traffic | None = None,
) -> Any:
    """``await body(client)`` inside ``async with Client(...)`` connected to ``url`` (default
    ``mode="auto"``), over an ``httpx2.AsyncClient`` carrying ``headers`` and ``auth``."""

    async def main() -> Any:
        hooks = {"response": [traffic.on_response]} if traffic is not None else {}
        timeout = httpx2.Timeout(30.0, read=60.0)
        async with httpx2.AsyncClient(headers=headers, auth=auth, timeout=timeout, event_hooks=hooks) as http:
            async with Client(streamable_http_client(url, http_client=http)) as client:
                return await body(client)

    return asyncio.run(main())


def dump(result: Any) -> dict[str, Any]:
    return result.model_dump(by_alias=True, mode="json", exclude_none=True)


def text_of(result: Any) -> str:
    return "\n".join(block.text for block in result.content if block.type == "text")


def rpc(url: str, method: str, params: dict[str, Any] | None = None, **headers: str) -> requests.Response:
    """One raw JSON-RPC POST to ``/mcp``."""
    body = {"jsonrpc": "2.0", "id": 1, "method": method, "params": params or {}}
    return requests.post(f"{url}/mcp", json=body, headers=headers, timeout=30)


def usage_rows(count: int, **filters: Any) -> list[UsageRecord]:
    """The ``mcp_tool_call`` ledger rows, once ``count`` exist (the writer thread batches)."""
    queryset = UsageRecord.objects.filter(request_type="mcp_tool_call", **filters).order_by("created_at", "id")
    return wait_for(lambda: list(queryset) if queryset.count() >= count else None, timeout=10.0) or []


def in_thread(function: Callable[[], Any]) -> Callable[[], Awaitable[Any]]:
    """Run ORM code from inside the client's event loop: in a worker thread, connection closed after."""

    def wrapped() -> Any:
        try:
            return function()
        finally:
            connection.close()

    return lambda: anyio.to_thread.run_sync(wrapped)


# --- 1. the official client with a virtual key ----------------------------------------------------


def test_official_client_lists_and_calls_the_granted_tools_of_two_upstreams(
    gateway, demo, time_client, mcp_http_server
):
    _, value = make_vk("live-app", {"demo": ["echo"], "time": ["get_current_time"]})
    traffic = Traffic()

    async def session(client: Client) -> dict[str, Any]:
        out: dict[str, Any] = {"server": client.server_info, "version": client.protocol_version}
        out["tools"] = await client.list_tools()
        out["echo"] = await client.call_tool("demo_echo", {"text": "hi there"})
        out["time"] = await client.call_tool("time_get_current_time", {"timezone": "UTC"})
        out["blocked"] = await client.call_tool("demo_add", {"a": 1, "b": 2})
        # Concurrent calls on one client session (one POST each) get their own answers.
        out["parallel"] = await asyncio.gather(*(client.call_tool("demo_echo", {"text": f"n{i}"}) for i in range(6)))
        for name in ("demo_nope", "nobody_echo"):
            with pytest.raises(MCPError) as raised:
                await client.call_tool(name, {})
            out[name] = raised.value
        return out

    out = run_client(f"{gateway.url}/mcp", session, headers={"x-bf-vk": value}, traffic=traffic)

    # The 2.x client probed server/discover, got -32601 and fell back to the handshake; no GET
    # stream, no session to DELETE (the gateway issues no Mcp-Session-Id).
    methods = traffic.rpc_methods()
    assert methods[:3] == ["server/discover", "initialize", "notifications/initialized"], methods
    assert all(verb == "POST" for verb, *_ in traffic.exchanges), traffic.exchanges
    assert out["server"].name == "live-app"
    discover = rpc(gateway.url, "server/discover", **{"x-bf-vk": value})
    assert (discover.status_code, discover.json()["error"]["code"]) == (200, METHOD_NOT_FOUND)
    stream = requests.get(f"{gateway.url}/mcp", headers={"x-bf-vk": value}, timeout=30)
    assert (stream.status_code, stream.headers["Allow"]) == (405, "POST")
    assert out["version"] == "2025-11-25"

    listed = {tool.name: tool for tool in out["tools"].tools}
    assert sorted(listed) == ["demo_echo", "time_get_current_time"]
    assert listed["demo_echo"].input_schema["properties"]["text"]["type"] == "string"

    assert out["echo"].is_error is False
    assert [dump(block) for block in out["echo"].content] == [{"type": "text", "text": "hi there"}]
    now = json.loads(text_of(out["time"]))
    assert out["time"].is_error is False and now["timezone"] == "UTC" and "datetime" in now

    assert [text_of(r) for r in out["parallel"]] == [f"n{i}" for i in range(6)]
    assert out["blocked"].is_error is True
    assert text_of(out["blocked"]).startswith("mcp_tool_blocked: tool 'demo_add' is not allowed for virtual key")
    assert out["demo_nope"].code == INVALID_PARAMS and "demo_nope" in out["demo_nope"].message
    assert out["nobody_echo"].code == INVALID_PARAMS


def test_image_and_error_results_pass_through_unchanged(gateway, demo, mcp_http_server):
    """The image block and the ``isError`` result are the upstream's, as it answers them directly."""
    _, value = make_vk("wide", {"demo": ["*"]})

    def calls(prefix: str) -> Callable[[Client], Awaitable[list[dict[str, Any]]]]:
        async def body(client: Client) -> list[dict[str, Any]]:
            results = [
                await client.call_tool(f"{prefix}image", {}),
                await client.call_tool(f"{prefix}fail", {"message": "it broke"}),
            ]
            # The parts of a CallToolResult the gateway relays (the rest is the connection's _meta).
            return [
                {k: v for k, v in dump(r).items() if k in ("content", "isError", "structuredContent")} for r in results
            ]

        return body

    image, failed = run_client(f"{gateway.url}/mcp", calls("demo_"), headers={"x-bf-vk": value})
    direct_image, direct_failed = run_client(mcp_http_server.url, calls(""))

    assert image == direct_image
    assert image["content"] == [{"type": "image", "data": base64.b64encode(PNG_1X1).decode(), "mimeType": "image/png"}]
    assert failed == direct_failed
    assert failed["isError"] is True and "it broke" in failed["content"][0]["text"]


# --- 2. ledger and governance ---------------------------------------------------------------------


def test_each_successful_call_is_a_ledger_row_priced_by_tool_pricing(gateway, demo, time_client):
    demo.tool_pricing = {"echo": "0.25"}
    demo.save()
    vk, value = make_vk("ledger", {"demo": ["echo"], "time": ["get_current_time"]})

    async def calls(client: Client) -> list[Any]:
        return [
            await client.call_tool("demo_echo", {"text": "one"}),
            await client.call_tool("demo_add", {"a": 1, "b": 2}),  # blocked: no row
            await client.call_tool("time_get_current_time", {"timezone": "UTC"}),
            await client.call_tool("demo_echo", {"text": "two"}),
        ]

    results = run_client(f"{gateway.url}/mcp", calls, headers={"x-bf-vk": value})
    assert [r.is_error for r in results] == [False, True, False, False]

    rows = usage_rows(3)
    assert sorted((r.provider, r.model, r.cost, r.status_code) for r in rows) == [
        ("demo", "echo", Decimal("0.25"), 200),
        ("demo", "echo", Decimal("0.25"), 200),
        ("time", "get_current_time", Decimal("0"), 200),
    ]
    assert {r.virtual_key_id for r in rows} == {vk.pk}
    assert {(r.prompt_tokens, r.completion_tokens, r.total_tokens) for r in rows} == {(0, 0, 0)}
    assert [r.priced for r in sorted(rows, key=lambda r: r.model)] == [True, True, False]
    # The blocked call wrote nothing, however long one waits.
    assert not wait_for(lambda: UsageRecord.objects.count() > 3, timeout=1.0)


def test_request_limit_refuses_the_third_call(gateway, demo):
    vk, value = make_vk(
        "limited", {"demo": ["echo"]}, rate_limit={"request_max_limit": 2, "request_reset_duration": "1m"}
    )

    async def calls(client: Client) -> list[Any]:
        # A blocked tool and an unknown one are refused before governance: they take no request.
        blocked = await client.call_tool("demo_add", {"a": 1, "b": 2})
        with pytest.raises(MCPError):
            await client.call_tool("demo_nope", {})
        return [blocked] + [await client.call_tool("demo_echo", {"text": f"call {n}"}) for n in range(3)]

    blocked, first, second, third = run_client(f"{gateway.url}/mcp", calls, headers={"x-bf-vk": value})
    assert text_of(blocked).startswith("mcp_tool_blocked:")
    assert (text_of(first), text_of(second)) == ("call 0", "call 1")
    assert third.is_error is True
    assert text_of(third).startswith("request_limited:"), text_of(third)
    assert len(usage_rows(2, virtual_key=vk)) == 2


def test_budget_refuses_the_call_its_price_would_overrun(gateway, demo):
    demo.tool_pricing = {"echo": "0.25"}
    demo.save()
    vk, value = make_vk("budgeted", {"demo": ["echo"]}, budgets=[{"max_limit": "0.30", "reset_duration": "1d"}])

    async def calls(client: Client) -> list[Any]:
        return [await client.call_tool("demo_echo", {"text": f"call {n}"}) for n in range(2)]

    first, second = run_client(f"{gateway.url}/mcp", calls, headers={"x-bf-vk": value})
    assert first.is_error is False and text_of(first) == "call 0"
    assert second.is_error is True
    assert text_of(second).startswith("budget_exceeded:"), text_of(second)
    [row] = usage_rows(1, virtual_key=vk)
    assert (row.model, row.cost, row.status_code) == ("echo", Decimal("0.25"), 200)
    assert wait_for(lambda: vk.budgets.get().current_usage == Decimal("0.25") or None, timeout=10.0)


# --- 3. revocation ----------------------------------------------------------------------------------


def test_deactivating_or_rotating_the_key_ends_access_at_once(gateway, demo):
    vk, value = make_vk("revocable", {"demo": ["echo"]})

    async def session(client: Client) -> tuple[Any, MCPError]:
        before = await client.call_tool("demo_echo", {"text": "before"})
        await in_thread(lambda: virtual_key_set_active(vk=vk, active=False))()
        with pytest.raises(MCPError) as raised:
            await client.call_tool("demo_echo", {"text": "after"})
        return before, raised.value

    traffic = Traffic()
    before, refused = run_client(f"{gateway.url}/mcp", session, headers={"x-bf-vk": value}, traffic=traffic)
    assert text_of(before) == "before"
    assert traffic.exchanges[-1][2:] == ("tools/call", 403)
    # The refusal is a JSON-RPC error body beside the HTTP status: the client shows its message.
    assert (refused.code, refused.message) == (-32001, "Virtual key is inactive")

    answer = rpc(gateway.url, "tools/list", **{"x-bf-vk": value})
    assert answer.status_code == 403
    assert answer.json()["error"]["data"]["type"] == "virtual_key_blocked"

    virtual_key_set_active(vk=vk, active=True)
    assert rpc(gateway.url, "tools/list", **{"x-bf-vk": value}).status_code == 200
    new_value = secret(virtual_key_rotate(vk=vk))
    old = rpc(gateway.url, "tools/list", **{"x-bf-vk": value})
    assert old.status_code == 401
    assert "www-authenticate" not in old.headers  # no per-user OAuth client: nothing to discover
    fresh = rpc(gateway.url, "tools/list", **{"x-bf-vk": new_value})
    assert fresh.status_code == 200
    assert [t["name"] for t in fresh.json()["result"]["tools"]] == ["demo_echo"]


# --- 4. secrets -------------------------------------------------------------------------------------


def test_only_configured_and_allowed_headers_reach_the_upstream_and_no_secret_reaches_the_log(
    gateway, make_mcp_client, mcp_http_server
):
    make_mcp_client(
        name="demo",
        connection_type="http",
        connection_string=f"{mcp_http_server.url}?token={QUERY_SECRET}",  # a token in the URL is a secret too
        auth_type="headers",
        headers={"x-api-key": UPSTREAM_SECRET},
        tools_to_execute=["headers", "echo"],
        # Credentials named here are still never forwarded.
        allowed_extra_headers=["X-Tenant", "authorization", "cookie", "x-bf-vk", "x-api-key"],
    )
    down_secret = f"Bearer {DOWN_TOKEN}"
    make_mcp_client(
        name="gone",
        connection_type="http",
        connection_string=f"http://svc:{URL_PASSWORD}@127.0.0.1:{free_port()}/mcp",
        auth_type="headers",
        headers={"authorization": down_secret},
        tools_to_execute=["*"],
        timeout_seconds=2.0,
    )
    _, value = make_vk("secretive", {"demo": ["*"], "gone": ["*"]})
    near_miss = value[:-1] + ("1" if value.endswith("0") else "0")
    caller = {
        "x-bf-vk": value,
        "authorization": f"Bearer {value}",
        "x-api-key": value,
        "cookie": f"sessionid={COOKIE_SECRET}",
        "x-tenant": "acme",
        "x-other": "not-allowed",
    }

    async def calls(client: Client) -> tuple[Any, ...]:
        listed = await client.list_tools()
        seen = await client.call_tool("demo_headers", {})
        echoed = await client.call_tool("demo_echo", {"text": "ok"})
        gone = await client.call_tool("gone_echo", {"text": "x"})
        return listed, seen, echoed, gone

    listed, seen, echoed, gone = run_client(f"{gateway.url}/mcp", calls, headers=caller)
    assert sorted(t.name for t in listed.tools) == ["demo_echo", "demo_headers"]
    received = json.loads(text_of(seen))
    assert received["x-api-key"] == UPSTREAM_SECRET
    assert received["x-tenant"] == "acme"
    assert "x-other" not in received
    assert "x-bf-vk" not in received and "cookie" not in received and "authorization" not in received
    assert value not in text_of(seen) and COOKIE_SECRET not in text_of(seen)
    assert text_of(echoed) == "ok"
    assert gone.is_error is True and "'gone'" in text_of(gone)

    # Refusals and the tool-execute endpoint log too.
    assert rpc(gateway.url, "tools/list", **{"x-bf-vk": near_miss}).status_code == 401
    execute = requests.post(
        f"{gateway.url}/v1/mcp/tool/execute",
        json={"id": "c", "type": "function", "function": {"name": "gone_echo", "arguments": "{}"}},
        headers={"authorization": f"Bearer {value}"},
        timeout=30,
    )
    assert execute.status_code == 200 and execute.json()["is_error"] is True

    log = wait_for(lambda: gateway.log.read_text(errors="replace") or None, timeout=5.0)
    assert "gone" in log  # the unavailable upstream was logged: the log is being written and scanned
    upstream_secrets = (UPSTREAM_SECRET, DOWN_TOKEN, QUERY_SECRET, URL_PASSWORD)
    for hidden in (value, value[len("sk-bf-") :], near_miss, COOKIE_SECRET, *upstream_secrets):
        assert hidden not in log, hidden
    for answer_text in (text_of(gone), execute.text, json.dumps(dump(listed))):
        for hidden in (value, *upstream_secrets):
            assert hidden not in answer_text, hidden


# --- 5. 401 discovery, the consent flow, /mcp with the session's token ---------------------------


class _Callback(http.server.BaseHTTPRequestHandler):
    """The MCP client's loopback redirect URI: remembers each query, answers "connected"."""

    received: list[str] = []

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        type(self).received.append(self.path)
        body = b"<!doctype html><title>Client</title><h1>Connected to the client</h1>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def callback_url() -> Iterator[str]:
    _Callback.received.clear()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Callback)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/callback"
    server.shutdown()
    server.server_close()


class MemoryStorage:
    """The SDK's ``TokenStorage``, in memory."""

    def __init__(self) -> None:
        self.tokens: OAuthToken | None = None
        self.client_info: OAuthClientInformationFull | None = None

    async def get_tokens(self) -> OAuthToken | None:
        return self.tokens

    async def set_tokens(self, tokens: OAuthToken) -> None:
        self.tokens = tokens

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        return self.client_info

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        self.client_info = client_info


@dataclass
class ConsentUser:
    """Plays the user for the SDK's OAuth provider: ``redirect_handler`` opens the authorization
    URL in Chromium, chooses Virtual Key, enters ``vk_value``, clicks Finish Setup and keeps the URL
    the browser landed on; ``callback_handler`` hands its ``code`` and ``state`` to the SDK."""

    vk_value: str
    authorization_urls: list[str] = field(default_factory=list)
    apps_shown: list[list[str]] = field(default_factory=list)
    landed: str = ""

    async def redirect_handler(self, url: str) -> None:
        from playwright.async_api import async_playwright, expect

        self.authorization_urls.append(url)
        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                page = await browser.new_page()
                page.set_default_timeout(15_000)
                await page.goto(url)
                await expect(page.get_by_role("heading", name="Connect to Bifrost")).to_be_visible()
                await page.get_by_placeholder("sk-bf-...").fill(self.vk_value)
                await page.get_by_role("button", name="Continue with Virtual Key").click()
                await expect(page.get_by_role("heading", name="Connect Your Apps")).to_be_visible()
                self.apps_shown.append(await page.locator(".app-name").all_text_contents())
                await page.get_by_role("button", name="Finish Setup").click()
                await expect(page.get_by_role("heading", name="Connected to the client")).to_be_visible()
                self.landed = page.url
            finally:
                await browser.close()

    async def callback_handler(self) -> AuthorizationCodeResult:
        query = parse_qs(urlsplit(self.landed).query)
        return AuthorizationCodeResult(code=query["code"][0], state=query.get("state", [None])[0])


@pytest.mark.browser
def test_401_discovery_and_consent_flow_then_mcp_with_the_session_token(gateway, demo, make_mcp_client, callback_url):
    make_mcp_client(name="sso-docs", auth_type="per_user_oauth", allow_on_all_virtual_keys=True)
    vk, value = make_vk("alice-key", {"demo": ["echo"]})
    mcp_url = f"{gateway.url}/mcp"

    # Without credentials: 401 pointing at the protected-resource metadata.
    anonymous = rpc(gateway.url, "initialize", {"protocolVersion": "2025-06-18"})
    assert anonymous.status_code == 401
    metadata_url = f"{gateway.url}/.well-known/oauth-protected-resource"
    assert anonymous.headers["WWW-Authenticate"] == f'Bearer resource_metadata="{metadata_url}"'

    user = ConsentUser(vk_value=value)
    storage = MemoryStorage()
    provider = OAuthClientProvider(
        server_url=mcp_url,
        client_metadata=OAuthClientMetadata(
            client_name="mcp-sdk-live-test",
            redirect_uris=[callback_url],
            grant_types=["authorization_code"],
            response_types=["code"],
            token_endpoint_auth_method="none",
        ),
        storage=storage,
        redirect_handler=user.redirect_handler,
        callback_handler=user.callback_handler,
    )
    traffic = Traffic()
    rotated: list[str] = []

    async def session(client: Client) -> dict[str, Any]:
        out: dict[str, Any] = {"server": client.server_info.name, "tools": await client.list_tools()}
        out["echo"] = await client.call_tool("demo_echo", {"text": "via consent"})
        out["first_token"] = storage.tokens.access_token
        # Rotating the key ends the session: the next call is a 401 and the provider runs the
        # consent flow again (the user now enters the new value), then the call goes through.
        rotated.append(secret(await in_thread(lambda: virtual_key_rotate(vk=vk))()))
        user.vk_value = rotated[0]
        out["after_rotation"] = await client.call_tool("demo_echo", {"text": "after rotation"})
        return out

    out = run_client(mcp_url, session, auth=provider, traffic=traffic)

    # Discovery, registration, consent and token, as the SDK drove them after the first 401.
    paths = [(verb, path, status) for verb, path, _, status in traffic.exchanges]
    challenged = paths.index(("POST", "/mcp", 401))
    assert paths[challenged + 1 : challenged + 5] == [
        ("GET", "/.well-known/oauth-protected-resource", 200),
        ("GET", "/.well-known/oauth-authorization-server", 200),
        ("POST", "/api/oauth/per-user/register", 201),
        ("POST", "/api/oauth/per-user/token", 200),
    ], paths
    assert [p[1] for p in paths].count("/api/oauth/per-user/register") == 1  # registered once
    assert len(user.authorization_urls) == 2
    authorize = urlsplit(user.authorization_urls[0])
    assert f"{authorize.scheme}://{authorize.netloc}{authorize.path}" == f"{gateway.url}/api/oauth/per-user/authorize"
    assert user.apps_shown == [["sso-docs"], ["sso-docs"]]
    assert out["server"] == "alice-key"
    assert [t.name for t in out["tools"].tools] == ["demo_echo"]
    assert text_of(out["echo"]) == "via consent"
    assert text_of(out["after_rotation"]) == "after rotation"
    assert ("POST", "/mcp", "tools/call", 401) in traffic.exchanges

    # The old session's token is refused with the challenge, the new one works.
    old = rpc(gateway.url, "tools/list", authorization=f"Bearer {out['first_token']}")
    assert old.status_code == 401
    assert old.headers["WWW-Authenticate"] == f'Bearer resource_metadata="{metadata_url}"'
    assert "rotated" in old.json()["error"]["message"]
    new = rpc(gateway.url, "tools/list", authorization=f"Bearer {storage.tokens.access_token}")
    assert [t["name"] for t in new.json()["result"]["tools"]] == ["demo_echo"]

    # No VK ever went to /mcp: first nothing (the 401), then the first session's token until the
    # rotation's 401, then the second's.
    assert not any(vk_sent for *_, vk_sent in traffic.credentials)
    assert traffic.credentials[0][1] is None
    bearers = [authorization for _, authorization, _ in traffic.credentials if authorization is not None]
    runs = [b for i, b in enumerate(bearers) if i == 0 or bearers[i - 1] != b]
    assert runs == [f"Bearer {out['first_token']}", f"Bearer {storage.tokens.access_token}"]

    # The session's token also works on /v1/mcp/tool/execute, and deactivating its key ends it.
    token = storage.tokens.access_token
    execute = requests.post(
        f"{gateway.url}/v1/mcp/tool/execute",
        json={"id": "c1", "type": "function", "function": {"name": "demo_echo", "arguments": '{"text":"exec"}'}},
        headers={"authorization": f"Bearer {token}"},
        timeout=30,
    )
    assert execute.json() == {"role": "tool", "tool_call_id": "c1", "content": "exec", "is_error": False}
    virtual_key_set_active(vk=vk, active=False)
    assert rpc(gateway.url, "tools/list", authorization=f"Bearer {token}").status_code == 403

    rows = usage_rows(3, virtual_key=vk)
    assert [(r.provider, r.model, r.status_code, r.virtual_key_id) for r in rows] == [("demo", "echo", 200, vk.pk)] * 3


# --- 6. /v1/mcp/tool/execute --------------------------------------------------------------------------


def test_tool_execute_in_chat_and_responses_form(gateway, demo):
    vk, value = make_vk("executor", {"demo": ["echo"]})
    url = f"{gateway.url}/v1/mcp/tool/execute"
    auth = {"x-bf-vk": value}

    chat = requests.post(
        url,
        json={"id": "call_1", "type": "function", "function": {"name": "demo_echo", "arguments": '{"text":"hi"}'}},
        headers=auth,
        timeout=30,
    )
    assert chat.status_code == 200, chat.text
    assert chat.json() == {"role": "tool", "tool_call_id": "call_1", "content": "hi", "is_error": False}

    responses = requests.post(
        url + "?format=responses",
        json={"type": "function_call", "call_id": "call_2", "name": "demo_echo", "arguments": '{"text":"yo"}'},
        headers=auth,
        timeout=30,
    )
    assert responses.status_code == 200, responses.text
    assert responses.json() == {"type": "function_call_output", "call_id": "call_2", "output": "yo", "is_error": False}

    for name in ("demo_nope", "nobody_echo"):
        unknown = requests.post(
            url,
            json={"id": "c", "type": "function", "function": {"name": name, "arguments": "{}"}},
            headers=auth,
            timeout=30,
        )
        assert unknown.status_code == 400, unknown.text
        assert name in unknown.json()["error"]["message"]

    blocked = requests.post(
        url,
        json={"id": "c", "type": "function", "function": {"name": "demo_add", "arguments": '{"a":1,"b":2}'}},
        headers=auth,
        timeout=30,
    )
    assert blocked.status_code == 200
    assert blocked.json()["is_error"] is True and blocked.json()["content"].startswith("mcp_tool_blocked:")

    anonymous = requests.post(url, json={"id": "c", "type": "function", "function": {"name": "demo_echo"}}, timeout=30)
    assert anonymous.status_code == 401

    rows = usage_rows(2, virtual_key=vk)
    assert [(r.provider, r.model, r.status_code) for r in rows] == [("demo", "echo", 200)] * 2


# --- 7. an upstream down or too slow ----------------------------------------------------------------


def test_a_down_upstream_is_left_out_of_the_list_and_its_call_names_it(gateway, demo, make_mcp_client):
    make_mcp_client(
        name="down",
        connection_type="http",
        connection_string=f"http://127.0.0.1:{free_port()}/mcp",
        tools_to_execute=["*"],
        timeout_seconds=2.0,
    )
    _, value = make_vk("resilient", {"demo": ["echo"], "down": ["*"]})

    async def calls(client: Client) -> tuple[Any, Any]:
        return await client.list_tools(), await client.call_tool("down_echo", {"text": "x"})

    listed, call = run_client(f"{gateway.url}/mcp", calls, headers={"x-bf-vk": value})
    assert [t.name for t in listed.tools] == ["demo_echo"]
    assert call.is_error is True
    assert text_of(call).startswith("MCP client 'down' is unavailable"), text_of(call)


def test_a_slow_tool_times_out_with_a_504_ledger_row(gateway, make_mcp_client, mcp_http_server):
    make_mcp_client(
        name="demo",
        connection_type="http",
        connection_string=mcp_http_server.url,
        tools_to_execute=["*"],
        timeout_seconds=1.0,
        tool_pricing={"slow": "0.25"},
    )
    vk, value = make_vk(
        "impatient", {"demo": ["slow", "echo"]}, budgets=[{"max_limit": "1.00", "reset_duration": "1d"}]
    )

    async def calls(client: Client) -> tuple[Any, Any]:
        return await client.call_tool("demo_slow", {"seconds": 3}), await client.call_tool("demo_echo", {"text": "up"})

    started = time.monotonic()
    result, after = run_client(f"{gateway.url}/mcp", calls, headers={"x-bf-vk": value})
    assert time.monotonic() - started < 3.0  # the gateway gave up at its timeout, not the tool's end
    assert result.is_error is True
    assert text_of(result) == "tool 'slow' on MCP client 'demo' did not answer within 1s", text_of(result)
    assert text_of(after) == "up"  # the client's session survived the timeout
    rows = usage_rows(2, virtual_key=vk)
    assert sorted((r.model, r.status_code, r.cost) for r in rows) == [
        ("echo", 200, Decimal("0")),
        ("slow", 504, Decimal("0")),  # a failed call is not charged its price
    ]
    assert wait_for(lambda: vk.budgets.get().current_usage == Decimal("0") or None, timeout=10.0)


# --- the 2.x client pinned to a version the gateway does not speak ---------------------------------


def test_a_request_naming_an_unsupported_protocol_version_is_a_400(gateway, demo):
    _, value = make_vk("versioned", {"demo": ["echo"]})
    for version in ("2026-07-28", "1900-01-01", "not-a-version"):
        answer = rpc(gateway.url, "tools/list", **{"x-bf-vk": value, "MCP-Protocol-Version": version})
        assert answer.status_code == 400, (version, answer.status_code)
        assert answer.json()["error"]["code"] != -32022  # not a modern server's error: auto mode falls back
    # Supported versions and initialize (which negotiates) are unaffected.
    assert rpc(gateway.url, "tools/list", **{"x-bf-vk": value, "MCP-Protocol-Version": "2025-11-25"}).ok
    assert rpc(gateway.url, "initialize", {"protocolVersion": "2026-07-28"}, **{"x-bf-vk": value}).ok

    # The 2.x client pinned to 2026-07-28 then fails with the gateway's refusal, not by failing to
    # parse a handshake-era result as a 2026 one (a pydantic ValidationError today).
    async def pinned() -> None:
        async with httpx2.AsyncClient(headers={"x-bf-vk": value}) as http:
            transport = streamable_http_client(f"{gateway.url}/mcp", http_client=http)
            async with Client(transport, mode="2026-07-28") as client:
                with pytest.raises(MCPError):
                    await client.list_tools()

    asyncio.run(pinned())
