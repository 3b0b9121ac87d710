"""Per-user OAuth to upstream MCP servers (``auth_type: per_user_oauth``): each identity signs in
at the upstream's authorization server with its own account, and its calls carry its own token.

- **Identity**: a virtual key, else a user id (a consent flow's or session's identity, or the VK a
  caller presents). An anonymous caller holds no tokens.
- **Endpoints**: ``oauth_config`` ``authorize_url`` + ``token_url`` when both are set; otherwise
  discovered from the server's URL: RFC 9728 protected-resource metadata (the path-specific
  ``/.well-known/oauth-protected-resource/<path>``, then the origin's) names the authorization
  server, whose RFC 8414 metadata names the endpoints. The client id is ``oauth_config.client_id``
  (with ``client_secret``, which may be ``env.NAME``); without one the gateway registers itself by
  RFC 7591 dynamic registration, once per issuer and callback URL (``McpOAuthRegistration``, its
  secret encrypted).
- **Authorization**: authorization code + PKCE S256, ``state`` stored as a digest, the verifier
  encrypted, the row bound to the browser by a cookie (``McpUpstreamOAuthFlow``, 10 minutes,
  single use). The callback exchanges the code and stores the token, access and refresh encrypted
  (``McpUserToken``, one per identity and client).
- **Use**: ``bearer_for`` finds the identity's token and refreshes it (``grant_type=refresh_token``)
  when it has expired; a refresh the token endpoint refuses deletes the token.
- **Tools**: listed with the caller's token (cached per identity for ``MCP_TOOLS_REFRESH_SECONDS``);
  a caller without a token sees the last listing any identity got (kept in the Django cache), or
  none when nobody has listed yet.
- **Connect links**: a caller without a token gets a link (``django.core.signing``, salted, 10
  minutes) naming the MCP client and its consent session id (or, for a caller presenting a VK
  directly, the key's id) and a nonce, recorded as used when the link is opened: it works once.

Nothing here logs or returns a token, a verifier or a client secret.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote, urlencode

import httpx2
from django.core import signing
from django.core.cache import cache
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import IntegrityError, transaction
from django.http import HttpRequest
from django.urls import reverse
from django.utils import timezone
from mcp.client.auth.utils import (
    build_oauth_authorization_server_metadata_discovery_urls,
    build_protected_resource_metadata_discovery_urls,
    issuers_match,
)
from mcp.shared.auth import OAuthClientInformationFull, OAuthMetadata, OAuthToken, ProtectedResourceMetadata
from pydantic import ValidationError

from consent.http import public_base_url
from consent.models import ConsentSession
from consent.oauth import add_query, s256_challenge, secret_matches
from consent.selectors import virtual_key_usable
from governance.keys import digest
from governance.models import (
    McpClient,
    McpConnectLinkUse,
    McpOAuthRegistration,
    McpUpstreamOAuthFlow,
    McpUserToken,
    VirtualKey,
)
from governance.models.mcp import AuthType
from governance.models.mcp_tokens import UPSTREAM_FLOW_LIFETIME_SECONDS, McpUserTokenQuerySet
from mcp_gateway.access import Caller
from mcp_gateway.upstream.connection import Connection, handshake_timeout
from mcp_gateway.upstream.errors import UpstreamError, safe_url, scrub, seconds
from mcp_gateway.upstream.runner import SYNC_MARGIN_SECONDS, get_runner, refresh_seconds
from mcp_gateway.upstream.spec import ClientSpec, resolve_env

logger = logging.getLogger("bifrost.mcp")

HTTP_TIMEOUT_SECONDS = 10.0
# A token this close to its expiry counts as expired (refreshed before use).
EXPIRY_MARGIN_SECONDS = 30.0
LINK_SALT = "bifrost.mcp_gateway.user_oauth.connect_link"
LINK_MAX_AGE_SECONDS = 10 * 60
COOKIE_PREFIX = "bifrost_mcp_oauth_"
CLIENT_NAME = "Bifrost gateway"
MAX_SHOWN = 200
_TOOLS_KEY = "bifrost:mcp-user-tools:{client}:{fingerprint}:{who}"


class OAuthFlowError(Exception):
    """Connecting cannot go on; ``status`` is the HTTP status to answer, the message says why."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


