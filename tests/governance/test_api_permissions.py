"""Every management route against staff users that hold exactly one model permission.

Reads need ``view_<model>``, creates ``add_<model>``, updates and verbs (rotate, reset)
``change_<model>``, deletes ``delete_<model>``. For each route the user holding the required
permission succeeds and changes the database as the route says; the users holding any of the
other three permissions of that model get 403 in the project's error shape and change nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

import pytest
from django.contrib.auth.models import Permission
from drf_spectacular.generators import SchemaGenerator
from rest_framework.test import APIClient

from governance.models import (
    AlertWebhook,
    Budget,
    Customer,
    McpClient,
    ModelConfig,
    PricingOverride,
    Provider,
    ProviderKey,
    RateLimit,
    RoutingRule,
    Team,
    VirtualKey,
)
from governance.services import (
    alert_webhook_create,
    api_token_create,
    customer_create,
    model_config_create,
    provider_create,
    provider_governance_set,
    provider_key_create,
    routing_rule_create,
    team_create,
    virtual_key_create,
)
from tests.governance.mcp_fakes import install

pytestmark = pytest.mark.django_db
ACTIONS = ("view", "add", "change", "delete")
# Served to any staff user (the schema) or authenticated by a virtual key (quota): no model permission.
NOT_MODEL_ROUTES = {("GET", "/api/governance/virtual-keys/quota"), ("GET", "/api/governance/virtual-keys/usage")}


@dataclass(frozen=True)
class Route:
    method: str
    path: str  # with {vk}, {team}, {customer}, {budget}, {key} placeholders
    model: str
    action: str
    body: dict | None = None
    status: int = 200  # of the call by the holder of the permission

    @property
    def schema_path(self) -> str:
        return (
            self.path.replace("{vk}", "{id}")
            .replace("{team}", "{id}")
            .replace("{customer}", "{id}")
            .replace("{budget}", "{id}")
            .replace("providers/openai", "providers/{name}")
            .replace("{key}", "{key_id}")
            .replace("{mcp}", "{client_id}")
            .replace("{rule}", "{id}")
            .replace("{mc}", "{id}")
            .replace("{po}", "{id}")
            .replace("{hook}", "{id}")
        )


GOV = "/api/governance"
PROVIDER_BODY = {"provider": "anthropic", "network_config": {"base_url": "http://127.0.0.1:9"}}
RULE_BODY = {"name": "new-rule", "targets": [{"provider": "openai", "weight": 1}]}
OVERRIDE_BODY = {
    "name": "half",
    "scope_kind": "global",
    "match_type": "wildcard",
    "pattern": "gpt-4o*",
    "patch": {"input_cost_per_token": 0.000001},
}
HOOK_BODY = {"name": "pager", "url": "https://hooks.example.com/pager", "secret": "pager-signing-secret-0123"}
MCP_BODY = {"name": "wiki", "connection_type": "http", "connection_string": "http://127.0.0.1:9/mcp"}
ROUTES = [
    Route("GET", f"{GOV}/virtual-keys", "virtualkey", "view"),
    Route("POST", f"{GOV}/virtual-keys", "virtualkey", "add", {"name": "new-key"}),
    Route("GET", f"{GOV}/virtual-keys/{{vk}}", "virtualkey", "view"),
    Route("PUT", f"{GOV}/virtual-keys/{{vk}}", "virtualkey", "change", {"name": "renamed"}),
    Route("DELETE", f"{GOV}/virtual-keys/{{vk}}", "virtualkey", "delete"),
    Route("POST", f"{GOV}/virtual-keys/{{vk}}/rotate", "virtualkey", "change"),
    Route("GET", f"{GOV}/teams", "team", "view"),
    Route("POST", f"{GOV}/teams", "team", "add", {"name": "new-team"}),
    Route("GET", f"{GOV}/teams/{{team}}", "team", "view"),
    Route("PUT", f"{GOV}/teams/{{team}}", "team", "change", {"name": "renamed"}),
    Route("DELETE", f"{GOV}/teams/{{team}}", "team", "delete"),
    Route("GET", f"{GOV}/customers", "customer", "view"),
    Route("POST", f"{GOV}/customers", "customer", "add", {"name": "new-customer"}),
    Route("GET", f"{GOV}/customers/{{customer}}", "customer", "view"),
    Route("PUT", f"{GOV}/customers/{{customer}}", "customer", "change", {"name": "renamed"}),
    Route("DELETE", f"{GOV}/customers/{{customer}}", "customer", "delete"),
    Route("GET", f"{GOV}/budgets", "budget", "view"),
    Route("POST", f"{GOV}/budgets/{{budget}}/reset", "budget", "change"),
    Route("GET", f"{GOV}/rate-limits", "ratelimit", "view"),
    Route("GET", f"{GOV}/routing-rules", "routingrule", "view"),
    Route("POST", f"{GOV}/routing-rules", "routingrule", "add", RULE_BODY),
    Route("GET", f"{GOV}/routing-rules/{{rule}}", "routingrule", "view"),
    Route("PUT", f"{GOV}/routing-rules/{{rule}}", "routingrule", "change", {"priority": 3}),
    Route("DELETE", f"{GOV}/routing-rules/{{rule}}", "routingrule", "delete"),
    Route("GET", f"{GOV}/model-configs", "modelconfig", "view"),
    Route("POST", f"{GOV}/model-configs", "modelconfig", "add", {"model_name": "new-model"}),
    Route("GET", f"{GOV}/model-configs/{{mc}}", "modelconfig", "view"),
    Route("PUT", f"{GOV}/model-configs/{{mc}}", "modelconfig", "change", {"model_name": "renamed"}),
    Route("DELETE", f"{GOV}/model-configs/{{mc}}", "modelconfig", "delete"),
    Route("GET", f"{GOV}/providers", "providergovernance", "view"),
    Route("GET", f"{GOV}/providers/openai", "providergovernance", "view"),
    Route("PUT", f"{GOV}/providers/openai", "providergovernance", "change", {"rate_limit": {"request_max_limit": 7}}),
    Route("DELETE", f"{GOV}/providers/openai", "providergovernance", "delete"),
    Route("GET", f"{GOV}/pricing-overrides", "pricingoverride", "view"),
    Route("POST", f"{GOV}/pricing-overrides", "pricingoverride", "add", OVERRIDE_BODY, status=201),
    Route("GET", f"{GOV}/pricing-overrides/{{po}}", "pricingoverride", "view"),
    Route("PUT", f"{GOV}/pricing-overrides/{{po}}", "pricingoverride", "change", {"name": "renamed"}),
    Route("DELETE", f"{GOV}/pricing-overrides/{{po}}", "pricingoverride", "delete"),
    Route("GET", f"{GOV}/alert-webhooks", "alertwebhook", "view"),
    Route("POST", f"{GOV}/alert-webhooks", "alertwebhook", "add", HOOK_BODY),
    Route("GET", f"{GOV}/alert-webhooks/{{hook}}", "alertwebhook", "view"),
    Route("PUT", f"{GOV}/alert-webhooks/{{hook}}", "alertwebhook", "change", {"enabled": False}),
    Route("DELETE", f"{GOV}/alert-webhooks/{{hook}}", "alertwebhook", "delete"),
    Route("GET", f"{GOV}/alerts", "budgetalert", "view"),
    Route("GET", "/api/logs", "usagerecord", "view"),
    Route("GET", "/api/logs/stats", "usagerecord", "view"),
    Route("GET", "/api/providers", "provider", "view"),
    Route("POST", "/api/providers", "provider", "add", PROVIDER_BODY),
    Route("GET", "/api/providers/openai", "provider", "view"),
    Route("PUT", "/api/providers/openai", "provider", "change", {"network_config": {"base_url": "http://127.0.0.1:8"}}),
    Route("DELETE", "/api/providers/openai", "provider", "delete"),
    Route("GET", "/api/providers/openai/keys", "providerkey", "view"),
    Route("POST", "/api/providers/openai/keys", "providerkey", "add", {"name": "k2", "value": "sk-second-key"}),
    Route("GET", "/api/providers/openai/keys/{key}", "providerkey", "view"),
    Route("PUT", "/api/providers/openai/keys/{key}", "providerkey", "change", {"weight": 2.0}),
    Route("DELETE", "/api/providers/openai/keys/{key}", "providerkey", "delete"),
    Route("GET", "/api/keys", "providerkey", "view"),
    Route("GET", "/api/mcp/clients", "mcpclient", "view"),
    Route("POST", "/api/mcp/client", "mcpclient", "add", MCP_BODY),
    Route("PUT", "/api/mcp/client/{mcp}", "mcpclient", "change", {"tools_to_execute": ["search"]}),
    Route("DELETE", "/api/mcp/client/{mcp}", "mcpclient", "delete"),
    # Acts on the live connection only: nothing in the database changes.
    Route("POST", "/api/mcp/client/{mcp}/reconnect", "mcpclient", "change"),
]
WRITES_NOTHING = {("POST", "/api/mcp/client/{mcp}/reconnect")}


@pytest.fixture(autouse=True)
def mcp_servers(monkeypatch):
    """The MCP routes reach a fake of the gateway's upstream connections, serving both endpoints."""
    fake = install(monkeypatch)
    fake.serve("http://127.0.0.1:9/mcp")
    fake.serve("http://127.0.0.1:6/mcp")
    return fake


