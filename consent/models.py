"""Per-user OAuth for MCP clients: registered clients, pending flows, sessions, codes.

Every secret (the browser-binding cookie, authorization codes, access tokens) is stored only as
its SHA-256 digest; the plaintext exists in exactly one response and nowhere else.
"""

from __future__ import annotations

import secrets
import uuid

from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Q

from consent.oauth import RedirectUriError, validate_redirect_uris

FLOW_LIFETIME_SECONDS = 15 * 60
SESSION_LIFETIME_SECONDS = 24 * 60 * 60
CODE_LIFETIME_SECONDS = 5 * 60


def new_client_id() -> str:
    return f"bfc_{secrets.token_urlsafe(18)}"


def new_flow_id() -> str:
    # Unguessable so a flow cannot be found by enumeration; still not a credential on its own:
    # the browser cookie is what authorizes acting on the flow.
    return secrets.token_urlsafe(24)


class Identity(models.TextChoices):
    NONE = "", "Not chosen yet"
    VIRTUAL_KEY = "virtual_key", "Virtual Key"
    USER_ID = "user_id", "User ID"
    ANONYMOUS = "anonymous", "Skipped"


class FlowStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    SUBMITTED = "submitted", "Submitted"
    # The user pressed "Deny access": the client was sent ``error=access_denied``.
    DENIED = "denied", "Denied"


# A flow ends once, either way; ``submitted_at`` is when it ended.
ENDED = (FlowStatus.SUBMITTED, FlowStatus.DENIED)


# The identity columns agree with the identity kind: a VK flow has a key and no user id, a
# user-id flow has a user id and no key, anything else has neither.
_IDENTITY_CONSISTENT = (
    Q(identity=Identity.VIRTUAL_KEY, virtual_key__isnull=False, user_id="")
    | (Q(identity=Identity.USER_ID, virtual_key__isnull=True) & ~Q(user_id=""))
    | Q(identity__in=[Identity.NONE, Identity.ANONYMOUS], virtual_key__isnull=True, user_id="")
)


class OAuthClient(models.Model):
    """An MCP client (a public PKCE client): registered by itself through RFC 7591 dynamic
    registration, or by an administrator in the admin."""

    client_id = models.CharField(max_length=64, unique=True, default=new_client_id, editable=False)
    client_name = models.CharField(max_length=255, blank=True, default="")
    # True unless an administrator made (or vouched for) the client: anyone may register a client
    # under any name, so the consent pages mark such a client as unverified. Rows of unknown
    # origin count as self-registered, the safer reading.
    self_registered = models.BooleanField(
        default=True,
        help_text="Registered by the client itself (RFC 7591): the consent pages show it as unverified. "
        "Clear it once you know who runs this client.",
    )
    # blank=True: emptiness is reported by clean() with the registration message, not Django's.
    redirect_uris = models.JSONField(
        default=list,
        blank=True,
        help_text="https://, http:// on a loopback host, or a private-use scheme such as cursor://",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "OAuth client"

    def __str__(self) -> str:
        return self.client_name or self.client_id

    def clean(self) -> None:
        super().clean()
        try:
            self.redirect_uris = validate_redirect_uris(self.redirect_uris)
        except RedirectUriError as exc:
            raise ValidationError({"redirect_uris": str(exc)})


class ConsentFlow(models.Model):
    """One pass through the consent pages, from ``authorize`` to ``submit`` (15 minutes).

    Bound to the browser that started it: the browser holds a random secret in an HttpOnly
    cookie and only its digest is stored here.
    """

    flow_id = models.CharField(max_length=64, unique=True, default=new_flow_id, editable=False)
    client = models.ForeignKey(OAuthClient, on_delete=models.CASCADE, related_name="flows")
    redirect_uri = models.TextField()
    state = models.TextField(blank=True, default="")
    code_challenge = models.CharField(max_length=43)
    code_challenge_method = models.CharField(max_length=8, default="S256")
    browser_secret_digest = models.CharField(max_length=64, editable=False)
    identity = models.CharField(max_length=16, choices=Identity.choices, blank=True, default=Identity.NONE)
    # Deleting a key ends every flow and session that named it: the identity is gone.
    virtual_key = models.ForeignKey(
        "governance.VirtualKey", null=True, blank=True, on_delete=models.CASCADE, related_name="consent_flows"
    )
    user_id = models.CharField(max_length=255, blank=True, default="")
    status = models.CharField(max_length=16, choices=FlowStatus.choices, default=FlowStatus.PENDING)
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(db_index=True)
    submitted_at = models.DateTimeField(null=True, blank=True, help_text="When the flow was finished or denied.")

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "consent flow"
        constraints = [
            models.CheckConstraint(condition=Q(code_challenge_method="S256"), name="consent_flow_pkce_s256"),
            models.CheckConstraint(condition=_IDENTITY_CONSISTENT, name="consent_flow_identity_consistent"),
            models.CheckConstraint(
                condition=Q(status=FlowStatus.PENDING, submitted_at__isnull=True)
                | Q(status__in=ENDED, submitted_at__isnull=False),
                name="consent_flow_submitted_at_matches_status",
            ),
        ]

    def __str__(self) -> str:
        return f"flow {self.flow_id[:8]}… for {self.client}"


class ConsentSession(models.Model):
    """The identity a user granted to an MCP client (24 hours); its access token is a digest."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    flow = models.OneToOneField(ConsentFlow, null=True, blank=True, on_delete=models.SET_NULL, related_name="session")
    client = models.ForeignKey(OAuthClient, on_delete=models.CASCADE, related_name="sessions")
    identity = models.CharField(max_length=16, choices=Identity.choices)
    virtual_key = models.ForeignKey(
        "governance.VirtualKey", null=True, blank=True, on_delete=models.CASCADE, related_name="consent_sessions"
    )
    user_id = models.CharField(max_length=255, blank=True, default="")
    # The key's value digest when access was granted: rotating the key ends the session's access.
    virtual_key_digest = models.CharField(max_length=64, blank=True, default="", editable=False)
    mcp_clients = models.ManyToManyField(
        "governance.McpClient", blank=True, related_name="consent_sessions", help_text="MCP clients shown at consent."
    )
    access_token_digest = models.CharField(max_length=64, null=True, blank=True, unique=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(db_index=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "consent session"
        constraints = [
            models.CheckConstraint(
                condition=_IDENTITY_CONSISTENT & ~Q(identity=Identity.NONE), name="consent_session_identity_consistent"
            ),
        ]

    def __str__(self) -> str:
        return f"session {str(self.id)[:8]}… for {self.client}"


class AuthorizationCode(models.Model):
    """A single-use, 5-minute code that the client exchanges (with its PKCE verifier) for a token."""

    code_digest = models.CharField(max_length=64, unique=True, editable=False)
    session = models.ForeignKey(ConsentSession, on_delete=models.CASCADE, related_name="codes")
    client = models.ForeignKey(OAuthClient, on_delete=models.CASCADE, related_name="codes")
    redirect_uri = models.TextField()
    code_challenge = models.CharField(max_length=43)
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(db_index=True)
    used_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "authorization code"

    def __str__(self) -> str:
        return f"code for {self.client} ({'used' if self.used_at else 'unused'})"
