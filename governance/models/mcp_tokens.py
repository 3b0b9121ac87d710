"""Per-user OAuth to upstream MCP servers (``auth_type: per_user_oauth``): each identity's token,
the gateway's own registration at an upstream authorization server, pending authorizations, and
used connect links.

An *identity* is a virtual key or a user id (exactly one): the identity of a consent flow or
session, or the VK a caller presents. Every secret is stored encrypted (``governance.crypto``:
access and refresh tokens, a registered client secret, PKCE verifiers) or as a digest (the OAuth
``state``, the browser-binding cookie, connect-link nonces); nothing here is ever shown.
"""

from __future__ import annotations

from datetime import datetime

from django.db import models
from django.db.models import Q
from django.utils import timezone

from governance import crypto

UPSTREAM_FLOW_LIFETIME_SECONDS = 10 * 60

# A row names a virtual key or a user id, never both, never neither.
_ONE_IDENTITY = (Q(virtual_key__isnull=False) & Q(user_id="")) | (Q(virtual_key__isnull=True) & ~Q(user_id=""))


def identity_filter(*, virtual_key_id: object, user_id: str) -> Q:
    """The rows of this identity: the key when there is one (its id), else the user id."""
    if virtual_key_id is not None:
        return Q(virtual_key_id=virtual_key_id)
    return Q(virtual_key__isnull=True, user_id=user_id)


class McpUserTokenQuerySet(models.QuerySet["McpUserToken"]):
    def of_identity(self, *, virtual_key_id: object, user_id: str) -> McpUserTokenQuerySet:
        if virtual_key_id is None and not user_id:
            return self.none()
        return self.filter(identity_filter(virtual_key_id=virtual_key_id, user_id=user_id))

    def usable(self, now: datetime) -> McpUserTokenQuerySet:
        """Tokens not known to be dead: unexpired, without an expiry, or refreshable."""
        return self.filter(Q(expires_at__isnull=True) | Q(expires_at__gt=now) | ~Q(refresh_token_encrypted=""))

    def connected_client_ids(self, *, virtual_key_id: object, user_id: str) -> set[int]:
        """Primary keys of the MCP clients this identity holds a usable token for."""
        rows = self.of_identity(virtual_key_id=virtual_key_id, user_id=user_id).usable(timezone.now())
        return set(rows.values_list("mcp_client_id", flat=True))


