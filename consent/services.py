"""Every write of the consent flow: registration, flows, identities, submit, tokens, purge.

Things that must happen once (a submit, a code redemption, a token issue) are conditional
UPDATEs whose row count decides, so two racing requests cannot both succeed.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import DatabaseError, transaction
from django.db.models import Q
from django.utils import timezone

from consent.exceptions import (
    MSG_CHOOSE_IDENTITY,
    MSG_CLIENT_AND_REDIRECT_REQUIRED,
    MSG_FLOW_DENIED,
    MSG_FLOW_EXPIRED,
    MSG_FLOW_INVALID,
    MSG_FLOW_SUBMITTED,
    MSG_PKCE_CHALLENGE_FORMAT,
    MSG_PKCE_REQUIRED,
    MSG_REDIRECT_NOT_REGISTERED,
    MSG_RESPONSE_TYPE,
    MSG_SKIP_NOT_ALLOWED,
    MSG_STATE_CHARACTERS,
    MSG_STATE_TOO_LONG,
    MSG_UNKNOWN_CLIENT,
    MSG_USER_ID_CHARACTERS,
    MSG_USER_ID_EMPTY,
    MSG_USER_ID_TOO_LONG,
    MSG_VK_EMPTY,
    MSG_VK_FAILED,
    MSG_VK_INVALID,
    FlowRejected,
    IdentityRejected,
    OAuthError,
)
from consent.models import (
    CODE_LIFETIME_SECONDS,
    FLOW_LIFETIME_SECONDS,
    SESSION_LIFETIME_SECONDS,
    AuthorizationCode,
    ConsentFlow,
    ConsentSession,
    FlowStatus,
    Identity,
    OAuthClient,
)
from consent.oauth import add_query, is_valid_code_challenge, new_secret, pkce_matches
from consent.selectors import mcp_clients_for_identity, virtual_key_usable
from governance.keys import digest
from governance.models import McpUserToken, VirtualKey
from governance.selectors import virtual_key_by_value

logger = logging.getLogger("bifrost.consent")

MAX_STATE_LENGTH = 1024
MAX_USER_ID_LENGTH = 255


def oauth_client_register(*, redirect_uris: object, client_name: str = "") -> OAuthClient:
    """RFC 7591 registration of a public client; redirect URIs follow ``consent.oauth`` rules."""
    if not isinstance(client_name, str) or len(client_name) > 255:
        raise ValidationError({"client_name": "client_name must be a string of at most 255 characters"})
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in client_name):
        raise ValidationError({"client_name": "client_name must not contain control characters"})
    client = OAuthClient(client_name=client_name, redirect_uris=redirect_uris, self_registered=True)
    return oauth_client_save(client=client)


def oauth_client_save(*, client: OAuthClient) -> OAuthClient:
    """Validate (redirect-URI rules in ``OAuthClient.clean``) and save; used by the admin too."""
    client.full_clean()
    client.save()
    return client


@transaction.atomic
def consent_sessions_revoke(*, session_ids: list, now: datetime | None = None) -> int:
    """End sessions now: their access tokens stop working at once. Returns how many changed.

    A user-id session also loses that user id's upstream per-user OAuth tokens (a VK's stay with
    the key: it may be used without this session, and deleting the key deletes them)."""
    now = now or timezone.now()
    revoked = ConsentSession.objects.filter(pk__in=session_ids, revoked_at__isnull=True)
    user_ids = list(revoked.filter(identity=Identity.USER_ID).values_list("user_id", flat=True))
    count = revoked.update(revoked_at=now)
    McpUserToken.objects.filter(virtual_key__isnull=True, user_id__in=user_ids).delete()
    return count


def _client_by_id(client_id: str) -> OAuthClient | None:
    # A NUL character cannot be part of a client id, and PostgreSQL refuses it in a parameter.
    if "\x00" in client_id:
        return None
    return OAuthClient.objects.filter(client_id=client_id).first()


def consent_flow_start(
    *,
    response_type: str,
    client_id: str,
    redirect_uri: str,
    code_challenge: str,
    code_challenge_method: str,
    state: str = "",
    now: datetime | None = None,
) -> tuple[ConsentFlow, str]:
    """Validate an authorize request and open a 15-minute flow.

    Returns the flow and the browser secret for its cookie (only the digest is stored). The
    checks run in the order of the spec, so each bad request gets the first message that applies.
    Errors never redirect: until the client and redirect URI are known good, redirecting to
    the given URI would make this an open redirector.
    """
    now = now or timezone.now()
    if response_type != "code":
        raise FlowRejected(400, MSG_RESPONSE_TYPE)
    if not client_id or not redirect_uri:
        raise FlowRejected(400, MSG_CLIENT_AND_REDIRECT_REQUIRED)
    if not code_challenge or code_challenge_method != "S256":
        raise FlowRejected(400, MSG_PKCE_REQUIRED)
    if not is_valid_code_challenge(code_challenge):
        raise FlowRejected(400, MSG_PKCE_CHALLENGE_FORMAT)
    client = _client_by_id(client_id)
    if client is None:
        raise FlowRejected(400, MSG_UNKNOWN_CLIENT)
    # Exact string match (RFC 6749 section 3.1.2.3): no prefix or pattern matching.
    if redirect_uri not in client.redirect_uris:
        raise FlowRejected(400, MSG_REDIRECT_NOT_REGISTERED)
    if len(state) > MAX_STATE_LENGTH:
        raise FlowRejected(400, MSG_STATE_TOO_LONG)
    # RFC 6749 appendix A.5: state is printable ASCII; it is echoed into the client's URL.
    if any(not 0x20 <= ord(ch) <= 0x7E for ch in state):
        raise FlowRejected(400, MSG_STATE_CHARACTERS)
    secret, secret_digest = new_secret()
    flow = ConsentFlow.objects.create(
        client=client,
        redirect_uri=redirect_uri,
        state=state,
        code_challenge=code_challenge,
        code_challenge_method="S256",
        browser_secret_digest=secret_digest,
        expires_at=now + timedelta(seconds=FLOW_LIFETIME_SECONDS),
    )
    return flow, secret


def _set_identity(flow: ConsentFlow, now: datetime, **fields: object) -> None:
    """Change the identity of a still-pending, unexpired flow, in one conditional UPDATE.

    The row count decides: a flow submitted or expired since it was read stays untouched.
    """
    changed = ConsentFlow.objects.filter(pk=flow.pk, status=FlowStatus.PENDING, expires_at__gt=now).update(**fields)
    if changed != 1:
        raise _why_not_pending(flow.pk, now, expired_status=400)
    for name, value in fields.items():
        setattr(flow, name, value)


def _why_not_pending(pk: int, now: datetime, *, expired_status: int) -> FlowRejected:
    current = ConsentFlow.objects.filter(pk=pk).values("status", "expires_at").first()
    if current is not None and current["status"] == FlowStatus.SUBMITTED:
        return FlowRejected(409, MSG_FLOW_SUBMITTED)
    if current is not None and current["status"] == FlowStatus.DENIED:
        return FlowRejected(400, MSG_FLOW_DENIED)
    if current is not None and expired_status == 410:
        return FlowRejected(410, MSG_FLOW_EXPIRED)
    return FlowRejected(400, MSG_FLOW_INVALID)


def consent_flow_set_virtual_key(*, flow: ConsentFlow, value: str, now: datetime | None = None) -> VirtualKey:
    """Record the VK whose value the user typed (trimmed) as the flow's identity.

    Unknown, inactive and expired keys get the same message, so the form reveals nothing
    about which keys exist.
    """
    now = now or timezone.now()
    value = (value or "").strip()
    if not value:
        raise IdentityRejected(MSG_VK_EMPTY)
    try:
        vk = virtual_key_by_value(value)
    except DatabaseError:
        # The value itself is never logged.
        logger.warning("virtual key lookup failed during consent", extra={"flow": flow.pk})
        raise IdentityRejected(MSG_VK_FAILED)
    if vk is None or not virtual_key_usable(vk, now):
        raise IdentityRejected(MSG_VK_INVALID)
    _set_identity(flow, now, identity=Identity.VIRTUAL_KEY, virtual_key=vk, user_id="")
    return vk


def consent_flow_set_user_id(*, flow: ConsentFlow, user_id: str, now: datetime | None = None) -> None:
    """Record a user id (1-255 characters after trimming) as the identity; clears any VK."""
    now = now or timezone.now()
    user_id = (user_id or "").strip()
    if not user_id:
        raise IdentityRejected(MSG_USER_ID_EMPTY)
    if len(user_id) > MAX_USER_ID_LENGTH:
        raise IdentityRejected(MSG_USER_ID_TOO_LONG)
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in user_id):
        raise IdentityRejected(MSG_USER_ID_CHARACTERS)
    _set_identity(flow, now, identity=Identity.USER_ID, virtual_key=None, user_id=user_id)


def consent_flow_skip(*, flow: ConsentFlow, now: datetime | None = None) -> None:
    """Continue without an identity; only allowed when virtual keys are not enforced."""
    now = now or timezone.now()
    if settings.GOVERNANCE_ENFORCE_VIRTUAL_KEYS:
        raise IdentityRejected(MSG_SKIP_NOT_ALLOWED)
    _set_identity(flow, now, identity=Identity.ANONYMOUS, virtual_key=None, user_id="")


def _check_identity(flow: ConsentFlow, now: datetime) -> None:
    """The identity is re-checked at submit: the key may have been disabled since it was entered."""
    if flow.identity == Identity.NONE:
        raise IdentityRejected(MSG_CHOOSE_IDENTITY)
    if flow.identity == Identity.VIRTUAL_KEY and not virtual_key_usable(flow.virtual_key, now):
        raise IdentityRejected(MSG_VK_INVALID)
    if flow.identity == Identity.ANONYMOUS and settings.GOVERNANCE_ENFORCE_VIRTUAL_KEYS:
        raise IdentityRejected(MSG_SKIP_NOT_ALLOWED)


@transaction.atomic
def consent_flow_submit(*, flow: ConsentFlow, now: datetime | None = None) -> str:
    """Consume the flow, open a 24-hour session, issue a 5-minute code; returns the client URL.

    The conditional UPDATE from pending to submitted is the one gate: of two racing submits
    exactly one changes the row. Identity changes also require a pending row, so the identity
    read right after the UPDATE is the one that gets granted. Any refusal raised below rolls
    the whole transaction back, leaving the flow pending.
    """
    now = now or timezone.now()
    changed = ConsentFlow.objects.filter(pk=flow.pk, status=FlowStatus.PENDING, expires_at__gt=now).update(
        status=FlowStatus.SUBMITTED, submitted_at=now
    )
    if changed != 1:
        raise _why_not_pending(flow.pk, now, expired_status=410)
    flow = ConsentFlow.objects.select_related("client", "virtual_key").get(pk=flow.pk)
    _check_identity(flow, now)
    session = ConsentSession.objects.create(
        flow=flow,
        client=flow.client,
        identity=flow.identity,
        virtual_key=flow.virtual_key,
        virtual_key_digest=flow.virtual_key.value_digest if flow.virtual_key else "",
        user_id=flow.user_id,
        expires_at=now + timedelta(seconds=SESSION_LIFETIME_SECONDS),
    )
    session.mcp_clients.set(mcp_clients_for_identity(virtual_key=flow.virtual_key))
    code, code_digest = new_secret()
    AuthorizationCode.objects.create(
        code_digest=code_digest,
        session=session,
        client=flow.client,
        redirect_uri=flow.redirect_uri,
        code_challenge=flow.code_challenge,
        expires_at=now + timedelta(seconds=CODE_LIFETIME_SECONDS),
    )
    params = {"code": code}
    if flow.state:
        params["state"] = flow.state
    return add_query(flow.redirect_uri, params)


def consent_flow_deny(*, flow: ConsentFlow, now: datetime | None = None) -> str:
    """End the flow without granting anything; returns the client URL with ``error=access_denied``.

    RFC 6749 section 4.1.2.1: the error goes to the redirect URI of this flow (checked against the
    client's registered URIs when the flow started, never taken from the request), with the
    ``state`` the client sent. The same conditional UPDATE as a submit ends the flow, so it can
    be neither finished nor denied again afterwards.
    """
    now = now or timezone.now()
    if flow.redirect_uri not in flow.client.redirect_uris:
        # Unregistered by an administrator since the flow started: send the browser nowhere.
        raise FlowRejected(400, MSG_REDIRECT_NOT_REGISTERED)
    changed = ConsentFlow.objects.filter(pk=flow.pk, status=FlowStatus.PENDING, expires_at__gt=now).update(
        status=FlowStatus.DENIED, submitted_at=now
    )
    if changed != 1:
        raise _why_not_pending(flow.pk, now, expired_status=400)
    params = {"error": "access_denied", "error_description": "The user denied the request"}
    if flow.state:
        params["state"] = flow.state
    return add_query(flow.redirect_uri, params)


def authorization_code_redeem(
    *, code: str, code_verifier: str, client_id: str, redirect_uri: str, now: datetime | None = None
) -> tuple[str, int]:
    """Exchange a code for an access token: ``(token, expires_in_seconds)`` or ``OAuthError``.

    The code is burnt by a conditional UPDATE *before* the client, redirect URI and PKCE
    checks, so a wrong verifier also spends it: a stolen code gets exactly one guess. Presenting
    an already-used code revokes the session it issued (RFC 6749 section 4.1.2).
    """
    now = now or timezone.now()
    required = {"code": code, "code_verifier": code_verifier, "client_id": client_id, "redirect_uri": redirect_uri}
    for name, value in required.items():
        if not value:
            raise OAuthError("invalid_request", f"{name} is required")
    client = _client_by_id(client_id)
    if client is None:
        raise OAuthError("invalid_client", MSG_UNKNOWN_CLIENT, status=401)
    row = AuthorizationCode.objects.filter(code_digest=digest(code)).first()
    if row is None:
        raise OAuthError("invalid_grant", "Authorization code is invalid")
    consumed = AuthorizationCode.objects.filter(pk=row.pk, used_at__isnull=True, expires_at__gt=now).update(used_at=now)
    if consumed != 1:
        if AuthorizationCode.objects.filter(pk=row.pk, used_at__isnull=False).exists():
            ConsentSession.objects.filter(pk=row.session_id, revoked_at__isnull=True).update(revoked_at=now)
            raise OAuthError("invalid_grant", "Authorization code has already been used")
        raise OAuthError("invalid_grant", "Authorization code has expired")
    if row.client_id != client.pk:
        raise OAuthError("invalid_grant", "Authorization code was issued to another client")
    if redirect_uri != row.redirect_uri:
        raise OAuthError("invalid_grant", "redirect_uri does not match the authorization request")
    if not pkce_matches(code_verifier, row.code_challenge):
        raise OAuthError("invalid_grant", "PKCE verification failed: code_verifier does not match code_challenge")
    token, token_digest = new_secret()
    issued = ConsentSession.objects.filter(
        pk=row.session_id, access_token_digest__isnull=True, revoked_at__isnull=True, expires_at__gt=now
    ).update(access_token_digest=token_digest)
    if issued != 1:
        raise OAuthError("invalid_grant", "The consent session has ended")
    expires_at = ConsentSession.objects.values_list("expires_at", flat=True).get(pk=row.session_id)
    return token, max(1, int((expires_at - now).total_seconds()))


def consent_state_purge(*, now: datetime | None = None) -> dict[str, int]:
    """Delete expired flows, expired codes and expired or revoked sessions; returns counts.

    Safe to run at any time: nothing deleted here would still be accepted, because every
    read also checks ``expires_at`` against the clock.
    """
    now = now or timezone.now()
    with transaction.atomic():
        sessions = ConsentSession.objects.filter(Q(expires_at__lte=now) | Q(revoked_at__isnull=False)).delete()[1]
        codes = AuthorizationCode.objects.filter(expires_at__lte=now).delete()[1]
        flows = ConsentFlow.objects.filter(expires_at__lte=now).delete()[1]
    return {
        "flows": flows.get(ConsentFlow._meta.label, 0),
        "codes": codes.get(AuthorizationCode._meta.label, 0) + sessions.get(AuthorizationCode._meta.label, 0),
        "sessions": sessions.get(ConsentSession._meta.label, 0),
    }


__all__ = [
    "authorization_code_redeem",
    "consent_flow_deny",
    "consent_flow_set_user_id",
    "consent_flow_set_virtual_key",
    "consent_flow_skip",
    "consent_flow_start",
    "consent_flow_submit",
    "consent_sessions_revoke",
    "consent_state_purge",
    "oauth_client_register",
    "oauth_client_save",
]