class TokenEndpointError(Exception):
    """The token endpoint refused (``transient`` False) or could not be reached (True)."""

    def __init__(self, message: str, *, transient: bool) -> None:
        super().__init__(message)
        self.message, self.transient = message, transient


def is_per_user(client: McpClient) -> bool:
    return client.auth_type == AuthType.PER_USER_OAUTH


# --- identities ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Identity:
    """A virtual key (its id) or a user id: exactly one."""

    vk_id: str | None
    user_id: str = ""
    vk_name: str = ""

    @property
    def key(self) -> str:
        return f"vk:{self.vk_id}" if self.vk_id is not None else f"user:{self.user_id}"

    @property
    def label(self) -> str:
        return f"virtual key '{self.vk_name}'" if self.vk_id is not None else f"user '{self.user_id}'"

    def columns(self) -> dict[str, Any]:
        if self.vk_id is not None:
            return {"virtual_key_id": self.vk_id, "user_id": ""}
        return {"virtual_key_id": None, "user_id": self.user_id}

    def tokens(self) -> McpUserTokenQuerySet:
        return McpUserToken.objects.of_identity(virtual_key_id=self.vk_id, user_id=self.user_id)


def identity_of(caller: Caller | None) -> Identity | None:
    if caller is None:
        return None
    if caller.vk is not None:
        return Identity(str(caller.vk.id), vk_name=caller.vk.name)
    return Identity(None, caller.user_id) if caller.user_id else None


def identity_of_key(vk: VirtualKey) -> Identity:
    return Identity(str(vk.pk), vk_name=vk.name)


def _token_row(client: McpClient, identity: Identity) -> McpUserToken | None:
    return identity.tokens().filter(mcp_client=client).first()


# --- discovery and registration ------------------------------------------------------------------


@dataclass(frozen=True)
class Endpoints:
    authorize_url: str
    token_url: str
    issuer: str = ""
    registration_url: str = ""
    resource: str = ""
    scopes: tuple[str, ...] = ()


def _server_url(client: McpClient) -> str:
    raw = (client.connection_string or "").strip()
    if not raw:
        return ""
    try:
        return resolve_env(raw, client=client.name, what="connection_string")
    except UpstreamError as exc:
        raise OAuthFlowError(502, str(exc)) from None


def _config_secret(client: McpClient) -> str:
    secret = str((client.oauth_config or {}).get("client_secret") or "")
    if not secret:
        return ""
    try:
        return resolve_env(secret, client=client.name, what="oauth_config.client_secret")
    except UpstreamError as exc:
        raise OAuthFlowError(502, str(exc)) from None


def _http() -> httpx2.Client:
    return httpx2.Client(timeout=HTTP_TIMEOUT_SECONDS, follow_redirects=False, headers={"Accept": "application/json"})


def _get_json(http: httpx2.Client, url: str) -> tuple[int, bytes] | None:
    try:
        response = http.get(url, headers={"MCP-Protocol-Version": "2025-06-18"})
    except httpx2.HTTPError:
        return None
    return response.status_code, response.content


def discover(client: McpClient) -> Endpoints:
    """The client's authorization endpoints (see the module doc); ``OAuthFlowError`` when none."""
    config = client.oauth_config if isinstance(client.oauth_config, dict) else {}
    configured_scopes = tuple(str(s) for s in config.get("scopes") or ())
    server_url = _server_url(client)
    if config.get("authorize_url") and config.get("token_url"):
        return Endpoints(
            authorize_url=str(config["authorize_url"]),
            token_url=str(config["token_url"]),
            registration_url=str(config.get("registration_url") or ""),
            resource=server_url,
            scopes=configured_scopes,
        )
    if not server_url:
        raise OAuthFlowError(
            502, f"MCP client '{client.name}' has no oauth_config endpoints and no URL to discover them from"
        )
    with _http() as http:
        resource_metadata: ProtectedResourceMetadata | None = None
        for url in build_protected_resource_metadata_discovery_urls(None, server_url):
            answer = _get_json(http, url)
            if answer is not None and answer[0] == 200:
                try:
                    resource_metadata = ProtectedResourceMetadata.model_validate_json(answer[1])
                    break
                except ValidationError:
                    continue
        auth_server = str(resource_metadata.authorization_servers[0]) if resource_metadata else None
        metadata: OAuthMetadata | None = None
        for url in build_oauth_authorization_server_metadata_discovery_urls(auth_server, server_url):
            answer = _get_json(http, url)
            if answer is None:
                continue
            if answer[0] == 200:
                try:
                    metadata = OAuthMetadata.model_validate_json(answer[1])
                    break
                except ValidationError:
                    continue
            if answer[0] >= 500:
                break
    if metadata is None:
        raise OAuthFlowError(
            502,
            f"MCP client '{client.name}': no OAuth authorization server metadata was found for "
            f"{safe_url(server_url)} (RFC 9728 / RFC 8414)",
        )
    issuer = str(metadata.issuer)
    if auth_server is not None and not issuers_match(issuer, auth_server):
        raise OAuthFlowError(
            502, f"MCP client '{client.name}': the authorization server metadata names another issuer ({issuer})"
        )
    scopes = configured_scopes or tuple((resource_metadata.scopes_supported if resource_metadata else None) or ())
    return Endpoints(
        authorize_url=str(metadata.authorization_endpoint),
        token_url=str(metadata.token_endpoint),
        issuer=issuer,
        registration_url=str(config.get("registration_url") or metadata.registration_endpoint or ""),
        resource=str(resource_metadata.resource) if resource_metadata else server_url,
        scopes=scopes,
    )


