"""``mcp_gateway.upstream`` against real MCP servers: the SDK-built HTTP test server (streamable
HTTP and SSE), ``mcp-server-time`` over stdio, and a stdio server that answers its environment.

What is checked: tool lists (paginated) and calls passed through unchanged, configured / per-call
headers and bearer tokens on the wire, timeouts, an upstream that is down, restarted or killed,
configuration changes, states, concurrency, ``env.NAME`` and the stdio child's environment."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx2
import pytest

from governance.models import McpClient
from mcp_gateway import upstream
from mcp_gateway.upstream import fast
from mcp_gateway.upstream import runner as runner_module
from tests.mcp.conftest import AUTH_HEADER, ENV_STDIO, McpHttpServer, free_port, stdio_children
from tests.mcp.servers.http_server import PNG_1X1

MakeClient = Callable[..., McpClient]
BASE_TOOLS = {"echo", "add", "slow", "fail", "image", "headers", "pid"}


def text_of(result: dict) -> str:
    return result["content"][0]["text"]


def received_headers(spec: upstream.ClientSpec, **kwargs) -> dict[str, str]:
    """The HTTP request headers the test server saw for a call of its ``headers`` tool."""
    result = upstream.call_tool(spec, "headers", {}, **kwargs)
    assert result["isError"] is False
    return json.loads(text_of(result))


# --- tool lists ------------------------------------------------------------------------------


def test_tools_of_the_http_server_every_page(http_client):
    spec = upstream.spec_of(http_client)
    tools = upstream.tools(spec)
    names = [tool["name"] for tool in tools]
    # 27 tools served in pages of 10: all three pages were followed.
    assert set(names) == BASE_TOOLS | {f"t{n:02d}" for n in range(1, 21)}
    assert len(names) == 27
    echo = next(tool for tool in tools if tool["name"] == "echo")
    assert echo["description"] == "Answer the text unchanged."
    assert echo["inputSchema"]["properties"]["text"]["type"] == "string"
    assert echo["inputSchema"]["required"] == ["text"]
    assert "input_schema" not in echo and all(value is not None for value in echo.values())
    assert upstream.state(spec) == "connected"


def test_tools_of_the_stdio_time_server(time_client):
    spec = upstream.spec_of(time_client)
    tools = {tool["name"]: tool for tool in upstream.tools(spec)}
    assert set(tools) == {"get_current_time", "convert_time"}
    assert set(tools["convert_time"]["inputSchema"]["required"]) == {"source_timezone", "time", "target_timezone"}
    assert tools["get_current_time"]["annotations"]["readOnlyHint"] is True


def test_tools_are_cached_then_refreshed(http_client, settings):
    spec = upstream.spec_of(http_client)
    settings.MCP_TOOLS_REFRESH_SECONDS = 3600
    first = upstream.tools(spec)
    listed_at = runner_module.get_runner().peek(spec.client_id).tools_at
    # A caller may change what it got: the cache hands out copies.
    first[0]["name"] = "changed"
    first[0]["inputSchema"]["properties"].clear()
    again = upstream.tools(spec)
    assert again[0]["name"] != "changed" and again[0]["inputSchema"]["properties"]
    assert runner_module.get_runner().peek(spec.client_id).tools_at == listed_at  # served from the cache
    upstream.tools(spec, refresh=True)
    refreshed_at = runner_module.get_runner().peek(spec.client_id).tools_at
    assert refreshed_at > listed_at
    settings.MCP_TOOLS_REFRESH_SECONDS = 0
    upstream.tools(spec)
    assert runner_module.get_runner().peek(spec.client_id).tools_at > refreshed_at  # expired: listed again


# --- calls -----------------------------------------------------------------------------------


def test_call_results_pass_through_unchanged(http_client):
    spec = upstream.spec_of(http_client)
    assert upstream.call_tool(spec, "echo", {"text": "héllo"}) == {
        "content": [{"type": "text", "text": "héllo"}],
        "structuredContent": {"result": "héllo"},
        "isError": False,
    }
    added = upstream.call_tool(spec, "add", {"a": 2, "b": 3.5})
    assert added["structuredContent"] == {"result": 5.5}
    assert added["content"] == [{"type": "text", "text": "5.5"}]
    image = upstream.call_tool(spec, "image", {})
    assert image["content"] == [{"type": "image", "mimeType": "image/png", "data": base64.b64encode(PNG_1X1).decode()}]
    assert image["isError"] is False
    failed = upstream.call_tool(spec, "fail", {"message": "the disk is full"})
    assert failed["isError"] is True
    assert "the disk is full" in text_of(failed)


def test_call_on_the_stdio_server(time_client):
    spec = upstream.spec_of(time_client)
    result = upstream.call_tool(spec, "get_current_time", {"timezone": "UTC"})
    assert result["isError"] is False
    assert result["structuredContent"]["timezone"] == "UTC"
    assert json.loads(text_of(result))["timezone"] == "UTC"
    converted = upstream.call_tool(
        spec, "convert_time", {"source_timezone": "UTC", "time": "12:00", "target_timezone": "Asia/Tokyo"}
    )
    assert converted["structuredContent"]["target"]["datetime"].startswith(
        converted["structuredContent"]["source"]["datetime"][:10]
    )
    assert "T21:00:00+09:00" in converted["structuredContent"]["target"]["datetime"]
    # An MCP protocol error (unknown tool: -32602 from this server) is an UpstreamError saying so.
    with pytest.raises(upstream.UpstreamError, match=r"tools/call 'nope' failed: MCP error -32602: Unknown tool"):
        upstream.call_tool(spec, "nope", {})
    assert upstream.call_tool(spec, "get_current_time", {"timezone": "UTC"})["isError"] is False


def test_call_on_the_sse_transport(make_mcp_client: MakeClient, mcp_sse_server: McpHttpServer):
    spec = upstream.spec_of(make_mcp_client(connection_type="sse", connection_string=mcp_sse_server.url))
    assert BASE_TOOLS <= {tool["name"] for tool in upstream.tools(spec)}
    assert upstream.call_tool(spec, "echo", {"text": "over sse"})["content"] == [{"type": "text", "text": "over sse"}]
    assert upstream.state(spec) == "connected"


# --- headers ---------------------------------------------------------------------------------


def test_configured_headers_reach_the_server(make_mcp_client: MakeClient, mcp_auth_server: McpHttpServer):
    name, value = AUTH_HEADER
    client = make_mcp_client(connection_type="http", connection_string=mcp_auth_server.url, headers={name: value})
    seen = received_headers(upstream.spec_of(client))
    assert seen[name.lower()] == value
    assert seen["mcp-session-id"]  # a stateful session


def test_a_server_requiring_a_header_refuses_without_it(make_mcp_client: MakeClient, mcp_auth_server: McpHttpServer):
    wrong = "wrong-value-456"
    client = make_mcp_client(
        name="guarded", connection_type="http", connection_string=mcp_auth_server.url, headers={AUTH_HEADER[0]: wrong}
    )
    spec = upstream.spec_of(client)
    with pytest.raises(upstream.UpstreamError) as refused:
        upstream.tools(spec)
    message = str(refused.value)
    assert "MCP client 'guarded'" in message and "HTTP 401 Unauthorized" in message
    assert wrong not in message
    assert upstream.state(spec) == "error"
    assert "401" in (upstream.last_error(spec) or "")
    # A call fails the same way.
    with pytest.raises(upstream.UpstreamError, match="401"):
        upstream.call_tool(spec, "echo", {"text": "x"})


def test_per_call_headers_and_bearer_reach_the_server(make_mcp_client: MakeClient, mcp_auth_server: McpHttpServer):
    name, value = AUTH_HEADER
    client = make_mcp_client(connection_type="http", connection_string=mcp_auth_server.url, headers={name: value})
    spec = upstream.spec_of(client)
    seen = received_headers(spec, headers={"X-Tenant": "acme", "x-request-id": "r-1"}, bearer="user-token-789")
    assert seen["x-tenant"] == "acme" and seen["x-request-id"] == "r-1"
    assert seen["authorization"] == "Bearer user-token-789"
    assert seen[name.lower()] == value  # the configured header too
    # The long-lived session never carries a caller's headers.
    plain = received_headers(spec)
    assert "authorization" not in plain and "x-tenant" not in plain
    assert plain["mcp-session-id"] != seen["mcp-session-id"]
    # A bearer replaces a configured Authorization header (one header, not two).
    other = make_mcp_client(
        connection_type="http",
        connection_string=mcp_auth_server.url,
        headers={name: value, "authorization": "Bearer gateway-token"},
    )
    assert received_headers(upstream.spec_of(other), bearer="user-token")["authorization"] == "Bearer user-token"
    assert received_headers(upstream.spec_of(other))["authorization"] == "Bearer gateway-token"


# --- failures --------------------------------------------------------------------------------


def test_a_slow_tool_times_out(make_mcp_client: MakeClient, mcp_http_server: McpHttpServer):
    client = make_mcp_client(
        name="sluggish", connection_type="http", connection_string=mcp_http_server.url, timeout_seconds=0.5
    )
    spec = upstream.spec_of(client)
    upstream.call_tool(spec, "echo", {"text": "warm"})  # connected first: the timeout is the call's own
    started = time.monotonic()
    with pytest.raises(upstream.ToolTimeout) as timed_out:
        upstream.call_tool(spec, "slow", {"seconds": 5})
    assert str(timed_out.value) == "tool 'slow' on MCP client 'sluggish' did not answer within 0.5s"
    assert time.monotonic() - started < 2.0
    # The session survives a timed-out call.
    assert upstream.call_tool(spec, "echo", {"text": "still here"})["content"][0]["text"] == "still here"
    assert upstream.state(spec) == "pending_tools"


def test_an_upstream_that_is_down_fails_fast(make_mcp_client: MakeClient):
    port = free_port()  # nothing listens there
    url = f"http://user:pass-secret@127.0.0.1:{port}/mcp?token=query-secret"
    spec = upstream.spec_of(make_mcp_client(name="gone", connection_type="http", connection_string=url))
    started = time.monotonic()
    with pytest.raises(upstream.UpstreamError) as down:
        upstream.call_tool(spec, "echo", {"text": "x"})
    assert time.monotonic() - started < 5.0
    message = str(down.value)
    assert message.startswith("MCP client 'gone': cannot connect to ")
    assert f"http://127.0.0.1:{port}/mcp" in message
    assert "pass-secret" not in message and "query-secret" not in message and "user" not in message
    assert upstream.state(spec) == "error"
    assert upstream.last_error(spec) == message
    with pytest.raises(upstream.UpstreamError, match="cannot connect"):
        upstream.tools(spec)


def test_an_unstartable_stdio_command(make_mcp_client: MakeClient):
    spec = upstream.spec_of(
        make_mcp_client(name="nocmd", connection_type="stdio", stdio_config={"command": "/nonexistent/mcp-server"})
    )
    with pytest.raises(upstream.UpstreamError, match="'/nonexistent/mcp-server': command not found"):
        upstream.tools(spec)
    assert upstream.state(spec) == "error"


def test_a_restarted_http_server_is_reconnected(make_mcp_client: MakeClient, restartable_http_server: McpHttpServer):
    spec = upstream.spec_of(make_mcp_client(connection_type="http", connection_string=restartable_http_server.url))
    first_pid = upstream.call_tool(spec, "pid", {})["structuredContent"]["result"]
    first_session = received_headers(spec)["mcp-session-id"]
    restartable_http_server.restart()  # the new process does not know the session: it answers 404
    assert upstream.call_tool(spec, "pid", {})["structuredContent"]["result"] != first_pid
    assert received_headers(spec)["mcp-session-id"] != first_session
    assert upstream.state(spec) == "pending_tools"


def test_a_call_while_the_http_server_is_down_then_up_again(
    make_mcp_client: MakeClient, restartable_http_server: McpHttpServer
):
    spec = upstream.spec_of(
        make_mcp_client(name="bouncy", connection_type="http", connection_string=restartable_http_server.url)
    )
    assert upstream.tools(spec)
    restartable_http_server.stop()
    with pytest.raises(upstream.UpstreamError, match=r"MCP client 'bouncy'.*cannot connect"):
        upstream.call_tool(spec, "echo", {"text": "x"})
    assert upstream.state(spec) == "error"
    restartable_http_server.start()
    assert upstream.call_tool(spec, "echo", {"text": "back"})["content"][0]["text"] == "back"
    assert upstream.state(spec) == "connected"  # the tool list of the same configuration is still valid


def test_a_killed_stdio_server_is_respawned(make_mcp_client: MakeClient):
    spec = upstream.spec_of(make_mcp_client(connection_type="stdio", stdio_config=ENV_STDIO))
    first = upstream.call_tool(spec, "pid", {})["structuredContent"]["result"]
    assert stdio_children("env_server.py") == [first]
    os.kill(first, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while upstream.state(spec) != "error" and time.monotonic() < deadline:
        time.sleep(0.02)
    assert upstream.state(spec) == "error"
    assert "closed the connection" in (upstream.last_error(spec) or "")
    second = upstream.call_tool(spec, "pid", {})["structuredContent"]["result"]
    assert second != first
    assert stdio_children("env_server.py") == [second]


def test_a_stdio_server_killed_during_a_call(make_mcp_client: MakeClient):
    spec = upstream.spec_of(make_mcp_client(name="doomed", connection_type="stdio", stdio_config=ENV_STDIO))
    child = upstream.call_tool(spec, "pid", {})["structuredContent"]["result"]
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(upstream.call_tool, spec, "slow", {"seconds": 5})
        time.sleep(0.3)
        os.kill(child, signal.SIGKILL)
        # The call may have run: it is not sent again, the caller learns the session died.
        with pytest.raises(upstream.UpstreamError, match="tools/call 'slow' failed: the server closed the connection"):
            pending.result(timeout=5)
    assert upstream.state(spec) == "error"
    assert upstream.call_tool(spec, "pid", {})["structuredContent"]["result"] != child


def test_a_session_the_server_forgot_is_reopened_and_the_call_sent_again(http_client, mcp_http_server, caplog):
    caplog.set_level("INFO", logger="mcp_gateway.upstream.runner")
    spec = upstream.spec_of(http_client)
    session_id = received_headers(spec)["mcp-session-id"]
    # The server ends the session (as an expiry would): the next call is answered 404 before any tool
    # ran, so it is sent again, once, on a new session.
    session_headers = {"mcp-session-id": session_id, "mcp-protocol-version": "2025-11-25"}
    ended = httpx2.delete(mcp_http_server.url, headers=session_headers)
    assert ended.status_code == 200
    again = received_headers(spec)
    assert again["mcp-session-id"] != session_id
    assert "the server no longer knows the session (HTTP 404); tools/call sent again on a new session" in caplog.text
    assert upstream.state(spec) == "pending_tools"


# --- configuration, state, lifecycle ----------------------------------------------------------


def test_a_configuration_change_reconnects(make_mcp_client: MakeClient, mcp_http_server: McpHttpServer):
    client = make_mcp_client(connection_type="http", connection_string=mcp_http_server.url, headers={"X-Version": "1"})
    before = upstream.spec_of(client)
    assert received_headers(before)["x-version"] == "1"
    upstream.tools(before)
    client.set_headers({"X-Version": "2"})
    client.save()
    after = upstream.spec_of(client)
    assert after.fingerprint != before.fingerprint
    assert upstream.state(after) == "disconnected"  # this configuration has no session yet
    seen = received_headers(after)
    assert seen["x-version"] == "2"
    assert upstream.state(after) == "pending_tools"  # a new session: tools not listed for it yet
    # The same configuration again, however built, is the same fingerprint.
    assert upstream.spec_of(McpClient.objects.get(pk=client.pk)).fingerprint == after.fingerprint
    client.timeout_seconds = 3
    assert upstream.spec_of(client).fingerprint == after.fingerprint  # a timeout needs no reconnect


def test_state_transitions(http_client):
    spec = upstream.spec_of(http_client)
    assert upstream.state(spec) == "disconnected"
    assert upstream.last_error(spec) is None
    upstream.call_tool(spec, "echo", {"text": "x"})
    assert upstream.state(spec) == "pending_tools"
    upstream.tools(spec)
    assert upstream.state(spec) == "connected"
    first_session = received_headers(spec)["mcp-session-id"]
    upstream.reconnect(spec)
    assert upstream.state(spec) == "connected"  # reopened and listed again
    assert received_headers(spec)["mcp-session-id"] != first_session
    upstream.forget(spec.client_id)
    assert upstream.state(spec) == "disconnected"
    upstream.forget(spec.client_id)  # forgetting twice is fine


def test_reconnect_of_an_unreachable_upstream_raises(make_mcp_client: MakeClient):
    url = f"http://127.0.0.1:{free_port()}/mcp"
    spec = upstream.spec_of(make_mcp_client(connection_type="http", connection_string=url))
    with pytest.raises(upstream.UpstreamError, match="cannot connect"):
        upstream.reconnect(spec)
    assert upstream.state(spec) == "error"


def test_health_ping_marks_a_dead_session_then_the_next_use_reconnects(
    make_mcp_client: MakeClient, restartable_http_server: McpHttpServer
):
    spec = upstream.spec_of(make_mcp_client(connection_type="http", connection_string=restartable_http_server.url))
    assert upstream.tools(spec)
    upstream.health_check(idle_seconds=0)  # a live session answers its ping
    assert upstream.state(spec) == "connected"
    restartable_http_server.restart()  # the session id is unknown to the new process
    upstream.health_check(idle_seconds=0)
    assert upstream.state(spec) == "error"
    # Either the ping found the session unknown, or the transport had already seen the old
    # process go (the restart's timing decides which): both mark it, with their reason.
    reason = upstream.last_error(spec) or ""
    assert "ping failed" in reason or "the server closed the connection" in reason, reason
    assert upstream.call_tool(spec, "echo", {"text": "again"})["content"][0]["text"] == "again"
    assert upstream.state(spec) == "connected"


def test_health_ping_skips_busy_sessions(http_client):
    spec = upstream.spec_of(http_client)
    upstream.tools(spec)
    upstream.health_check(idle_seconds=3600)  # just used: not pinged
    assert upstream.state(spec) == "connected"


def test_concurrent_calls_from_eight_threads(http_client):
    spec = upstream.spec_of(http_client)

    def call(n: int) -> str:
        return text_of(upstream.call_tool(spec, "echo", {"text": f"call {n}"}))

    with ThreadPoolExecutor(8) as pool:
        assert list(pool.map(call, range(80))) == [f"call {n}" for n in range(80)]
        # Calls share one session and are multiplexed on it: eight 0.5 s calls overlap.
        started = time.monotonic()
        results = list(pool.map(lambda _: upstream.call_tool(spec, "slow", {"seconds": 0.5}), range(8)))
        assert time.monotonic() - started < 2.0
        sessions = set(pool.map(lambda _: received_headers(spec)["mcp-session-id"], range(16)))
    assert all(text_of(result) == "slept" for result in results)
    assert len(sessions) == 1
    assert upstream.state(spec) == "pending_tools"


def test_a_forked_child_gets_its_own_loop(http_client):
    spec = upstream.spec_of(http_client)
    upstream.call_tool(spec, "echo", {"text": "parent"})  # the parent's loop thread is running
    pid = os.fork()
    if pid == 0:  # the child: as a gunicorn worker forked after the master imported everything
        code = 1
        try:
            child_loop = runner_module.get_runner()
            ok = text_of(upstream.call_tool(spec, "echo", {"text": "child"})) == "child"
            code = 0 if ok and child_loop.pid == os.getpid() else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert text_of(upstream.call_tool(spec, "echo", {"text": "parent again"})) == "parent again"


# --- specs: env.NAME, the stdio environment, secrets --------------------------------------------


def test_env_names_are_resolved(make_mcp_client: MakeClient, mcp_http_server: McpHttpServer, monkeypatch):
    monkeypatch.setenv("MCP_TEST_UPSTREAM_URL", mcp_http_server.url)
    monkeypatch.setenv("MCP_TEST_TOKEN", "token-from-env")
    http = upstream.spec_of(make_mcp_client(connection_type="http", connection_string="env.MCP_TEST_UPSTREAM_URL"))
    assert http.url == mcp_http_server.url
    assert upstream.call_tool(http, "echo", {"text": "via env"})["isError"] is False
    stdio = upstream.spec_of(
        make_mcp_client(
            connection_type="stdio",
            stdio_config={**ENV_STDIO, "envs": {"API_TOKEN": "env.MCP_TEST_TOKEN", "MODE": "plain"}},
        )
    )
    assert dict(stdio.env) == {"API_TOKEN": "token-from-env", "MODE": "plain"}


def test_a_missing_env_variable_is_named(make_mcp_client: MakeClient, monkeypatch):
    monkeypatch.delenv("MCP_TEST_MISSING", raising=False)
    client = make_mcp_client(name="needy", connection_type="http", connection_string="env.MCP_TEST_MISSING")
    with pytest.raises(upstream.UpstreamError, match="MCP client 'needy'.*MCP_TEST_MISSING, which is not set"):
        upstream.spec_of(client)
    stdio = make_mcp_client(
        name="needy2", connection_type="stdio", stdio_config={**ENV_STDIO, "envs": {"KEY": "env.MCP_TEST_MISSING"}}
    )
    with pytest.raises(upstream.UpstreamError, match="stdio env KEY refers to the environment variable MCP_TEST_MISS"):
        upstream.spec_of(stdio)


def test_the_stdio_child_does_not_inherit_the_gateway_environment(make_mcp_client: MakeClient, monkeypatch):
    monkeypatch.setenv("BIFROST_SECRET_PROBE", "do-not-leak-me")
    monkeypatch.setenv("MCP_TEST_PASSED", "passed-on-purpose")
    spec = upstream.spec_of(
        make_mcp_client(
            connection_type="stdio",
            stdio_config={**ENV_STDIO, "envs": {"CONFIGURED": "yes", "FROM_ENV": "env.MCP_TEST_PASSED"}},
        )
    )
    child = json.loads(text_of(upstream.call_tool(spec, "environment", {})))
    assert "BIFROST_SECRET_PROBE" not in child
    assert "do-not-leak-me" not in json.dumps(child)
    assert not {"DATABASE_URL", "BIFROST_ENCRYPTION_KEY", "DJANGO_SETTINGS_MODULE"} & set(child)
    assert child["CONFIGURED"] == "yes" and child["FROM_ENV"] == "passed-on-purpose"
    assert child["PATH"] == os.environ["PATH"]
    # Only the safe base (ours, plus the SDK's own short list) and the configured variables.
    safe = {"PATH", "HOME", "LANG", "LOGNAME", "SHELL", "TERM", "USER", "CONFIGURED", "FROM_ENV"}
    assert set(child) - safe <= {"LC_CTYPE"}  # Python may set LC_CTYPE in its own process


def test_a_spec_keeps_its_secrets_out_of_repr(make_mcp_client: MakeClient):
    client = make_mcp_client(
        name="secretive",
        connection_type="http",
        connection_string="https://alice:pw-123@mcp.example.com/mcp?key=query-456",
        headers={"Authorization": "Bearer header-789"},
    )
    spec = upstream.spec_of(client)
    assert spec.headers == {"Authorization": "Bearer header-789"}
    shown = repr(spec)
    assert "https://mcp.example.com/mcp" in shown and "secretive" in shown
    for secret in ("pw-123", "alice", "query-456", "header-789"):
        assert secret not in shown
    assert spec == upstream.spec_of(McpClient.objects.get(pk=client.pk))
    with pytest.raises(AttributeError):
        spec.name = "other"  # type: ignore[misc]


def test_invalid_configurations_are_upstream_errors(make_mcp_client: MakeClient):
    no_command = make_mcp_client(connection_type="stdio", stdio_config={"args": []})
    with pytest.raises(upstream.UpstreamError, match="stdio_config has no command"):
        upstream.spec_of(no_command)
    not_http = make_mcp_client(connection_type="http", connection_string="ftp://example.com/")
    with pytest.raises(upstream.UpstreamError, match="must be an http"):
        upstream.spec_of(not_http)


# --- the fast path of tools/call (``mcp_gateway.upstream.fast``) ---------------------------------


def fast_target(spec: upstream.ClientSpec) -> fast.Target:
    """The fast path of the client's live session (its counters say which way calls went)."""
    conn = runner_module.get_runner().peek(spec.client_id).conn
    assert conn is not None and conn.fast is not None
    return conn.fast


