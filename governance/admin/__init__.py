"""The Django admin of the gateway: the main screen for platform admins.

Split by model group; importing the modules registers their ``ModelAdmin`` classes. Every save
goes through ``governance.services``, the same functions the management API uses.
"""

from django.contrib import admin

from governance.admin import (  # noqa: F401
    alerts,
    entities,
    limits,
    mcp,
    model_configs,
    pricing,
    providers,
    routing,
    tokens,
    usage,
    virtual_keys,
)

admin.site.site_header = "Bifrost gateway"
admin.site.site_title = "Bifrost gateway admin"
admin.site.index_title = "Governance"
