"""A streamable-HTTP MCP server that requires an OAuth Bearer token (the ``mcp`` SDK's server auth)
and is its own tiny authorization server: an upstream of the per-user OAuth tests.

Run: ``python -m tests.mcp.servers.oauth_server --port N [--token-ttl SECONDS] [--user NAME]
[--client-id ID --client-secret SECRET --redirect-uri URI]``, on 127.0.0.1.

- ``/mcp`` answers 401 (``WWW-Authenticate: Bearer ... resource_metadata=...``) without a valid
  access token issued for it (RFC 8707 ``resource``: ``http://127.0.0.1:N/mcp``).
- ``/.well-known/oauth-protected-resource`` (and ``.../mcp``): RFC 9728, naming this server as
  its authorization server; ``/.well-known/oauth-authorization-server``: RFC 8414.
- ``/authorize`` auto-approves: 302 to the redirect URI with a code (and the state) for the
  signed-in user; ``/token``: ``authorization_code`` (PKCE S256 checked by the SDK, codes single
  use) and ``refresh_token`` (rotating: a refresh token works once); ``/register``: RFC 7591.
- Access tokens live ``--token-ttl`` seconds (default 3600).
- ``--client-id/--client-secret/--redirect-uri``: a pre-registered confidential client.
- Test controls: ``POST /_test/login?user=NAME`` (who the next authorizations sign in as),
  ``POST /_test/revoke?user=NAME`` (forget that user's tokens), ``GET /_test/stats``.

Tools: ``whoami()`` → the user the presented token belongs to; ``echo(text)``.
"""

from __future__ import annotations

import argparse
import secrets
import time
from collections import Counter

import uvicorn
from mcp.server.auth.provider import (
    AccessToken,
    AuthorizationCode,
    AuthorizationParams,
    RefreshToken,
    construct_redirect_uri,
)
from mcp.server.auth.settings import AuthSettings, ClientRegistrationOptions, RevocationOptions
from mcp.server.mcpserver import Context, MCPServer
from mcp.shared.auth import OAuthClientInformationFull, OAuthToken
from pydantic import AnyUrl
from starlette.requests import Request
from starlette.responses import JSONResponse, Response


class TinyAuthorizationServer:
    """An in-memory ``OAuthAuthorizationServerProvider`` that approves every request."""

    def __init__(self, *, token_ttl: int, user: str) -> None:
        self.token_ttl = token_ttl
        self.user = user
        self.clients: dict[str, OAuthClientInformationFull] = {}
        self.codes: dict[str, AuthorizationCode] = {}
        self.access: dict[str, AccessToken] = {}
        self.refresh: dict[str, RefreshToken] = {}
        self.stats: Counter[str] = Counter()

    async def get_client(self, client_id: str) -> OAuthClientInformationFull | None:
        return self.clients.get(client_id)

    async def register_client(self, client_info: OAuthClientInformationFull) -> None:
        self.clients[client_info.client_id] = client_info
        self.stats["registrations"] += 1

    async def authorize(self, client: OAuthClientInformationFull, params: AuthorizationParams) -> str:
        code = secrets.token_urlsafe(32)
        self.codes[code] = AuthorizationCode(
            code=code,
            scopes=params.scopes or [],
            expires_at=time.time() + 300,
            client_id=client.client_id,
            code_challenge=params.code_challenge,
            redirect_uri=params.redirect_uri,
            redirect_uri_provided_explicitly=params.redirect_uri_provided_explicitly,
            resource=params.resource,
            subject=self.user,
        )
        self.stats["authorizations"] += 1
        return construct_redirect_uri(str(params.redirect_uri), code=code, state=params.state)

    async def load_authorization_code(self, client: OAuthClientInformationFull, code: str) -> AuthorizationCode | None:
        return self.codes.get(code)

    async def exchange_authorization_code(
        self, client: OAuthClientInformationFull, authorization_code: AuthorizationCode
    ) -> OAuthToken:
        del self.codes[authorization_code.code]  # single use
        self.stats["code_exchanges"] += 1
        code = authorization_code
        return self._issue(client.client_id, code.scopes, code.resource, code.subject or self.user)

    async def load_refresh_token(self, client: OAuthClientInformationFull, refresh_token: str) -> RefreshToken | None:
        return self.refresh.get(refresh_token)

    async def exchange_refresh_token(
        self, client: OAuthClientInformationFull, refresh_token: RefreshToken, scopes: list[str]
    ) -> OAuthToken:
        del self.refresh[refresh_token.token]  # rotating: each refresh token works once
        self.stats["refreshes"] += 1
        return self._issue(client.client_id, scopes, refresh_token.resource, refresh_token.subject or self.user)

    async def load_access_token(self, token: str) -> AccessToken | None:
        return self.access.get(token)

    async def revoke_token(self, token: AccessToken | RefreshToken) -> None:
        self.access.pop(token.token, None)
        self.refresh.pop(token.token, None)

    def _issue(self, client_id: str, scopes: list[str], resource: str | None, user: str) -> OAuthToken:
        access, refresh = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        self.access[access] = AccessToken(
            token=access,
            client_id=client_id,
            scopes=scopes,
            expires_at=int(time.time()) + self.token_ttl,
            resource=resource,
            subject=user,
        )
        self.refresh[refresh] = RefreshToken(
            token=refresh, client_id=client_id, scopes=scopes, resource=resource, subject=user
        )
        self.stats["tokens_issued"] += 1
        return OAuthToken(
            access_token=access,
            token_type="Bearer",
            expires_in=self.token_ttl,
            refresh_token=refresh,
            scope=" ".join(scopes) or None,
        )

    def user_of(self, authorization: str) -> str | None:
        scheme, _, token = authorization.partition(" ")
        found = self.access.get(token.strip()) if scheme.lower() == "bearer" else None
        return found.subject if found is not None else None

    def forget_user(self, user: str) -> int:
        gone = [t for t, a in self.access.items() if a.subject == user]
        gone += [t for t, r in self.refresh.items() if r.subject == user]
        for token in gone:
            self.access.pop(token, None)
            self.refresh.pop(token, None)
        return len(gone)


