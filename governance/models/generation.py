"""The configuration generation: one number that every configuration change moves."""

from __future__ import annotations

from django.db import models


class ConfigGeneration(models.Model):
    """A single row (id 1) whose ``value`` goes up after every committed configuration change.

    It is the freshness signal of last resort (``governance.metering.freshness``): processes that have no
    shared-memory or Redis copy of the generation to read — PostgreSQL without Redis, or while
    Redis is unreachable — compare it with the generation their cached configuration was taken at.
    """

    id = models.PositiveSmallIntegerField(primary_key=True, default=1, editable=False)
    value = models.BigIntegerField(default=0)

    class Meta:
        constraints = [models.CheckConstraint(condition=models.Q(id=1), name="config_generation_single_row")]

    def __str__(self) -> str:
        return f"configuration generation {self.value}"
