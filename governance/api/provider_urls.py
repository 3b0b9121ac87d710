"""Routes of the provider management API, included at ``/api/`` (no trailing slashes, as Bifrost)."""

from django.urls import path

from governance.api.providers import (
    KeyListView,
    ProviderDetailView,
    ProviderKeyDetailView,
    ProviderKeyListView,
    ProviderListView,
)

urlpatterns = [
    path("providers", ProviderListView.as_view(), name="provider-list"),
    path("providers/<str:name>", ProviderDetailView.as_view(), name="provider-detail"),
    path("providers/<str:name>/keys", ProviderKeyListView.as_view(), name="provider-key-list"),
    path("providers/<str:name>/keys/<str:key_id>", ProviderKeyDetailView.as_view(), name="provider-key-detail"),
    path("keys", KeyListView.as_view(), name="key-list"),
]
