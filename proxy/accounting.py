"""The accounting seam between the proxy and governance counters.

The proxy calls, for every upstream attempt:

1. ``begin(resolved)`` after routing and key choice, before the upstream call. It returns a
   :class:`Ticket` (admitted) or a :class:`Rejection` (answered to the client as is: status,
   ``type``, message, headers such as ``Retry-After``). A rejected candidate is skipped like a
   failed one: the next candidate is tried and, when all fail, the primary's error is returned.
   This is where budgets and rate limits check and reserve.
2. ``finish(ticket, usage, status_code, latency_ms, streamed)`` exactly once per admitted
   attempt, when its answer has ended: JSON body handed to the server, stream done, upstream
   failure, or client disconnected mid-stream (``status_code`` 499, ``usage`` = what was
   produced; estimated from the chunks forwarded when the upstream's usage was never reached).
   This is where reservations settle. It runs after the response body was handed to the
   server, off the client's latency path.

This implementation admits everything and writes the ledger row (a ``UsageRecord``) through
``proxy.ledger``; counters replace the bodies of ``begin`` and ``finish`` and keep the ledger call.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field

from django.utils import timezone

from governance import snapshot
from governance.pricing import cost_of
from proxy import ledger
from proxy.routing import Resolved
from proxy.usage import Usage

CLIENT_CLOSED = 499


@dataclass(slots=True)
class Ticket:
    resolved: Resolved
    request_id: uuid.UUID = field(default_factory=uuid.uuid4)
    started: float = field(default_factory=time.monotonic)
    finished: bool = False


@dataclass(frozen=True, slots=True)
class Rejection:
    status: int
    type: str
    message: str
    headers: dict[str, str] = field(default_factory=dict)


def begin(resolved: Resolved) -> Ticket | Rejection:
    return Ticket(resolved)


def finish(ticket: Ticket, usage: Usage, status_code: int, latency_ms: int, streamed: bool) -> None:
    if ticket.finished:
        return
    ticket.finished = True
    resolved = ticket.resolved
    succeeded = status_code < 400 or status_code == CLIENT_CLOSED
    # Failed attempts cost nothing; a cut-off stream is charged for what was produced.
    if succeeded:
        price = snapshot.price(resolved.provider.name, resolved.model)
        cost, priced = cost_of(
            price,
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            cached_tokens=usage.cached_tokens,
            upstream_cost=usage.upstream_cost,
        )
    else:
        cost, priced = 0, True
    vk = resolved.vk
    ledger.record(
        dict(
            request_id=ticket.request_id,
            created_at=timezone.now(),
            virtual_key_id=vk.id if vk else None,
            team_id=vk.team_id if vk else None,
            customer_id=vk.customer_id if vk else None,
            provider=resolved.provider.name,
            model=resolved.model,
            provider_key_id=resolved.key.id,
            request_type=resolved.request_type,
            status_code=status_code,
            prompt_tokens=usage.prompt_tokens if succeeded else 0,
            completion_tokens=usage.completion_tokens if succeeded else 0,
            total_tokens=(usage.total_tokens or usage.prompt_tokens + usage.completion_tokens) if succeeded else 0,
            cached_tokens=usage.cached_tokens if succeeded else 0,
            cost=cost,
            latency_ms=max(0, latency_ms),
            streamed=streamed,
            priced=priced,
        )
    )