def _client_id(client: McpClient, endpoints: Endpoints, redirect_uri: str) -> str:
    """The upstream OAuth client id: configured, or registered (once) by RFC 7591."""
    config = client.oauth_config if isinstance(client.oauth_config, dict) else {}
    if config.get("client_id"):
        return str(config["client_id"])
    issuer = endpoints.issuer or endpoints.authorize_url
    known = McpOAuthRegistration.objects.filter(mcp_client=client, issuer=issuer, redirect_uri=redirect_uri).first()
    if known is not None:
        return known.client_id
    if not endpoints.registration_url:
        raise OAuthFlowError(
            502,
            f"MCP client '{client.name}' has no oauth_config.client_id and its authorization server offers no "
            "dynamic client registration",
        )
    body: dict[str, Any] = {
        "client_name": CLIENT_NAME,
        "redirect_uris": [redirect_uri],
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
        "token_endpoint_auth_method": "client_secret_post",
    }
    if endpoints.scopes:
        body["scope"] = " ".join(endpoints.scopes)
    where = safe_url(endpoints.registration_url)
    try:
        with _http() as http:
            response = http.post(endpoints.registration_url, json=body)
    except httpx2.HTTPError as exc:
        raise OAuthFlowError(502, f"MCP client '{client.name}': registration at {where} failed: {type(exc).__name__}")
    if response.status_code not in (200, 201):
        raise OAuthFlowError(
            502,
            f"MCP client '{client.name}': registration at {where} was refused (HTTP {response.status_code}"
            f"{_oauth_error_text(response)})",
        )
    try:
        registered = OAuthClientInformationFull.model_validate_json(response.content)
    except ValidationError:
        raise OAuthFlowError(502, f"MCP client '{client.name}': registration at {where} answered no client_id")
    row = McpOAuthRegistration(
        mcp_client=client,
        issuer=issuer,
        redirect_uri=redirect_uri,
        client_id=registered.client_id,
        token_endpoint_auth_method=registered.token_endpoint_auth_method or "",
    )
    row.set_client_secret(registered.client_secret or "")
    row.save()
    return row.client_id


def _client_auth(client: McpClient, oauth_client_id: str) -> tuple[str, str]:
    """``(client secret, method)`` for the token endpoint (``client_secret_post`` unless the
    registration said ``client_secret_basic``); no secret for a public client."""
    config = client.oauth_config if isinstance(client.oauth_config, dict) else {}
    if config.get("client_id") == oauth_client_id:
        return _config_secret(client), "client_secret_post"
    row = McpOAuthRegistration.objects.filter(mcp_client=client, client_id=oauth_client_id).first()
    if row is None:
        return "", "none"
    return row.client_secret, row.token_endpoint_auth_method or "client_secret_post"


def _oauth_error_text(response: httpx2.Response) -> str:
    """``: <error>: <description>`` of an RFC 6749 error body, shortened; empty when there is none."""
    try:
        body = response.json()
    except ValueError:
        return ""
    if not isinstance(body, dict) or not isinstance(body.get("error"), str):
        return ""
    text = body["error"]
    if isinstance(body.get("error_description"), str):
        text += f": {body['error_description']}"
    return ": " + text[:MAX_SHOWN]


