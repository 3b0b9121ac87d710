"""Governance data model: who may call what, and how much."""

from governance.models.alerts import AlertDelivery, AlertWebhook, BudgetAlert, DeliveryStatus
from governance.models.audit import AuditAction, AuditEntry, Via
from governance.models.content import RequestContent
from governance.models.entities import ApiToken, Customer, Team, VirtualKey
from governance.models.generation import ConfigGeneration
from governance.models.leases import CounterLease
from governance.models.limits import Budget, ModelConfig, RateLimit
from governance.models.mcp import McpClient, VirtualKeyMcpConfig
from governance.models.mcp_tokens import McpConnectLinkUse, McpOAuthRegistration, McpUpstreamOAuthFlow, McpUserToken
from governance.models.pricing_overrides import PricingOverride
from governance.models.provider_governance import ProviderGovernance
from governance.models.providers import ModelPrice, Provider, ProviderConfig, ProviderKey
from governance.models.rollups import UsageRollup
from governance.models.routing import RoutingRule, RoutingScope
from governance.models.usage import UsageRecord

__all__ = [
    "AlertDelivery",
    "AlertWebhook",
    "ApiToken",
    "AuditAction",
    "AuditEntry",
    "Budget",
    "BudgetAlert",
    "ConfigGeneration",
    "CounterLease",
    "Customer",
    "DeliveryStatus",
    "McpClient",
    "McpConnectLinkUse",
    "McpOAuthRegistration",
    "McpUpstreamOAuthFlow",
    "McpUserToken",
    "ModelConfig",
    "ModelPrice",
    "PricingOverride",
    "Provider",
    "ProviderConfig",
    "ProviderGovernance",
    "ProviderKey",
    "RateLimit",
    "RequestContent",
    "RoutingRule",
    "RoutingScope",
    "Team",
    "UsageRecord",
    "UsageRollup",
    "Via",
    "VirtualKey",
    "VirtualKeyMcpConfig",
]
