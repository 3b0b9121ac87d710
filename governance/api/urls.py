"""Routes of ``/api/governance/`` (no trailing slashes, as Bifrost)."""

from django.urls import path
from drf_spectacular.views import SpectacularAPIView

from governance.api.limits_views import BudgetViewSet, RateLimitViewSet
from governance.api.quota import QuotaView
from governance.api.views import CustomerViewSet, TeamViewSet, VirtualKeyViewSet

COLLECTION = {"get": "list", "post": "create"}
ITEM = {"get": "retrieve", "put": "update", "delete": "destroy"}

urlpatterns = [
    path("schema", SpectacularAPIView.as_view(), name="governance-schema"),
    path("virtual-keys", VirtualKeyViewSet.as_view(COLLECTION), name="virtual-key-list"),
    path("virtual-keys/quota", QuotaView.as_view(), name="virtual-key-quota"),
    path("virtual-keys/<str:pk>", VirtualKeyViewSet.as_view(ITEM), name="virtual-key-detail"),
    path("virtual-keys/<str:pk>/rotate", VirtualKeyViewSet.as_view({"post": "rotate"}), name="virtual-key-rotate"),
    path("teams", TeamViewSet.as_view(COLLECTION), name="team-list"),
    path("teams/<str:pk>", TeamViewSet.as_view(ITEM), name="team-detail"),
    path("customers", CustomerViewSet.as_view(COLLECTION), name="customer-list"),
    path("customers/<str:pk>", CustomerViewSet.as_view(ITEM), name="customer-detail"),
    path("budgets", BudgetViewSet.as_view({"get": "list"}), name="budget-list"),
    path("budgets/<str:pk>/reset", BudgetViewSet.as_view({"post": "reset"}), name="budget-reset"),
    path("rate-limits", RateLimitViewSet.as_view({"get": "list"}), name="rate-limit-list"),
]
