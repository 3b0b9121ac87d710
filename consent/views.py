"""The consent pages and their form POSTs (Post/Redirect/Get).

GET pages answer a flow problem with a plain error page; the form POSTs answer it with the
JSON error body (400/403/409/410), except "Deny access", which a person presses and which
answers with the same plain page. A refused identity is always a 302 back to the identity
page with the message in ``error``. The hidden ``flow_id`` only names the flow: acting on it
needs the HttpOnly cookie set by ``authorize`` in this browser.
"""

from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST
from django_ratelimit.core import is_ratelimited

from bifrost_site.errors import error_response
from bifrost_site.middleware import wants_json
from bifrost_site.ratelimit_keys import client_address
from consent import services
from consent.exceptions import MSG_CHOOSE_IDENTITY, MSG_TOO_MANY, FlowRejected, IdentityRejected
from consent.forms import FlowForm, UserIdForm, VirtualKeyForm
from consent.http import (
    ClientRedirect,
    browser_secret,
    identity_page_url,
    json_methods,
    mcps_page_url,
    no_store,
)
from consent.models import ConsentFlow, Identity
from consent.oauth import redirect_target
from consent.selectors import consent_flow_for_browser, mcp_clients_for_identity
from governance.models import McpUserToken

MAX_SHOWN_ERROR_LENGTH = 300


def _flow(request: HttpRequest, flow_id: str, *, expired_status: int = 400) -> ConsentFlow:
    return consent_flow_for_browser(
        flow_id=flow_id, browser_secret=browser_secret(request, flow_id), expired_status=expired_status
    )


def _error_page(request: HttpRequest, status: int, message: str) -> HttpResponse:
    return no_store(render(request, "consent/error.html", {"message": message, "status": status}, status=status))


@require_GET
def identity_page(request: HttpRequest) -> HttpResponse:
    """ "Connect to Bifrost": choose a User ID, a Virtual Key, or (when allowed) skip."""
    flow_id = request.GET.get("flow_id", "")
    try:
        flow = _flow(request, flow_id)
    except FlowRejected as exc:
        return _error_page(request, exc.status, exc.message)
    context = {
        **_client_context(flow),
        # Shown HTML-escaped by the template; capped so a crafted link cannot fill the page.
        "error": request.GET.get("error", "")[:MAX_SHOWN_ERROR_LENGTH],
        "allow_skip": not settings.GOVERNANCE_ENFORCE_VIRTUAL_KEYS,
        # A session without a key may call no tool while keys are enforced (``mcp_gateway.access``).
        "user_id_needs_key": settings.GOVERNANCE_ENFORCE_VIRTUAL_KEYS,
        "user_id": flow.user_id,
    }
    return no_store(render(request, "consent/identity.html", context))


def _client_context(flow: ConsentFlow) -> dict[str, object]:
    """What both pages say about the client: whether anyone vouched for it, and where approving
    (or denying) sends the browser: the flow's own redirect URI, the one the client registered."""
    return {
        "flow": flow,
        "client_unverified": flow.client.self_registered,
        "redirect_host": redirect_target(flow.redirect_uri),
    }


def _too_many_vk_attempts(request: HttpRequest, flow: ConsentFlow) -> bool:
    """Counts this attempt against the flow and the client address; True when either is over.

    Both counters live in the ``default`` cache (Redis in production, so every worker shares
    them). django-ratelimit uses fixed windows, so a burst straddling a window edge can reach
    twice the rate once; that bound is accepted for a form guarding 122-bit keys.
    """
    per_flow = is_ratelimited(
        request,
        group="consent-vk-flow",
        key=lambda _group, _request: flow.flow_id,
        rate=settings.CONSENT_VK_RATE_PER_FLOW,
        increment=True,
    )
    per_address = is_ratelimited(
        request, group="consent-vk-address", key=client_address, rate=settings.CONSENT_VK_RATE_PER_IP, increment=True
    )
    return per_flow or per_address


@json_methods("POST")
def submit_virtual_key(request: HttpRequest) -> HttpResponse:
    """The seed's endpoint: every outcome for a usable flow is a 302."""
    form = VirtualKeyForm(request.POST)
    try:
        flow = _flow(request, form.value("flow_id"))
    except FlowRejected as exc:
        return error_response(exc.status, exc.message)
    if _too_many_vk_attempts(request, flow):
        return redirect(identity_page_url(flow.flow_id, MSG_TOO_MANY))
    try:
        services.consent_flow_set_virtual_key(flow=flow, value=form.value("vk"))
    except IdentityRejected as exc:
        return redirect(identity_page_url(flow.flow_id, exc.message))
    except FlowRejected as exc:
        return error_response(exc.status, exc.message)
    return redirect(mcps_page_url(flow.flow_id))


