"""Which headers cross the proxy: billing choices stay the operator's, account names stay upstream."""

from __future__ import annotations

import pytest

from governance.models import Provider
from governance.services import provider_update
from tests.proxy.conftest import make_setup
from tests.proxy.test_http1 import Scripted, reply

pytestmark = pytest.mark.django_db

CHAT = "/v1/chat/completions"
MESSAGES = "/anthropic/v1/messages"


def chat(model: str) -> dict:
    return {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3}


def test_client_billing_headers_are_not_forwarded_but_the_operators_are(call, setup):
    provider_update(provider=setup.openai, extra_headers={"OpenAI-Organization": "org-operator"})
    headers = {"x-bf-vk": setup.value, "OpenAI-Organization": "org-caller", "OpenAI-Project": "proj-caller"}
    answer = call(CHAT, chat("openai/echo"), headers)
    assert answer.status == 200
    sent = answer.json()["echo"]["headers"]
    assert sent["openai-organization"] == "org-operator"
    assert "openai-project" not in sent
    assert "org-caller" not in str(sent) and "proj-caller" not in str(sent)


def test_anthropic_feature_headers_are_forwarded(call, setup, mock):
    headers = {"x-api-key": setup.value, "anthropic-version": "2023-06-01", "anthropic-beta": "prompt-caching-2024"}
    answer = call(MESSAGES, chat("claude-3-5-haiku"), headers)
    assert answer.status == 200
    sent = mock.stats()["last_headers"]
    assert sent["anthropic-version"] == "2023-06-01" and sent["anthropic-beta"] == "prompt-caching-2024"
    assert sent["x-api-key"] == "sk-ant-upstream-secret"


@pytest.fixture
def upstream():
    servers: list[Scripted] = []

    def start(answer: bytes) -> Scripted:
        servers.append(Scripted(reply(answer)))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


@pytest.mark.parametrize("route, model", [(CHAT, "openai/gpt-4o-mini"), (MESSAGES, "claude-3-5-haiku")])
def test_provider_account_headers_are_not_returned_to_the_client(call, upstream, route, model):
    body = b'{"id":"x","usage":{"prompt_tokens":1,"completion_tokens":1}}'
    server = upstream(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
        b"openai-organization: org-operator-secret\r\nOpenAI-Project: proj_operator\r\n"
        b"anthropic-organization-id: 1f2e3d4c\r\nx-request-id: req_123\r\nopenai-processing-ms: 7\r\n"
        b"anthropic-ratelimit-requests-remaining: 99\r\n\r\n%s" % (len(body), body)
    )
    s = make_setup(f"http://127.0.0.1:{server.port}")
    answer = call(route, chat(model), {"x-bf-vk": s.value})
    assert answer.status == 200
    for name in ("openai-organization", "openai-project", "anthropic-organization-id"):
        assert name not in answer.headers
    assert b"org-operator-secret" not in answer.body and b"1f2e3d4c" not in answer.body
    assert answer.headers["x-upstream-request-id"] == "req_123"  # the provider's id, beside the gateway's
    assert answer.headers["x-request-id"] != "req_123"
    assert answer.headers["openai-processing-ms"] == "7"
    assert answer.headers["anthropic-ratelimit-requests-remaining"] == "99"


def test_reserved_extra_headers_stored_before_the_rule_are_not_sent(call, setup, mock):
    # Written around the validation, as a row saved by an older version would be.
    Provider.objects.filter(pk=setup.openai.pk).update(
        extra_headers={"Host": "evil.example", "Transfer-Encoding": "chunked", "Authorization": "x", "x-team": "a"}
    )
    answer = call(CHAT, chat("openai/echo"), {"x-bf-vk": setup.value})
    assert answer.status == 200
    sent = answer.json()["echo"]["headers"]
    assert sent["host"] == f"127.0.0.1:{mock.port}"
    assert "transfer-encoding" not in sent
    assert sent["authorization"] == "Bearer sk-upstream-openai-secret"
    assert sent["x-team"] == "a"
