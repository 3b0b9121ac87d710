"""The Django admin of the gateway: the main screen for platform admins.

Split by model group; importing the modules registers their ``ModelAdmin`` classes. Every save
goes through ``governance.services``, the same functions the management API uses.
"""

from governance.admin import (  # noqa: F401
    alerts,
    audit,
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
