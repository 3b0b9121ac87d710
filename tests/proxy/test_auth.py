"""The enforcement rows answered before any upstream call (SPEC section 6, rows 1-5)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from governance.models import UsageRecord
from governance.services import virtual_key_rotate, virtual_key_set_active, virtual_key_update
from tests.proxy.conftest import make_setup

pytestmark = pytest.mark.django_db

CHAT = "/v1/chat/completions"


def chat(model: str = "gpt-4o-mini") -> dict:
    return {"model": model, "messages": [{"role": "user", "content": "hello"}], "max_tokens": 2}


def assert_error(answer, status: int, type_: str, message: str) -> None:
    assert answer.status == status, answer.body
    body = answer.json()
    if body["type"] == "error":  # the Anthropic format: the gateway's type is the error's type
        assert body["error"]["type"] == type_
    else:
        assert body["type"] == type_
    assert body["error"]["message"] == message
    assert body["status_code"] == status
    assert body["is_bifrost_error"] is False


def test_missing_vk_is_401_virtual_key_required(call, mock):
    answer = call(CHAT, chat())
    assert_error(
        answer, 401, "virtual_key_required", "virtual key is required. Provide a virtual key via the x-bf-vk header."
    )
    assert mock.stats()["by_path"].get(CHAT, 0) == 0


def test_a_provider_key_in_authorization_is_not_a_vk(call, setup):
    answer = call(CHAT, chat(), {"Authorization": "Bearer sk-proj-123"})
    assert answer.status == 401 and answer.json()["type"] == "virtual_key_required"


def test_unknown_vk_is_401_virtual_key_not_found(call, setup, mock):
    answer = call(CHAT, chat(), {"x-bf-vk": "sk-bf-00000000-0000-4000-8000-000000000000"})
    assert_error(
        answer,
        401,
        "virtual_key_not_found",
        "virtual key not found. The provided virtual key does not exist or has been revoked.",
    )
    assert mock.stats()["by_path"].get(CHAT, 0) == 0


@pytest.mark.parametrize(
    "header, template",
    [
        ("x-bf-vk", "{v}"),
        ("Authorization", "Bearer {v}"),
        ("Authorization", "bearer {V}"),
        ("x-api-key", "{v}"),
        ("x-goog-api-key", "{v}"),
    ],
)
def test_vk_is_read_from_every_documented_header(call, setup, header, template):
    value = template.format(v=setup.value, V="SK-BF-" + setup.value[6:])
    answer = call(CHAT, chat(), {header: value})
    assert answer.status == 200, answer.body
    assert answer.json()["extra_fields"]["provider"] == "openai"


def test_inactive_vk_is_403_blocked_at_once_in_the_same_process(call, setup):
    assert call(CHAT, chat(), {"x-bf-vk": setup.value}).status == 200  # now cached
    virtual_key_set_active(vk=setup.vk, active=False)
    assert_error(call(CHAT, chat(), {"x-bf-vk": setup.value}), 403, "virtual_key_blocked", "Virtual key is inactive")


def test_expired_vk_is_403_blocked(call, mock):
    s = make_setup(mock.url, expires_at=timezone.now() - timedelta(seconds=1))
    assert_error(call(CHAT, chat(), {"x-bf-vk": s.value}), 403, "virtual_key_blocked", "Virtual key has expired")


def test_rotated_vk_stops_working_at_once(call, setup):
    assert call(CHAT, chat(), {"x-bf-vk": setup.value}).status == 200
    new_value = virtual_key_rotate(vk=setup.vk)
    assert call(CHAT, chat(), {"x-bf-vk": setup.value}).json()["type"] == "virtual_key_not_found"
    assert call(CHAT, chat(), {"x-bf-vk": new_value}).status == 200


def test_provider_without_config_is_403_provider_blocked(call, mock):
    s = make_setup(
        mock.url, provider_configs=[{"provider": "openai", "weight": 1, "allowed_models": ["*"], "key_ids": ["*"]}]
    )
    answer = call("/anthropic/v1/messages", chat("claude-3-5-haiku-latest"), {"x-api-key": s.value})
    assert_error(answer, 403, "provider_blocked", "Provider 'anthropic' is not allowed for this virtual key")
    assert mock.stats()["by_path"].get("/v1/messages", 0) == 0


def test_vk_without_configs_allows_nothing_unless_allow_all_providers(call, mock):
    s = make_setup(mock.url, provider_configs=[])
    answer = call(CHAT, chat("openai/gpt-4o"), {"x-bf-vk": s.value})
    assert_error(answer, 403, "provider_blocked", "Provider 'openai' is not allowed for this virtual key")
    virtual_key_update(vk=s.vk, allow_all_providers=True)
    assert call(CHAT, chat("openai/gpt-4o"), {"x-bf-vk": s.value}).status == 200


def test_model_outside_allowed_models_is_403_model_blocked(call, mock):
    s = make_setup(
        mock.url,
        provider_configs=[{"provider": "openai", "weight": 1, "allowed_models": ["gpt-4o-mini"], "key_ids": ["*"]}],
    )
    assert call(CHAT, chat("openai/gpt-4o-mini"), {"x-bf-vk": s.value}).status == 200
    answer = call(CHAT, chat("openai/gpt-4o"), {"x-bf-vk": s.value})
    assert_error(answer, 403, "model_blocked", "Model 'gpt-4o' is not allowed for this virtual key")


def test_empty_allowed_models_allows_no_model(call, mock):
    s = make_setup(
        mock.url, provider_configs=[{"provider": "openai", "weight": 1, "allowed_models": [], "key_ids": ["*"]}]
    )
    answer = call(CHAT, chat("openai/gpt-4o"), {"x-bf-vk": s.value})
    assert answer.status == 403 and answer.json()["type"] == "model_blocked"


def test_config_without_keys_answers_no_keys_found(call, mock):
    s = make_setup(mock.url, provider_configs=[{"provider": "openai", "weight": 1, "allowed_models": ["*"]}])
    answer = call(CHAT, chat("openai/gpt-4o"), {"x-bf-vk": s.value})
    assert answer.status == 400
    assert answer.json()["error"]["message"] == (
        "no keys found that support model: gpt-4o (the virtual key's provider config for 'openai' allows"
        ' none of the provider\'s keys: set its key_ids, e.g. ["*"] for all)'
    )
    assert mock.stats()["by_path"].get(CHAT, 0) == 0
    assert not UsageRecord.objects.exists()


def test_config_limited_to_one_key_uses_only_that_key(call, mock):
    from governance.services import provider_key_create

    s = make_setup(mock.url)
    other = provider_key_create(provider=s.openai, name="other", value="sk-other-upstream-key")
    virtual_key_update(
        vk=s.vk,
        provider_configs=[{"provider": "openai", "weight": 1, "allowed_models": ["*"], "key_ids": [str(other.pk)]}],
    )
    for _ in range(4):
        answer = call(CHAT, chat("echo"), {"x-bf-vk": s.value})
        assert answer.json()["echo"]["headers"]["authorization"] == "Bearer sk-other-upstream-key"


def test_direct_key_mode_uses_provider_keys_without_a_vk(call, setup, settings):
    settings.GOVERNANCE_ENFORCE_VIRTUAL_KEYS = False
    answer = call(CHAT, chat("openai/echo"))
    assert answer.status == 200
    assert answer.json()["echo"]["headers"]["authorization"] == "Bearer sk-upstream-openai-secret"
    row = UsageRecord.objects.get()
    assert row.virtual_key is None and row.provider == "openai"


def test_direct_key_mode_still_checks_a_presented_vk(call, setup, settings):
    settings.GOVERNANCE_ENFORCE_VIRTUAL_KEYS = False
    answer = call(CHAT, chat(), {"x-bf-vk": "sk-bf-unknown"})
    assert answer.json()["type"] == "virtual_key_not_found"
