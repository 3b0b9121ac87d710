from __future__ import annotations

from django.apps import AppConfig


class GovernanceConfig(AppConfig):
    name = "governance"
    verbose_name = "Governance"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from governance import signals  # noqa: F401  (cache invalidation hooks)
        from governance.api import schema  # noqa: F401  (OpenAPI auth scheme extensions)
