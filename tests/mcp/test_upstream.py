"""``mcp_gateway.upstream`` against real MCP servers: the SDK-built HTTP test server (streamable
HTTP and SSE), ``mcp-server-time`` over stdio, and a stdio server that answers its environment.

What is checked: tool lists (paginated) and calls passed through unchanged, configured / per-call
headers and bearer tokens on the wire, timeouts, an upstream that is down, restarted or killed,
configuration changes, states, concurrency, ``env.NAME`` and the stdio child's environment."""

from __future__ import annotations

import base64
import json
import os
import signal
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import httpx2
import pytest

from governance.models import McpClient
from mcp_gateway import upstream
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
    assert "ping failed" in (upstream.last_error(spec) or "")
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