# --- authorization ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Started:
    """Where to send the browser, and the cookie that binds the authorization to it."""

    url: str
    cookie_name: str
    browser_secret: str


def cookie_name(state_digest: str) -> str:
    return COOKIE_PREFIX + state_digest[:16]


def callback_url(base_url: str) -> str:
    return base_url.rstrip("/") + reverse("mcp-oauth-callback")


def start_authorization(
    *,
    client: McpClient,
    identity: Identity,
    base_url: str,
    return_to: str,
    consent_flow_id: str = "",
    now: datetime | None = None,
) -> Started:
    """Open a pending authorization for ``identity`` at ``client``'s authorization server."""
    now = now or timezone.now()
    if not is_per_user(client):
        raise OAuthFlowError(400, f"MCP client '{client.name}' does not use per-user OAuth")
    redirect_uri = callback_url(base_url)
    endpoints = discover(client)
    oauth_client_id = _client_id(client, endpoints, redirect_uri)
    verifier = secrets.token_urlsafe(64)
    state = secrets.token_urlsafe(32)
    browser_secret = secrets.token_urlsafe(32)
    McpUpstreamOAuthFlow.objects.filter(expires_at__lte=now - timedelta(days=1)).delete()
    flow = McpUpstreamOAuthFlow(
        mcp_client=client,
        **identity.columns(),
        state_digest=digest(state),
        browser_secret_digest=digest(browser_secret),
        return_to=return_to,
        consent_flow_id=consent_flow_id,
        issuer=endpoints.issuer,
        token_url=endpoints.token_url,
        oauth_client_id=oauth_client_id,
        redirect_uri=redirect_uri,
        resource=endpoints.resource,
        expires_at=now + timedelta(seconds=UPSTREAM_FLOW_LIFETIME_SECONDS),
    )
    flow.set_code_verifier(verifier)
    flow.save()
    params = {
        "response_type": "code",
        "client_id": oauth_client_id,
        "redirect_uri": redirect_uri,
        "code_challenge": s256_challenge(verifier),
        "code_challenge_method": "S256",
        "state": state,
    }
    if endpoints.scopes:
        params["scope"] = " ".join(endpoints.scopes)
    if endpoints.resource:
        params["resource"] = endpoints.resource  # RFC 8707, as MCP clients must send
    return Started(add_query(endpoints.authorize_url, params), cookie_name(flow.state_digest), browser_secret)


def finish_authorization(
    *, params: dict[str, str], cookies: dict[str, str], now: datetime | None = None
) -> McpUpstreamOAuthFlow:
    """The callback: check and consume the pending authorization, exchange the code, store the token.

    Nothing is stored unless the exchange worked. The flow is consumed (once) before anything is
    sent upstream, so a replayed callback is refused whatever happened to the first one.
    """
    now = now or timezone.now()
    state = params.get("state") or ""
    if not state or "\x00" in state:
        raise OAuthFlowError(400, "state is required")
    flow = (
        McpUpstreamOAuthFlow.objects.select_related("mcp_client", "virtual_key")
        .filter(state_digest=digest(state))
        .first()
    )
    if flow is None:
        raise OAuthFlowError(400, "Unknown authorization state: start connecting again")
    used = OAuthFlowError(400, "This authorization was already completed: its state cannot be used again")
    expired = OAuthFlowError(400, "This authorization has expired (10 minutes): start connecting again")
    if flow.used_at is not None:
        raise used
    if flow.expires_at <= now:
        raise expired
    # Only the browser that started it may complete it (a login-CSRF guard).
    if not secret_matches(cookies.get(cookie_name(flow.state_digest)), flow.browser_secret_digest):
        raise OAuthFlowError(403, "This authorization was started in another browser")
    consumed = McpUpstreamOAuthFlow.objects.filter(pk=flow.pk, used_at__isnull=True, expires_at__gt=now).update(
        used_at=now
    )
    if consumed != 1:  # a concurrent callback won
        raise used
    client = flow.mcp_client
    if params.get("error"):
        described = params["error"] + (f": {params['error_description']}" if params.get("error_description") else "")
        raise OAuthFlowError(400, f"The authorization server of '{client.name}' refused: {described[:MAX_SHOWN]}")
    code = params.get("code") or ""
    if not code:
        raise OAuthFlowError(400, "code is required")
    iss = params.get("iss")
    if iss and flow.issuer and not issuers_match(iss, flow.issuer):  # RFC 9207
        raise OAuthFlowError(400, "The authorization response came from another issuer")
    if flow.virtual_key is not None and not virtual_key_usable(flow.virtual_key, now):
        raise OAuthFlowError(400, "The virtual key this authorization was started for is inactive or expired")
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": flow.redirect_uri,
        "code_verifier": flow.code_verifier,
    }
    if flow.resource:
        form["resource"] = flow.resource
    try:
        token = _token_request(client, flow.token_url, flow.oauth_client_id, form)
    except TokenEndpointError as exc:
        raise OAuthFlowError(400, f"The authorization server of '{client.name}' did not issue a token: {exc.message}")
    identity = identity_of_key(flow.virtual_key) if flow.virtual_key is not None else Identity(None, flow.user_id)
    _store(
        client,
        identity,
        token,
        now,
        token_url=flow.token_url,
        oauth_client_id=flow.oauth_client_id,
        resource=flow.resource,
    )
    logger.info("per-user OAuth connected", extra={"mcp_client": client.name, "identity": identity.label})
    return flow


