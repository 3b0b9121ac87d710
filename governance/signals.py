"""Cache invalidation: any change to the configuration the proxy caches clears the snapshots.

See ``governance.metering.snapshot`` for the full rule: immediate in this process, and on the next request
of every other worker and process once the transaction commits (``governance.metering.freshness``).
"""

from __future__ import annotations

from typing import Any

from django.db.models.signals import m2m_changed, post_delete, post_save
from django.dispatch import receiver

from governance.metering import rollups, snapshot
from governance.models import (
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