def sdk_call(spec: upstream.ClientSpec, name: str, arguments: dict) -> dict:
    """The same call the SDK way: a header of its own gives it a session of its own."""
    return upstream.call_tool(spec, name, arguments, headers={"X-Path": "sdk"})


def test_fast_path_results_are_those_of_the_sdk_path(http_client):
    spec = upstream.spec_of(http_client)
    upstream.call_tool(spec, "echo", {"text": "connect"})  # the first call opens the session (SDK)
    target = fast_target(spec)
    calls = [
        ("echo", {"text": "héllo ✓"}),
        ("add", {"a": 2, "b": 3.5}),
        ("image", {}),
        ("fail", {"message": "the disk is full"}),
        ("nope", {}),  # an unknown tool: this server answers an isError result
        ("pid", {}),
    ]
    for name, arguments in calls:
        answered = target.answered
        fast_result = upstream.call_tool(spec, name, arguments)
        assert target.answered == answered + 1, name
        assert fast_result == sdk_call(spec, name, arguments), name
    assert target.fallbacks == 0 and target.failed == 0
    assert upstream.call_tool(spec, "image", {})["content"][0]["data"] == base64.b64encode(PNG_1X1).decode()
    assert upstream.call_tool(spec, "fail", {"message": "x"})["isError"] is True