def _token_request(client: McpClient, token_url: str, oauth_client_id: str, form: dict[str, str]) -> OAuthToken:
    secret, method = _client_auth(client, oauth_client_id)
    data = {**form, "client_id": oauth_client_id}
    headers: dict[str, str] = {}
    if secret and method == "client_secret_basic":  # RFC 6749 section 2.3.1: each part form-encoded
        pair = f"{quote(oauth_client_id, safe='')}:{quote(secret, safe='')}"
        headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode("ascii")
    elif secret:
        data["client_secret"] = secret
    hidden = [secret, *form.values()]
    where = safe_url(token_url)
    try:
        with _http() as http:
            response = http.post(token_url, data=data, headers=headers)
    except httpx2.HTTPError as exc:
        raise TokenEndpointError(f"cannot reach {where} ({type(exc).__name__})", transient=True) from None
    detail = scrub(_oauth_error_text(response), hidden)
    if response.status_code != 200:
        raise TokenEndpointError(
            f"{where} answered HTTP {response.status_code}{detail}", transient=response.status_code >= 500
        )
    try:
        return OAuthToken.model_validate_json(response.content)
    except ValidationError:
        # GitHub answers some errors with 200 and an error body.
        raise TokenEndpointError(f"{where} answered no access token{detail}", transient=False) from None


def _store(
    client: McpClient,
    identity: Identity,
    token: OAuthToken,
    now: datetime,
    *,
    token_url: str,
    oauth_client_id: str,
    resource: str,
    keep_refresh: str = "",
) -> McpUserToken:
    """Create or replace the identity's token at ``client``."""
    expires_at = now + timedelta(seconds=token.expires_in) if token.expires_in else None
    for attempt in range(2):
        try:
            with transaction.atomic():
                row = identity.tokens().select_for_update().filter(mcp_client=client).first() or McpUserToken(
                    mcp_client=client, **identity.columns()
                )
                row.set_tokens(access_token=token.access_token, refresh_token=token.refresh_token or keep_refresh)
                row.scope = token.scope or ""
                row.expires_at = expires_at
                row.token_url, row.oauth_client_id, row.resource = token_url, oauth_client_id, resource
                row.save()
                return row
        except IntegrityError:  # another request created it meanwhile: replace that one
            if attempt:
                raise
    raise AssertionError("unreachable")


# --- use -----------------------------------------------------------------------------------------


def _stale(row: McpUserToken, now: datetime) -> bool:
    return row.expires_at is not None and row.expires_at <= now + timedelta(seconds=EXPIRY_MARGIN_SECONDS)


def bearer_for(client: McpClient, caller: Caller | None, *, now: datetime | None = None) -> str | None:
    """The caller's access token at ``client``, refreshed when it has expired; None when there is
    none, it expired without a refresh token, or the refresh failed."""
    identity = identity_of(caller)
    if identity is None:
        return None
    now = now or timezone.now()
    row = _token_row(client, identity)
    if row is None:
        return None
    if not _stale(row, now):
        return row.access_token
    if not row.refresh_token_encrypted:
        return None
    return _refresh(client, identity, row.pk, now)


