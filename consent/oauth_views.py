"""OAuth endpoints for MCP clients: discovery metadata, registration, authorize, token.

These are called by programs, not by pages of ours, so they are CSRF-exempt where they take a
POST: registration and the token exchange carry no cookie-based authority (a public client
proves itself with its PKCE verifier).
"""

from __future__ import annotations

import json

from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect
from django.urls import reverse
from django.views.decorators.csrf import csrf_exempt

from bifrost_site.errors import error_response
from consent import services
from consent.exceptions import FlowRejected, OAuthError
from consent.http import identity_page_url, json_methods, no_store, public_base_url, set_browser_secret

GRANT_TYPES = ["authorization_code"]
RESPONSE_TYPES = ["code"]


@json_methods("GET")
def authorization_server_metadata(request: HttpRequest) -> HttpResponse:
    """RFC 8414 metadata naming the endpoints below."""
    issuer = public_base_url(request)
    return JsonResponse(
        {
            "issuer": issuer,
            "authorization_endpoint": issuer + reverse("consent:authorize"),
            "token_endpoint": issuer + reverse("consent:token"),
            "registration_endpoint": issuer + reverse("consent:register"),
            "response_types_supported": RESPONSE_TYPES,
            "grant_types_supported": GRANT_TYPES,
            "code_challenge_methods_supported": ["S256"],
            "token_endpoint_auth_methods_supported": ["none"],
        }
    )


@json_methods("GET")
def protected_resource_metadata(request: HttpRequest) -> HttpResponse:
    """RFC 9728 metadata: this gateway is the resource, and its own authorization server."""
    issuer = public_base_url(request)
    return JsonResponse(
        {
            "resource": issuer,
            "authorization_servers": [issuer],
            "bearer_methods_supported": ["header"],
            "resource_name": "Bifrost gateway",
        }
    )


@csrf_exempt
@json_methods("POST")
def register(request: HttpRequest) -> HttpResponse:
    """RFC 7591 dynamic registration of a public client (no secret; PKCE is mandatory)."""
    try:
        body = json.loads(request.body or b"null")
    except (UnicodeDecodeError, json.JSONDecodeError):
        return error_response(400, "Request body must be valid JSON")
    if not isinstance(body, dict):
        return error_response(400, "Request body must be a JSON object")
    auth_method = body.get("token_endpoint_auth_method", "none")
    if auth_method != "none":
        return error_response(400, "token_endpoint_auth_method must be 'none': clients are public and use PKCE")
    if "redirect_uris" not in body:
        return error_response(400, "redirect_uris is required")
    try:
        client = services.oauth_client_register(
            redirect_uris=body["redirect_uris"], client_name=body.get("client_name") or ""
        )
    except ValidationError as exc:
        return error_response(400, "; ".join(exc.messages))
    # Unsupported grant or response types a client asks for are replaced by what the server
    # supports (RFC 7591 section 3.2.1 lets the server do so); the client reads them back.
    return JsonResponse(
        {
            "client_id": client.client_id,
            "client_id_issued_at": int(client.created_at.timestamp()),
            "client_name": client.client_name,
            "redirect_uris": client.redirect_uris,
            "grant_types": GRANT_TYPES,
            "response_types": RESPONSE_TYPES,
            "token_endpoint_auth_method": "none",
        },
        status=201,
    )


@json_methods("GET")
def authorize(request: HttpRequest) -> HttpResponse:
    """Open a flow bound to this browser and send the user to the identity page."""
    query = request.GET
    try:
        flow, secret = services.consent_flow_start(
            response_type=query.get("response_type", ""),
            client_id=query.get("client_id", ""),
            redirect_uri=query.get("redirect_uri", ""),
            code_challenge=query.get("code_challenge", ""),
            code_challenge_method=query.get("code_challenge_method", ""),
            state=query.get("state", ""),
        )
    except FlowRejected as exc:
        return error_response(exc.status, exc.message)
    response = redirect(identity_page_url(flow.flow_id))
    set_browser_secret(response, flow.flow_id, secret)
    return no_store(response)


def _oauth_error(exc: OAuthError) -> HttpResponse:
    return no_store(JsonResponse({"error": exc.error, "error_description": exc.description}, status=exc.status))


@csrf_exempt
@json_methods("POST")
def token(request: HttpRequest) -> HttpResponse:
    """RFC 6749 section 4.1.3 token request (form-encoded), answered per section 5.1 / 5.2."""
    data = request.POST
    grant_type = data.get("grant_type", "")
    if not grant_type:
        return _oauth_error(OAuthError("invalid_request", "grant_type is required"))
    if grant_type != "authorization_code":
        return _oauth_error(OAuthError("unsupported_grant_type", "Only grant_type=authorization_code is supported"))
    try:
        access_token, expires_in = services.authorization_code_redeem(
            code=data.get("code", ""),
            code_verifier=data.get("code_verifier", ""),
            client_id=data.get("client_id", ""),
            redirect_uri=data.get("redirect_uri", ""),
        )
    except OAuthError as exc:
        return _oauth_error(exc)
    return no_store(JsonResponse({"access_token": access_token, "token_type": "Bearer", "expires_in": expires_in}))
