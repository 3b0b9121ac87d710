"""Who may call the management API: admin API tokens, staff HTTP Basic, or an admin session."""

from __future__ import annotations

from django.utils import timezone
from rest_framework import authentication, exceptions

from governance.keys import VK_PREFIX
from governance.selectors import api_token_user


class AdminTokenAuthentication(authentication.BaseAuthentication):
    """``Authorization: Bearer <admin API token>`` (tokens are stored as SHA-256 digests)."""

    keyword = "bearer"

    def authenticate(self, request):
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

    def authenticate_header(self, request) -> str:
        return 'Bearer realm="api"'


class StaffBasicAuthentication(authentication.BasicAuthentication):
    """HTTP Basic, for staff users only."""

    def authenticate_credentials(self, userid, password, request=None):
        user, auth = super().authenticate_credentials(userid, password, request)
        if not user.is_staff:
            raise exceptions.AuthenticationFailed("Invalid username/password.")
        return user, auth
