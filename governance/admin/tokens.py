"""Admin API tokens: created here, shown once, stored as a digest that is never displayed."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.contrib import admin, messages
from django.db.models import ForeignKey
from django.forms import ModelChoiceField
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html

from governance.admin.common import GovernanceModelAdmin, ServiceAdminMixin, Services, hold_secret, stash_secrets
from governance.admin.secrets import one_time_secret_view
from governance.forms import ApiTokenAdminForm
from governance.keys import mask_secret
from governance.models import ApiToken
from governance.services import api_token_create

if TYPE_CHECKING:
    from django.contrib.admin.options import _FieldGroups


@admin.register(ApiToken)
class ApiTokenAdmin(ServiceAdminMixin[ApiToken], GovernanceModelAdmin[ApiToken]):
    form = ApiTokenAdminForm
    list_display = ["name", "user", "masked", "created_at", "last_used_at"]
    list_filter = ["user"]
    search_fields = ["name", "user__username"]
    list_select_related = ["user"]
    # Never changed (replaced instead); deleting a token has no invariants, so the stock delete.
    services = Services(create=api_token_create)
    service_fields = ("user", "name")

    def get_fields(self, request: HttpRequest, obj: ApiToken | None = None) -> _FieldGroups:
        return ["name", "user", "masked", "created_at", "last_used_at"] if obj else ["name", "user"]

    def get_readonly_fields(self, request: HttpRequest, obj: ApiToken | None = None) -> list[str]:
        return ["name", "user", "masked", "created_at", "last_used_at"] if obj else []

    def has_change_permission(self, request: HttpRequest, obj: ApiToken | None = None) -> bool:
        return False  # a token is replaced, not edited: delete it and create a new one

    def formfield_for_foreignkey(
        self, db_field: ForeignKey[Any, Any], request: HttpRequest, **kwargs: Any
    ) -> ModelChoiceField[Any] | None:
        # A token acts as its user, so only a superuser may mint one for someone else;
        # anyone else could otherwise borrow a more privileged account.
        if db_field.name == "user" and not request.user.is_superuser:
            kwargs["queryset"] = db_field.remote_field.model._default_manager.filter(pk=request.user.pk)
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def get_changeform_initial_data(self, request: HttpRequest) -> dict[str, Any]:
        return {"user": request.user.pk, **super().get_changeform_initial_data(request)}

    @admin.display(description="token")
    def masked(self, token: ApiToken) -> str:
        return format_html('<code class="gov-masked">{}</code>', mask_secret(token.token_last4))

    def created(self, request: HttpRequest, result: tuple[ApiToken, str]) -> ApiToken:
        token, value = result
        hold_secret(request, label=token.name, value=value, kind="admin API token")
        return token

    def response_add(self, request: HttpRequest, obj: ApiToken, post_url_continue: str | None = None) -> HttpResponse:
        if stash_secrets(request):  # also from a popup: the token is shown nowhere else
            self.message_user(request, f"The admin API token “{obj.name}” was added.", messages.SUCCESS)
            return redirect(reverse("admin:governance_apitoken_one_time_value"))
        return super().response_add(request, obj, post_url_continue)

    def get_urls(self) -> list[URLPattern]:
        view = self.admin_site.admin_view(lambda request: one_time_secret_view(request, self))
        return [path("one-time-value/", view, name="governance_apitoken_one_time_value"), *super().get_urls()]
