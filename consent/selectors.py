"""Reads of the consent flow; every write lives in ``consent.services``."""

from __future__ import annotations

from datetime import datetime

from django.db.models import Prefetch, Q, QuerySet
from django.utils import timezone

from consent.exceptions import (
    MSG_FLOW_DENIED,
    MSG_FLOW_EXPIRED,
    MSG_FLOW_FOREIGN,
    MSG_FLOW_ID_REQUIRED,
    MSG_FLOW_INVALID,
    MSG_FLOW_SUBMITTED,
    FlowRejected,
)
from consent.models import ConsentFlow, ConsentSession, FlowStatus
from consent.oauth import secret_matches
from governance.keys import digest
from governance.models import McpClient, VirtualKey, VirtualKeyMcpConfig


def consent_flow_for_browser(
    *, flow_id: str, browser_secret: str | None, now: datetime | None = None, expired_status: int = 400
) -> ConsentFlow:
    """The pending flow ``flow_id`` if this browser owns it, else ``FlowRejected``.

    Ownership is checked before state, so another browser learns nothing about the flow
    (whether it expired, was submitted, or which identity it holds).
    """
    now = now or timezone.now()
    if not flow_id:
        raise FlowRejected(400, MSG_FLOW_ID_REQUIRED)
    # A NUL character cannot name a flow, and PostgreSQL refuses it in a query parameter.
    flow = None
    if "\x00" not in flow_id:
        flow = ConsentFlow.objects.select_related("client", "virtual_key").filter(flow_id=flow_id).first()
    if flow is None:
        raise FlowRejected(400, MSG_FLOW_INVALID)
    if not secret_matches(browser_secret, flow.browser_secret_digest):
        raise FlowRejected(403, MSG_FLOW_FOREIGN)
    if flow.status == FlowStatus.SUBMITTED:
        raise FlowRejected(409, MSG_FLOW_SUBMITTED)
    if flow.status == FlowStatus.DENIED:
        raise FlowRejected(400, MSG_FLOW_DENIED)
    if flow.expires_at <= now:
        raise FlowRejected(expired_status, MSG_FLOW_INVALID if expired_status == 400 else MSG_FLOW_EXPIRED)
    return flow


def virtual_key_usable(vk: VirtualKey | None, now: datetime) -> bool:
    """Active and not past its expiry; an unknown key is simply not usable."""
    return vk is not None and vk.is_active and (vk.expires_at is None or vk.expires_at > now)


def mcp_clients_for_identity(*, virtual_key: VirtualKey | None) -> QuerySet[McpClient]:
    """MCP clients this identity may connect: per-user OAuth clients allowed on every key, plus
    the per-user OAuth clients named in the key's ``mcp_configs`` (each with that config
    prefetched as ``vk_configs`` so the page can show its tools)."""
    allowed = Q(allow_on_all_virtual_keys=True)
    configs = VirtualKeyMcpConfig.objects.none()
    if virtual_key is not None:
        allowed |= Q(virtual_key_configs__virtual_key=virtual_key)
        configs = VirtualKeyMcpConfig.objects.filter(virtual_key=virtual_key)
    return (
        McpClient.objects.filter(Q(per_user_oauth=True) & allowed)
        .distinct()
        .order_by("name")
        .prefetch_related(Prefetch("virtual_key_configs", queryset=configs, to_attr="vk_configs"))
    )


def consent_session_for_access_token(token: str, *, now: datetime | None = None) -> ConsentSession | None:
    """The live session an access token belongs to; unknown, revoked and expired look alike."""
    if not token:
        return None
    now = now or timezone.now()
    return (
        ConsentSession.objects.select_related("client", "virtual_key")
        .filter(access_token_digest=digest(token), revoked_at__isnull=True, expires_at__gt=now)
        .first()
    )
