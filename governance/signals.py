"""Cache invalidation: any change to the configuration the proxy caches clears the snapshots.

See ``governance.metering.snapshot`` for the full rule: immediate in this process, and on the next request
of every other worker and process once the transaction commits (``governance.metering.freshness``).

The same signals keep the audit trail (``governance.audit``): every save and delete of a
configuration model, and of the other configuration the management API and the admin write
(alert webhooks, admin API tokens), leaves an ``AuditEntry`` in the write's transaction.
"""

from __future__ import annotations

from typing import Any

from django.db.models.signals import m2m_changed, post_delete, post_save, pre_delete, pre_save
from django.dispatch import receiver

from governance import audit
from governance.metering import rollups, snapshot
from governance.models import (
    AlertWebhook,
    ApiToken,
    Budget,
    Customer,
    McpClient,
    ModelConfig,
    ModelPrice,
    PricingOverride,
    Provider,
    ProviderConfig,
    ProviderKey,
    RateLimit,
    RoutingRule,
    Team,
    UsageRecord,
    VirtualKey,
    VirtualKeyMcpConfig,
)

CONFIG_MODELS = (
    VirtualKey,
    ProviderConfig,
    Budget,
    RateLimit,
    Team,
    Customer,
    ModelConfig,
    Provider,
    ProviderKey,
    ModelPrice,
    PricingOverride,
    McpClient,
    VirtualKeyMcpConfig,
    RoutingRule,
)


def _invalidate(sender: type, **kwargs: Any) -> None:
    snapshot.invalidate()


for _model in CONFIG_MODELS:
    post_save.connect(_invalidate, sender=_model, dispatch_uid=f"snapshot-save-{_model.__name__}")
    post_delete.connect(_invalidate, sender=_model, dispatch_uid=f"snapshot-delete-{_model.__name__}")

# The audit trail: the configuration above, plus configuration the proxy does not cache but that
# the API and the admin write the same way.
AUDITED_MODELS = (*CONFIG_MODELS, AlertWebhook, ApiToken)

# Usage records, rollups, leases, counters and alerts are not here: they are written on the
# request path, and the ledger is their own record.
for _audited in AUDITED_MODELS:
    pre_save.connect(audit.remember_old_values, sender=_audited, dispatch_uid=f"audit-pre-save-{_audited.__name__}")
    post_save.connect(audit.record_save, sender=_audited, dispatch_uid=f"audit-save-{_audited.__name__}")
    pre_delete.connect(audit.remember_name, sender=_audited, dispatch_uid=f"audit-pre-delete-{_audited.__name__}")
    post_delete.connect(audit.record_delete, sender=_audited, dispatch_uid=f"audit-delete-{_audited.__name__}")

# weak=False: the handler is made here and nothing else holds it.
m2m_changed.connect(
    audit.record_m2m("keys"), sender=ProviderConfig.keys.through, weak=False, dispatch_uid="audit-config-keys"
)


@receiver(m2m_changed, sender=ProviderConfig.keys.through, dispatch_uid="snapshot-config-keys")
def _config_keys_changed(sender: type, action: str, **kwargs: Any) -> None:
    if action.startswith("post_"):
        snapshot.invalidate()


@receiver(post_save, sender=UsageRecord, dispatch_uid="usage-record-rollups")
def _usage_record_saved(sender: type[UsageRecord], instance: UsageRecord, created: bool, **kwargs: Any) -> None:
    """A usage record created through the ORM (not the ledger's own insert, which adds its rows
    itself: ``usage_rows``) joins its rollups too, in the same transaction: whatever writes the
    ledger, the rollups stay exact."""
    if created:
        rollups.add([{f.attname: getattr(instance, f.attname) for f in UsageRecord._meta.concrete_fields}])
