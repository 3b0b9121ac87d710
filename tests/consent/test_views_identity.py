"""The identity page and its three POSTs (Virtual Key, User ID, Skip), CSRF and rate limits."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import OperationalError
from django.test import override_settings
from django.utils import timezone

from consent.models import ConsentFlow, Identity
from governance.services import virtual_key_create, virtual_key_set_active
from tests.consent.conftest import browser, start_flow

pytestmark = pytest.mark.django_db

VK_PATH = "/api/oauth/per-user/consent/vk"
USER_ID_PATH = "/api/oauth/per-user/consent/user-id"
SKIP_PATH = "/api/oauth/per-user/consent/skip"


def back(flow_id: str, encoded_error: str) -> str:
    return f"/oauth/consent?flow_id={flow_id}&error={encoded_error}"


def mcps(flow_id: str) -> str:
    return f"/oauth/consent/mcps?flow_id={flow_id}"


# --- the identity page -------------------------------------------------------------------------


def test_identity_page_shows_the_three_options_and_expiry_notice(flow, settings):
    settings.GOVERNANCE_ENFORCE_VIRTUAL_KEYS = False
    page = flow.browser.get("/oauth/consent", {"flow_id": flow.flow_id})
    html = page.content.decode()
    assert page.status_code == 200
    assert page["Cache-Control"] == "no-store"
    assert "<title>Connect to Bifrost · Bifrost</title>" in html
    assert '<h1 id="page-title">Connect to Bifrost</h1>' in html
    assert "<strong>Cursor</strong> wants to use MCP tools" in html
    assert 'id="user_id" name="user_id"' in html
    assert 'type="password" id="vk" name="vk" placeholder="sk-bf-..."' in html
    assert ">Skip for now</button>" in html
    assert "This setup page expires in 15 minutes." in html
    assert ">Deny access</button>" in html
    assert html.count('name="csrfmiddlewaretoken"') == 4  # three identities and "Deny access"
    assert 'role="alert"' not in html


def test_skip_is_not_offered_when_virtual_keys_are_enforced(flow, settings):
    settings.GOVERNANCE_ENFORCE_VIRTUAL_KEYS = True
    html = flow.browser.get("/oauth/consent", {"flow_id": flow.flow_id}).content.decode()
    assert "Skip for now" not in html


def test_error_parameter_is_shown_html_escaped_in_an_alert_banner(flow):
    page = flow.browser.get("/oauth/consent", {"flow_id": flow.flow_id, "error": "<script>alert(1)</script>"})
    html = page.content.decode()
    assert (
        '<div class="banner banner-error" role="alert" id="consent-error">&lt;script&gt;alert(1)&lt;/script&gt;</div>'
        in html
    )
    assert "<script>alert(1)" not in html


@pytest.mark.parametrize(
    ("query", "status", "text"),
    [
        ({}, 400, "flow_id is required"),
        ({"flow_id": "nope"}, 400, "Invalid or expired consent flow"),
    ],
)
def test_identity_page_without_a_usable_flow_is_a_plain_error_page(db, query, status, text):
    page = browser().get("/oauth/consent", query)
    assert page.status_code == status
    assert page["Content-Type"].startswith("text/html")
    assert text in page.content.decode()


def test_identity_page_in_another_browser_is_403(flow):
    page = browser().get("/oauth/consent", {"flow_id": flow.flow_id})
    assert page.status_code == 403
    assert "This consent flow was started in another browser" in page.content.decode()


def test_identity_page_of_an_expired_flow_is_400(flow, clock):
    clock.advance(minutes=15, seconds=1)
    page = flow.browser.get("/oauth/consent", {"flow_id": flow.flow_id})
    assert page.status_code == 400
    assert "Invalid or expired consent flow" in page.content.decode()


# --- POST /consent/vk: every outcome a 302 with the exact Location ------------------------------


def test_right_vk_records_the_key_and_redirects_to_the_mcps_page(flow, vk):
    response = flow.post(VK_PATH, vk=f"  {vk.value}\t")
    assert response.status_code == 302
    assert response["Location"] == mcps(flow.flow_id)
    row = ConsentFlow.objects.get(flow_id=flow.flow_id)
    assert (row.identity, row.virtual_key_id, row.user_id) == (Identity.VIRTUAL_KEY, vk.pk, "")


def test_vk_replaces_a_user_id_chosen_before(flow, vk):
    flow.post(USER_ID_PATH, user_id="alice")
    flow.post(VK_PATH, vk=vk.value)
    row = ConsentFlow.objects.get(flow_id=flow.flow_id)
    assert (row.identity, row.virtual_key_id, row.user_id) == (Identity.VIRTUAL_KEY, vk.pk, "")


@pytest.mark.parametrize("value", ["", "   "])
def test_empty_vk_redirects_back_with_please_enter(flow, value):
    response = flow.post(VK_PATH, vk=value)
    assert response.status_code == 302
    assert response["Location"] == back(flow.flow_id, "Please+enter+a+Virtual+Key.")
    assert ConsentFlow.objects.get(flow_id=flow.flow_id).identity == Identity.NONE


def test_missing_vk_field_is_treated_as_empty(flow):
    response = flow.browser.post(VK_PATH, {"flow_id": flow.flow_id, "csrfmiddlewaretoken": flow.token})
    assert response["Location"] == back(flow.flow_id, "Please+enter+a+Virtual+Key.")


NOT_FOUND = "Virtual+Key+not+found+or+inactive.+Please+check+and+try+again."


def test_unknown_vk_redirects_back_with_not_found(flow, vk):
    response = flow.post(VK_PATH, vk="sk-bf-00000000-0000-4000-8000-000000000000")
    assert response.status_code == 302
    assert response["Location"] == back(flow.flow_id, NOT_FOUND)
    assert ConsentFlow.objects.get(flow_id=flow.flow_id).virtual_key_id is None


def test_inactive_vk_redirects_back_with_the_same_message(flow, vk):
    virtual_key_set_active(vk=vk, active=False)
    response = flow.post(VK_PATH, vk=vk.value)
    assert response["Location"] == back(flow.flow_id, NOT_FOUND)


def test_expired_vk_redirects_back_with_the_same_message(flow, mcp_clients):
    _, value = virtual_key_create(name="old-key", expires_at=timezone.now() - timedelta(seconds=1))
    response = flow.post(VK_PATH, vk=value)
    assert response["Location"] == back(flow.flow_id, NOT_FOUND)


def test_storage_failure_redirects_back_with_failed_to_validate(flow, vk, monkeypatch):
    def broken(value):
        raise OperationalError("connection lost")

    monkeypatch.setattr("consent.services.virtual_key_by_value", broken)
    response = flow.post(VK_PATH, vk=vk.value)
    assert response["Location"] == back(flow.flow_id, "Failed+to+validate+Virtual+Key.+Please+try+again.")


def test_vk_value_never_appears_in_the_redirect_or_logs(flow, vk, caplog):
    response = flow.post(VK_PATH, vk=vk.value + "x")
    assert vk.value not in response["Location"]
    assert vk.value not in caplog.text


@pytest.mark.parametrize(
    ("data", "status", "text"),
    [
        ({}, 400, "flow_id is required"),
        ({"flow_id": ""}, 400, "flow_id is required"),
        ({"flow_id": "unknown-flow"}, 400, "Invalid or expired consent flow"),
        ({"flow_id": "bad\x00id"}, 400, "Invalid or expired consent flow"),
    ],
)
def test_vk_post_without_a_usable_flow_is_json_not_a_redirect(flow, data, status, text):
    response = flow.browser.post(VK_PATH, {"csrfmiddlewaretoken": flow.token, "vk": "x", **data})
    assert response.status_code == status
    assert response.json()["error"]["message"] == text


def test_vk_post_from_another_browser_is_403(flow, vk, other_browser):
    response = other_browser.post(VK_PATH, flow_id=flow.flow_id, vk=vk.value)
    assert response.status_code == 403
    assert response.json()["error"]["message"] == "This consent flow was started in another browser"
    assert ConsentFlow.objects.get(flow_id=flow.flow_id).virtual_key_id is None


def test_vk_post_on_an_expired_flow_is_400(flow, vk, clock):
    clock.advance(minutes=16)
    response = flow.post(VK_PATH, vk=vk.value)
    assert response.status_code == 400
    assert response.json()["error"]["message"] == "Invalid or expired consent flow"


def test_vk_post_without_csrf_token_is_refused_403(flow, vk):
    response = flow.browser.post(VK_PATH, {"flow_id": flow.flow_id, "vk": vk.value})
    assert response.status_code == 403
    assert response.json()["error"]["message"] == "CSRF verification failed. Reload the page and try again."
    assert ConsentFlow.objects.get(flow_id=flow.flow_id).virtual_key_id is None


def test_vk_post_with_a_forged_csrf_token_is_refused(flow, vk):
    response = flow.post(VK_PATH, vk=vk.value, csrfmiddlewaretoken="x" * 64)
    assert response.status_code == 403


def test_vk_endpoint_refuses_get_with_405(flow):
    response = flow.browser.get(VK_PATH, {"flow_id": flow.flow_id})
    assert response.status_code == 405
    assert response["Allow"] == "POST"


# --- brute-force limiting ----------------------------------------------------------------------


@override_settings(CONSENT_VK_RATE_PER_FLOW="3/m", CONSENT_VK_RATE_PER_IP="100/m")
def test_too_many_attempts_on_one_flow_are_refused_even_with_the_right_key(flow, vk):
    for _ in range(3):
        assert flow.post(VK_PATH, vk="sk-bf-wrong")["Location"] == back(flow.flow_id, NOT_FOUND)
    response = flow.post(VK_PATH, vk=vk.value)
    assert response.status_code == 302
    assert response["Location"] == back(flow.flow_id, "Too+many+attempts.+Please+wait+and+try+again.")
    assert ConsentFlow.objects.get(flow_id=flow.flow_id).virtual_key_id is None


@override_settings(CONSENT_VK_RATE_PER_FLOW="3/m", CONSENT_VK_RATE_PER_IP="100/m")
def test_per_flow_limit_does_not_touch_another_flow(flow, vk, oauth_client, pkce):
    for _ in range(4):
        flow.post(VK_PATH, vk="sk-bf-wrong")
    other_flow = start_flow(flow.browser, oauth_client, pkce)
    response = flow.browser.post(VK_PATH, {"flow_id": other_flow, "vk": vk.value, "csrfmiddlewaretoken": flow.token})
    assert response["Location"] == mcps(other_flow)


@override_settings(CONSENT_VK_RATE_PER_FLOW="100/m", CONSENT_VK_RATE_PER_IP="4/m")
def test_too_many_attempts_from_one_address_are_refused_across_flows(flow, vk, oauth_client, pkce):
    for _ in range(4):
        flow.post(VK_PATH, vk="sk-bf-wrong")
    other_flow = start_flow(flow.browser, oauth_client, pkce)
    response = flow.browser.post(VK_PATH, {"flow_id": other_flow, "vk": vk.value, "csrfmiddlewaretoken": flow.token})
    assert response["Location"] == back(other_flow, "Too+many+attempts.+Please+wait+and+try+again.")
    # Another client address is not affected.
    fresh = flow.browser.post(
        VK_PATH, {"flow_id": other_flow, "vk": vk.value, "csrfmiddlewaretoken": flow.token}, REMOTE_ADDR="10.1.2.3"
    )
    assert fresh["Location"] == mcps(other_flow)


def test_a_request_without_a_client_address_is_counted_not_a_500(flow, vk):
    """A server on a Unix socket gives no REMOTE_ADDR: such requests share one bucket."""
    response = flow.browser.post(
        VK_PATH, {"flow_id": flow.flow_id, "vk": vk.value, "csrfmiddlewaretoken": flow.token}, REMOTE_ADDR=""
    )
    assert response.status_code == 302
    assert response["Location"] == mcps(flow.flow_id)


# --- POST /consent/user-id and /consent/skip ----------------------------------------------------


def test_user_id_is_trimmed_recorded_and_clears_the_vk(flow, vk):
    flow.post(VK_PATH, vk=vk.value)
    response = flow.post(USER_ID_PATH, user_id="  alice@example.com ")
    assert response.status_code == 302
    assert response["Location"] == mcps(flow.flow_id)
    row = ConsentFlow.objects.get(flow_id=flow.flow_id)
    assert (row.identity, row.virtual_key_id, row.user_id) == (Identity.USER_ID, None, "alice@example.com")


@pytest.mark.parametrize(
    ("value", "encoded"),
    [
        ("", "Please+enter+a+User+ID."),
        ("  ", "Please+enter+a+User+ID."),
        ("u" * 256, "User+ID+must+be+at+most+255+characters."),
        ("a\x00b", "User+ID+must+not+contain+control+characters."),
        ("a\x07b", "User+ID+must+not+contain+control+characters."),
    ],
)
def test_bad_user_id_redirects_back_with_the_reason(flow, value, encoded):
    response = flow.post(USER_ID_PATH, user_id=value)
    assert response["Location"] == back(flow.flow_id, encoded)
    assert ConsentFlow.objects.get(flow_id=flow.flow_id).identity == Identity.NONE


def test_user_id_of_exactly_255_characters_is_accepted(flow):
    assert flow.post(USER_ID_PATH, user_id="u" * 255)["Location"] == mcps(flow.flow_id)


def test_user_id_post_from_another_browser_is_403(flow, other_browser):
    response = other_browser.post(USER_ID_PATH, flow_id=flow.flow_id, user_id="mallory")
    assert response.status_code == 403
    assert ConsentFlow.objects.get(flow_id=flow.flow_id).identity == Identity.NONE


def test_skip_when_keys_are_not_enforced_continues_without_identity(flow, settings):
    settings.GOVERNANCE_ENFORCE_VIRTUAL_KEYS = False
    flow.post(USER_ID_PATH, user_id="alice")
    response = flow.post(SKIP_PATH)
    assert response["Location"] == mcps(flow.flow_id)
    row = ConsentFlow.objects.get(flow_id=flow.flow_id)
    assert (row.identity, row.virtual_key_id, row.user_id) == (Identity.ANONYMOUS, None, "")


def test_skip_when_keys_are_enforced_redirects_back_with_the_reason(flow, settings):
    settings.GOVERNANCE_ENFORCE_VIRTUAL_KEYS = True
    response = flow.post(SKIP_PATH)
    assert response["Location"] == back(
        flow.flow_id, "Skipping+is+not+allowed+on+this+gateway.+Please+enter+a+Virtual+Key+or+User+ID."
    )
    assert ConsentFlow.objects.get(flow_id=flow.flow_id).identity == Identity.NONE


def test_skip_without_csrf_is_refused(flow, settings):
    settings.GOVERNANCE_ENFORCE_VIRTUAL_KEYS = False
    assert flow.browser.post(SKIP_PATH, {"flow_id": flow.flow_id}).status_code == 403
