"""Admin for the consent flow. Digests of secrets (browser cookie, codes, tokens) are never shown:
the fields are not editable and no list or detail page names them."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import Model, QuerySet
from django.forms import ModelForm
from django.http import HttpRequest

from consent import services
from consent.models import AuthorizationCode, ConsentFlow, ConsentSession, OAuthClient


class ReadOnlyAdmin(admin.ModelAdmin):
    """Flows, sessions and codes are created only by the flow itself; admins may look and delete."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False


@admin.register(OAuthClient)
class OAuthClientAdmin(admin.ModelAdmin):
    list_display = ["client_name", "client_id", "self_registered", "redirect_uri_count", "created_at"]
    list_filter = ["self_registered"]
    search_fields = ["client_name", "client_id"]
    readonly_fields = ["client_id", "created_at"]
    fields = ["client_id", "client_name", "self_registered", "redirect_uris", "created_at"]

    def get_changeform_initial_data(self, request: HttpRequest) -> dict[str, Any]:
        # A client an administrator adds here is pre-registered, not self-registered.
        return {**super().get_changeform_initial_data(request), "self_registered": False}

    @admin.display(description="redirect URIs")
    def redirect_uri_count(self, obj: OAuthClient) -> int:
        return len(obj.redirect_uris or [])

    def save_model(self, request: HttpRequest, obj: OAuthClient, form: ModelForm[OAuthClient], change: bool) -> None:
        # The form already ran full_clean (OAuthClient.clean holds the redirect-URI rules).
        services.oauth_client_save(client=obj)


@admin.register(ConsentFlow)
class ConsentFlowAdmin(ReadOnlyAdmin):
    list_display = ["short_flow_id", "client", "identity", "virtual_key", "user_id", "status", "expires_at"]
    list_filter = ["status", "identity"]
    search_fields = ["flow_id", "client__client_name", "client__client_id", "user_id", "virtual_key__name"]
    list_select_related = ["client", "virtual_key"]
    fields = [
        "flow_id",
        "client",
        "redirect_uri",
        "state",
        "code_challenge_method",
        "identity",
        "virtual_key",
        "user_id",
        "status",
        "created_at",
        "expires_at",
        "submitted_at",
    ]

    @admin.display(description="flow", ordering="flow_id")
    def short_flow_id(self, obj: ConsentFlow) -> str:
        return f"{obj.flow_id[:8]}…"


@admin.register(ConsentSession)
class ConsentSessionAdmin(ReadOnlyAdmin):
    list_display = ["id", "client", "identity", "virtual_key", "user_id", "has_token", "expires_at", "revoked_at"]
    list_filter = ["identity", ("revoked_at", admin.EmptyFieldListFilter)]
    search_fields = ["client__client_name", "client__client_id", "user_id", "virtual_key__name"]
    list_select_related = ["client", "virtual_key"]
    fields = [
        "id",
        "client",
        "identity",
        "virtual_key",
        "user_id",
        "mcp_clients",
        "has_token",
        "created_at",
        "expires_at",
        "revoked_at",
    ]
    actions = ["revoke"]

    @admin.display(boolean=True, description="token issued")
    def has_token(self, obj: ConsentSession) -> bool:
        return obj.access_token_digest is not None

    @admin.action(description="Revoke selected sessions (their access tokens stop working)", permissions=["revoke"])
    def revoke(self, request: HttpRequest, queryset: QuerySet[ConsentSession]) -> None:
        count = services.consent_sessions_revoke(session_ids=list(queryset.values_list("pk", flat=True)))
        self.message_user(request, f"Revoked {count} session(s).", messages.SUCCESS)

    def has_revoke_permission(self, request: HttpRequest) -> bool:
        # Sessions are never edited field by field, but revoking is a change of the model.
        return request.user.has_perm("consent.change_consentsession")


@admin.register(AuthorizationCode)
class AuthorizationCodeAdmin(ReadOnlyAdmin):
    list_display = ["id", "client", "session", "created_at", "expires_at", "used_at"]
    list_filter = [("used_at", admin.EmptyFieldListFilter)]
    search_fields = ["client__client_name", "client__client_id"]
    list_select_related = ["client", "session"]
    fields = ["client", "session", "redirect_uri", "created_at", "expires_at", "used_at"]
