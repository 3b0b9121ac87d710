"""``GET /api/governance/virtual-keys/quota``: a VK holder reads its own limits and live usage.

Authenticated by the virtual key itself (the inference headers: ``x-bf-vk``, ``Authorization:
Bearer sk-bf-…``, ``x-api-key``, ``x-goog-api-key``), not by an admin credential, so an
application can check its remaining budget without management rights. It reveals nothing
beyond the key's own budgets and rate limits, and those of the team and customer above it
that also cap it.
"""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import permissions
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from bifrost_site.errors import error_body
from governance import selectors
from governance.api import docs
from governance.api.representations import budget_json, rate_limit_json, rate_limit_of, usage_for
from governance.keys import presented_virtual_key
from governance.models import Customer, Team, VirtualKey


class QuotaView(APIView):
    authentication_classes: list = []
    permission_classes = [permissions.AllowAny]

    @extend_schema(auth=docs.VIRTUAL_KEY_AUTH, responses={200: docs.QuotaOut})
    def get(self, request: Request) -> Response:
        value = presented_virtual_key(request.META)
        if value is None:
            return Response(
                error_body(
                    401,
                    "virtual key is required. Provide a virtual key via the x-bf-vk header.",
                    type_="virtual_key_required",
                ),
                status=401,
            )
        vk = selectors.virtual_key_by_value(value)
        if vk is None:
            return Response(
                error_body(
                    401,
                    "virtual key not found. The provided virtual key does not exist or has been revoked.",
                    type_="virtual_key_not_found",
                ),
                status=401,
            )
        vk = (
            VirtualKey.objects.select_related("team__customer", "customer")
            .prefetch_related("budgets", "provider_configs__budgets", "provider_configs__provider")
            .get(pk=vk.pk)
        )
        customer: Customer | None = vk.customer or (vk.team.customer if vk.team else None)
        team: Team | None = vk.team
        owners = [o for o in (vk, team, customer) if o is not None]
        usage = usage_for(owners)
        return Response(
            {
                "virtual_key": {
                    "id": str(vk.pk),
                    "name": vk.name,
                    "value": vk.masked_value,
                    "is_active": vk.is_active and not vk.is_expired,
                    "expires_at": vk.expires_at.isoformat().replace("+00:00", "Z") if vk.expires_at else None,
                    "budgets": [budget_json(b, usage) for b in vk.budgets.all()],
                    "rate_limit": rate_limit_json(rate_limit_of(vk), usage),
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
                }
            }
        )


def _entity(owner, usage) -> dict | None:
    if owner is None:
        return None
    return {
        "id": str(owner.pk),
        "name": owner.name,
        "budgets": [budget_json(b, usage) for b in owner.budgets.all()],
        "rate_limit": rate_limit_json(rate_limit_of(owner), usage),
    }
