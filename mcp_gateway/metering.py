"""A tool call's governance and ledger: the MCP side of ``proxy.accounting``.

A call by a virtual key takes one request on the key's, its team's and its customer's request
limits and reserves the tool's price (``McpClient.tool_pricing[tool]``, dollars per call) on their
budgets, atomically (``governance.metering.enforcement.admit``), before the upstream is called;
it is settled at that price when the call succeeded, at nothing when it failed, and written to
the same ledger as inference (``request_type`` ``mcp_tool_call``, ``provider`` = the MCP client's
name, ``model`` = the tool's name). A tool without a price costs nothing and is recorded as
unpriced (``priced`` false): tools are not billed by tokens, so a budget does not refuse them.
Token limits see zero tokens. A caller without a VK is recorded without limits.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from django.utils import timezone

from governance.metering import enforcement, freshness, writer
from governance.metering.counters.base import Admission, Rejection
from governance.metering.ledger import LedgerEntry
from governance.metering.snapshot import VirtualKeySnapshot
from governance.models import McpClient
from governance.models.usage import new_request_id
from telemetry import metrics

REQUEST_TYPE = "mcp_tool_call"


@dataclass(slots=True)
class ToolTicket:
    client: McpClient
    tool: str
    vk: VirtualKeySnapshot | None
    price: Decimal | None
    request_id: uuid.UUID = field(default_factory=new_request_id)
    started: float = field(default_factory=time.monotonic)
    admission: Admission | None = None


def tool_price(client: McpClient, tool: str) -> Decimal | None:
    raw = (client.tool_pricing or {}).get(tool)
    if raw is None:
        return None
    try:
        price = Decimal(str(raw))
    except InvalidOperation:
        return None
    return price if price.is_finite() and price >= 0 else None


def _who(ticket: ToolTicket) -> dict[str, Any]:
    vk = ticket.vk
    return {
        "provider": ticket.client.name,
        "model": ticket.tool,
        "virtual_key_id": vk.id if vk else None,
        "team_id": vk.team_id if vk else None,
        "customer_id": vk.customer_id if vk else None,
        "provider_key_id": None,
        "request_type": REQUEST_TYPE,
    }


def begin(client: McpClient, tool: str, vk: VirtualKeySnapshot | None) -> ToolTicket | Rejection:
    """Admit one call (or refuse it: a ``Rejection`` of the counters, 429 or 402). Raises
    ``freshness.StaleConfig`` when the configuration it was decided on changed (nothing held)."""
    ticket = ToolTicket(client, tool, vk, tool_price(client, tool))
    budgets, rate_limits = vk.limits_for("") if vk is not None else ((), ())  # no provider config here
    if not budgets and not rate_limits:
        freshness.confirm()  # the call is about to go upstream: its configuration must be current
        return ticket
    leased = LedgerEntry(**_who(ticket), status_code=0, priced=ticket.price is not None)
    result = enforcement.admit(
        request_id=ticket.request_id,
        budgets=budgets,
        rate_limits=rate_limits,
        estimated_cost=ticket.price or Decimal(0),
        estimated_tokens=0,
        entry=leased,
    )
    if not isinstance(result, Admission):
        metrics.refusal(result.type, result.refused_by, vk, method=REQUEST_TYPE, provider=client.name, model=tool)
        return result
    try:
        freshness.confirm()  # no-op when the admit's own round trip checked it
    except freshness.StaleConfig:
        enforcement.release(result)
        raise
    ticket.admission = result
    return ticket


def finish(ticket: ToolTicket, status_code: int, *, upstream_called: bool = True) -> None:
    """Charge the call (its price when it succeeded) and write its usage row."""
    succeeded = status_code < 400
    cost = (ticket.price or Decimal(0)) if succeeded else Decimal(0)
    fields = {
        **_who(ticket),
        "status_code": status_code,
        "prompt_tokens": 0,
        "completion_tokens": 0,
        "cached_tokens": 0,
        "latency_ms": max(0, int((time.monotonic() - ticket.started) * 1000)),
        "streamed": False,
        "priced": ticket.price is not None,
        "estimated": False,
        "created_at": timezone.now(),
    }
    metrics.mcp_call(ticket.client.name, ticket.tool, ticket.vk, status_code, fields["latency_ms"], cost)
    if ticket.admission is not None:
        entry = LedgerEntry(**fields)
        writer.settle(enforcement.Settlement(ticket.admission, cost, 0, upstream_called, entry))
        return
    writer.record(
        {
            **fields,
            "request_id": ticket.request_id,
            "cost": cost,
            "total_tokens": 0,
            "upstream_reached": upstream_called,
        }
    )
