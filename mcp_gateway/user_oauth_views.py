"""Browser endpoints of per-user OAuth to upstream MCP servers (``mcp_gateway.user_oauth``).

- ``GET /api/oauth/per-user/upstream/authorize?mcp_client_id=&flow_id=``: "Connect" on the consent
  flow's MCPs page. The consent flow must be this browser's (its cookie) and pending, its identity
  a VK or a user id, and the MCP client one of the per-user clients that identity may connect.
- ``GET /api/oauth/per-user/upstream/connect?token=``: a connect link from a tool result (signed,
  10 minutes, single use).
- ``GET /api/oauth/callback?code=&state=``: where the upstream's authorization server sends the
  browser back; stores the token and returns to the MCPs page, or shows "Connected".

Both starts answer a 302 to the upstream's authorization endpoint and set an HttpOnly cookie
(only its digest is stored) that the callback requires. Problems are a page saying why (JSON when
the client does not accept HTML), with the status: 400 (403 for another browser's flow).
"""

from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET

from bifrost_site.errors import error_response
from consent.exceptions import FlowRejected
from consent.http import browser_secret, mcps_page_url, no_store, public_base_url
from consent.models import Identity as ConsentIdentity
from consent.selectors import consent_flow_for_browser, mcp_clients_for_identity
from governance.models import McpUpstreamOAuthFlow
from mcp_gateway import user_oauth
from mcp_gateway.user_oauth import Identity, OAuthFlowError, Started


def _error(request: HttpRequest, status: int, message: str) -> HttpResponse:
    if "text/html" in request.headers.get("Accept", ""):
        page = render(request, "mcp_gateway/oauth_error.html", {"message": message, "status": status}, status=status)
        return no_store(page)
    return no_store(error_response(status, message))


def _to_upstream(started: Started) -> HttpResponse:
    response = HttpResponseRedirect(started.url)
    response.set_cookie(
        started.cookie_name,
        started.browser_secret,
        max_age=user_oauth.UPSTREAM_FLOW_LIFETIME_SECONDS,
        httponly=True,
        samesite="Lax",  # sent on the top-level redirect back from the authorization server
        secure=settings.BIFROST_TLS,
        path="/api/oauth/callback",
    )
    return no_store(response)


@require_GET
def authorize(request: HttpRequest) -> HttpResponse:
    """ "Connect" on the MCPs page: start the upstream authorization for the flow's identity."""
    flow_id = request.GET.get("flow_id", "")
    try:
        flow = consent_flow_for_browser(flow_id=flow_id, browser_secret=browser_secret(request, flow_id))
    except FlowRejected as exc:
        return _error(request, exc.status, exc.message)
    if flow.identity == ConsentIdentity.VIRTUAL_KEY and flow.virtual_key is not None:
        identity = user_oauth.identity_of_key(flow.virtual_key)
    elif flow.identity == ConsentIdentity.USER_ID and flow.user_id:
        identity = Identity(None, flow.user_id)
    else:
        return _error(request, 400, "Choose a Virtual Key or a User ID first: accounts are connected to an identity")
    wanted = request.GET.get("mcp_client_id", "")
    client = None
    if wanted and "\x00" not in wanted:
        client = mcp_clients_for_identity(virtual_key=flow.virtual_key).filter(client_id=wanted).first()
    if client is None:
        return _error(request, 400, "This MCP client is not one this identity can connect")
    try:
        started = user_oauth.start_authorization(
            client=client,
            identity=identity,
            base_url=public_base_url(request),
            return_to=McpUpstreamOAuthFlow.ReturnTo.MCPS_PAGE,
            consent_flow_id=flow.flow_id,
        )
    except OAuthFlowError as exc:
        return _error(request, exc.status, exc.message)
    return _to_upstream(started)


@require_GET
def connect(request: HttpRequest) -> HttpResponse:
    """A connect link: start the upstream authorization for the identity it was issued to."""
    try:
        client, identity = user_oauth.open_connect_link(request.GET.get("token", ""))
        started = user_oauth.start_authorization(
            client=client,
            identity=identity,
            base_url=public_base_url(request),
            return_to=McpUpstreamOAuthFlow.ReturnTo.CONNECTED_PAGE,
        )
    except OAuthFlowError as exc:
        return _error(request, exc.status, exc.message)
    return _to_upstream(started)


@require_GET
def callback(request: HttpRequest) -> HttpResponse:
    """The upstream's redirect back: exchange the code, store the token, say so."""
    params = {key: request.GET.get(key, "") for key in ("code", "state", "error", "error_description", "iss")}
    try:
        flow = user_oauth.finish_authorization(params=params, cookies=dict(request.COOKIES))
    except OAuthFlowError as exc:
        return _error(request, exc.status, exc.message)
    if flow.return_to == McpUpstreamOAuthFlow.ReturnTo.MCPS_PAGE and flow.consent_flow_id:
        response: HttpResponse = redirect(mcps_page_url(flow.consent_flow_id))
    else:
        context = {"client_name": flow.mcp_client.name}
        response = render(request, "mcp_gateway/oauth_connected.html", context)
    response.delete_cookie(user_oauth.cookie_name(flow.state_digest), path="/api/oauth/callback")
    return no_store(response)
