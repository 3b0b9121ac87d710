"""The MCP client admin: create and edit through the services (the server tried before saving),
write-only headers, state and tools on the list and the client's page, the reconnect action, and
the tools a VK's MCP config can pick from. The gateway's upstream is a fake."""

from __future__ import annotations

import pytest
from django.contrib.admin.models import LogEntry
from django.urls import reverse

from governance.models import McpClient, VirtualKeyMcpConfig
from governance.services import mcp_client_create, virtual_key_create
from tests.governance.mcp_fakes import FakeUpstream, install

pytestmark = pytest.mark.django_db

URL = "https://docs.example.test/mcp"
SECRET = "Bearer sk-upstream-ADMIN-SECRET-5150"
OAUTH_SECRET = "oauth-secret-admin-6161"


@pytest.fixture
def admin_client(client, alice):
    client.force_login(alice)
    return client


@pytest.fixture
def upstream(monkeypatch) -> FakeUpstream:
    fake = install(monkeypatch)
    fake.serve(URL)
    return fake


def form(**fields) -> dict:
    return {
        "name": "docs",
        "connection_type": "http",
        "connection_string": URL,
        "stdio_config": "",
        "timeout_seconds": "30",
        "auth_type": "headers",
        "headers": f"Authorization: {SECRET}",
        "oauth_config": "",
        "tools_to_execute": "*",
        "allowed_extra_headers": "",
        "tool_pricing": "",
    } | fields


def make(upstream, **fields) -> McpClient:
    values = {
        "name": "docs",
        "connection_type": "http",
        "connection_string": URL,
        "headers": {"Authorization": SECRET},
        "tools_to_execute": ["*"],
    } | fields
    return mcp_client_create(**values, connector=upstream)


def pages(admin_client, client: McpClient) -> str:
    urls = [
        reverse("admin:governance_mcpclient_changelist"),
        reverse("admin:governance_mcpclient_change", args=[client.pk]),
        reverse("admin:governance_mcpclient_history", args=[client.pk]),
    ]
    return "".join(admin_client.get(url).content.decode() for url in urls)


def test_add_page_renders_every_field(admin_client, upstream):
    html = admin_client.get(reverse("admin:governance_mcpclient_add")).content.decode()
    for field in (
        "name",
        "connection_type",
        "connection_string",
        "stdio_config",
        "timeout_seconds",
        "auth_type",
        "headers",
        "oauth_config",
        "tools_to_execute",
        "allowed_extra_headers",
        "tool_pricing",
        "allow_on_all_virtual_keys",
    ):
        assert f'name="{field}"' in html, field


def test_create_tries_the_server_stores_headers_encrypted_and_never_shows_them(admin_client, upstream):
    response = admin_client.post(
        reverse("admin:governance_mcpclient_add"), form(tool_pricing='{"search": "0.01"}', allowed_extra_headers="x-a")
    )

    assert response.status_code == 302, response.content.decode()[:2000]
    client = McpClient.objects.get()
    assert client.headers == {"Authorization": SECRET} and SECRET not in client.headers_encrypted
    assert (client.tool_pricing, client.allowed_extra_headers, client.tools_to_execute) == (
        {"search": "0.01"},
        ["x-a"],
        ["*"],
    )
    spec, refresh = upstream.probes()[0]
    assert refresh and not spec.saved
    html = pages(admin_client, client)
    assert SECRET not in html and "…5150" in html
    assert not LogEntry.objects.filter(change_message__contains=SECRET).exists()


def test_an_unreachable_server_is_a_form_error_and_nothing_is_saved(admin_client, upstream):
    upstream.down[URL] = "connection refused"
    response = admin_client.post(reverse("admin:governance_mcpclient_add"), form())
    assert response.status_code == 200
    html = response.content.decode()
    assert "could not connect to MCP server &#x27;docs&#x27;: connection refused" in html
    assert SECRET not in html  # the typed headers are not echoed back
    assert not McpClient.objects.exists()


def test_a_service_rule_is_a_form_error_on_its_field(admin_client, upstream):
    response = admin_client.post(reverse("admin:governance_mcpclient_add"), form(tools_to_execute="*, search"))
    assert response.status_code == 200
    assert "&#x27;*&#x27; cannot be combined with other entries" in response.content.decode()
    response = admin_client.post(reverse("admin:governance_mcpclient_add"), form(headers="no colon here"))
    assert "line 1: expected &#x27;Name: value&#x27;" in response.content.decode()
    response = admin_client.post(
        reverse("admin:governance_mcpclient_add"), form(connection_type="stdio", connection_string="", auth_type="none")
    )
    assert "stdio_config.command: is required for connection_type &#x27;stdio&#x27;" in response.content.decode()
    assert not McpClient.objects.exists()


