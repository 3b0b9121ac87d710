"""The Prometheus metric families and the cheap calls that feed them.

**Families** (README, "Metrics"). Inference, named as Bifrost's telemetry plugin names them, each
labelled ``provider, model, method, virtual_key_id, virtual_key_name, team_id, team_name,
customer_id, customer_name`` (``method``: the request type, ``chat_completion`` ...; empty strings
for a request without a virtual key):

- ``bifrost_upstream_requests_total`` (+ ``status_class``: ``2xx`` ... ``5xx``): every attempt
  the gateway admitted and tried upstream, a fallback's included;
- ``bifrost_success_requests_total``, ``bifrost_error_requests_total`` (+ ``status_code``,
  ``error_type``); ``bifrost_upstream_latency_seconds`` (+ ``is_success``);
- ``bifrost_input_tokens_total``, ``bifrost_output_tokens_total``,
  ``bifrost_cache_read_input_tokens_total``, ``bifrost_cost_total`` (USD);
- ``bifrost_stream_first_token_latency_seconds`` (attempt start to the first chunk relayed) and
  ``bifrost_stream_inter_token_latency_seconds`` (one observation per stream: the mean gap
  between relayed chunks; ``proxy.bodies``);
- ``bifrost_unpriced_requests_total{provider, model}``: answers charged $0 for want of a price.

Governance: ``bifrost_governance_refusals_total{type, level, method, provider, model, <key,
team, customer>}`` (one per refusal; ``level`` the first refusing level in path order, or the
level a refusal without limits belongs to: :data:`TYPE_LEVELS`),
``bifrost_governance_limit_refusals_total{level, kind}`` (one per refusing limit),
``bifrost_governance_counter_backend{backend}`` (worker processes whose last admission was
answered by that backend), ``bifrost_governance_counter_unavailable_total{backend}``,
``bifrost_governance_counter_fallbacks_total{from_backend, to_backend}``, and, sampled every
:data:`FLUSH_SECONDS` in each worker, ``bifrost_governance_settle_queue_depth``,
``bifrost_governance_settle_oldest_age_seconds`` and ``bifrost_governance_usage_journaled``. The
configured backend and the budget and rate-limit use ratios are computed when scraped
(``telemetry.exposition``). MCP tool calls: ``bifrost_mcp_client_operation_duration_seconds``
(Bifrost's) and ``bifrost_mcp_cost_total``; their refusals are in the refusal families.

**Cardinality**: each of the labels provider, model, virtual key, team, customer, error type,
MCP client and MCP tool takes at most ``METRICS_MAX_LABEL_VALUES`` distinct values in a process
(the first ones seen); later values are folded into ``other`` (a key's, team's or customer's name
with its id) and counted in ``bifrost_metrics_label_values_folded_total{label}``.

**Cost on the request's path**: the calls below (:func:`attempt`, :func:`stream`, :func:`refusal`,
:func:`mcp_call`) only append a tuple of references to a buffer: under 1 µs there, 6-7 µs of
CPU a request with the drain's share (``bench/metrics_cost.py``; the same updates written per
request through prometheus-client cost 20-35 µs). A thread per process (started with the first
call, or by :func:`start`) drains it every :data:`FLUSH_SECONDS`: folds the labels, adds up the
batch, writes each touched series once through prometheus-client (label children bound once and
kept), samples the settle queue, and exports the spans when OpenTelemetry is on
(``telemetry.tracing``). A scrape drains the answering process first; another worker's figures are
at most :data:`FLUSH_SECONDS` old. At most :data:`MAX_PENDING` items wait; past that they are
dropped and counted (``bifrost_metrics_dropped_total``). ``flush`` (gunicorn's ``worker_exit``)
drains before a worker exits.
"""

from __future__ import annotations

import logging
import os
import threading
from bisect import bisect_left
from collections import defaultdict, deque
from typing import Any

import prometheus_client
from django.conf import settings
from prometheus_client import Counter, Gauge, Histogram

from telemetry import tracing

logger = logging.getLogger("bifrost.metrics")

prometheus_client.disable_created_metrics()  # no ``*_created`` series (multiprocess mode has none either)

FLUSH_SECONDS = 1.0
MAX_PENDING = 50_000
OTHER = "other"
MULTIPROCESS = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))

IDENTITY = ("virtual_key_id", "virtual_key_name", "team_id", "team_name", "customer_id", "customer_name")
INFERENCE = ("provider", "model", "method", *IDENTITY)
MCP = ("mcp_client", "mcp_tool_name", "mcp_method", "error_type", *IDENTITY)

