"""Deny access (RFC 6749 section 4.1.2.1), and what the pages say about the client and the User ID."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest

from consent.exceptions import MSG_FLOW_DENIED, MSG_FLOW_FOREIGN, MSG_FLOW_INVALID
from consent.models import AuthorizationCode, ConsentFlow, ConsentSession, FlowStatus, OAuthClient
from consent.oauth import redirect_target
from tests.consent.conftest import REDIRECT_URI, browser, csrf_token, start_flow

pytestmark = pytest.mark.django_db

DENY_PATH = "/oauth/consent/deny"
VK_PATH = "/api/oauth/per-user/consent/vk"
SUBMIT_PATH = "/api/oauth/per-user/consent/submit"


def query_of(location: str) -> dict[str, list[str]]:
    return parse_qs(urlsplit(location).query)


def assert_sent_back_denied(response, *, redirect_uri: str = REDIRECT_URI, state: str | None = "xyz-state") -> None:
    assert response.status_code == 302
    location = response["Location"]
    parts = urlsplit(location)
    assert f"{parts.scheme}://{parts.netloc}{parts.path}" == redirect_uri
    query = query_of(location)
    assert query["error"] == ["access_denied"]
    assert query["error_description"] == ["The user denied the request"]
    assert "code" not in query
    if state is None:
        assert "state" not in query
    else:
        assert query["state"] == [state]
    assert response["Cache-Control"] == "no-store"


def flow_row(flow) -> ConsentFlow:
    return ConsentFlow.objects.get(flow_id=flow.flow_id)


# --- deny ----------------------------------------------------------------------------------------


def test_deny_on_the_identity_page_sends_access_denied_and_state_to_the_client(flow):
    assert_sent_back_denied(flow.post(DENY_PATH))
    row = flow_row(flow)
    assert row.status == FlowStatus.DENIED and row.submitted_at is not None
    assert not ConsentSession.objects.exists() and not AuthorizationCode.objects.exists()


def test_deny_on_the_mcps_page_after_choosing_an_identity(flow, vk):
    assert flow.post(VK_PATH, vk=vk.value).status_code == 302
    mcps = flow.browser.get("/oauth/consent/mcps", {"flow_id": flow.flow_id}).content.decode()
    assert f'action="{DENY_PATH}"' in mcps and ">Deny access</button>" in mcps
    assert_sent_back_denied(flow.post(DENY_PATH))
    assert flow_row(flow).status == FlowStatus.DENIED
    assert not ConsentSession.objects.exists()


def test_a_denied_flow_cannot_be_denied_again_finished_or_shown(flow, vk):
    assert flow.post(DENY_PATH).status_code == 302
    again = flow.post(DENY_PATH)
    assert again.status_code == 400
    assert again["Content-Type"].startswith("text/html")
    page = again.content.decode()
    assert "This setup link can't be used" in page
    assert "This connection request was cancelled, so it can&#x27;t be finished." in page

    finish = flow.post(SUBMIT_PATH)
    assert finish.status_code == 400
    assert finish.json()["error"]["message"] == MSG_FLOW_DENIED
    assert flow.post(VK_PATH, vk=vk.value).status_code == 400
    shown = flow.browser.get("/oauth/consent", {"flow_id": flow.flow_id})
    assert shown.status_code == 400 and "was cancelled" in shown.content.decode()
    assert flow_row(flow).status == FlowStatus.DENIED
    assert not ConsentSession.objects.exists() and not AuthorizationCode.objects.exists()


def test_deny_after_finish_is_refused_and_changes_nothing(flow, vk):
    flow.post(VK_PATH, vk=vk.value)
    assert flow.post(SUBMIT_PATH).status_code == 302
    response = flow.post(DENY_PATH)
    assert response.status_code == 409
    assert "Consent flow has already been submitted" in response.content.decode()
    assert flow_row(flow).status == FlowStatus.SUBMITTED


def test_deny_uses_only_the_flows_registered_redirect_uri(flow):
    response = flow.post(DENY_PATH, redirect_uri="https://evil.example/steal", state="forged")
    assert_sent_back_denied(response)
    assert "evil" not in response["Location"]


def test_deny_never_redirects_to_a_uri_unregistered_since_the_flow_started(flow):
    OAuthClient.objects.update(redirect_uris=["cursor://anysphere.cursor-mcp/oauth"])
    response = flow.post(DENY_PATH)
    assert response.status_code == 400
    assert "redirect_uri not registered for this client" in response.content.decode()
    assert flow_row(flow).status == FlowStatus.PENDING


def test_deny_without_state_adds_no_state(oauth_client, pkce):
    client = browser()
    flow_id = start_flow(client, oauth_client, pkce, state=None)
    token = csrf_token(client, flow_id)
    response = client.post(DENY_PATH, {"flow_id": flow_id, "csrfmiddlewaretoken": token})
    assert_sent_back_denied(response, state=None)


def test_deny_to_a_private_use_scheme(oauth_client, pkce):
    client = browser()
    flow_id = start_flow(client, oauth_client, pkce, redirect_uri="cursor://anysphere.cursor-mcp/oauth")
    token = csrf_token(client, flow_id)
    response = client.post(DENY_PATH, {"flow_id": flow_id, "csrfmiddlewaretoken": token})
    assert response.status_code == 302
    assert response["Location"].startswith("cursor://anysphere.cursor-mcp/oauth?error=access_denied&")


def test_deny_without_csrf_is_refused_with_a_page(flow):
    response = flow.browser.post(DENY_PATH, {"flow_id": flow.flow_id})
    assert response.status_code == 403
    assert "CSRF verification failed" in response.content.decode()
    assert flow_row(flow).status == FlowStatus.PENDING


def test_deny_from_another_browser_is_403_and_the_flow_stays_pending(flow, other_browser):
    response = other_browser.post(DENY_PATH, flow_id=flow.flow_id)
    assert response.status_code == 403
    assert MSG_FLOW_FOREIGN in response.content.decode()
    assert flow_row(flow).status == FlowStatus.PENDING


def test_deny_of_an_expired_flow_does_not_redirect(flow, clock):
    clock.advance(minutes=16)
    response = flow.post(DENY_PATH)
    assert response.status_code == 400
    assert MSG_FLOW_INVALID in response.content.decode()
    assert flow_row(flow).status == FlowStatus.PENDING


def test_deny_by_get_is_not_allowed(flow):
    assert flow.browser.get(DENY_PATH, {"flow_id": flow.flow_id}).status_code == 405
    assert flow_row(flow).status == FlowStatus.PENDING


# --- what the pages say about the client ---------------------------------------------------------


def test_a_self_registered_client_is_marked_unverified_with_its_redirect_host(flow, vk):
    assert OAuthClient.objects.get().self_registered is True
    html = flow.browser.get("/oauth/consent", {"flow_id": flow.flow_id}).content.decode()
    assert '<span class="badge badge-warn" id="client-badge">Unverified</span>' in html
    assert "This app registered itself with the gateway, and nobody has checked who runs it" in html
    assert "After you approve, you will be sent back to <strong>127.0.0.1:8765</strong>." in html
    flow.post(VK_PATH, vk=vk.value)
    mcps = flow.browser.get("/oauth/consent/mcps", {"flow_id": flow.flow_id}).content.decode()
    assert ">Unverified</span>" in mcps
    assert "After you approve, you will be sent back to <strong>127.0.0.1:8765</strong>." in mcps
    assert "Finishing sends you back to Cursor at 127.0.0.1:8765." in mcps


def test_a_client_added_by_an_administrator_is_shown_as_pre_registered(flow):
    OAuthClient.objects.update(self_registered=False)
    html = flow.browser.get("/oauth/consent", {"flow_id": flow.flow_id}).content.decode()
    assert '<span class="badge badge-ok" id="client-badge">Pre-registered</span>' in html
    assert "This app was registered by the gateway's administrators." in html
    assert "Unverified" not in html


def test_the_user_id_option_says_what_a_user_id_is(flow, settings):
    settings.GOVERNANCE_ENFORCE_VIRTUAL_KEYS = False
    html = flow.browser.get("/oauth/consent", {"flow_id": flow.flow_id}).content.decode()
    assert "A User ID is not checked: it names you to the gateway." in html
    assert "only MCP apps open to everyone are available with it." in html
    assert "requires a Virtual Key to use tools" not in html


def test_the_user_id_option_warns_when_keys_are_enforced(flow, settings):
    settings.GOVERNANCE_ENFORCE_VIRTUAL_KEYS = True
    html = flow.browser.get("/oauth/consent", {"flow_id": flow.flow_id}).content.decode()
    assert "This gateway requires a Virtual Key to use tools, so with a User ID alone Cursor can connect" in html


@pytest.mark.parametrize(
    ("uri", "shown"),
    [
        ("http://127.0.0.1:8765/callback", "127.0.0.1:8765"),
        ("https://app.example.com/oauth/cb?x=1", "app.example.com"),
        ("cursor://anysphere.cursor-mcp/oauth", "cursor://anysphere.cursor-mcp"),
        ("com.example.app:/callback", "com.example.app:"),
    ],
)
def test_redirect_target_names_where_the_browser_goes(uri, shown):
    assert redirect_target(uri) == shown


def test_registration_marks_the_client_self_registered_and_the_admin_add_form_does_not(client, alice):
    response = client.post(
        "/api/oauth/per-user/register",
        {"client_name": "Zed", "redirect_uris": [REDIRECT_URI]},
        content_type="application/json",
    )
    assert response.status_code == 201
    assert OAuthClient.objects.get(client_name="Zed").self_registered is True
    client.force_login(alice)
    form = client.get("/admin/consent/oauthclient/add/").content.decode()
    assert 'name="self_registered"' in form and 'id="id_self_registered" checked' not in form
    created = client.post(
        "/admin/consent/oauthclient/add/", {"client_name": "Internal", "redirect_uris": f'["{REDIRECT_URI}"]'}
    )
    assert created.status_code == 302
    assert OAuthClient.objects.get(client_name="Internal").self_registered is False
