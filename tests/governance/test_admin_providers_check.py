"""A provider's keys on its admin page and the connection test: a real request for the upstream's
model list, against the mock upstream and small local servers that refuse or never answer."""

from __future__ import annotations

import json
import logging
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.urls import reverse

from bench import mock_upstream
from governance.models import ProviderKey
from governance.provider_check import check_key
from governance.services import provider_create, provider_key_create

pytestmark = pytest.mark.django_db

SECRET = "sk-check-TOP-SECRET-value-5150"


@pytest.fixture(scope="module")
def mock_url() -> str:
    return f"http://127.0.0.1:{mock_upstream.serve_in_thread()}"


class _Refuses(BaseHTTPRequestHandler):
    """Answers every request 401 with an OpenAI-style error that quotes the key it was sent."""

    def do_GET(self) -> None:  # noqa: N802 - the http.server method name
        sent = self.headers.get("authorization", "").removeprefix("Bearer ")
        body = json.dumps({"error": {"message": f"Incorrect API key provided: {sent}.", "type": "invalid"}})
        self.send_response(401)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base class's name
        pass


@pytest.fixture
def refusing_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Refuses)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def silent_url() -> Iterator[str]:
    """Accepts connections and never answers."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    listener.close()


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"  # nothing listens there any more


def make_key(base_url: str, provider_type: str = "openai", **fields) -> ProviderKey:
    provider = provider_create(name=f"p-{provider_type}", provider_type=provider_type, base_url=base_url)
    return provider_key_create(provider=provider, name="main", value=SECRET, **fields)


@pytest.mark.parametrize(
    ("provider_type", "header", "listed"),
    [
        ("openai", "authorization", len(mock_upstream.MODELS)),
        ("groq", "authorization", len(mock_upstream.MODELS)),
        ("anthropic", "x-api-key", len(mock_upstream.BASE_MODELS)),
        ("gemini", "x-goog-api-key", len(mock_upstream.GEMINI_MODELS)),
    ],
)
def test_a_good_key_lists_the_models_with_its_types_credential_header(mock_url, provider_type, header, listed):
    result = check_key(key=make_key(mock_url, provider_type))
    assert result.ok and result.status == 200 and result.models == listed
    assert result.message.startswith(f"OK: 200, {listed} models listed in ") and result.message.endswith(" ms")
    sent = mock_upstream.STATS.last_headers
    assert SECRET in sent[header]
    if provider_type == "anthropic":
        assert sent["anthropic-version"] == "2023-06-01"
    assert SECRET not in result.message


def test_an_azure_key_lists_the_models_of_its_endpoint(mock_url):
    provider = provider_create(name="azure-east", provider_type="azure")
    key = provider_key_create(provider=provider, name="east", value=SECRET, azure_key_config={"endpoint": mock_url})
    result = check_key(key=key)
    assert result.ok and result.models == len(mock_upstream.BASE_MODELS)
    assert mock_upstream.STATS.last_request.path == "/openai/models"
    assert mock_upstream.STATS.last_headers["api-key"] == SECRET


def test_a_refused_key_is_a_failure_with_the_upstreams_reason_and_never_the_key(refusing_url, caplog):
    caplog.set_level(logging.DEBUG)
    result = check_key(key=make_key(refusing_url))
    assert not result.ok and result.status == 401
    assert result.message.startswith("Failed: HTTP 401: Incorrect API key provided: [key]. (")
    assert SECRET not in result.message and SECRET not in caplog.text


def test_an_unreachable_host_is_a_failure_without_a_status(caplog):
    caplog.set_level(logging.DEBUG)
    result = check_key(key=make_key(closed_port_url()))
    assert not result.ok and result.status is None
    assert result.message.startswith("Failed: upstream provider 'p-openai' is unreachable (")
    assert SECRET not in caplog.text


def test_a_silent_upstream_fails_after_the_timeout(silent_url):
    result = check_key(key=make_key(silent_url), timeout=0.5)
    assert not result.ok and result.status is None
    assert "did not answer within 0.5s" in result.message
    assert result.millis < 3000


# --- the admin ---------------------------------------------------------------------------------


@pytest.fixture
def admin_client(client, alice):
    client.force_login(alice)
    return client


def provider_page(key: ProviderKey) -> str:
    return reverse("admin:governance_provider_change", args=[key.provider_id])


def test_the_provider_page_lists_its_keys_masked_with_links(admin_client, mock_url):
    key = make_key(mock_url, models=["gpt-4o"], weight=0.25)
    provider_key_create(provider=key.provider, name="spare", value="sk-spare-0001", enabled=False)
    html = admin_client.get(provider_page(key)).content.decode()
    table = html.split('id="provider-keys"')[1].split("</fieldset>")[0]
    assert reverse("admin:governance_providerkey_change", args=[key.pk]) in table
    assert "…5150" in table and SECRET not in html
    assert "gpt-4o" in table and "0.25" in table and "disabled" in table and "enabled" in table
    assert f"{reverse('admin:governance_providerkey_add')}?provider={key.provider_id}" in table
    test_url = reverse("admin:governance_provider_test_key", args=[key.provider_id, key.pk])
    assert f'formaction="{test_url}"' in table


def test_the_test_button_reports_the_result_on_the_provider_page(admin_client, mock_url):
    key = make_key(mock_url)
    url = reverse("admin:governance_provider_test_key", args=[key.provider_id, key.pk])
    response = admin_client.post(url, follow=True)
    assert response.redirect_chain == [(provider_page(key), 302)]
    [message] = [str(m) for m in response.context["messages"]]
    assert message.startswith("Connection test of p-openai / main: OK: 200, ")
    assert SECRET not in response.content.decode()


def test_a_failed_test_is_an_error_message(admin_client, refusing_url):
    key = make_key(refusing_url)
    url = reverse("admin:governance_provider_test_key", args=[key.provider_id, key.pk])
    response = admin_client.post(url, follow=True)
    [message] = list(response.context["messages"])
    assert message.level_tag == "error" and "HTTP 401" in str(message)
    assert SECRET not in response.content.decode()


def test_the_test_is_post_only_and_not_for_view_only_staff(client, admin_client, bob, mock_url):
    key = make_key(mock_url)
    url = reverse("admin:governance_provider_test_key", args=[key.provider_id, key.pk])
    assert admin_client.get(url).status_code == 405
    other = provider_create(name="other", base_url=mock_url)
    wrong_provider = reverse("admin:governance_provider_test_key", args=[other.pk, key.pk])
    assert admin_client.post(wrong_provider).status_code == 404
    client.force_login(bob)
    assert client.post(url).status_code == 403
    assert 'id="provider-keys"' in client.get(provider_page(key)).content.decode()
    assert "Test connection" not in client.get(provider_page(key)).content.decode()


def test_the_keys_list_action_tests_every_selected_key(admin_client, mock_url, refusing_url):
    good = make_key(mock_url)
    bad = make_key(refusing_url, provider_type="mistral")
    response = admin_client.post(
        reverse("admin:governance_providerkey_changelist"),
        {"action": "test_connection", "_selected_action": [str(good.pk), str(bad.pk)]},
        follow=True,
    )
    messages = {m.level_tag: str(m) for m in response.context["messages"]}
    assert messages["success"].startswith("Connection test of p-openai / main: OK: 200")
    assert messages["error"].startswith("Connection test of p-mistral / main: Failed: HTTP 401")
