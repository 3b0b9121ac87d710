"""The seam between the proxy and metering: admit an attempt before its upstream call, account for it after.

- ``begin(resolved)``, after routing and key choice. The path is the VK's levels (provider
  config -> VK -> team -> customer, ``VirtualKeySnapshot.limits_for``) followed by the levels on
  all traffic, with or without a VK: the provider's governance, the model's config for this
  provider, then its config for every provider (``ProviderSnapshot.shared_limits``, matched on
  ``resolved.model``, the model as the provider is asked for it). With no budget or rate limit on
  the path it only confirms the configuration (``freshness.confirm``). Otherwise it reserves the worst case
  through ``enforcement.admit``: one request, the prompt estimate plus the output cap as tokens, and
  those at the model's price as cost. The output cap is the request's ``max_tokens`` /
  ``max_completion_tokens`` / ``max_output_tokens`` (Gemini: ``generationConfig.maxOutputTokens``;
  or ``GOVERNANCE_DEFAULT_MAX_TOKENS``) times ``n`` or ``best_of`` (``candidateCount``). A
  translated request is reserved for on the client's body, in its format; a missing cap goes
  upstream as that same default (``proxy.translation``). The price is read once here
  (``Ticket.price``): the catalog's, patched by the pricing override that applies to this VK,
  provider key and request type (``governance.price_overrides``); its ``cost_per_request`` is part
  of the worst case. An unpriced model on a path with a budget is refused (400
  ``model_unpriced``) unless ``GOVERNANCE_UNPRICED_MODELS=allow``. Returns a :class:`Ticket` or a
  ``Rejection`` (the handler skips that candidate like a failed one).
- ``calling(ticket)``, just before the upstream call, marks the lease: a worker killed from then on
  is charged its reservation, one killed before is released.
- ``finish(...)`` exactly once per ticket, when the attempt has ended (answer handed to the server,
  stream done, upstream failure, client gone: 499). A success, a cut-off stream or a partly
  delivered answer is charged its actual usage; a failed attempt costs nothing and counts one
  request only if the upstream was reached (``upstream_called``). A governed success settles
  through ``writer.settle``, a failed attempt at once (``enforcement.settle_many``) so that its
  unused request slot is free for the fallback; any other attempt only needs its usage row
  (``writer.record``). The price was read in ``begin``, so finishing needs no database.
  A failed attempt's row says why (``error_type``, ``error_message``).
- ``refused(...)`` writes the ledger entry of a request governance refused (an unknown or blocked
  key, an allow-list, a limit): status, type, message and the limits that refused, so that "why is
  this key failing?" has an answer. Nothing is charged. Refusals without a known key (a missing
  or unknown VK) are recorded at most ``LEDGER_ANONYMOUS_REFUSALS_PER_SECOND`` a second per
  process: a stream of them is an attack or a misconfigured client, and must not grow the ledger
  without bound; every refusal is still counted in the metrics.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import InterfaceError, OperationalError
from django.utils import timezone

from governance.metering import enforcement, freshness, snapshot, writer
from governance.metering.counters import leases
from governance.metering.counters.base import Admission, Rejection
from governance.metering.ledger import LedgerEntry
from governance.metering.snapshot import PriceSnapshot
from governance.models.usage import new_request_id
from governance.pricing import cost_of, cost_parts
from proxy.errors import ProxyError
from proxy.routing import Resolved, Route
from proxy.usage import Usage, estimate_prompt_tokens
from telemetry import metrics

CLIENT_CLOSED = 499
MAX_ERROR_MESSAGE = 1000  # characters of an error message kept on its ledger row
OUTPUT_CAPS = ("max_tokens", "max_completion_tokens", "max_output_tokens")


@dataclass(slots=True)
class Ticket:
    resolved: Resolved
    # Read once, before the upstream call: finishing needs no database (the answer has been given
    # by then, and a database that went away meanwhile must not cost the request its usage row).
    price: PriceSnapshot | None = None
    request_id: uuid.UUID = field(default_factory=new_request_id)
    started: float = field(default_factory=time.monotonic)
    finished: bool = False
    admission: Admission | None = None
    attempt: int = 0  # which candidate of the request (``UsageRecord.fallback_index``)
    # The answer as the client got it (at most BIFROST_CONTENT_MAX_BYTES), when its content is logged.
    response_capture: bytes | None = None


def output_cap(body: dict[str, Any], route: Route) -> int:
    """The most output tokens the request may produce (what the budget reserves for): the
    request's cap (or ``GOVERNANCE_DEFAULT_MAX_TOKENS``) times the number of answers it asks for
    (``n``, or ``best_of`` for completions, which the provider generates and bills in full)."""
    if not route.produces_output:
        return 0
    default = settings.GOVERNANCE_DEFAULT_MAX_TOKENS
    if route.api_format == "gemini":
        config: dict[str, Any] = body.get("generationConfig") or {}
        cap: int = config["maxOutputTokens"] if is_positive_int(config.get("maxOutputTokens")) else default
        count: int = config["candidateCount"] if is_positive_int(config.get("candidateCount")) else 1
        return cap * count
    cap = next((body[name] for name in OUTPUT_CAPS if is_positive_int(body.get(name))), default)
    choices = max((body[name] for name in ("n", "best_of") if is_positive_int(body.get(name))), default=1)
    return cap * choices


def is_positive_int(value: Any) -> bool:
    """A JSON integer above 0 (``true`` is not one, though Python counts it as an int)."""
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def unpriced_rejection(resolved: Resolved) -> Rejection:
    model, provider = resolved.model, resolved.provider.name
    return Rejection(
        status=400,
        type="model_unpriced",
        message=(
            f"Model '{model}' on provider '{provider}' has no price, and this request's path has a budget, "
            f"so its cost cannot be counted: add a price for '{model}' (admin: Model prices, a "
            "pricing override, or `manage.py seed_prices --update` for the shipped catalog), or set "
            "GOVERNANCE_UNPRICED_MODELS=allow to let unpriced models through at $0"
        ),
    )


def begin(resolved: Resolved, attempt: int = 0) -> Ticket | Rejection:
    """Admit one attempt (see the module doc); raises ``freshness.StaleConfig`` when the
    configuration it was decided on changed meanwhile (nothing stays reserved then)."""
    vk = resolved.vk
    price = snapshot.price(
        resolved.provider,
        resolved.model,
        request_type=resolved.route.request_type,
        virtual_key_id=vk.id if vk is not None else None,
        provider_key_id=resolved.key.id,
    )
    ticket = Ticket(resolved, price, attempt=attempt)
    shared = resolved.provider.shared_limits(resolved.model)  # one dict lookup
    if resolved.vk is None:
        if shared is None:
            freshness.confirm()
            return ticket
        budgets, rate_limits = shared
    else:
        budgets, rate_limits = resolved.vk.limits_for(resolved.provider.name)
        if shared is not None:
            budgets, rate_limits = budgets + shared[0], rate_limits + shared[1]
    if not budgets and not rate_limits:
        freshness.confirm()
        return ticket
    if budgets and ticket.price is None and settings.GOVERNANCE_UNPRICED_MODELS == "block":
        return unpriced_rejection(resolved)
    prompt = estimate_prompt_tokens(resolved.body)
    output = output_cap(resolved.body, resolved.route)
    estimated_cost, _ = cost_of(ticket.price, prompt_tokens=prompt, completion_tokens=output)
    # What the UsageRecord says should the lease reaper have to settle this attempt (its worker
    # died before finishing it): kept with the reservation's lease.
    leased = LedgerEntry(
        **_who(resolved),
        status_code=0,
        streamed=resolved.stream,
        priced=ticket.price is not None,
        price_source=ticket.price.source if ticket.price is not None else None,
        http_request_id=resolved.request.request_id,
        fallback_index=attempt,
    )
    result = enforcement.admit(
        request_id=ticket.request_id,
        budgets=budgets,
        rate_limits=rate_limits,
        estimated_cost=estimated_cost,
        estimated_tokens=prompt + output,
        entry=leased,
    )
    if not isinstance(result, Admission):
        return result
    try:
        freshness.confirm()  # no-op when the admit's own round trip checked it
    except freshness.StaleConfig:
        enforcement.release(result)
        raise
    ticket.admission = result
    return ticket


def _who(resolved: Resolved) -> dict[str, Any]:
    """The ledger fields that say whose request this was and where it went."""
    vk = resolved.vk
    return {
        "provider": resolved.provider.name,
        "model": resolved.model,
        "virtual_key_id": vk.id if vk else None,
        "team_id": vk.team_id if vk else None,
        "customer_id": vk.customer_id if vk else None,
        "provider_key_id": resolved.key.id,
        "request_type": resolved.route.request_type,
    }


def calling(ticket: Ticket) -> None:
    """The upstream call is about to start: marked on the admission's lease, so that a worker
    killed from now on has its reservation charged, and one killed before released."""
    if ticket.admission is not None:
        leases.mark_called(ticket.admission.lease)


def finish(
    ticket: Ticket,
    usage: Usage,
    status_code: int,
    latency_ms: int,
    *,
    streamed: bool,
    upstream_called: bool = True,
    delivered: bool = False,
    error: ProxyError | None = None,
) -> None:
    """``delivered``: part of the answer reached the client before the attempt failed (a stream
    the upstream broke off), so it is charged like a success, at ``usage``. ``error``: why the
    attempt failed, for its row."""
    if ticket.finished:
        return
    ticket.finished = True
    resolved = ticket.resolved
    succeeded = status_code < 400 or status_code == CLIENT_CLOSED or delivered
    price = ticket.price
    source = price.source if price is not None else None
    # Failed attempts cost nothing; a cut-off stream is charged for what was produced.
    if succeeded:
        # A cost the upstream reports wins over the catalog, not over a pricing override.
        upstream_cost = None if price is not None and price.is_override else usage.upstream_cost
        cost, priced = cost_of(
            price,
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            cached_tokens=usage.cached_tokens,
            upstream_cost=upstream_cost,
        )
        parts: tuple[Decimal, Decimal] | tuple[None, None] = (None, None)
        if upstream_cost is not None:
            source = "upstream"
        elif price is not None:
            parts = cost_parts(
                price,
                prompt_tokens=usage.prompt_tokens,
                completion_tokens=usage.completion_tokens,
                cached_tokens=usage.cached_tokens,
            )
        prompt, completion, cached = usage.prompt_tokens, usage.completion_tokens, usage.cached_tokens
        total = usage.total_tokens or prompt + completion
        reasoning = usage.reasoning_tokens
    else:
        cost, priced, prompt, completion, cached, total, reasoning = Decimal("0"), True, 0, 0, 0, 0, 0
        parts = (None, None)
    # A plain dict first: ``dataclasses.asdict`` costs ~0.2 ms a call on this hot path.
    fields = {
        **_who(resolved),
        "status_code": status_code,
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "cached_tokens": cached,
        "reasoning_tokens": reasoning,
        "latency_ms": max(0, latency_ms),
        "streamed": streamed,
        "priced": priced,
        "price_source": source,
        "estimated": usage.estimated and succeeded,
        "created_at": timezone.now(),
        "http_request_id": resolved.request.request_id,
        "fallback_index": ticket.attempt,
        "error_type": _error_type(error) if error is not None else "",
        "error_message": error.message[:MAX_ERROR_MESSAGE] if error is not None else "",
        "input_cost": parts[0],
        "output_cost": parts[1],
    }
    metrics.attempt(fields, resolved, cost, ticket.started)  # appends only (telemetry.metrics)
    if resolved.request.log_content:
        fields["content"] = content_of(resolved.request.raw, ticket.response_capture or b"")
    if ticket.admission is not None:
        settlement = enforcement.Settlement(ticket.admission, cost, total, upstream_called, LedgerEntry(**fields))
        if succeeded:
            writer.settle(settlement)
        else:
            # A failed attempt is settled before the proxy answers or tries a fallback, so the
            # request slot it does not use (upstream never reached) is free for the next request.
            try:
                enforcement.settle_many([settlement])
            except (OperationalError, InterfaceError):
                # Database unreachable: the settler retries it; the slot stays taken until then.
                writer.settle(settlement)
        return
    writer.record(
        {
            **fields,
            "request_id": ticket.request_id,
            "cost": cost,
            "total_tokens": total,
            "upstream_reached": upstream_called,
        }
    )


def content_of(request: bytes, response: bytes) -> tuple[str, str, bool]:
    """The bodies kept for content search (``governance.models.content``): each cut at
    ``BIFROST_CONTENT_MAX_BYTES`` (never inside a UTF-8 character), and whether one was cut."""
    cap = settings.CONTENT_MAX_BYTES
    truncated = len(request) > cap or len(response) > cap
    return (
        request[:cap].decode("utf-8", "ignore"),
        response[:cap].decode("utf-8", "ignore"),
        truncated,
    )


def _error_type(error: ProxyError) -> str:
    """An error's type for its row: the gateway's own, else ``upstream:`` and the upstream's
    (its own namespace: an upstream's ``rate_limited`` is not a governance refusal), else
    ``upstream_error``."""
    if error.type_:
        return error.type_[:64]
    upstream_type = error.error_fields.get("type")
    return f"upstream:{upstream_type}"[:64] if isinstance(upstream_type, str) and upstream_type else "upstream_error"


class _Allowance:
    """At most ``per_second`` events a second in this process (a token bucket of one second)."""

    def __init__(self) -> None:
        self.second = 0
        self.used = 0

    def take(self, per_second: int) -> bool:
        now = int(time.monotonic())
        if now != self.second:
            self.second, self.used = now, 0
        self.used += 1
        return self.used <= per_second


_anonymous = _Allowance()


def refused(
    exc: ProxyError,
    *,
    request_id: str,
    route: Route,
    vk: Any = None,
    provider: str = "",
    model: str = "",
    provider_key_id: Any = None,
    attempt: int = 0,
    streamed: bool = False,
    latency_ms: int = 0,
) -> None:
    """The ledger entry of a request (or one attempt) governance refused; see the module doc."""
    if exc.recorded:
        return
    exc.recorded = True
    metrics.refusal(exc.type_, exc.refused_by, vk, method=route.request_type, provider=provider, model=model)
    if vk is None and not _anonymous.take(settings.LEDGER_ANONYMOUS_REFUSALS_PER_SECOND):
        return
    writer.record(
        {
            "provider": provider[:63],
            "model": model[:255],
            "virtual_key_id": vk.id if vk is not None else None,
            "team_id": vk.team_id if vk is not None else None,
            "customer_id": vk.customer_id if vk is not None else None,
            "provider_key_id": provider_key_id,
            "request_type": route.request_type,
            "status_code": exc.status,
            "latency_ms": max(0, latency_ms),
            "streamed": streamed,
            "upstream_reached": False,
            "created_at": timezone.now(),
            "http_request_id": request_id,
            "fallback_index": attempt,
            "error_type": exc.type_ or "",
            "error_message": exc.message[:MAX_ERROR_MESSAGE],
            "refused_by": " ".join(exc.refused_by)[:500],
        }
    )