def _refresh(client: McpClient, identity: Identity, pk: int, now: datetime) -> str | None:
    with transaction.atomic():
        # Locked while refreshing: a concurrent request waits and then uses the new token (a
        # rotating refresh token works once).
        row = McpUserToken.objects.select_for_update().filter(pk=pk).first()
        if row is None:
            return None
        if not _stale(row, now):
            return row.access_token
        form = {"grant_type": "refresh_token", "refresh_token": row.refresh_token}
        if row.resource:
            form["resource"] = row.resource
        try:
            token = _token_request(client, row.token_url, row.oauth_client_id, form)
        except TokenEndpointError as exc:
            logger.warning(
                "per-user OAuth token refresh failed",
                extra={"mcp_client": client.name, "identity": identity.label, "error": exc.message},
            )
            if not exc.transient:
                row.delete()  # refused: the user must connect again
            return None
        stored = _store(
            client,
            identity,
            token,
            now,
            token_url=row.token_url,
            oauth_client_id=row.oauth_client_id,
            resource=row.resource,
            keep_refresh=row.refresh_token,
        )
        return stored.access_token


# --- tools ---------------------------------------------------------------------------------------


def _tools_key(spec: ClientSpec, who: str) -> str:
    return _TOOLS_KEY.format(client=spec.client_id, fingerprint=spec.fingerprint[:16], who=who)


def cached_tools(spec: ClientSpec) -> list[dict[str, Any]] | None:
    """The last listing any identity got from this client (None: nobody has listed it yet)."""
    text = cache.get(_tools_key(spec, "any"))
    return json.loads(text) if isinstance(text, str) else None


class TokenRejected(UpstreamError):
    """The upstream answered 401 to the identity's token: it was revoked there (it is deleted here)."""


def tools_with(spec: ClientSpec, identity: Identity, bearer: str) -> list[dict[str, Any]]:
    """The client's tools as this identity sees them (cached ``MCP_TOOLS_REFRESH_SECONDS``)."""
    key = _tools_key(spec, digest(identity.key)[:32])
    text = cache.get(key)
    if isinstance(text, str):
        listed: list[dict[str, Any]] = json.loads(text)
        return listed
    try:
        listed = _list_with_bearer(spec, bearer)
    except TokenRejected:
        for row in identity.tokens().filter(mcp_client__client_id=spec.client_id):
            if row.access_token == bearer:  # not one a concurrent request just stored
                row.delete()
        raise
    text = json.dumps(listed)
    cache.set(key, text, refresh_seconds())
    cache.set(_tools_key(spec, "any"), text, None)
    return listed


def offered_tools(spec: ClientSpec, caller: Caller | None, bearer: str | None) -> list[dict[str, Any]] | None:
    """The tools of a per-user client for this caller: listed with its token when it has one, else
    the last listing any identity got (None: nobody has listed it yet)."""
    identity = identity_of(caller)
    if identity is not None and bearer is not None:
        return tools_with(spec, identity, bearer)
    return cached_tools(spec)


def tools_for(client: McpClient, spec: ClientSpec, caller: Caller | None) -> list[dict[str, Any]]:
    """tools/list of a per-user client: with the caller's token, else the cached listing, else none."""
    try:
        return offered_tools(spec, caller, bearer_for(client, caller)) or []
    except TokenRejected:
        return cached_tools(spec) or []


def _list_with_bearer(spec: ClientSpec, bearer: str) -> list[dict[str, Any]]:
    runner = get_runner()
    budget = 2 * (handshake_timeout(spec) + spec.timeout_seconds) + SYNC_MARGIN_SECONDS
    try:
        return runner.run(_list_alone(spec, bearer), budget, f"MCP client '{spec.name}'")
    except TokenRejected:
        raise
    except UpstreamError as exc:
        raise UpstreamError(scrub(str(exc), [bearer])) from None


async def _list_alone(spec: ClientSpec, bearer: str) -> list[dict[str, Any]]:
    """tools/list on a session of its own carrying the user's token (closed in the background)."""
    conn = Connection(spec, {"Authorization": f"Bearer {bearer}"})
    try:
        try:
            await conn.open()
        except UpstreamError:
            if conn.http_status == 401:
                raise TokenRejected(conn.message("the server refused the user's token (HTTP 401)")) from None
            raise
        try:
            return await asyncio.wait_for(conn.list_tools(), spec.timeout_seconds)
        except TimeoutError:
            raise UpstreamError(conn.message(f"tools/list did not answer within {seconds(spec.timeout_seconds)}"))
        except Exception as error:
            raise UpstreamError(conn.message(f"tools/list failed: {conn.describe(error)}")) from None
    finally:
        get_runner().spawn(conn.close())