class McpUserToken(models.Model):
    """One identity's OAuth token at one per-user-OAuth MCP client (encrypted at rest)."""

    mcp_client = models.ForeignKey("governance.McpClient", on_delete=models.CASCADE, related_name="user_tokens")
    # Deleting the key deletes its tokens.
    virtual_key = models.ForeignKey(
        "governance.VirtualKey", null=True, blank=True, on_delete=models.CASCADE, related_name="mcp_user_tokens"
    )
    user_id = models.CharField(max_length=255, blank=True, default="")
    access_token_encrypted = models.TextField(editable=False)
    refresh_token_encrypted = models.TextField(blank=True, default="", editable=False)
    scope = models.TextField(blank=True, default="")
    expires_at = models.DateTimeField(null=True, blank=True)
    # Where and as whom to refresh: the token endpoint and the upstream OAuth client id used.
    token_url = models.CharField(max_length=2000, editable=False)
    oauth_client_id = models.CharField(max_length=255, editable=False)
    resource = models.CharField(max_length=2000, blank=True, default="", editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = McpUserTokenQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "MCP user token"
        constraints = [
            models.CheckConstraint(condition=_ONE_IDENTITY, name="mcp_user_token_one_identity"),
            models.UniqueConstraint(
                fields=["mcp_client", "virtual_key"],
                condition=Q(virtual_key__isnull=False),
                name="mcp_user_token_unique_vk",
            ),
            models.UniqueConstraint(
                fields=["mcp_client", "user_id"],
                condition=Q(virtual_key__isnull=True),
                name="mcp_user_token_unique_user",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.mcp_client} token for {self.identity_label}"

    @property
    def identity_label(self) -> str:
        if self.virtual_key_id is not None:
            return f"virtual key {self.virtual_key}"
        return f"user {self.user_id}"

    @property
    def access_token(self) -> str:
        return crypto.decrypt(self.access_token_encrypted)

    @property
    def refresh_token(self) -> str:
        return crypto.decrypt(self.refresh_token_encrypted) if self.refresh_token_encrypted else ""

    def set_tokens(self, *, access_token: str, refresh_token: str) -> None:
        self.access_token_encrypted = crypto.encrypt(access_token)
        self.refresh_token_encrypted = crypto.encrypt(refresh_token) if refresh_token else ""


class McpOAuthRegistration(models.Model):
    """The gateway's RFC 7591 registration at an upstream authorization server, for an MCP client
    without a configured ``oauth_config.client_id``; reused while the issuer and the gateway's
    callback URL stay the same."""

    mcp_client = models.ForeignKey("governance.McpClient", on_delete=models.CASCADE, related_name="oauth_registrations")
    issuer = models.CharField(max_length=2000)
    redirect_uri = models.CharField(max_length=2000)
    client_id = models.CharField(max_length=255)
    client_secret_encrypted = models.TextField(blank=True, default="", editable=False)
    # As the server registered it: client_secret_post (the default), client_secret_basic or none.
    token_endpoint_auth_method = models.CharField(max_length=32, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "MCP OAuth registration"

    def __str__(self) -> str:
        return f"{self.mcp_client} at {self.issuer}"

    @property
    def client_secret(self) -> str:
        return crypto.decrypt(self.client_secret_encrypted) if self.client_secret_encrypted else ""

    def set_client_secret(self, value: str) -> None:
        self.client_secret_encrypted = crypto.encrypt(value) if value else ""


class McpUpstreamOAuthFlow(models.Model):
    """A pending authorization at an upstream (10 minutes, single use): found by its ``state``'s
    digest, bound to the browser that started it by a cookie's digest."""

    class ReturnTo(models.TextChoices):
        MCPS_PAGE = "mcps", "The consent flow's MCPs page"
        CONNECTED_PAGE = "connected", "A plain 'connected' page (a connect link)"

    mcp_client = models.ForeignKey("governance.McpClient", on_delete=models.CASCADE, related_name="+")
    virtual_key = models.ForeignKey("governance.VirtualKey", null=True, blank=True, on_delete=models.CASCADE)
    user_id = models.CharField(max_length=255, blank=True, default="")
    state_digest = models.CharField(max_length=64, unique=True, editable=False)
    browser_secret_digest = models.CharField(max_length=64, editable=False)
    code_verifier_encrypted = models.TextField(editable=False)
    return_to = models.CharField(max_length=16, choices=ReturnTo.choices)
    consent_flow_id = models.CharField(max_length=64, blank=True, default="")
    # What the code exchange needs (no secret: a client secret is read from its source then).
    issuer = models.CharField(max_length=2000, blank=True, default="")
    token_url = models.CharField(max_length=2000)
    oauth_client_id = models.CharField(max_length=255)
    redirect_uri = models.CharField(max_length=2000)
    resource = models.CharField(max_length=2000, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(db_index=True)
    used_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "MCP upstream OAuth flow"
        constraints = [models.CheckConstraint(condition=_ONE_IDENTITY, name="mcp_upstream_flow_one_identity")]

    def __str__(self) -> str:
        return f"authorization at {self.mcp_client} ({'used' if self.used_at else 'pending'})"

    @property
    def code_verifier(self) -> str:
        return crypto.decrypt(self.code_verifier_encrypted)

    def set_code_verifier(self, value: str) -> None:
        self.code_verifier_encrypted = crypto.encrypt(value)


class McpConnectLinkUse(models.Model):
    """A connect link's nonce (digest), recorded when the link is opened: a link works once."""

    nonce_digest = models.CharField(max_length=64, unique=True, editable=False)
    used_at = models.DateTimeField(auto_now_add=True)
    # After this the link's signature has expired anyway: the row may go.
    expires_at = models.DateTimeField(db_index=True)

    class Meta:
        verbose_name = "MCP connect link use"

    def __str__(self) -> str:
        return f"connect link used at {self.used_at}"


__all__ = [
    "McpConnectLinkUse",
    "McpOAuthRegistration",
    "McpUpstreamOAuthFlow",
    "McpUserToken",
    "identity_filter",
]