def test_fast_path_sends_what_the_sdk_sends(make_mcp_client: MakeClient, mcp_auth_server: McpHttpServer):
    name, value = AUTH_HEADER
    client = make_mcp_client(connection_type="http", connection_string=mcp_auth_server.url, headers={name: value})
    spec = upstream.spec_of(client)
    by_sdk = received_headers(spec)  # opens the session: the SDK's own request
    answered = fast_target(spec).answered
    by_fast = received_headers(spec)
    assert fast_target(spec).answered == answered + 1
    assert by_fast.pop("content-length") and by_sdk.pop("content-length")  # the ids differ in length
    assert by_fast == by_sdk  # configured header, session id, protocol version, accept, user agent...


def test_fast_path_reuses_one_connection(http_client):
    spec = upstream.spec_of(http_client)
    upstream.call_tool(spec, "echo", {"text": "connect"})
    target = fast_target(spec)
    upstream.call_tool(spec, "echo", {"text": "warm"})
    connects, answered = target.pool.connects, target.answered
    for n in range(40):
        assert text_of(upstream.call_tool(spec, "echo", {"text": f"call {n}"})) == f"call {n}"
    assert target.answered == answered + 40
    # The test server ends an SSE answer a moment after its result: a few connections take turns
    # while their answers finish, never one per call.
    assert target.pool.connects - connects <= 8