# --- connect links ---------------------------------------------------------------------------------


def connect_link(base_url: str, client: McpClient, caller: Caller) -> str | None:
    """A signed, single-use, 10-minute link that connects the caller's identity to ``client``
    (None for a caller without an identity)."""
    payload: dict[str, str] = {"c": client.client_id, "n": secrets.token_urlsafe(16)}
    if caller.session_id:
        payload["s"] = caller.session_id
    elif caller.vk is not None:
        payload["v"] = caller.vk.id
    else:
        return None
    token = signing.dumps(payload, salt=LINK_SALT, compress=True)
    return f"{base_url.rstrip('/')}{reverse('mcp-oauth-connect')}?{urlencode({'token': token})}"


def connect_required(request: HttpRequest, client: McpClient, caller: Caller) -> dict[str, Any]:
    """The tool result for a caller without a (usable) token: ``isError`` with the connect link."""

    link = connect_link(public_base_url(request), client, caller)
    if link is None:
        text = (
            f"MCP client '{client.name}' needs each user's own account: connect to the gateway through its "
            "OAuth consent flow with a Virtual Key or a User ID, then connect your account"
        )
    else:
        text = (
            f"MCP client '{client.name}' needs your own account: open this link in your browser to connect it "
            f"(valid {LINK_MAX_AGE_SECONDS // 60} minutes, once), then call the tool again: {link}"
        )
    return {"content": [{"type": "text", "text": text}], "isError": True}


def open_connect_link(token: str, *, now: datetime | None = None) -> tuple[McpClient, Identity]:
    """The client and identity a link names; ``OAuthFlowError`` when it is tampered with, expired,
    already used, or its identity has ended. Opening it uses it up."""
    now = now or timezone.now()
    try:
        payload = signing.loads(token, salt=LINK_SALT, max_age=LINK_MAX_AGE_SECONDS)
    except signing.SignatureExpired:
        raise OAuthFlowError(400, "This connect link has expired: call the tool again for a new one")
    except signing.BadSignature:
        raise OAuthFlowError(400, "This connect link is invalid")
    if not isinstance(payload, dict) or not all(isinstance(v, str) for v in payload.values()):
        raise OAuthFlowError(400, "This connect link is invalid")
    client = McpClient.objects.filter(client_id=payload.get("c", ""), per_user_oauth=True).first()
    nonce = payload.get("n", "")
    if client is None or not nonce:
        raise OAuthFlowError(400, "This connect link names no per-user OAuth MCP client")
    identity = _link_identity(payload, now)
    try:
        with transaction.atomic():
            McpConnectLinkUse.objects.filter(expires_at__lte=now).delete()
            McpConnectLinkUse.objects.create(
                nonce_digest=digest(nonce), expires_at=now + timedelta(seconds=LINK_MAX_AGE_SECONDS)
            )
    except IntegrityError:
        raise OAuthFlowError(400, "This connect link was already used: call the tool again for a new one")
    return client, identity


def _link_identity(payload: dict[str, str], now: datetime) -> Identity:
    ended = OAuthFlowError(400, "The identity this connect link was issued to can no longer connect")
    if payload.get("s"):
        try:
            session = (
                ConsentSession.objects.select_related("virtual_key")
                .filter(pk=payload["s"], revoked_at__isnull=True, expires_at__gt=now)
                .first()
            )
        except (ValueError, DjangoValidationError) as exc:  # a malformed id (the payload is signed: not expected)
            raise ended from exc
        if session is None:
            raise ended
        vk = session.virtual_key
        if vk is not None:
            if session.virtual_key_digest != vk.value_digest or not virtual_key_usable(vk, now):
                raise ended
            return identity_of_key(vk)
        if not session.user_id:
            raise ended
        return Identity(None, session.user_id)
    if payload.get("v"):
        try:
            found = VirtualKey.objects.filter(pk=payload["v"]).first()
        except (ValueError, DjangoValidationError) as exc:
            raise ended from exc
        if found is None or not virtual_key_usable(found, now):
            raise ended
        return identity_of_key(found)
    raise OAuthFlowError(400, "This connect link is invalid")
