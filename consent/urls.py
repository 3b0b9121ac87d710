"""Consent flow routes, mounted at the site root (full paths are spelled out here)."""

from __future__ import annotations

from django.urls import path

from consent import oauth_views, views

app_name = "consent"

urlpatterns = [
    path(
        ".well-known/oauth-authorization-server",
        oauth_views.authorization_server_metadata,
        name="authorization-server-metadata",
    ),
    path(
        ".well-known/oauth-protected-resource",
        oauth_views.protected_resource_metadata,
        name="protected-resource-metadata",
    ),
    path("api/oauth/per-user/register", oauth_views.register, name="register"),
    path("api/oauth/per-user/authorize", oauth_views.authorize, name="authorize"),
    path("api/oauth/per-user/consent/vk", views.submit_virtual_key, name="submit-vk"),
    path("api/oauth/per-user/consent/user-id", views.submit_user_id, name="submit-user-id"),
    path("api/oauth/per-user/consent/skip", views.skip_identity, name="skip"),
    path("api/oauth/per-user/consent/submit", views.submit_consent, name="submit"),
    path("api/oauth/per-user/token", oauth_views.token, name="token"),
    path("oauth/consent", views.identity_page, name="identity"),
    path("oauth/consent/mcps", views.mcps_page, name="mcps"),
    # A page path, not under /api/: a refusal here is a page for a person, CSRF failures included.
    path("oauth/consent/deny", views.deny, name="deny"),
]