def test_fast_path_timeout(make_mcp_client: MakeClient, mcp_http_server: McpHttpServer):
    client = make_mcp_client(name="hasty", connection_type="http", connection_string=mcp_http_server.url)
    client.timeout_seconds = 0.5  # not part of the fingerprint: the session stays, the call's timeout changes
    spec = upstream.spec_of(client)
    upstream.call_tool(spec, "echo", {"text": "warm"})
    started = time.monotonic()
    with pytest.raises(upstream.ToolTimeout) as timed_out:
        upstream.call_tool(spec, "slow", {"seconds": 3})
    assert str(timed_out.value) == "tool 'slow' on MCP client 'hasty' did not answer within 0.5s"
    assert time.monotonic() - started < 1.5
    assert fast_target(spec).answered == 0 and fast_target(spec).fallbacks == 0
    assert text_of(upstream.call_tool(spec, "echo", {"text": "after"})) == "after"


def test_fast_path_session_404_reconnects_and_resends(http_client, mcp_http_server, caplog):
    caplog.set_level("INFO", logger="mcp_gateway.upstream.runner")
    spec = upstream.spec_of(http_client)
    session_id = received_headers(spec)["mcp-session-id"]
    old = fast_target(spec)
    ended = httpx2.delete(
        mcp_http_server.url, headers={"mcp-session-id": session_id, "mcp-protocol-version": "2025-11-25"}
    )
    assert ended.status_code == 200
    assert received_headers(spec)["mcp-session-id"] != session_id  # sent once more, on a new session
    assert old.failed == 1 and old.answered == 0
    assert "no longer knows the session (HTTP 404); tools/call sent again on a new session" in caplog.text
    new = fast_target(spec)
    assert new is not old
    assert text_of(upstream.call_tool(spec, "echo", {"text": "fast again"})) == "fast again"
    assert new.answered == 1


