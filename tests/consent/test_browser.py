"""The consent flow in a real browser: Debian's Chromium driven by Playwright against a live server.

The MCP client's redirect URI is a loopback address served by a tiny HTTP server in this
module, so "Finish Setup" really lands on the client with a code, which is then exchanged, and
"Deny access" lands there with ``error=access_denied``. Screenshots of every step go to
``test-artifacts/consent/``.
"""

from __future__ import annotations

import os

# Playwright's sync API runs an event loop in this thread; pytest-django would otherwise refuse
# database access from "async" code.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

import http.server  # noqa: E402
import threading  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from urllib.parse import parse_qs, urlencode, urlsplit  # noqa: E402

import pytest  # noqa: E402
import requests  # noqa: E402
from playwright.sync_api import Browser, Page, expect  # noqa: E402

from consent.models import ConsentFlow, FlowStatus, OAuthClient  # noqa: E402
from consent.services import oauth_client_register  # noqa: E402
from governance.models import McpClient  # noqa: E402
from governance.services import virtual_key_create  # noqa: E402
from tests.browser import ARTIFACTS as ALL_ARTIFACTS  # noqa: E402
from tests.browser import chromium_browser, screenshots  # noqa: E402

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]
ARTIFACTS = ALL_ARTIFACTS / "consent"


class _Callback(http.server.BaseHTTPRequestHandler):
    """Plays the MCP client's loopback redirect URI: remembers the query, says "connected"."""

    received: list[str] = []

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        type(self).received.append(self.path)
        body = b"<!doctype html><title>Client</title><h1>Connected to the client</h1>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def callback_server() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Callback)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/callback"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def chromium() -> Iterator[Browser]:
    with chromium_browser("consent") as (browser, _):
        yield browser


@pytest.fixture
def page(chromium: Browser) -> Iterator[Page]:
    context = chromium.new_context(viewport={"width": 1100, "height": 900})
    page = context.new_page()
    page.set_default_timeout(10_000)
    yield page
    context.close()


@pytest.fixture
def setup(callback_server, pkce):
    McpClient.objects.create(name="docs-search", per_user_oauth=True, allow_on_all_virtual_keys=True)
    McpClient.objects.create(name="github", per_user_oauth=True)
    vk, value = virtual_key_create(
        name="alice-key", mcp_configs=[{"mcp_client_name": "github", "tools_to_execute": ["create_issue"]}]
    )
    client = oauth_client_register(redirect_uris=[callback_server], client_name="Cursor")
    _Callback.received.clear()
    return {"client": client, "vk_value": value, "redirect_uri": callback_server, "pkce": pkce}


def authorize_url(live_server, setup) -> str:
    query = {
        "response_type": "code",
        "client_id": setup["client"].client_id,
        "redirect_uri": setup["redirect_uri"],
        "code_challenge": setup["pkce"].challenge,
        "code_challenge_method": "S256",
        "state": "browser-state",
    }
    return f"{live_server.url}/api/oauth/per-user/authorize?{urlencode(query)}"


def test_identity_page_renders_with_its_stylesheet(live_server, page, setup):
    page.goto(authorize_url(live_server, setup))
    expect(page).to_have_title("Connect to Bifrost · Bifrost")
    expect(page.get_by_role("heading", name="Connect to Bifrost")).to_be_visible()
    expect(page.get_by_placeholder("sk-bf-...")).to_have_attribute("type", "password")
    expect(page.get_by_placeholder("sk-bf-...")).to_have_attribute("placeholder", "sk-bf-...")
    expect(page.get_by_role("textbox", name="User ID")).to_be_visible()
    expect(page.get_by_text("This setup page expires in 15 minutes.")).to_be_visible()
    # The app's own stylesheet loaded (no CDN): the primary button is painted blue, not default grey.
    color = page.get_by_role("button", name="Continue with Virtual Key").evaluate(
        "el => getComputedStyle(el).backgroundColor"
    )
    assert color == "rgb(36, 80, 199)"
    page.screenshot(path=str(ARTIFACTS / "01-identity.png"), full_page=True)


def test_wrong_virtual_key_shows_the_error_banner(live_server, page, setup):
    page.goto(authorize_url(live_server, setup))
    page.get_by_placeholder("sk-bf-...").fill("sk-bf-00000000-0000-4000-8000-000000000000")
    page.get_by_role("button", name="Continue with Virtual Key").click()
    banner = page.get_by_role("alert")
    expect(banner).to_have_text("Virtual Key not found or inactive. Please check and try again.")
    expect(page.get_by_role("heading", name="Connect to Bifrost")).to_be_visible()
    page.screenshot(path=str(ARTIFACTS / "02-wrong-key.png"), full_page=True)


def test_right_key_reaches_the_mcps_page_and_finish_setup_lands_on_the_client(live_server, page, setup):
    page.goto(authorize_url(live_server, setup))
    page.get_by_placeholder("sk-bf-...").fill(setup["vk_value"])
    page.get_by_role("button", name="Continue with Virtual Key").click()

    expect(page.get_by_role("heading", name="Connect Your Apps")).to_be_visible()
    expect(page.locator(".app-name")).to_have_text(["docs-search", "github"])
    expect(page.get_by_role("link", name="Change identity")).to_be_visible()
    page.screenshot(path=str(ARTIFACTS / "03-mcps.png"), full_page=True)

    page.get_by_role("button", name="Finish Setup").click()
    expect(page.get_by_role("heading", name="Connected to the client")).to_be_visible()
    page.screenshot(path=str(ARTIFACTS / "04-client-callback.png"), full_page=True)

    landed = urlsplit(page.url)
    assert f"{landed.scheme}://{landed.netloc}{landed.path}" == setup["redirect_uri"]
    params = parse_qs(landed.query)
    assert params["state"] == ["browser-state"]
    assert ConsentFlow.objects.get().status == FlowStatus.SUBMITTED
    assert [path for path in _Callback.received if path.startswith("/callback")] == [f"{landed.path}?{landed.query}"]

    # The client finishes the dance with its PKCE verifier.
    grant = requests.post(
        f"{live_server.url}/api/oauth/per-user/token",
        data={
            "grant_type": "authorization_code",
            "code": params["code"][0],
            "code_verifier": setup["pkce"].verifier,
            "client_id": setup["client"].client_id,
            "redirect_uri": setup["redirect_uri"],
        },
        timeout=10,
    )
    assert grant.status_code == 200
    assert grant.json()["token_type"] == "Bearer"


