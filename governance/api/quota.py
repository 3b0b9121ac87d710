"""``GET /api/governance/virtual-keys/quota``: a VK holder reads its own limits and live usage.

Authenticated by the virtual key itself (the inference headers: ``x-bf-vk``, ``Authorization:
Bearer sk-bf-…``, ``x-api-key``, ``x-goog-api-key``), not by an admin credential, so an
application can check its remaining budget without management rights. It reveals nothing
beyond the key's own budgets and rate limits, and those of the team and customer above it
that also cap it.

The top level is Bifrost v1.5's documented response, so tools written for Bifrost read it
unchanged::

    {"virtual_key_name": "svc", "is_active": true,
     "budgets": [{"id", "max_limit", "reset_duration", "calendar_aligned", "current_usage",
                  "last_reset", "created_at", "updated_at", ...}],
     "rate_limit": {"id", "token_max_limit", "token_reset_duration", "token_current_usage",
                    "token_last_reset", "request_max_limit", "request_reset_duration",
                    "request_current_usage", "request_last_reset", ...} | null,
     ...}

Decisions where Bifrost's contract is silent (also in the README):

- ``budgets`` and ``rate_limit`` are the key's **own**, as in Bifrost v1.5. The limits of the
  levels above, which cap the key too, are beside them: ``team`` and ``customer`` (the key's
  direct customer, or its team's), each ``{"id", "name", "budgets", "rate_limit"}`` or null;
  so are ``provider_configs`` (per-provider budgets and rate limits), ``virtual_key_id``,
  ``virtual_key_value`` (masked, ``sk-bf-…abcd``) and ``expires_at``. Nothing is nested under
  a ``virtual_key`` wrapper any more: the top level is the key.
- The limits on all traffic that cap this key's requests too are beside them:
  ``provider_governance`` (``{"id", "provider", "budgets", "budget", "rate_limit"}`` of each
  provider the key may use that has governance) and ``model_configs`` (as
  ``/api/governance/model-configs`` shows them: each config for a model the key may use on a
  provider it may use, or on every provider). Their usage is everyone's, not the key's: they
  are shared, and a refusal names them with the same figures.
- ``rate_limit`` is ``null`` (present, not omitted) when the key has none.
- ``is_active`` is false when the key is deactivated **or** expired: either way it is refused.
- Usage is live: that of the current window, reservations of requests in flight included
  (what the next request's check sees); a window that has ended reads as 0. Each budget also
  carries ``resets_at`` and ``owner``, as everywhere in this API.
- Bifrost's ``config_hash`` (its config-file sync marker) is not rendered, nor are
  ``created_at``/``updated_at`` on rate limits: these rows do not have them.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema
from rest_framework import permissions
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from bifrost_site.errors import error_body
from governance import selectors
from governance.api import docs
from governance.api.representations import (
    Usage,
    budget_json,
    model_config_json,
    provider_governance_json,
    rate_limit_json,
    rate_limit_of,
    usage_for,
)
from governance.keys import VK_NOT_FOUND, VK_REQUIRED, presented_virtual_key
from governance.models import Customer, ModelConfig, Provider, ProviderGovernance, Team, VirtualKey


class QuotaView(APIView):
    authentication_classes: list = []
    permission_classes = [permissions.AllowAny]

    @extend_schema(
        # The stub says ``Sequence[str]``, but ``get_auth`` returns it as the operation's security
        # requirement objects, which is what this list is.
        auth=docs.VIRTUAL_KEY_AUTH,  # type: ignore[arg-type]
        responses={200: docs.QuotaOut},
        description=(
            "The calling virtual key's budgets and rate limit with live usage, in Bifrost v1.5's shape "
            "(`virtual_key_name`, `is_active`, `budgets`, `rate_limit`); the team's and customer's limits, "
            "which also cap the key, beside them. Authenticated by the virtual key, no admin credential."
        ),
    )
    def get(self, request: Request) -> Response:
        vk = calling_virtual_key(request)
        if isinstance(vk, Response):
            return vk
        vk = (
            VirtualKey.objects.select_related("team__customer", "customer")
            .prefetch_related("budgets", "provider_configs__budgets", "provider_configs__provider")
            .get(pk=vk.pk)
        )
        customer: Customer | None = vk.customer or (vk.team.customer if vk.team else None)
        team: Team | None = vk.team
        governed, model_configs = _shared_limits(vk)
        owners = [o for o in (vk, team, customer) if o is not None]
        usage = usage_for([*owners, *governed, *model_configs])
        return Response(
            {
                # Bifrost v1.5's fields.
                "virtual_key_name": vk.name,
                "is_active": vk.is_active and not vk.is_expired,
                "budgets": [budget_json(b, usage) for b in vk.budgets.all()],
                "rate_limit": rate_limit_json(rate_limit_of(vk), usage),
                # Beside them: the key's identity and the limits that also cap it.
                "virtual_key_id": str(vk.pk),
                "virtual_key_value": vk.masked_value,
                "expires_at": vk.expires_at.isoformat().replace("+00:00", "Z") if vk.expires_at else None,
                "provider_configs": [
                    {
                        "provider": pc.provider.name,
                        "allowed_models": list(pc.allowed_models),
                        "budgets": [budget_json(b, usage) for b in pc.budgets.all()],
                        "rate_limit": rate_limit_json(rate_limit_of(pc), usage),
                    }
                    for pc in vk.provider_configs.all()
                ],
                "team": _entity(team, usage),
                "customer": _entity(customer, usage),
                "provider_governance": [provider_governance_json(p, usage) for p in governed],
                "model_configs": [model_config_json(c, usage) for c in model_configs],
            }
        )


def calling_virtual_key(request: Request) -> VirtualKey | Response:
    """The virtual key the request presents (the inference headers), or the 401 to answer."""
    value = presented_virtual_key(request.META)
    if value is None:
        return Response(error_body(401, VK_REQUIRED, type_="virtual_key_required"), status=401)
    vk = selectors.virtual_key_by_value(value)
    if vk is None:
        return Response(error_body(401, VK_NOT_FOUND, type_="virtual_key_not_found"), status=401)
    return vk


def _shared_limits(vk: VirtualKey) -> tuple[list[ProviderGovernance], list[ModelConfig]]:
    """The provider governance and model configs on this key's paths: providers it may use (a
    config for it, or ``allow_all_providers``) and models a config there allows (any model on a
    provider it may use without a config)."""
    configs = {pc.provider.name: pc for pc in vk.provider_configs.all()}

    def allows(provider: str, model: str) -> bool:
        config = configs.get(provider)
        if config is None:
            return vk.allow_all_providers
        return "*" in config.allowed_models or model in config.allowed_models

    reachable = set(configs)
    if vk.allow_all_providers:
        reachable |= set(Provider.objects.values_list("name", flat=True))
    governed = [
        p
        for p in ProviderGovernance.objects.select_related("rate_limit").prefetch_related("budgets").order_by("name")
        if p.name in reachable
    ]
    model_configs = [
        config
        for config in ModelConfig.objects.select_related("provider", "rate_limit")
        .prefetch_related("budgets")
        .order_by("model_name", "created_at")
        if any(
            allows(name, config.model_name)
            for name in ([config.provider.name] if config.provider is not None else reachable)
            if name in reachable
        )
    ]
    return governed, model_configs


def _entity(owner: Team | Customer | None, usage: Usage) -> dict[str, Any] | None:
    if owner is None:
        return None
    return {
        "id": str(owner.pk),
        "name": owner.name,
        "budgets": [budget_json(b, usage) for b in owner.budgets.all()],
        "rate_limit": rate_limit_json(rate_limit_of(owner), usage),
    }