def test_the_sse_transport_and_per_call_headers_keep_the_sdk_path(
    make_mcp_client: MakeClient, mcp_sse_server: McpHttpServer, http_client
):
    sse = upstream.spec_of(make_mcp_client(connection_type="sse", connection_string=mcp_sse_server.url))
    upstream.call_tool(sse, "echo", {"text": "x"})
    assert runner_module.get_runner().peek(sse.client_id).conn.fast is None
    spec = upstream.spec_of(http_client)
    upstream.call_tool(spec, "echo", {"text": "x"})
    target = fast_target(spec)
    answered = target.answered
    upstream.call_tool(spec, "echo", {"text": "x"}, bearer="user-token")
    upstream.call_tool(spec, "echo", {"text": "x"}, headers={"X-Tenant": "a"})
    assert target.answered == answered


# A small streamable-HTTP server answering tools/call as each test needs: JSON, SSE in pieces,
# notifications and server requests before the result, a stream to resume, errors, cookies.


class FakeMcpServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), FakeMcpHandler)
        self.url = f"http://127.0.0.1:{self.server_address[1]}/mcp"
        self.session_id = "fake-session-1"
        self.messages: list[tuple[dict, dict[str, str]]] = []  # (message, headers) of every POST
        self.call_connections: set[int] = set()  # connections that carried a gw- tools/call
        self.pong = threading.Event()
        self.resume_events: dict[str, bytes] = {}
        self.lock = threading.Lock()

    def received(self, method: str) -> list[tuple[dict, dict[str, str]]]:
        return [(m, h) for m, h in self.messages if m.get("method") == method]


