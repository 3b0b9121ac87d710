from __future__ import annotations

from django.apps import AppConfig
from django.contrib.admin import apps as admin_apps


class GovernanceConfig(AppConfig):
    name = "governance"
    verbose_name = "Governance"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from governance import signals  # noqa: F401  (cache invalidation hooks)
        from governance.api import schema  # noqa: F401  (OpenAPI auth scheme extensions)


class GatewayAdminConfig(admin_apps.AdminConfig):
    """``django.contrib.admin`` with the gateway's site (``governance.admin_site``) as the default."""

    default = False  # named in INSTALLED_APPS; GovernanceConfig stays this module's default
    default_site = "governance.admin_site.GatewayAdminSite"