# Bifrost's buckets (plugins/telemetry), so dashboards' ``le`` queries carry over.
UPSTREAM_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5) + (
    10,
    15,
    30,
    45,
    60,
    90,
    120,
    180,
    300,
    600,
    900,
)
FIRST_TOKEN_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300)
INTER_TOKEN_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
MCP_BUCKETS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 30, 60, 120, 300)

UPSTREAM_REQUESTS = Counter(
    "bifrost_upstream_requests_total",
    "Attempts the gateway sent (or tried to send) to upstream providers, fallbacks included.",
    (*INFERENCE, "status_class"),
)
SUCCESS_REQUESTS = Counter(
    "bifrost_success_requests_total", "Attempts an upstream provider answered successfully.", INFERENCE
)
ERROR_REQUESTS = Counter(
    "bifrost_error_requests_total",
    "Attempts that failed (upstream error, timeout, client gone), by status code and error type.",
    (*INFERENCE, "status_code", "error_type"),
)
UPSTREAM_LATENCY = Histogram(
    "bifrost_upstream_latency_seconds",
    "Time from the start of an attempt to its end (the last byte relayed, or its failure).",
    (*INFERENCE, "is_success"),
    buckets=UPSTREAM_BUCKETS,
)
INPUT_TOKENS = Counter("bifrost_input_tokens_total", "Input (prompt) tokens of answered attempts.", INFERENCE)
OUTPUT_TOKENS = Counter("bifrost_output_tokens_total", "Output (completion) tokens of answered attempts.", INFERENCE)
CACHE_READ_TOKENS = Counter(
    "bifrost_cache_read_input_tokens_total", "Input tokens read from the provider's prompt cache.", INFERENCE
)
COST = Counter("bifrost_cost_total", "Cost in USD charged for answered attempts.", INFERENCE)
FIRST_TOKEN = Histogram(
    "bifrost_stream_first_token_latency_seconds",
    "Time from the start of a streamed attempt to its first chunk relayed to the client.",
    INFERENCE,
    buckets=FIRST_TOKEN_BUCKETS,
)
INTER_TOKEN = Histogram(
    "bifrost_stream_inter_token_latency_seconds",
    "Mean gap between the chunks of one stream relayed to the client (one observation per stream).",
    INFERENCE,
    buckets=INTER_TOKEN_BUCKETS,
)
UNPRICED = Counter(
    "bifrost_unpriced_requests_total",
    "Answered attempts for a model without a price (charged $0).",
    ("provider", "model"),
)
REFUSALS = Counter(
    "bifrost_governance_refusals_total",
    "Requests (or fallback attempts) governance refused, by type and the first refusing level.",
    ("type", "level", "method", "provider", "model", *IDENTITY),
)
LIMIT_REFUSALS = Counter(
    "bifrost_governance_limit_refusals_total",
    "Budgets and rate limits that refused a request, one per refusing limit, by level and kind.",
    ("level", "kind"),
)
COUNTER_BACKEND = Gauge(
    "bifrost_governance_counter_backend",
    "Worker processes whose last admission was checked by this counter backend (redis, local, database).",
    ("backend",),
    multiprocess_mode="livesum",
)
COUNTER_UNAVAILABLE = Counter(
    "bifrost_governance_counter_unavailable_total",
    "Admissions that found a counter backend unreachable (a fallback or a 503 followed).",
    ("backend",),
)
COUNTER_FALLBACKS = Counter(
    "bifrost_governance_counter_fallbacks_total",
    "Admissions checked by the database counters because the hot backend was unreachable.",
    ("from_backend", "to_backend"),
)
SETTLE_QUEUE = Gauge(
    "bifrost_governance_settle_queue_depth",
    "Usage rows and settlements held in memory, not yet written to the database.",
    multiprocess_mode="livesum",
)
SETTLE_AGE = Gauge(
    "bifrost_governance_settle_oldest_age_seconds",
    "Age of the oldest usage row or settlement not yet written to the database (0 when none).",
    multiprocess_mode="livemax",
)
JOURNALED = Gauge(
    "bifrost_governance_usage_journaled",
    "Usage entries the live workers wrote to their local journal since they started (database away).",
    multiprocess_mode="livesum",
)
MCP_DURATION = Histogram(
    "bifrost_mcp_client_operation_duration_seconds",
    "Duration of an MCP tool call made by the gateway (as the MCP client).",
    MCP,
    buckets=MCP_BUCKETS,
)
MCP_COST = Counter("bifrost_mcp_cost_total", "Cost in USD charged for MCP tool calls.", MCP)
FOLDED = Counter(
    "bifrost_metrics_label_values_folded_total",
    "Observations whose label value was folded into 'other' (METRICS_MAX_LABEL_VALUES reached).",
    ("label",),
)
DROPPED = Counter("bifrost_metrics_dropped_total", "Observations dropped because the metrics buffer was full.")

