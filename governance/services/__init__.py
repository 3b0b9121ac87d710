"""Every write to the governance data goes through a function here (API, admin, import)."""

from governance.services.alert_webhooks import (
    AlertWebhookConflict,
    alert_webhook_create,
    alert_webhook_delete,
    alert_webhook_update,
)
from governance.services.entities import (
    customer_create,
    customer_delete,
    customer_update,
    team_create,
    team_delete,
    team_update,
)
from governance.services.limits import budget_reset_usage, budgets_reconcile, rate_limit_apply
from governance.services.mcp_clients import (
    McpClientConflict,
    mcp_client_create,
    mcp_client_delete,
    mcp_client_reconnect,
    mcp_client_update,
)
from governance.services.model_limits import (
    ModelConfigConflict,
    model_config_create,
    model_config_delete,
    model_config_update,
    provider_governance_delete,
    provider_governance_set,
)
from governance.services.pricing_overrides import (
    pricing_override_create,
    pricing_override_delete,
    pricing_override_update,
)
from governance.services.providers import (
    provider_create,
    provider_delete,
    provider_key_create,
    provider_key_delete,
    provider_key_update,
    provider_update,
)
from governance.services.routing_rules import (
    RoutingRuleConflict,
    routing_rule_create,
    routing_rule_delete,
    routing_rule_update,
)
from governance.services.tokens import api_token_create
from governance.services.virtual_keys import (
    virtual_key_create,
    virtual_key_delete,
    virtual_key_rotate,
    virtual_key_set_active,
    virtual_key_update,
)

__all__ = [
    "AlertWebhookConflict",
    "McpClientConflict",
    "ModelConfigConflict",
    "RoutingRuleConflict",
    "alert_webhook_create",
    "alert_webhook_delete",
    "alert_webhook_update",
    "api_token_create",
    "budget_reset_usage",
    "budgets_reconcile",
    "customer_create",
    "customer_delete",
    "customer_update",
    "mcp_client_create",
    "mcp_client_delete",
    "mcp_client_reconnect",
    "mcp_client_update",
    "pricing_override_create",
    "pricing_override_delete",
    "pricing_override_update",
    "model_config_create",
    "model_config_delete",
    "model_config_update",
    "provider_create",
    "provider_delete",
    "provider_governance_delete",
    "provider_governance_set",
    "provider_key_create",
    "provider_key_delete",
    "provider_key_update",
    "provider_update",
    "rate_limit_apply",
    "routing_rule_create",
    "routing_rule_delete",
    "routing_rule_update",
    "team_create",
    "team_delete",
    "team_update",
    "virtual_key_create",
    "virtual_key_delete",
    "virtual_key_rotate",
    "virtual_key_set_active",
    "virtual_key_update",
]
