"""Routes of ``/api/governance/`` (no trailing slashes, as Bifrost).

The viewsets are registered with a router that writes ``path()`` routes (``use_regex_path=False``):
``<str:pk>`` ids, as Bifrost's, so an id with a dot is answered by the view (404 with the
resource's message) rather than by the URL resolver, and no route ends in a slash.
"""

from django.urls import path
from drf_spectacular.views import SpectacularAPIView
from rest_framework.routers import SimpleRouter

from governance.api.alerts import AlertWebhookViewSet, BudgetAlertViewSet
from governance.api.limits_views import BudgetViewSet, RateLimitViewSet
from governance.api.model_limits import ModelConfigViewSet, ProviderGovernanceDetailView, ProviderGovernanceListView
from governance.api.pricing_overrides import PricingOverrideViewSet
from governance.api.quota import QuotaView
from governance.api.routing_rules import RoutingRuleViewSet
from governance.api.usage import VirtualKeyUsageView
from governance.api.views import CustomerViewSet, TeamViewSet, VirtualKeyViewSet

router = SimpleRouter(trailing_slash=False, use_regex_path=False)
router.register("virtual-keys", VirtualKeyViewSet, basename="virtual-key")
router.register("teams", TeamViewSet, basename="team")
router.register("customers", CustomerViewSet, basename="customer")
router.register("budgets", BudgetViewSet, basename="budget")
router.register("rate-limits", RateLimitViewSet, basename="rate-limit")
router.register("routing-rules", RoutingRuleViewSet, basename="routing-rule")
router.register("pricing-overrides", PricingOverrideViewSet, basename="pricing-override")
router.register("model-configs", ModelConfigViewSet, basename="model-config")
router.register("alert-webhooks", AlertWebhookViewSet, basename="alert-webhook")
router.register("alerts", BudgetAlertViewSet, basename="budget-alert")

urlpatterns = [
    path("schema", SpectacularAPIView.as_view(), name="governance-schema"),
    # Before the router's routes: ``virtual-keys/<str:pk>`` would take "quota" for a key id.
    path("virtual-keys/quota", QuotaView.as_view(), name="virtual-key-quota"),
    path("virtual-keys/usage", VirtualKeyUsageView.as_view(), name="virtual-key-usage"),
    # Provider governance, by provider name (the provider itself is managed at /api/providers).
    path("providers", ProviderGovernanceListView.as_view(), name="provider-governance-list"),
    path("providers/<str:name>", ProviderGovernanceDetailView.as_view(), name="provider-governance-detail"),
    *router.urls,
]
