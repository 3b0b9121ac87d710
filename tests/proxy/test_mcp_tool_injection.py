"""``x-bf-mcp-include-clients`` / ``-tools`` on ``/v1/chat/completions``: the caller's granted MCP
tools reach the model as function tools (``mcp_gateway.injection``); the upstream MCP servers are
replaced by a fake (their real behaviour is tested in ``tests/mcp``)."""

from __future__ import annotations

import pytest

from governance.models import McpClient, VirtualKeyMcpConfig
from mcp_gateway import upstream

pytestmark = pytest.mark.django_db

SCHEMA = {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]}


@pytest.fixture
def mcp(monkeypatch, setup):
    offered = {"files": [{"name": "read", "description": "Read a file", "inputSchema": SCHEMA}, {"name": "rm"}]}
    monkeypatch.setattr(upstream, "spec_of", lambda client: client)
    monkeypatch.setattr(upstream, "tools", lambda spec, refresh=False: [dict(t) for t in offered[spec.name]])
    files = McpClient.objects.create(name="files", tools_to_execute=["*"])
    VirtualKeyMcpConfig.objects.create(virtual_key=setup.vk, mcp_client=files, tools_to_execute=["read"])
    return files


def sent_tools(mock) -> list[dict]:
    return mock.stats()["last_request"]["body"].get("tools", [])


def body(**extra):
    return {"model": "openai/gpt-4o", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2, **extra}


def test_granted_tools_are_offered_only_when_asked(call, setup, mock, mcp):
    assert call("/v1/chat/completions", body(), {"x-bf-vk": setup.value}).status == 200
    assert sent_tools(mock) == []
    headers = {"x-bf-vk": setup.value, "x-bf-mcp-include-clients": "files"}
    assert call("/v1/chat/completions", body(), headers).status == 200
    assert sent_tools(mock) == [
        {"type": "function", "function": {"name": "files_read", "description": "Read a file", "parameters": SCHEMA}}
    ]


def test_the_request_s_own_tools_stay_and_are_not_duplicated(call, setup, mock, mcp):
    own = {"type": "function", "function": {"name": "files_read", "parameters": {"type": "object"}}}
    other = {"type": "function", "function": {"name": "mine", "parameters": {"type": "object"}}}
    headers = {"x-bf-vk": setup.value, "x-bf-mcp-include-tools": "files_read,files_rm"}
    assert call("/v1/chat/completions", body(tools=[own, other]), headers).status == 200
    assert sent_tools(mock) == [own, other]  # files_rm is not the key's; files_read is already there


def test_tools_reach_a_translated_upstream_too(call, setup, mock, mcp):
    headers = {"x-bf-vk": setup.value, "x-bf-mcp-include-clients": "files"}
    answer = call("/v1/chat/completions", body(model="anthropic/claude-3-5-haiku-latest"), headers)
    assert answer.status == 200
    assert [t["name"] for t in sent_tools(mock)] == ["files_read"]
    assert sent_tools(mock)[0]["input_schema"] == SCHEMA