@json_methods("POST")
def submit_user_id(request: HttpRequest) -> HttpResponse:
    form = UserIdForm(request.POST)
    try:
        flow = _flow(request, form.value("flow_id"))
        services.consent_flow_set_user_id(flow=flow, user_id=form.value("user_id"))
    except FlowRejected as exc:
        return error_response(exc.status, exc.message)
    except IdentityRejected as exc:
        return redirect(identity_page_url(flow.flow_id, exc.message))
    return redirect(mcps_page_url(flow.flow_id))


@json_methods("POST")
def skip_identity(request: HttpRequest) -> HttpResponse:
    form = FlowForm(request.POST)
    try:
        flow = _flow(request, form.value("flow_id"))
        services.consent_flow_skip(flow=flow)
    except FlowRejected as exc:
        return error_response(exc.status, exc.message)
    except IdentityRejected as exc:
        return redirect(identity_page_url(flow.flow_id, exc.message))
    return redirect(mcps_page_url(flow.flow_id))


@require_GET
def mcps_page(request: HttpRequest) -> HttpResponse:
    """ "Connect Your Apps": what this identity may use, "Change identity", "Finish Setup"."""
    flow_id = request.GET.get("flow_id", "")
    try:
        flow = _flow(request, flow_id)
    except FlowRejected as exc:
        return _error_page(request, exc.status, exc.message)
    if flow.identity == Identity.NONE:
        return redirect(identity_page_url(flow.flow_id, MSG_CHOOSE_IDENTITY))
    # Per-user OAuth: an identity (a VK or a user id) connects its own account to each client.
    can_connect = flow.identity in (Identity.VIRTUAL_KEY, Identity.USER_ID)
    connected = McpUserToken.objects.connected_client_ids(virtual_key_id=flow.virtual_key_id, user_id=flow.user_id)
    context = {
        **_client_context(flow),
        "mcp_clients": list(mcp_clients_for_identity(virtual_key=flow.virtual_key)),
        "identity_label": _identity_label(flow),
        "can_connect": can_connect,
        "connected_ids": connected if can_connect else set(),
    }
    return no_store(render(request, "consent/mcps.html", context))


def _identity_label(flow: ConsentFlow) -> str:
    if flow.identity == Identity.VIRTUAL_KEY and flow.virtual_key is not None:
        return f"Virtual Key {flow.virtual_key.name} ({flow.virtual_key.masked_value})"
    if flow.identity == Identity.USER_ID:
        return f"User ID {flow.user_id}"
    return "No identity (skipped)"


@json_methods("POST")
def submit_consent(request: HttpRequest) -> HttpResponse:
    """Finish Setup: 302 to the client's redirect URI with ``code`` and ``state``."""
    form = FlowForm(request.POST)
    try:
        flow = _flow(request, form.value("flow_id"), expired_status=410)
        location = services.consent_flow_submit(flow=flow)
    except FlowRejected as exc:
        return error_response(exc.status, exc.message)
    except IdentityRejected as exc:
        return redirect(identity_page_url(flow.flow_id, exc.message))
    # The flow cookie is left to expire on its own (15 minutes): a double-clicked Finish Setup
    # must still be recognised as this browser's and answered 409, not 403.
    return no_store(ClientRedirect(location))


@require_POST
def deny(request: HttpRequest) -> HttpResponse:
    """Deny access: 302 to the client's redirect URI with ``error=access_denied`` and ``state``.

    The flow ends here; pressing it again (or finishing afterwards) is refused with a page
    saying the request was cancelled.
    """
    form = FlowForm(request.POST)
    try:
        flow = _flow(request, form.value("flow_id"))
        location = services.consent_flow_deny(flow=flow)
    except FlowRejected as exc:
        return _error_page(request, exc.status, exc.message)
    return no_store(ClientRedirect(location))


def csrf_failure(request: HttpRequest, reason: str = "") -> HttpResponse:
    """Django's CSRF refusal in the project's shapes: JSON on API paths, a plain page elsewhere.

    ``reason`` is Django's internal wording; the user gets an actionable message instead.
    """
    message = "CSRF verification failed. Reload the page and try again."
    if wants_json(request.path):
        return error_response(403, message)
    return _error_page(request, 403, message)
