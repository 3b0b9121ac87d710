"""Config import of Bifrost's ``mcp.client_configs[]`` and of the VKs' ``mcp_configs[]``: upserts by
name, validated like the API with path-prefixed errors, ``env.NAME`` kept where the gateway reads it
at connect time and resolved for header values, and no connection made."""

from __future__ import annotations

import copy

import pytest

from governance import mcp_upstream
from governance.config_import import ConfigError, import_config
from governance.models import McpClient, VirtualKey, VirtualKeyMcpConfig

pytestmark = pytest.mark.django_db

HEADER_SECRET = "sk-mcp-header-secret-4321"
CONFIG = {
    "mcp": {
        "client_configs": [
            {
                "name": "docs",
                "connection_type": "http",
                "connection_string": "env.DOCS_MCP_URL",
                "headers": {"Authorization": "env.DOCS_MCP_TOKEN", "X-Team": "search"},
                "tools_to_execute": ["search", "read"],
                "allowed_extra_headers": ["x-tenant"],
                "tool_pricing": {"search": 0.002},
                "allow_on_all_virtual_keys": True,
            },
            {
                "name": "filesystem",
                "connection_type": "stdio",
                "stdio_config": {"command": "npx", "args": ["-y", "server-filesystem"], "envs": ["HOME", "FS_TOKEN"]},
                "tools_to_execute": ["*"],
                "client_id": "bifrost-generated-id",
                "tools_to_auto_execute": ["*"],
            },
        ],
        "tool_manager_config": {"tool_execution_timeout": 30},
    },
    "governance": {
        "virtual_keys": [
            {
                "id": "vk-app",
                "name": "app",
                "mcp_configs": [
                    {"mcp_client_name": "docs", "tools_to_execute": ["search"]},
                    {"mcp_client_name": "filesystem", "tools_to_execute": ["*"]},
                ],
            }
        ]
    },
}


@pytest.fixture(autouse=True)
def env(monkeypatch):
    monkeypatch.setenv("DOCS_MCP_TOKEN", HEADER_SECRET)
    monkeypatch.delenv("DOCS_MCP_URL", raising=False)  # read when connecting, not at import


@pytest.fixture(autouse=True)
def no_connection(monkeypatch):
    def refuse():
        raise AssertionError("the import must not connect to MCP servers")

    monkeypatch.setattr(mcp_upstream, "connector", refuse)


def test_clients_and_vk_mcp_configs_of_one_file_are_imported(monkeypatch):
    result = import_config(copy.deepcopy(CONFIG))

    assert result.created["mcp_clients"] == 2
    docs = McpClient.objects.get(name="docs")
    assert docs.connection_string == "env.DOCS_MCP_URL"  # kept as written
    assert docs.headers == {"Authorization": HEADER_SECRET, "X-Team": "search"}  # resolved, encrypted
    assert HEADER_SECRET not in docs.headers_encrypted
    assert (docs.auth_type, docs.tools_to_execute, docs.allowed_extra_headers) == (
        "headers",
        ["search", "read"],
        ["x-tenant"],
    )
    assert docs.tool_pricing == {"search": "0.002"} and docs.allow_on_all_virtual_keys is True
    fs = McpClient.objects.get(name="filesystem")
    assert fs.stdio_config == {
        "command": "npx",
        "args": ["-y", "server-filesystem"],
        "envs": {"HOME": "env.HOME", "FS_TOKEN": "env.FS_TOKEN"},
    }
    assert fs.auth_type == "none" and fs.client_id != "bifrost-generated-id"
    vk = VirtualKey.objects.get(name="app")
    assert sorted(
        VirtualKeyMcpConfig.objects.filter(virtual_key=vk).values_list("mcp_client__name", "tools_to_execute")
    ) == [("docs", ["search"]), ("filesystem", ["*"])]
    assert "mcp.tool_manager_config" in result.ignored
    assert "mcp.client_configs[1].tools_to_auto_execute" in result.ignored