# The level a refusal without limits belongs to (a limit's refusal names its own levels).
TYPE_LEVELS = {
    "virtual_key_required": "virtual_key",
    "virtual_key_not_found": "virtual_key",
    "virtual_key_blocked": "virtual_key",
    "provider_blocked": "virtual_key",
    "model_blocked": "provider_config",
    "key_blocked": "provider_config",
    "model_unpriced": "model",
    "governance_unavailable": "gateway",
}
STATUS_CLASSES = {1: "1xx", 2: "2xx", 3: "3xx", 4: "4xx", 5: "5xx"}
MCP_ERRORS = {504: "timeout", 502: "upstream_error"}

_ATTEMPT, _STREAM, _REFUSAL, _MCP = range(4)
_pending: deque[tuple[Any, ...]] = deque()
_dropped = 0


# --- the calls on the request's path: append and return ------------------------------------------


def attempt(fields: dict[str, Any], resolved: Any, cost: Any, started: float) -> None:
    """One finished inference attempt: ``fields`` as ``proxy.accounting.finish`` built them,
    ``resolved`` its ``proxy.routing.Resolved``, ``cost`` its charge, ``started`` its monotonic start."""
    _put((_ATTEMPT, fields, resolved, cost, started, tracing.clock() if tracing.ENABLED else None))


def stream(resolved: Any, first_chunk: float, mean_gap: float | None) -> None:
    """A stream's timings in seconds: first chunk relayed after the attempt started, mean gap
    between chunks (None for a stream of one chunk)."""
    _put((_STREAM, resolved, first_chunk, mean_gap))


def refusal(
    type_: str | None,
    refused_by: tuple[str, ...],
    vk: Any,
    *,
    method: str,
    provider: str = "",
    model: str = "",
) -> None:
    """A refusal by governance (``type_``, the ``level:kind:id`` words of the limits that refused)."""
    _put((_REFUSAL, type_ or "", refused_by, vk, method, provider, model))


def mcp_call(client: str, tool: str, vk: Any, status_code: int, latency_ms: int, cost: Any) -> None:
    """A finished MCP tool call (``mcp_gateway.metering.finish``)."""
    _put((_MCP, client, tool, vk, status_code, latency_ms, cost, tracing.clock() if tracing.ENABLED else None))


def _put(item: tuple[Any, ...]) -> None:
    global _dropped
    if len(_pending) < MAX_PENDING:
        _pending.append(item)
        if not _started:
            start()
    else:
        _dropped += 1  # approximate under races; exported as bifrost_metrics_dropped_total


_backend = ""


def counter_backend(name: str, *, fallback_from: str = "") -> None:
    """The counter backend that answered an admission (``enforcement.admit``); ``fallback_from``:
    the backend that was unreachable before it. Writes only when the backend changes."""
    global _backend
    if fallback_from:
        COUNTER_FALLBACKS.labels(fallback_from, name).inc()
    if name != _backend:
        with _lock:
            if _backend:
                COUNTER_BACKEND.labels(_backend).set(0)
            COUNTER_BACKEND.labels(name).set(1)
            _backend = name


def counter_unavailable(name: str) -> None:
    """A counter backend could not be reached for an admission."""
    COUNTER_UNAVAILABLE.labels(name).inc()


# --- the drain thread ----------------------------------------------------------------------------

_lock = threading.Lock()  # one drain at a time, and the caches below
_started = False
_stop = threading.Event()


def start() -> None:
    """Start this process's drain thread (once; again in a forked child)."""
    global _started
    with _start_lock:
        if _started:
            return
        _started = True
        threading.Thread(target=_run, name="bifrost-metrics", daemon=True).start()


_start_lock = threading.Lock()


def _run() -> None:
    while not _stop.wait(FLUSH_SECONDS):
        try:
            drain()
            sample()
        except Exception:  # never let the thread die: the next round tries again
            logger.exception("metrics flush failed")