@pytest.fixture
def objects() -> dict[str, str]:
    customer = customer_create(name="Acme")
    team = team_create(name="Core")
    vk, _ = virtual_key_create(
        name="svc",
        budgets=[{"max_limit": 10, "reset_duration": "1d"}],
        rate_limit={"request_max_limit": 5, "request_reset_duration": "1m"},
    )
    budget = Budget.objects.get(virtual_key=vk)
    Budget.objects.filter(pk=budget.pk).update(current_usage=Decimal("7"))
    provider = provider_create(name="openai", base_url="http://127.0.0.1:7")
    key = provider_key_create(provider=provider, name="main", value="sk-upstream-secret")
    mcp = McpClient.objects.create(name="docs", connection_string="http://127.0.0.1:6/mcp", tools_to_execute=["*"])
    model_config = model_config_create(model_name="gpt-4o", budgets=[{"max_limit": 3, "reset_duration": "1d"}])
    provider_governance_set(provider=provider, rate_limit={"request_max_limit": 50, "request_reset_duration": "1m"})
    rule = routing_rule_create(name="to-openai", cel_expression='model == "x"', targets=[{"provider": "openai"}])
    override = PricingOverride.objects.create(
        name="vk rate", scope_kind="virtual_key", virtual_key=vk, pattern="gpt-4o", cost_per_request=1
    )
    hook = alert_webhook_create(name="ops", url="https://hooks.example.com/ops", secret="ops-signing-secret-0123")
    return {
        "hook": str(hook.pk),
        "po": str(override.pk),
        "rule": str(rule.pk),
        "mc": str(model_config.pk),
        "mcp": mcp.client_id,
        "vk": str(vk.pk),
        "team": str(team.pk),
        "customer": str(customer.pk),
        "budget": str(budget.pk),
        "key": str(key.pk),
    }


