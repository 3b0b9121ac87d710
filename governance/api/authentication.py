"""Who may call the management API: admin API tokens, staff HTTP Basic, or an admin session."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, cast

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.base_user import AbstractBaseUser
from django.http import HttpRequest
from django.utils import timezone
from django.utils.crypto import constant_time_compare, salted_hmac
from django_ratelimit.core import get_usage
from redis.exceptions import RedisError
from rest_framework import authentication, exceptions

from bifrost_site.ratelimit_keys import client_address
from governance.keys import VK_PREFIX
from governance.models import ApiToken
from governance.selectors import api_token_user

if TYPE_CHECKING:
    from rest_framework.request import Request


class AdminTokenAuthentication(authentication.BaseAuthentication):
    """``Authorization: Bearer <admin API token>`` (tokens are stored as SHA-256 digests)."""

    keyword = "bearer"

    def authenticate(self, request: Request) -> tuple[AbstractBaseUser, ApiToken] | None:
        header = request.META.get("HTTP_AUTHORIZATION", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != self.keyword:
            return None
        token = token.strip()
        if not token or token.lower().startswith(VK_PREFIX):
            # A virtual key is an inference credential, never a management one.
            raise exceptions.AuthenticationFailed("Invalid admin API token")
        found = api_token_user(token)
        if found is None:
            raise exceptions.AuthenticationFailed("Invalid admin API token")
        user, api_token = found
        if not user.is_active or not user.is_staff:
            raise exceptions.AuthenticationFailed("Invalid admin API token")
        # Touch last_used_at at most once a minute: a write per API call would be wasteful.
        now = timezone.now()
        if api_token.last_used_at is None or (now - api_token.last_used_at).total_seconds() > 60:
            type(api_token).objects.filter(pk=api_token.pk).update(last_used_at=now)
        return user, api_token

    def authenticate_header(self, request: Request) -> str:
        return 'Bearer realm="api"'


class LimiterUnavailable(exceptions.APIException):
    status_code = 503
    default_detail = "Sign-in attempts cannot be counted right now (cache unavailable); use an API token or retry"


# HMAC digest of "username:password" -> (user id, password hash, expiry on the monotonic clock).
# Per process and never the password itself: without SECRET_KEY a digest (in a memory dump, say)
# can be neither reversed nor used to test guesses offline.
_verified: dict[str, tuple[int | str, str, float]] = {}
MAX_VERIFIED = 1024
_now = time.monotonic  # a seam for tests


def _credential_digest(userid: str, password: str) -> str:
    # A username cannot contain ":" (the first colon of the Basic credential ends it): unambiguous.
    return salted_hmac("bifrost.api.basic-auth", f"{userid}:{password}", algorithm="sha256").hexdigest()


def _cached_user(digest: str) -> AbstractBaseUser | None:
    """The user of a credential verified in the last few seconds, if it still holds.

    One indexed read replaces the password hash: a password change (the stored hash differs),
    deactivation or loss of staff status takes effect on the next request, not after the TTL.
    """
    entry = _verified.get(digest)
    if entry is None:
        return None
    user_id, password_hash, expires = entry
    user = None
    if _now() < expires:
        user = get_user_model()._default_manager.filter(pk=user_id).first()
    if user is None or not (user.is_active and user.is_staff and constant_time_compare(user.password, password_hash)):
        _verified.pop(digest, None)
        return None
    return user


def _remember(digest: str, user: AbstractBaseUser) -> None:
    ttl = settings.API_BASIC_AUTH_CACHE_SECONDS
    if ttl <= 0:
        return
    if len(_verified) >= MAX_VERIFIED:
        _verified.clear()  # many distinct users within seconds: start afresh rather than grow
    _verified[digest] = (user.pk, user.password, _now() + ttl)


def forget_verified_credentials() -> None:
    _verified.clear()


def _failures(request: HttpRequest, userid: str, *, increment: bool) -> list[dict[str, Any] | None]:
    """Failed attempts of this username and of this client address in their current windows.

    django-ratelimit counts in the ``default`` cache (Redis in production, shared by every worker
    and host). Its windows are fixed, so a burst across a window edge may reach twice the rate
    once; that bound is accepted.
    """
    limits = (
        ("api-basic-user", lambda _group, _request: userid, settings.API_BASIC_AUTH_FAILURES_PER_USER),
        ("api-basic-address", client_address, settings.API_BASIC_AUTH_FAILURES_PER_IP),
    )
    try:
        return [get_usage(request, group=group, key=key, rate=rate, increment=increment) for group, key, rate in limits]
    except RedisError:
        raise LimiterUnavailable() from None  # fail closed: guessing must not become free


def _refuse_if_over_limit(request: HttpRequest, userid: str) -> None:
    usages = _failures(request, userid, increment=False)
    over = [usage for usage in usages if usage and usage["count"] >= usage["limit"]]
    if over:
        wait = max(1, *(usage["time_left"] for usage in over))
        raise exceptions.Throttled(wait=wait, detail="Too many failed sign-in attempts.")


class StaffBasicAuthentication(authentication.BasicAuthentication):
    """HTTP Basic, for staff users only.

    A verified credential is remembered for ``API_BASIC_AUTH_CACHE_SECONDS`` so that a script
    calling the API in a loop does not pay a password hash (PBKDF2: hundreds of ms) per request. Failed
    attempts are limited per username and per client address (``API_BASIC_AUTH_FAILURES_PER_*``);
    over either limit every attempt with a credential not recently verified is refused with 429
    and ``Retry-After``, the right password included, so guessing learns nothing. A remembered
    credential still works during such a lock-out: only someone who knows the password has one.
    """

    def authenticate_credentials(
        self, userid: str, password: str, request: Request | None = None
    ) -> tuple[AbstractBaseUser, None]:
        digest = _credential_digest(userid, password)
        user = _cached_user(digest)
        if user is not None:
            return user, None
        # DRF's ``BasicAuthentication.authenticate`` always passes its request (``None`` is only the
        # base class's default); the Django request under it is what django-ratelimit reads.
        django_request = cast(HttpRequest, getattr(request, "_request", request))
        _refuse_if_over_limit(django_request, userid)
        try:
            user, auth = super().authenticate_credentials(userid, password, request)
            if not user.is_staff:
                raise exceptions.AuthenticationFailed("Invalid username/password.")
        except exceptions.AuthenticationFailed:
            _failures(django_request, userid, increment=True)
            raise
        _remember(digest, user)
        return user, auth