def flush() -> None:
    """Drain now, and export the spans waiting (gunicorn's ``worker_exit``)."""
    try:
        drain()
        sample()
    except Exception:
        logger.exception("metrics flush failed")
    tracing.shutdown()


def _after_fork() -> None:
    """A forked child starts with nothing of its parent's: no thread, no pending items."""
    global _started, _lock, _start_lock, _dropped, _backend
    _started, _dropped, _backend = False, 0, ""
    _lock, _start_lock = threading.Lock(), threading.Lock()
    _pending.clear()


os.register_at_fork(after_in_child=_after_fork)


class _Batch:
    """What one drain adds up before writing: counter sums and histogram bucket counts."""

    def __init__(self) -> None:
        self.sums: defaultdict[tuple[Any, tuple[str, ...]], float] = defaultdict(float)
        self.histograms: dict[tuple[Histogram, tuple[str, ...]], list[Any]] = {}
        self.inference: dict[_Series, _Sums] = {}  # the attempts' and streams' figures, per label set

    def sums_of(self, series: _Series) -> _Sums:
        found = self.inference.get(series)
        if found is None:
            found = self.inference[series] = _Sums()
        return found

    def add(self, metric: Counter, labels: tuple[str, ...], amount: float) -> None:
        self.sums[(metric, labels)] += amount

    def observe(self, metric: Histogram, labels: tuple[str, ...], value: float) -> None:
        key = (metric, labels)
        entry = self.histograms.get(key)
        bounds = _BOUNDS[metric]
        if entry is None:
            entry = self.histograms[key] = [0.0, [0] * len(bounds)]
        entry[0] += value
        entry[1][bisect_left(bounds, value)] += 1

    def write(self) -> None:
        for series, sums in self.inference.items():
            sums.write(series, self)
        for (metric, labels), amount in self.sums.items():
            _child(metric, labels).inc(amount)
        for (histogram, labels), (total, counts) in self.histograms.items():
            _write_histogram(_child(histogram, labels), total, counts)


def _write_histogram(child: Any, total: float, counts: list[int]) -> None:
    # The child's own values, one write per touched bucket (``Histogram.observe`` would write the
    # sum and a bucket per observation); prometheus-client is pinned in requirements.txt.
    child._sum.inc(total)
    for index, count in enumerate(counts):
        if count:
            child._buckets[index].inc(count)


class _Series:
    """One inference label set (provider, model, method, key) and its children, bound once."""

    __slots__ = ("vk", "labels", "children")

    def __init__(self, vk: Any, labels: tuple[str, ...]) -> None:
        self.vk, self.labels = vk, labels  # the key object is held: its id() names it in the cache
        self.children: dict[tuple[Any, tuple[str, ...]], Any] = {}

    def child(self, metric: Any, *extra: str) -> Any:
        key = (metric, extra)
        found = self.children.get(key)
        if found is None:
            found = self.children[key] = metric.labels(*self.labels, *extra)
        return found


def _histogram(bounds: tuple[float, ...]) -> list[Any]:
    return [0.0, [0] * len(bounds)]