def database_state() -> tuple:
    """Everything a management route can change, in a comparable form."""
    return (
        sorted(VirtualKey.objects.values_list("name", "value_digest")),
        sorted(Team.objects.values_list("name", flat=True)),
        sorted(Customer.objects.values_list("name", flat=True)),
        sorted(Budget.objects.values_list("current_usage", flat=True)),
        sorted(RateLimit.objects.values_list("request_max_limit", flat=True)),
        sorted(Provider.objects.values_list("name", "base_url")),
        sorted(ProviderKey.objects.values_list("name", "weight")),
        sorted((name, str(tools)) for name, tools in McpClient.objects.values_list("name", "tools_to_execute")),
        sorted(ModelConfig.objects.values_list("model_name", flat=True)),
        sorted(RoutingRule.objects.values_list("name", "priority")),
        sorted(PricingOverride.objects.values_list("name", "pattern")),
        sorted(AlertWebhook.objects.values_list("name", "enabled")),
    )


def client_with(django_user_model, codename: str) -> APIClient:
    user = django_user_model.objects.create_user(f"holder-{codename}", password="pw-123456789", is_staff=True)
    user.user_permissions.add(Permission.objects.get(content_type__app_label="governance", codename=codename))
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {api_token_create(user=user, name='tests')[1]}")
    return client