def test_edit_keeps_headers_when_blank_replaces_them_when_typed_and_clears_on_request(admin_client, upstream):
    client = make(upstream)
    url = reverse("admin:governance_mcpclient_change", args=[client.pk])
    html = admin_client.get(url).content.decode()
    assert SECRET not in html and "Stored: Authorization: …5150" in html

    assert admin_client.post(url, form(headers="", timeout_seconds="45")).status_code == 302
    client.refresh_from_db()
    assert (client.headers, client.timeout_seconds) == ({"Authorization": SECRET}, 45.0)

    assert admin_client.post(url, form(headers="X-Api-Key: k-2222")).status_code == 302
    client.refresh_from_db()
    assert client.headers == {"X-Api-Key": "k-2222"}

    assert admin_client.post(url, form(headers="", auth_type="none", clear_headers="on")).status_code == 302
    client.refresh_from_db()
    assert client.headers == {} and client.auth_type == "none"


def test_edit_tries_a_new_connection_before_saving_it(admin_client, upstream):
    client = make(upstream)
    url = reverse("admin:governance_mcpclient_change", args=[client.pk])
    moved = "https://moved.example.test/mcp"

    response = admin_client.post(url, form(headers="", connection_string=moved))
    assert response.status_code == 200
    assert "could not connect to MCP server" in response.content.decode()
    client.refresh_from_db()
    assert client.connection_string == URL

    upstream.serve(moved)
    assert admin_client.post(url, form(headers="", connection_string=moved)).status_code == 302
    client.refresh_from_db()
    assert client.connection_string == moved


def test_the_oauth_secret_is_shown_masked_and_kept_when_left_as_shown(admin_client, upstream):
    oauth = {
        "client_id": "gw",
        "client_secret": OAUTH_SECRET,
        "authorize_url": "https://auth.example.test/authorize",
        "token_url": "https://auth.example.test/token",
    }
    client = make(upstream, auth_type="oauth", headers={}, oauth_config=oauth)
    url = reverse("admin:governance_mcpclient_change", args=[client.pk])
    html = admin_client.get(url).content.decode()
    assert OAUTH_SECRET not in html and "…6161" in html

    shown = '{"client_id": "gw", "client_secret": "…6161", "authorize_url": "https://auth.example.test/authorize", '
    shown += '"token_url": "https://auth.example.test/token"}'
    response = admin_client.post(url, form(headers="", auth_type="oauth", oauth_config=shown, timeout_seconds="20"))
    assert response.status_code == 302, response.content.decode()[:3000]
    client.refresh_from_db()
    assert client.oauth_config["client_secret"] == OAUTH_SECRET and client.timeout_seconds == 20.0


def test_the_list_shows_state_and_tool_count_and_survives_a_down_server(admin_client, upstream):
    make(upstream)
    upstream.serve("https://down.example.test/mcp")
    make(upstream, name="flaky", connection_string="https://down.example.test/mcp")
    upstream.down["https://down.example.test/mcp"] = "HTTP 503"

    html = admin_client.get(reverse("admin:governance_mcpclient_changelist")).content.decode()
    assert "gov-mcp-connected" in html and "gov-mcp-error" in html
    assert 'title="HTTP 503"' in html
    assert '<td class="field-tool_count">2</td>' in html


def test_the_client_page_lists_its_discovered_tools(admin_client, upstream):
    client = make(upstream)
    html = admin_client.get(reverse("admin:governance_mcpclient_change", args=[client.pk])).content.decode()
    assert "<code>docs_search</code>" in html and "Search the docs." in html
    assert client.client_id in html


def test_the_reconnect_action(admin_client, upstream):
    good = make(upstream)
    upstream.serve("https://bad.example.test/mcp")
    bad = make(upstream, name="bad", connection_string="https://bad.example.test/mcp")
    upstream.down["https://bad.example.test/mcp"] = "connection reset"

    response = admin_client.post(
        reverse("admin:governance_mcpclient_changelist"),
        {"action": "reconnect", "_selected_action": [str(good.pk), str(bad.pk)]},
        follow=True,
    )
    html = response.content.decode()
    assert "Reconnected “docs”: 2 tools." in html
    assert "Could not connect to MCP server &#x27;bad&#x27;: connection reset" in html  # capfirst
    assert len(upstream.named("reconnect")) == 2


def test_delete_from_the_admin_goes_through_the_service(admin_client, upstream, django_capture_on_commit_callbacks):
    client = make(upstream)
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(reverse("admin:governance_mcpclient_delete", args=[client.pk]), {"post": "yes"})
    assert response.status_code == 302
    assert not McpClient.objects.exists()
    assert upstream.named("forget") == [client.client_id]


def test_the_vk_page_shows_the_tools_each_mcp_config_can_pick_from(admin_client, upstream):
    make(upstream)
    vk, _ = virtual_key_create(name="app", mcp_configs=[{"mcp_client_name": "docs", "tools_to_execute": ["search"]}])
    html = admin_client.get(reverse("admin:governance_virtualkey_change", args=[vk.pk])).content.decode()
    assert "tools the client offers" in html.lower()
    assert "read, search" in html

    config = VirtualKeyMcpConfig.objects.get()
    html = admin_client.get(reverse("admin:governance_virtualkeymcpconfig_change", args=[config.pk])).content.decode()
    assert "Tools of docs: read, search." in html