class _Sums:
    """One drain's figures of one :class:`_Series`, added up in plain attributes."""

    __slots__ = ("outcomes", "ok", "failed", "input", "output", "cached", "cost", "unpriced", "first", "inter")

    def __init__(self) -> None:
        self.outcomes: dict[tuple[int, str], int] = {}  # (status code, error type) -> attempts
        self.ok, self.failed = _histogram(_UPSTREAM_BOUNDS), _histogram(_UPSTREAM_BOUNDS)
        self.input = self.output = self.cached = self.unpriced = 0
        self.cost = 0.0
        self.first: list[Any] | None = None
        self.inter: list[Any] | None = None

    def write(self, series: _Series, batch: _Batch) -> None:
        classes: defaultdict[str, int] = defaultdict(int)
        success = 0
        for (status, error_type), count in self.outcomes.items():
            classes[STATUS_CLASSES.get(status // 100, OTHER)] += count
            if status < 400:
                success += count
            else:
                series.child(ERROR_REQUESTS, str(status), fold("error_type", error_type)).inc(count)
        for status_class, count in classes.items():
            series.child(UPSTREAM_REQUESTS, status_class).inc(count)
        if success:
            series.child(SUCCESS_REQUESTS).inc(success)
        for histogram, success_label in ((self.ok, "true"), (self.failed, "false")):
            if any(histogram[1]):
                _write_histogram(series.child(UPSTREAM_LATENCY, success_label), histogram[0], histogram[1])
        for metric, amount in (
            (INPUT_TOKENS, self.input),
            (OUTPUT_TOKENS, self.output),
            (CACHE_READ_TOKENS, self.cached),
            (COST, self.cost),
        ):
            if amount:
                series.child(metric).inc(amount)
        if self.unpriced:
            batch.add(UNPRICED, series.labels[:2], self.unpriced)
        if self.first is not None:
            _write_histogram(series.child(FIRST_TOKEN), self.first[0], self.first[1])
        if self.inter is not None:
            _write_histogram(series.child(INTER_TOKEN), self.inter[0], self.inter[1])


_BOUNDS = {
    histogram: (*buckets, float("inf"))
    for histogram, buckets in (
        (UPSTREAM_LATENCY, UPSTREAM_BUCKETS),
        (FIRST_TOKEN, FIRST_TOKEN_BUCKETS),
        (INTER_TOKEN, INTER_TOKEN_BUCKETS),
        (MCP_DURATION, MCP_BUCKETS),
    )
}
_UPSTREAM_BOUNDS = _BOUNDS[UPSTREAM_LATENCY]
_FIRST_BOUNDS = _BOUNDS[FIRST_TOKEN]
_INTER_BOUNDS = _BOUNDS[INTER_TOKEN]
_children: dict[tuple[Any, tuple[str, ...]], Any] = {}
CACHE_LIMIT = 100_000


def _child(metric: Any, labels: tuple[str, ...]) -> Any:
    """The metric's child for ``labels``, bound once (``labels()`` costs a few µs a call)."""
    key = (metric, labels)
    child = _children.get(key)
    if child is None:
        if len(_children) >= CACHE_LIMIT:
            _children.clear()
        child = _children[key] = metric.labels(*labels) if labels else metric
    return child


def drain() -> None:
    """Turn what the request threads appended into metric writes (and spans): see the module doc."""
    global _dropped
    with _lock:
        items = []
        pop = _pending.popleft
        try:
            while True:
                items.append(pop())
        except IndexError:
            pass
        dropped, _dropped = _dropped, 0
        if not items and not dropped:
            return
        batch = _Batch()
        for item in items:
            try:
                _HANDLERS[item[0]](batch, item)
            except Exception:  # one odd item must not lose the batch
                logger.exception("metrics item skipped", extra={"kind": item[0]})
        for label, count in _folded.items():
            batch.add(FOLDED, (label,), count)
        _folded.clear()
        if dropped:
            batch.add(DROPPED, (), dropped)
        batch.write()
    if tracing.ENABLED:
        for item in items:
            if item[0] == _ATTEMPT:
                tracing.attempt_span(*item[1:])
            elif item[0] == _MCP:
                tracing.tool_span(*item[1:])


def sample() -> None:
    """This process's settle queue, as gauges (the drain thread calls it every round)."""
    from governance.metering import writer

    held, journaled = writer.backlog()
    SETTLE_QUEUE.set(held)
    SETTLE_AGE.set(writer.oldest_pending_seconds())
    JOURNALED.set(journaled)


# --- labels --------------------------------------------------------------------------------------

_seen: defaultdict[str, set[str]] = defaultdict(set)
_folded: defaultdict[str, int] = defaultdict(int)
_identities: dict[tuple[Any, ...], tuple[str, ...]] = {}
_cap: list[int] = []
NO_IDENTITY = ("",) * len(IDENTITY)


def max_label_values() -> int:
    if not _cap:
        _cap.append(settings.METRICS_MAX_LABEL_VALUES)
    return _cap[0]


def fold(label: str, value: Any) -> str:
    """``value`` as a label value, or ``other`` once ``label`` has its share of values (module doc)."""
    if value is None or value == "":
        return ""
    value = str(value)
    seen = _seen[label]
    if value in seen:
        return value
    if len(seen) < max_label_values():
        seen.add(value)
        return value
    _folded[label] += 1
    return OTHER


def identity(vk: Any) -> tuple[str, ...]:
    """The key's, team's and customer's id and name labels (a folded id takes its name along)."""
    if vk is None:
        return NO_IDENTITY
    key = (vk.id, vk.name, vk.team_id, vk.team_name, vk.customer_id, vk.customer_name)
    found = _identities.get(key)
    if found is None:
        if len(_identities) >= CACHE_LIMIT:
            _identities.clear()
        parts: list[str] = []
        for label, ident, name in (
            ("virtual_key", vk.id, vk.name),
            ("team", vk.team_id, vk.team_name),
            ("customer", vk.customer_id, vk.customer_name),
        ):
            folded = fold(label, ident)
            parts += [folded, OTHER if folded == OTHER else (name or "") if folded else ""]
        found = _identities[key] = tuple(parts)
    return found


def _labels(provider: str, model: str, method: str, vk: Any) -> tuple[str, ...]:
    return (fold("provider", provider), fold("model", model), method or "", *identity(vk))


_series_cache: dict[tuple[str, str, str, int], _Series] = {}
SERIES_LIMIT = 10_000


def _series(provider: str, model: str, method: str, vk: Any) -> _Series:
    """The label set of an attempt, cached by the key object itself (snapshots are immutable)."""
    key = (provider, model, method, id(vk))
    found = _series_cache.get(key)
    if found is None or found.vk is not vk:
        if len(_series_cache) >= SERIES_LIMIT:
            _series_cache.clear()
        found = _series_cache[key] = _Series(vk, _labels(provider, model, method, vk))
    return found


def reset() -> None:
    """Forget the labels seen and the cap read (tests that change ``METRICS_MAX_LABEL_VALUES``)."""
    with _lock:
        _seen.clear()
        _folded.clear()
        _identities.clear()
        _series_cache.clear()
        _cap.clear()


# --- the items -----------------------------------------------------------------------------------


def _attempt(batch: _Batch, item: tuple[Any, ...]) -> None:
    _, fields, resolved, cost, _started_at, _clock = item
    sums = batch.sums_of(_series(fields["provider"], fields["model"], fields["request_type"], resolved.vk))
    status = fields["status_code"]
    latency = fields["latency_ms"] / 1000
    if status < 400:
        key, histogram = (status, ""), sums.ok
    else:
        key = (status, fields.get("error_type") or ("client_closed" if status == 499 else "upstream_error"))
        histogram = sums.failed
    sums.outcomes[key] = sums.outcomes.get(key, 0) + 1
    histogram[0] += latency
    histogram[1][bisect_left(_UPSTREAM_BOUNDS, latency)] += 1
    sums.input += fields["prompt_tokens"]
    sums.output += fields["completion_tokens"]
    sums.cached += fields.get("cached_tokens") or 0
    if cost:
        sums.cost += float(cost)
    if not fields.get("priced", True):
        sums.unpriced += 1


def _stream(batch: _Batch, item: tuple[Any, ...]) -> None:
    _, resolved, first_chunk, mean_gap = item
    sums = batch.sums_of(_series(resolved.provider.name, resolved.model, resolved.route.request_type, resolved.vk))
    if sums.first is None:
        sums.first = _histogram(_FIRST_BOUNDS)
    first_chunk = max(0.0, first_chunk)
    sums.first[0] += first_chunk
    sums.first[1][bisect_left(_FIRST_BOUNDS, first_chunk)] += 1
    if mean_gap is not None:
        if sums.inter is None:
            sums.inter = _histogram(_INTER_BOUNDS)
        mean_gap = max(0.0, mean_gap)
        sums.inter[0] += mean_gap
        sums.inter[1][bisect_left(_INTER_BOUNDS, mean_gap)] += 1


def _refusal(batch: _Batch, item: tuple[Any, ...]) -> None:
    _, type_, refused_by, vk, method, provider, model = item
    levels = [word.split(":", 2) for word in refused_by]
    level = levels[0][0] if levels else TYPE_LEVELS.get(type_, "gateway")
    labels = (type_, level, method, fold("provider", provider), fold("model", model), *identity(vk))
    batch.add(REFUSALS, labels, 1)
    for parts in levels:
        batch.add(LIMIT_REFUSALS, (parts[0], parts[1] if len(parts) > 1 else ""), 1)


def _mcp(batch: _Batch, item: tuple[Any, ...]) -> None:
    _, client, tool, vk, status, latency_ms, cost, _clock = item
    error = "" if status < 400 else MCP_ERRORS.get(status, "error")
    labels = (fold("mcp_client", client), fold("mcp_tool", tool), "tools/call", error, *identity(vk))
    batch.observe(MCP_DURATION, labels, latency_ms / 1000)
    if cost:
        batch.add(MCP_COST, labels, float(cost))


_HANDLERS = {_ATTEMPT: _attempt, _STREAM: _stream, _REFUSAL: _refusal, _MCP: _mcp}