def call(client: APIClient, route: Route, objects: dict[str, str]):
    path = route.path.format(**objects)
    return getattr(client, route.method.lower())(path, route.body, format="json")


@pytest.mark.parametrize("route", ROUTES, ids=lambda r: f"{r.method} {r.path}")
def test_each_route_needs_exactly_its_model_permission(route, objects, django_user_model):
    for action in ACTIONS:
        if action == route.action:
            continue
        before = database_state()
        response = call(client_with(django_user_model, f"{action}_{route.model}"), route, objects)
        assert response.status_code == 403, (action, response.content)
        assert response.json() == {
            "is_bifrost_error": False,
            "status_code": 403,
            "error": {"message": "You do not have permission to perform this action."},
            "extra_fields": {},
        }
        assert database_state() == before, action

    before = database_state()
    response = call(client_with(django_user_model, f"{route.action}_{route.model}"), route, objects)
    assert response.status_code == route.status, response.content
    assert response["Content-Type"] == "application/json"
    if route.method == "GET" or (route.method, route.path) in WRITES_NOTHING:
        assert database_state() == before
    else:
        assert database_state() != before


def test_rotate_with_only_add_permission_neither_rotates_nor_reveals_a_value(objects, django_user_model):
    vk = VirtualKey.objects.get(pk=objects["vk"])
    response = client_with(django_user_model, "add_virtualkey").post(f"{GOV}/virtual-keys/{vk.pk}/rotate")
    assert response.status_code == 403
    assert "sk-bf-" not in response.content.decode()
    assert VirtualKey.objects.get(pk=vk.pk).value_digest == vk.value_digest


def test_reset_with_only_add_permission_leaves_the_usage(objects, django_user_model):
    response = client_with(django_user_model, "add_budget").post(f"{GOV}/budgets/{objects['budget']}/reset")
    assert response.status_code == 403
    assert Budget.objects.get(pk=objects["budget"]).current_usage == Decimal("7")


def test_the_table_covers_every_operation_of_the_api():
    schema = SchemaGenerator().get_schema(request=None, public=True)
    served = {(method.upper(), path) for path, item in schema["paths"].items() for method in item}
    tested = {(route.method, route.schema_path) for route in ROUTES}
    assert served - NOT_MODEL_ROUTES == tested


def test_a_stdio_mcp_client_is_a_superuser_s_to_add_or_change(objects, django_user_model, mcp_servers):
    """A stdio client runs a command on the gateway's hosts: model permissions are not enough."""
    body = {"name": "shell", "connection_type": "stdio", "stdio_config": {"command": "/bin/sh", "args": ["-c", "id"]}}
    mcp_servers.serve("/bin/sh")
    holder = client_with(django_user_model, "add_mcpclient")
    response = holder.post("/api/mcp/client", body, format="json")
    assert response.status_code == 403 and "superuser" in response.json()["error"]["message"]
    assert not McpClient.objects.filter(name="shell").exists()
    stdio = McpClient.objects.create(name="local", connection_type="stdio", stdio_config={"command": "/bin/true"})
    changer = client_with(django_user_model, "change_mcpclient")
    response = changer.put(f"/api/mcp/client/{stdio.client_id}", {"tools_to_execute": ["*"]}, format="json")
    assert response.status_code == 403
    assert McpClient.objects.get(pk=stdio.pk).tools_to_execute == []
    admin = django_user_model.objects.create_superuser("root", "root@example.com", "pw-123456789")
    root = APIClient()
    root.credentials(HTTP_AUTHORIZATION=f"Bearer {api_token_create(user=admin, name='root')[1]}")
    assert root.post("/api/mcp/client", body, format="json").status_code == 200