def build_server(
    *, port: int, token_ttl: int, user: str, client: OAuthClientInformationFull | None = None
) -> tuple[MCPServer, TinyAuthorizationServer]:
    base = f"http://127.0.0.1:{port}"
    provider = TinyAuthorizationServer(token_ttl=token_ttl, user=user)
    if client is not None:
        provider.clients[client.client_id] = client
    server = MCPServer(
        "bifrost-test-oauth",
        version="1.0",
        auth_server_provider=provider,
        auth=AuthSettings(
            issuer_url=base,
            resource_server_url=f"{base}/mcp",
            client_registration_options=ClientRegistrationOptions(enabled=True),
            revocation_options=RevocationOptions(enabled=True),
            validate_token_resource=True,
        ),
    )

    @server.tool()
    def whoami(ctx: Context) -> str:
        """The user the presented access token belongs to."""
        headers = ctx.headers or {}
        authorization = next((v for k, v in headers.items() if k.lower() == "authorization"), "")
        return provider.user_of(authorization) or "unknown"

    @server.tool()
    def echo(text: str) -> str:
        """Answer the text unchanged."""
        return text

    resource_metadata = {
        "resource": f"{base}/mcp",
        "authorization_servers": [base],
        "bearer_methods_supported": ["header"],
        "resource_name": "bifrost-test-oauth",
    }

    @server.custom_route("/.well-known/oauth-protected-resource", methods=["GET"])
    async def protected_resource(request: Request) -> Response:
        return JSONResponse(resource_metadata)

    @server.custom_route("/_test/login", methods=["POST"])
    async def login(request: Request) -> Response:
        provider.user = request.query_params.get("user") or provider.user
        return JSONResponse({"user": provider.user})

    @server.custom_route("/_test/revoke", methods=["POST"])
    async def revoke(request: Request) -> Response:
        return JSONResponse({"revoked": provider.forget_user(request.query_params.get("user", ""))})

    @server.custom_route("/_test/stats", methods=["GET"])
    async def stats(request: Request) -> Response:
        return JSONResponse({**provider.stats, "clients": len(provider.clients)})

    return server, provider


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--token-ttl", type=int, default=3600, help="access token lifetime in seconds")
    parser.add_argument("--user", default="octocat", help="who /authorize signs in as (see /_test/login)")
    parser.add_argument("--client-id", help="a pre-registered confidential client")
    parser.add_argument("--client-secret", default="")
    parser.add_argument("--redirect-uri", action="append", default=[])
    args = parser.parse_args()

    client = None
    if args.client_id:
        client = OAuthClientInformationFull(
            client_id=args.client_id,
            client_secret=args.client_secret or None,
            redirect_uris=[AnyUrl(uri) for uri in args.redirect_uri],
            token_endpoint_auth_method="client_secret_post" if args.client_secret else "none",
            grant_types=["authorization_code", "refresh_token"],
        )
    server, _ = build_server(port=args.port, token_ttl=args.token_ttl, user=args.user, client=client)
    app = server.streamable_http_app(host="127.0.0.1")
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", lifespan="on")


if __name__ == "__main__":
    main()
