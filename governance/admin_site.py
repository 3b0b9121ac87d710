"""The admin site: an index that opens on the control room's figures, and the Governance
section in the order a platform admin works through it (keys first) rather than alphabetical.

Installed as the default site by ``governance.apps.GatewayAdminConfig`` (it replaces
``django.contrib.admin`` in ``INSTALLED_APPS``), so every ``@admin.register`` lands here. It lives
outside ``governance.admin`` because that package registers its model admins on import.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest
from django.template.response import TemplateResponse

# The Governance section's order; models not named follow, alphabetically.
GOVERNANCE_ORDER = [
    "virtualkey",
    "team",
    "customer",
    "provider",
    "providerkey",
    "modelprice",
    "pricingoverride",
    "routingrule",
    "modelconfig",
    "budget",
    "ratelimit",
    "usagerecord",
]

APP_ORDER = {"governance": 0, "auth": 2}


class GatewayAdminSite(admin.AdminSite):
    site_header = "Bifrost gateway"
    site_title = "Bifrost gateway admin"
    index_title = "Control room"
    # The gateway serves no public pages, so "View site" would lead nowhere; the index links the
    # usage dashboard instead.
    site_url = None

    def get_app_list(self, request: HttpRequest, app_label: str | None = None) -> list[dict[str, Any]]:
        # The gateway's own section first; Django's users and groups last.
        apps = sorted(super().get_app_list(request, app_label), key=lambda a: APP_ORDER.get(a["app_label"], 1))
        rank = {name: index for index, name in enumerate(GOVERNANCE_ORDER)}
        for app in apps:
            if app["app_label"] == "governance":
                app["models"].sort(key=lambda m: (rank.get(m["object_name"].lower(), len(rank)), m["name"]))
        return apps

    def index(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> TemplateResponse:
        context = dict(extra_context or {})
        if request.user.has_perm("governance.view_usagerecord"):
            from governance.dashboard.control_room import tiles

            context["control_room"] = tiles()
        return super().index(request, context)
