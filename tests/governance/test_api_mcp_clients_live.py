"""The MCP client API against a real MCP server (``tests/mcp/servers/http_server.py`` in a
subprocess) through the real ``mcp_gateway.upstream``: create refuses a server that refuses it,
then the client lists the server's real tools."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from governance.models import McpClient
from mcp_gateway import upstream
from tests.mcp.conftest import McpHttpServer

pytestmark = [pytest.mark.django_db, pytest.mark.slow]

HEADER = ("X-Api-Key", "live-test-key-8080")


@pytest.fixture(scope="module")
def guarded_server() -> Iterator[McpHttpServer]:
    server = McpHttpServer("--require-header", "=".join(HEADER))
    server.start()
    yield server
    server.stop()


def test_create_list_and_delete_against_a_real_server(alice_api, guarded_server, django_capture_on_commit_callbacks):
    body = {"name": "live", "connection_type": "http", "connection_string": guarded_server.url, "timeout_seconds": 5}
    try:
        refused = alice_api.post("/api/mcp/client", body, format="json")
        assert refused.status_code == 400, refused.content
        assert refused.json()["error"]["message"].startswith("could not connect to MCP server 'live': ")
        assert not McpClient.objects.exists()

        response = alice_api.post(
            "/api/mcp/client", {**body, "headers": {HEADER[0]: HEADER[1]}, "tools_to_execute": ["*"]}, format="json"
        )
        assert response.status_code == 200, response.content
        client = response.json()["client"]
        assert client["state"] == "connected"
        assert {"live_echo", "live_add"} <= {tool["name"] for tool in client["tools"]}
        assert HEADER[1] not in response.content.decode()

        listed = alice_api.get("/api/mcp/clients").json()["clients"]
        assert [c["config"]["name"] for c in listed] == ["live"] and listed[0]["state"] == "connected"

        client_id = client["config"]["client_id"]
        assert alice_api.post(f"/api/mcp/client/{client_id}/reconnect").status_code == 200
        with django_capture_on_commit_callbacks(execute=True):
            assert alice_api.delete(f"/api/mcp/client/{client_id}").status_code == 200
        assert not McpClient.objects.exists()
    finally:
        for row in McpClient.objects.all():
            upstream.forget(row.client_id)