def sse_event(message: dict, *, event_id: str | None = None) -> bytes:
    head = f"id: {event_id}\r\n" if event_id else ""
    return f"{head}event: message\r\ndata: {json.dumps(message)}\r\n\r\n".encode()


class FakeMcpHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: FakeMcpServer

    def log_message(self, format: str, *args: object) -> None:  # quiet
        pass

    def do_DELETE(self) -> None:
        self.reply(200, b"", "application/json")

    def do_GET(self) -> None:
        last = self.headers.get("last-event-id")
        if last is None or last not in self.server.resume_events:
            self.reply(405, b"", "text/plain")
            return
        self.start_stream()
        self.chunk(self.server.resume_events.pop(last))
        self.end_stream()

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["content-length"]))
        message = json.loads(body)
        headers = {name.lower(): value for name, value in self.headers.items()}
        with self.server.lock:
            self.server.messages.append((message, headers))
        method = message.get("method")
        if method == "initialize":
            result = {
                "protocolVersion": "2025-06-18",
                "capabilities": {"tools": {}},
                "serverInfo": {"name": "fake", "version": "1"},
            }
            self.reply_json({"jsonrpc": "2.0", "id": message["id"], "result": result})
        elif "id" not in message or "method" not in message:  # a notification, or an answer to our request
            if message.get("id") == "srv-ping" and message.get("result") == {}:
                self.server.pong.set()
            self.reply(202, b"", "application/json")
        elif method == "tools/list":
            self.reply_json({"jsonrpc": "2.0", "id": message["id"], "result": {"tools": []}})
        elif method == "tools/call":
            if str(message["id"]).startswith("gw-"):
                self.server.call_connections.add(id(self.connection))
            getattr(self, f"tool_{message['params']['name']}")(message)
        else:
            self.reply_json({"jsonrpc": "2.0", "id": message["id"], "error": {"code": -32601, "message": "nope"}})

    # --- answers

    def reply(self, status: int, body: bytes, kind: str, extra: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("mcp-session-id", self.server.session_id)
        for name, value in (extra or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def reply_json(self, message: dict, extra: dict[str, str] | None = None) -> None:
        self.reply(200, json.dumps(message).encode(), "application/json", extra)

    def start_stream(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

    def chunk(self, data: bytes, *, last: bool = False) -> None:
        """One chunk; ``last``: the end of the stream in the same write (then the client finds it
        with the result, and the test's count of connections cannot depend on timing)."""
        self.wfile.write(b"%x\r\n%s\r\n%s" % (len(data), data, b"0\r\n\r\n" if last else b""))
        self.wfile.flush()

    def end_stream(self) -> None:
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    @staticmethod
    def result(message: dict, text: str) -> dict:
        return {"jsonrpc": "2.0", "id": message["id"], "result": {"content": [{"type": "text", "text": text}]}}

    # --- tools

    def tool_json(self, message: dict) -> None:
        self.reply_json(self.result(message, "as json"))

    def tool_error(self, message: dict) -> None:
        error = {"code": -32602, "message": "Invalid params: 'text' is required", "data": {"field": "text"}}
        self.reply_json({"jsonrpc": "2.0", "id": message["id"], "error": error})

    def tool_sse(self, message: dict) -> None:
        """A comment, a progress and a log notification first (LF and CR line ends), then the result
        split across reads (mid-line, and between the CR and LF of a CRLF), then the end of the stream."""
        self.start_stream()
        progress = {"jsonrpc": "2.0", "method": "notifications/progress", "params": {"progressToken": 1, "progress": 1}}
        self.chunk(b": keep-alive comment\n\n" + sse_event(progress))
        log = {"jsonrpc": "2.0", "method": "notifications/message", "params": {"level": "info", "data": "working"}}
        self.chunk(f"event: message\rdata: {json.dumps(log)}\r\r".encode())
        text = json.dumps(self.result(message, "after the notifications"))
        middle = len(text) // 2
        self.chunk(f"event: message\ndata: {text[:middle]}".encode())
        time.sleep(0.02)  # the client reads half an event, then waits
        self.chunk(f"{text[middle:]}\r".encode())  # a CRLF split between two reads
        self.chunk(b"\n\r\n", last=True)

    def tool_late_end(self, message: dict) -> None:
        """The stream ends a moment after the result (as the SDK's server does)."""
        self.start_stream()
        self.chunk(sse_event(self.result(message, "ended later")))
        time.sleep(0.02)
        self.end_stream()

    def tool_linger(self, message: dict) -> None:
        """The stream stays open after the result, then says more."""
        self.start_stream()
        self.chunk(sse_event(self.result(message, "lingering")))
        time.sleep(0.6)
        with contextlib.suppress(OSError):
            self.chunk(b": still here\n\n")
            self.end_stream()

    def tool_other_event(self, message: dict) -> None:
        """An event of another type and a priming event (an id, no data) are not messages."""
        self.start_stream()
        self.chunk(b"event: other\ndata: {not json\n\nid: prime-1\ndata:\n\n")
        self.chunk(sse_event(self.result(message, "after other events")), last=True)

    def tool_ping(self, message: dict) -> None:
        """The server pings the client on the call's stream and answers once the pong arrived."""
        self.server.pong.clear()
        self.start_stream()
        self.chunk(sse_event({"jsonrpc": "2.0", "id": "srv-ping", "method": "ping"}))
        answered = self.server.pong.wait(5)
        self.chunk(sse_event(self.result(message, f"pong received: {answered}")))
        self.end_stream()

    def tool_resume(self, message: dict) -> None:
        """The stream ends after a numbered event; the result waits for the client's GET."""
        self.server.resume_events["ev-1"] = sse_event(self.result(message, "resumed"), event_id="ev-2")
        self.start_stream()
        self.chunk(b"retry: 10\nid: ev-1\ndata:\n\n")
        self.end_stream()

    def tool_cut(self, message: dict) -> None:
        """The stream ends without the result and without an event id: nothing to resume."""
        self.start_stream()
        self.chunk(b": nothing\n\n")
        self.end_stream()

    def tool_teapot(self, message: dict) -> None:
        self.reply(418, b"no", "text/plain")

    def tool_sleep(self, message: dict) -> None:
        time.sleep(1.5)
        with contextlib.suppress(OSError):
            self.reply_json(self.result(message, "late"))

    def tool_cookie(self, message: dict) -> None:
        self.reply_json(self.result(message, "cookie set"), {"Set-Cookie": "lb=backend-2; Path=/"})

    def tool_cookies(self, message: dict) -> None:
        headers = dict(self.server.messages[-1][1])
        self.reply_json(self.result(message, headers.get("cookie", "")))


@pytest.fixture
def fake_server() -> Iterator[FakeMcpServer]:
    server = FakeMcpServer()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def fake_spec(make_mcp_client: MakeClient, fake_server: FakeMcpServer) -> upstream.ClientSpec:
    client = make_mcp_client(name="fake", connection_type="http", connection_string=fake_server.url)
    spec = upstream.spec_of(client)
    assert text_of(upstream.call_tool(spec, "json", {})) == "as json"  # connects (the SDK path)
    return spec


def test_fast_path_json_answers_and_headers(fake_spec, fake_server: FakeMcpServer):
    target = fast_target(fake_spec)
    result = upstream.call_tool(fake_spec, "json", {"a": 1})
    assert result == {"content": [{"type": "text", "text": "as json"}], "isError": False}  # defaults added
    assert result == sdk_call(fake_spec, "json", {"a": 1})
    assert target.answered == 1
    message, headers = fake_server.received("tools/call")[-2]  # the fast one (before the SDK's)
    assert message["id"].startswith("gw-") and message["params"] == {"name": "json", "arguments": {"a": 1}}
    assert headers["mcp-session-id"] == "fake-session-1"
    assert headers["mcp-protocol-version"] == "2025-06-18"  # as negotiated
    assert headers["accept"] == "application/json, text/event-stream"
    assert headers["content-type"] == "application/json"


def test_fast_path_sse_answer_after_notifications(fake_spec, fake_server: FakeMcpServer):
    target = fast_target(fake_spec)
    for _ in range(5):
        assert text_of(upstream.call_tool(fake_spec, "sse", {})) == "after the notifications"
    assert text_of(upstream.call_tool(fake_spec, "other_event", {})) == "after other events"
    assert target.answered == 6 and target.fallbacks == 0
    # Each answer was read to its end: one kept-alive connection carried every fast call.
    assert len(fake_server.call_connections) == 1
    assert upstream.call_tool(fake_spec, "sse", {}) == sdk_call(fake_spec, "sse", {})


def test_fast_path_finishes_an_answer_that_ends_later(fake_spec, fake_server: FakeMcpServer):
    for _ in range(3):
        assert text_of(upstream.call_tool(fake_spec, "late_end", {})) == "ended later"
        time.sleep(0.3)  # the end arrives meanwhile: the next call finishes the answer and reuses its connection
    assert len(fake_server.call_connections) == 1
    # An answer still open when the next call comes is not reused: that call opens a connection.
    assert text_of(upstream.call_tool(fake_spec, "linger", {})) == "lingering"
    assert text_of(upstream.call_tool(fake_spec, "sse", {})) == "after the notifications"
    assert len(fake_server.call_connections) == 2
    time.sleep(0.9)  # the lingering answer ended, with bytes nobody asked for: read through, then reused
    assert text_of(upstream.call_tool(fake_spec, "json", {})) == "as json"
    assert text_of(upstream.call_tool(fake_spec, "json", {})) == "as json"
    assert len(fake_server.call_connections) == 2
    assert fast_target(fake_spec).answered == 7


def test_fast_path_answers_a_server_request_on_the_stream(fake_spec, fake_server: FakeMcpServer):
    assert text_of(upstream.call_tool(fake_spec, "ping", {})) == "pong received: True"
    assert fast_target(fake_spec).answered == 1
    assert len(fake_server.received("tools/call")) == 2  # sent once (the first is the connecting call)


def test_fast_path_resumes_a_stream_from_its_last_event(fake_spec):
    assert text_of(upstream.call_tool(fake_spec, "resume", {})) == "resumed"
    assert fast_target(fake_spec).answered == 1


def test_fast_path_stream_without_answer_is_a_closed_connection(fake_spec):
    target = fast_target(fake_spec)
    with pytest.raises(upstream.UpstreamError, match="tools/call 'cut' failed: the server closed the connection"):
        upstream.call_tool(fake_spec, "cut", {})
    assert target.failed == 1
    assert upstream.state(fake_spec) == "error"  # as on the SDK path: the session is dropped
    assert text_of(upstream.call_tool(fake_spec, "json", {})) == "as json"  # and reopened


def test_fast_path_json_rpc_error(fake_spec):
    expected = "MCP client 'fake': tools/call 'error' failed: MCP error -32602: Invalid params: 'text' is required"
    with pytest.raises(upstream.UpstreamError) as fast_error:
        upstream.call_tool(fake_spec, "error", {})
    with pytest.raises(upstream.UpstreamError) as sdk_error:
        sdk_call(fake_spec, "error", {})
    assert type(fast_error.value) is upstream.UpstreamError
    assert str(fast_error.value) == str(sdk_error.value) == expected
    assert fast_target(fake_spec).failed == 0 and upstream.state(fake_spec) != "error"


def test_fast_path_timeout_cancels_the_request(make_mcp_client: MakeClient, fake_server: FakeMcpServer):
    spec = upstream.spec_of(
        make_mcp_client(name="quick", connection_type="http", connection_string=fake_server.url, timeout_seconds=0.3)
    )
    upstream.call_tool(spec, "json", {})
    with pytest.raises(upstream.ToolTimeout, match=r"^tool 'sleep' on MCP client 'quick' did not answer within 0.3s$"):
        upstream.call_tool(spec, "sleep", {})
    call_id = fake_server.received("tools/call")[-1][0]["id"]
    deadline = time.monotonic() + 5  # the courtesy cancel goes out in the background
    while not fake_server.received("notifications/cancelled") and time.monotonic() < deadline:
        time.sleep(0.01)
    cancelled = fake_server.received("notifications/cancelled")
    assert cancelled[-1][0]["params"] == {"requestId": call_id, "reason": "timed out after 0.3s"}


def test_fast_path_other_status_falls_back_to_the_sdk(fake_spec, fake_server: FakeMcpServer):
    target = fast_target(fake_spec)
    with pytest.raises(upstream.UpstreamError, match="HTTP 418"):
        upstream.call_tool(fake_spec, "teapot", {})
    assert target.fallbacks == 1
    sent = [message["id"] for message, _ in fake_server.received("tools/call")]
    assert str(sent[-2]).startswith("gw-") and isinstance(sent[-1], int)  # then the SDK's own request
    assert text_of(upstream.call_tool(fake_spec, "json", {})) == "as json"
    assert target.answered == 1 and target.misses == 0
    for _ in range(fast.MAX_MISSES):
        with pytest.raises(upstream.UpstreamError):
            upstream.call_tool(fake_spec, "teapot", {})
    assert target.paused_until > time.monotonic()  # a server the fast path keeps missing: paused
    upstream.call_tool(fake_spec, "json", {})
    assert target.answered == 1


def test_fast_path_hands_a_cookie_to_the_sdk(fake_spec):
    target = fast_target(fake_spec)
    assert text_of(upstream.call_tool(fake_spec, "cookie", {})) == "cookie set"
    assert target.answered == 1
    # A server that sets cookies (a sticky load balancer...) gets them back: the SDK path from now on.
    assert text_of(upstream.call_tool(fake_spec, "cookies", {})) == "lb=backend-2"
    assert target.answered == 1


# --- the SSE parser ---------------------------------------------------------------------------------


def parse(*chunks: bytes, limit: int = 1000) -> list[tuple[str, bytes]]:
    parser = fast.SseParser(limit)
    events = [event for chunk in chunks for event in parser.feed(chunk)]
    return events + parser.flush()


@pytest.mark.parametrize("newline", [b"\n", b"\r\n", b"\r"])
def test_sse_parser_line_ends_and_any_split(newline: bytes):
    lines = [b": comment", b"event: message", b'data: {"a":', b"data:1}", b"", b"data:x", b"id: 7", b"", b""]
    stream = newline.join([*lines, b"event: e", b"", b"data: last", b"", b""])
    expected = [("message", b'{"a":\n1}'), ("message", b"x"), ("e", b""), ("message", b"last")]
    assert parse(stream) == expected
    for cut in range(1, len(stream)):
        assert parse(stream[:cut], stream[cut:]) == expected, cut
    assert parse(*[stream[i : i + 1] for i in range(len(stream))]) == expected


def test_sse_parser_ids_retry_and_limits():
    parser = fast.SseParser(100)
    assert parser.feed(b"retry: 250\nid: a-1\ndata:\n\n") == [("message", b"")]
    assert parser.last_id == "a-1" and parser.retry == 250
    assert parser.feed(b"id: bad\0id\nretry: soon\ndata: y\n\n") == [("message", b"y")]
    assert parser.last_id == "a-1" and parser.retry == 250
    assert parse(b"data: unterminated") == []  # the stream ended mid-event: not dispatched
    with pytest.raises(fast.SseError, match="exceeded the 10 byte limit"):
        parse(b"data: 0123456789\n", limit=10)
    with pytest.raises(fast.SseError):
        parse(b"data: 0123", b"456789 and more", limit=10)  # an unterminated line counts too