def test_a_reimport_updates_by_name_and_the_file_describes_the_whole_client():
    import_config(copy.deepcopy(CONFIG))
    docs = McpClient.objects.get(name="docs")

    changed = copy.deepcopy(CONFIG)
    changed["mcp"]["client_configs"][0].pop("tool_pricing")
    changed["mcp"]["client_configs"][0]["tools_to_execute"] = ["search"]
    changed["governance"]["virtual_keys"][0]["mcp_configs"] = [{"mcp_client_name": "docs"}]
    result = import_config(changed)

    assert result.updated["mcp_clients"] == 2 and "mcp_clients" not in result.created
    again = McpClient.objects.get(name="docs")
    assert (again.pk, again.client_id) == (docs.pk, docs.client_id)
    assert again.tool_pricing == {} and again.tools_to_execute == ["search"]
    assert list(VirtualKeyMcpConfig.objects.values_list("mcp_client__name", "tools_to_execute")) == [("docs", [])]


def test_a_vk_may_name_a_client_already_in_the_database():
    import_config({"mcp": {"client_configs": [CONFIG["mcp"]["client_configs"][1]]}})
    config = {
        "governance": {"virtual_keys": [{"id": "k", "name": "k", "mcp_configs": [{"mcp_client_name": "filesystem"}]}]}
    }
    import_config(config)
    assert VirtualKeyMcpConfig.objects.get().mcp_client.name == "filesystem"


@pytest.mark.parametrize(
    ("change", "path", "message"),
    [
        (
            lambda c: c["mcp"]["client_configs"][0].update(connection_type="ws"),
            "mcp.client_configs[0].connection_type",
            "must be one of",
        ),
        (
            lambda c: c["mcp"]["client_configs"][0].pop("connection_type"),
            "mcp.client_configs[0].connection_type",
            "is required",
        ),
        (
            lambda c: c["mcp"]["client_configs"][0].update(name="bad name"),
            "mcp.client_configs[0].name",
            "letters, digits",
        ),
        (
            lambda c: c["mcp"]["client_configs"][1].update(name="docs"),
            "mcp.client_configs[1].name",
            "duplicate MCP client name 'docs'",
        ),
        (
            lambda c: c["mcp"]["client_configs"][1]["stdio_config"].pop("command"),
            "mcp.client_configs[1].stdio_config.command",
            "is required",
        ),
        (
            lambda c: c["mcp"]["client_configs"][0]["headers"].update(Authorization="env.MISSING_TOKEN"),
            "mcp.client_configs[0].headers.Authorization",
            "environment variable 'MISSING_TOKEN' is not set",
        ),
        (
            lambda c: c["mcp"]["client_configs"][0].update(tool_pricing={"search": -1}),
            "mcp.client_configs[0].tool_pricing.search",
            "0 or more",
        ),
        (
            lambda c: c["mcp"]["client_configs"][0].update(tools_to_execute=["*", "x"]),
            "mcp.client_configs[0].tools_to_execute",
            "'*' cannot be combined",
        ),
        (lambda c: c["mcp"].update(client_configs={"name": "x"}), "mcp.client_configs", "must be a list"),
        (
            lambda c: c["governance"]["virtual_keys"][0]["mcp_configs"].append({"mcp_client_name": "nope"}),
            "governance.virtual_keys[0].mcp_configs[2].mcp_client_name",
            "MCP client 'nope' is not defined",
        ),
        (
            lambda c: c["governance"]["virtual_keys"][0]["mcp_configs"][0].update(tools_to_execute=["a", "a"]),
            "governance.virtual_keys[0].mcp_configs[0].tools_to_execute",
            "duplicate entries",
        ),
    ],
)
def test_problems_are_reported_with_their_path_and_nothing_is_written(change, path, message):
    config = copy.deepcopy(CONFIG)
    change(config)
    with pytest.raises(ConfigError) as caught:
        import_config(config)
    problems = dict(caught.value.problems)
    assert path in problems, caught.value.problems
    assert message in problems[path]
    assert not McpClient.objects.exists() and not VirtualKey.objects.exists()
    assert HEADER_SECRET not in str(caught.value)
