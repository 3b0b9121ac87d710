"""No VK value and no provider key ever reaches the logs, whatever path a request takes."""

from __future__ import annotations

import logging

import pytest

from bifrost_site.logging import JsonFormatter
from governance.services import virtual_key_set_active

pytestmark = pytest.mark.django_db

CHAT = "/v1/chat/completions"


def chat(model: str, **extra) -> dict:
    return {"model": model, "messages": [{"role": "user", "content": "hello"}], "max_tokens": 2, **extra}


def test_no_secret_in_logs_across_success_failure_and_rejection(call, setup, caplog):
    caplog.set_level(logging.DEBUG)
    vk = setup.value
    wrong = vk[:-1] + ("1" if vk.endswith("0") else "0")  # a near miss that is surely not the key
    answers = [
        call(CHAT, chat("gpt-4o-mini"), {"Authorization": f"Bearer {vk}"}),
        call(CHAT, chat("gpt-4o-mini", stream=True), {"x-api-key": vk}),
        call(CHAT, chat("fail-500"), {"x-bf-vk": vk}),
        call(CHAT, chat("reset"), {"x-bf-vk": vk}),
        call(CHAT, chat("gpt-4o-mini", fallbacks=["nope/x"]), {"x-bf-vk": vk}),
        call(CHAT, b"{not json", {"x-bf-vk": vk}),
        call(CHAT, chat("gpt-4o-mini"), {"x-bf-vk": wrong}),
        call("/anthropic/v1/messages", chat("claude-x"), {"x-api-key": vk}),
    ]
    virtual_key_set_active(vk=setup.vk, active=False)
    answers.append(call(CHAT, chat("gpt-4o-mini"), {"x-bf-vk": vk}))
    assert {a.status for a in answers} >= {200, 400, 401, 403}
    formatter = JsonFormatter()
    logs = "\n".join(formatter.format(record) for record in caplog.records)
    assert "bifrost.upstream" in logs  # DEBUG logging of the upstream calls is captured and scanned
    for answer in answers:
        assert vk.encode() not in answer.body
        assert b"sk-upstream-openai-secret" not in answer.body
    for secret in (vk, wrong, "sk-upstream-openai-secret", "sk-ant-upstream-secret"):
        assert secret not in logs
