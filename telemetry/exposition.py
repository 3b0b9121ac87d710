"""``GET /metrics``: the Prometheus text format, every gunicorn worker's figures summed.

Open by default, like any Prometheus exporter; with ``METRICS_BEARER_TOKEN`` set it asks for
``Authorization: Bearer <token>`` (compared in constant time) and answers 401 otherwise.

A scrape drains the answering worker's pending observations first (``telemetry.metrics``), then
reads every worker's files (prometheus-client's ``MultiProcessCollector``; the process's own
registry without ``PROMETHEUS_MULTIPROC_DIR``), and adds what is computed now
(:class:`GovernanceCollector`): the counter backend configured, and each owner's budget and
rate-limit use as a ratio of its limit, read live like ``governance.metering.live`` shows it (the
hot counters where they exist, reservations in flight included). Those ratio families hold at
most ``METRICS_MAX_LABEL_VALUES`` series each, the owners nearest their limits first. A database
that does not answer leaves them out (``bifrost_governance_usage_ratio_available`` 0): the scrape
itself never fails.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Iterable, Iterator
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric

from bifrost_site.errors import error_response
from telemetry import metrics

logger = logging.getLogger("bifrost.metrics")

OWNER_LABELS = ["owner_type", "owner_id", "owner_name"]


def _authorized(request: HttpRequest) -> bool:
    token = settings.METRICS_BEARER_TOKEN
    if not token:
        return True
    given = request.META.get("HTTP_AUTHORIZATION", "")
    scheme, _, value = given.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(value.strip().encode(), token.encode())


@require_GET
def metrics_view(request: HttpRequest) -> HttpResponse:
    if not _authorized(request):
        return error_response(
            401, "A valid bearer token is required for /metrics", headers={"WWW-Authenticate": "Bearer"}
        )
    metrics.drain()
    try:
        metrics.sample()
    except Exception:
        logger.warning("metrics: settle queue not sampled", exc_info=True)
    registry = CollectorRegistry()
    if metrics.MULTIPROCESS:
        from prometheus_client import multiprocess

        multiprocess.MultiProcessCollector(registry)
    else:
        registry.register(_ProcessRegistry())
    registry.register(GovernanceCollector())
    return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)


class _ProcessRegistry:
    """The process's own registry (single-process mode), as one collector of the scrape's."""

    def collect(self) -> Iterable[Metric]:
        return REGISTRY.collect()


class GovernanceCollector:
    """What a scrape computes: the configured counter backend and the use ratios (module doc)."""

    def collect(self) -> Iterator[Metric]:
        configured = GaugeMetricFamily(
            "bifrost_governance_counter_backend_configured",
            "The primary counter backend of this configuration (redis, local or database).",
            labels=["backend"],
        )
        try:
            from governance.metering.counters import primary_counters

            configured.add_metric([primary_counters().name], 1)
        except Exception:
            logger.warning("metrics: counter backend unknown", exc_info=True)
        yield configured
        yield from _usage_ratios()


def _usage_ratios() -> Iterator[Metric]:
    available = GaugeMetricFamily(
        "bifrost_governance_usage_ratio_available",
        "1 when the budget and rate-limit use ratios could be read for this scrape, else 0.",
    )
    try:
        budgets, rate_limits = _budget_rows(), _rate_limit_rows()
    except Exception:
        logger.warning("metrics: budget and rate-limit use not readable", exc_info=True)
        available.add_metric([], 0)
        yield available
        return
    available.add_metric([], 1)
    yield available
    cap = metrics.max_label_values()
    budget_family = GaugeMetricFamily(
        "bifrost_governance_budget_usage_ratio",
        "A budget's use in its current window as a ratio of its limit (reservations in flight included).",
        labels=[*OWNER_LABELS, "reset_duration"],
    )
    for ratio, labels in sorted(budgets, key=lambda row: -row[0])[:cap]:
        budget_family.add_metric(labels, ratio)
    yield budget_family
    rate_family = GaugeMetricFamily(
        "bifrost_governance_rate_limit_usage_ratio",
        "A rate limit's use in its current window as a ratio of its limit, per kind (tokens, requests).",
        labels=[*OWNER_LABELS, "kind"],
    )
    for ratio, labels in sorted(rate_limits, key=lambda row: -row[0])[:cap]:
        rate_family.add_metric(labels, ratio)
    yield rate_family


_RELATED = (
    "virtual_key",
    "provider_config__virtual_key",
    "provider_config__provider",
    "team",
    "customer",
    "model_config__provider",
    "provider",
)


def _owner(row: Any) -> list[str]:
    """(owner type, id, name) of a budget's or a rate limit's owner."""
    if row.virtual_key_id:
        return ["virtual_key", str(row.virtual_key_id), row.virtual_key.name]
    if row.provider_config_id:
        config = row.provider_config
        return ["provider_config", str(config.pk), f"{config.virtual_key.name}/{config.provider.name}"]
    if row.team_id:
        return ["team", str(row.team_id), row.team.name]
    if row.customer_id:
        return ["customer", str(row.customer_id), row.customer.name]
    if row.model_config_id:
        return ["model", str(row.model_config_id), row.model_config.label]
    return ["provider", str(row.provider_id), row.provider.name if row.provider_id else ""]


def _ratio(usage: Any, limit: Any) -> float:
    return float(usage) / float(limit) if limit else 0.0


def _budget_rows() -> list[tuple[float, list[str]]]:
    from governance.metering import live
    from governance.models import Budget

    budgets = list(Budget.objects.select_related(*_RELATED))
    states = live.budget_states([b.pk for b in budgets]) if budgets else {}
    rows = []
    for budget in budgets:
        state = states.get(str(budget.pk))
        if state is not None:
            rows.append((_ratio(state.usage, state.limit), [*_owner(budget), budget.reset_duration]))
    return rows


def _rate_limit_rows() -> list[tuple[float, list[str]]]:
    from governance.metering import live
    from governance.models import RateLimit

    limits = list(RateLimit.objects.select_related(*_RELATED))
    states = live.rate_limit_usage([r.pk for r in limits]) if limits else {}
    rows = []
    for rate_limit in limits:
        state = states.get(str(rate_limit.pk))
        if state is None:
            continue
        owner = _owner(rate_limit)
        for kind, counter in (("tokens", state.tokens), ("requests", state.requests)):
            if counter is not None:
                rows.append((_ratio(counter.usage, counter.limit), [*owner, kind]))
    return rows