def test_change_identity_and_continue_with_a_user_id_on_a_phone(live_server, chromium, setup):
    context = chromium.new_context(viewport={"width": 375, "height": 740}, is_mobile=True, has_touch=True)
    page = context.new_page()
    page.set_default_timeout(10_000)
    try:
        page.goto(authorize_url(live_server, setup))
        page.get_by_role("button", name="Continue with User ID").click()
        expect(page.get_by_role("alert")).to_have_text("Please enter a User ID.")
        page.screenshot(path=str(ARTIFACTS / "05-phone-empty-user-id.png"), full_page=True)
        page.get_by_role("textbox", name="User ID").fill("alice@example.com")
        page.get_by_role("button", name="Continue with User ID").click()
        expect(page.get_by_text("Signed in as User ID alice@example.com.")).to_be_visible()
        # Nothing overflows sideways on a narrow screen.
        assert page.evaluate("document.documentElement.scrollWidth") <= 375
        page.screenshot(path=str(ARTIFACTS / "06-phone-mcps.png"), full_page=True)
        page.get_by_role("link", name="Change identity").click()
        expect(page.get_by_role("heading", name="Connect to Bifrost")).to_be_visible()
    finally:
        context.close()


def _landed_denied(page: Page, setup) -> None:
    """The browser is on the client's redirect URI with ``error=access_denied`` and the state."""
    expect(page.get_by_role("heading", name="Connected to the client")).to_be_visible()
    landed = urlsplit(page.url)
    assert f"{landed.scheme}://{landed.netloc}{landed.path}" == setup["redirect_uri"]
    params = parse_qs(landed.query)
    assert params["error"] == ["access_denied"]
    assert params["state"] == ["browser-state"]
    assert "code" not in params
    assert ConsentFlow.objects.get().status == FlowStatus.DENIED
    assert [path for path in _Callback.received if path.startswith("/callback")] == [f"{landed.path}?{landed.query}"]


def test_deny_on_the_identity_page_returns_access_denied_to_the_client(live_server, page, setup):
    page.goto(authorize_url(live_server, setup))
    host = urlsplit(setup["redirect_uri"]).netloc
    expect(page.locator("#client-badge")).to_have_text("Unverified")
    expect(page.locator("#client-warning")).to_contain_text("This app registered itself with the gateway")
    expect(page.locator("#redirect-host")).to_have_text(f"After you approve, you will be sent back to {host}.")
    expect(page.locator("#user-id-meaning")).to_contain_text("A User ID is not checked: it names you to the gateway.")
    screenshots(page, ARTIFACTS, "07-identity-unverified", fits=".card")

    page.get_by_role("button", name="Deny access").click()
    _landed_denied(page, setup)

    # Back to the consent page: the flow is over, and says so.
    page.go_back()
    expect(page.get_by_role("heading", name="This setup link can't be used")).to_be_visible()
    expect(page.get_by_role("alert")).to_contain_text("This connection request was cancelled")


def test_deny_on_the_mcps_page_returns_access_denied_and_a_second_deny_is_a_400_page(live_server, page, setup):
    page.goto(authorize_url(live_server, setup))
    page.get_by_placeholder("sk-bf-...").fill(setup["vk_value"])
    page.get_by_role("button", name="Continue with Virtual Key").click()
    expect(page.get_by_role("heading", name="Connect Your Apps")).to_be_visible()
    host = urlsplit(setup["redirect_uri"]).netloc
    expect(page.locator("#client-badge")).to_have_text("Unverified")
    expect(page.locator("#redirect-host")).to_have_text(f"After you approve, you will be sent back to {host}.")
    screenshots(page, ARTIFACTS, "08-mcps-deny", fits=".card")

    # Keep the page's form to submit it again after the flow has ended.
    flow_id = page.locator("form.deny input[name=flow_id]").input_value()
    token = page.locator("form.deny input[name=csrfmiddlewaretoken]").input_value()
    page.get_by_role("button", name="Deny access").click()
    _landed_denied(page, setup)

    again = page.request.post(
        f"{live_server.url}/oauth/consent/deny",
        form={"flow_id": flow_id, "csrfmiddlewaretoken": token},
        headers={"Referer": f"{live_server.url}/oauth/consent/mcps"},
        max_redirects=0,
    )
    assert again.status == 400
    assert "This connection request was cancelled, so it can&#x27;t be finished." in again.text()
    assert ConsentFlow.objects.get().status == FlowStatus.DENIED


def test_a_pre_registered_client_is_shown_as_such(live_server, page, setup):
    OAuthClient.objects.update(self_registered=False)
    page.goto(authorize_url(live_server, setup))
    expect(page.locator("#client-badge")).to_have_text("Pre-registered")
    expect(page.get_by_text("This app was registered by the gateway's administrators.")).to_be_visible()
    expect(page.locator("#client-warning")).to_have_count(0)
    screenshots(page, ARTIFACTS, "09-identity-pre-registered", fits=".card")
