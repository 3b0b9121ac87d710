"""Provider governance: the budgets and rate limit on all traffic to one provider account.

The rows are the provider's ``budgets`` and ``rate_limit`` (``Budget.provider``,
``RateLimit.provider``). :class:`ProviderGovernance` is a proxy of ``Provider`` that stands for
them as a resource: its manager lists only providers that have governance, and its model
permissions (``view/add/change/delete_providergovernance``) guard
``/api/governance/providers[/{name}]``, apart from the provider's own permissions.
"""

from __future__ import annotations

from typing import ClassVar

from django.db import models
from django.db.models import Exists, OuterRef

from governance.models.limits import Budget, RateLimit
from governance.models.providers import Provider


class GovernedProviderManager(models.Manager["ProviderGovernance"]):
    def get_queryset(self) -> models.QuerySet[ProviderGovernance]:
        return (
            super()
            .get_queryset()
            .filter(
                Exists(Budget.objects.filter(provider=OuterRef("pk")))
                | Exists(RateLimit.objects.filter(provider=OuterRef("pk")))
            )
        )


class ProviderGovernance(Provider):
    objects: ClassVar[GovernedProviderManager] = GovernedProviderManager()

    class Meta:
        proxy = True
        verbose_name = "provider governance"
        verbose_name_plural = "provider governance"
