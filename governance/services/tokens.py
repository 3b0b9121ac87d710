"""Admin API tokens for automation (stored as digests, shown once)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.db import transaction

from governance.keys import digest, last_four, new_token
from governance.models import ApiToken

if TYPE_CHECKING:
    from django.contrib.auth.models import User  # settings.AUTH_USER_MODEL (the default)


@transaction.atomic
def api_token_create(*, user: User, name: str) -> tuple[ApiToken, str]:
    value = new_token("bfa_")
    token = ApiToken.objects.create(user=user, name=name, token_digest=digest(value), token_last4=last_four(value))
    return token, value
