"""Budgets and rate limits: live usage listings and the manual budget reset."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from governance import selectors, services
from governance.api import docs
from governance.api.representations import budget_json, rate_limit_json
from governance.api.views import get_or_404
from governance.metering.live import live_usage
from governance.models import Budget, RateLimit


class BudgetViewSet(viewsets.GenericViewSet):
    queryset = Budget.objects.all()

    @extend_schema(responses=docs.BudgetListOut)
    def list(self, request: Request) -> Response:
        budgets = list(selectors.budgets_with_owner().order_by("created_at", "pk"))
        usage = live_usage(budgets, [])
        return Response({"budgets": [budget_json(b, usage) for b in budgets], "count": len(budgets)})

    @extend_schema(parameters=[docs.ID_PARAM], request=None, responses=docs.BudgetMessageOut)
    @action(detail=True, methods=["post"])
    def reset(self, request: Request, pk: str) -> Response:
        budget = services.budget_reset_usage(budget=get_or_404(Budget.objects.all(), pk, "Budget not found"))
        return Response(
            {"message": "Budget usage reset successfully", "budget": budget_json(budget, live_usage([budget], []))}
        )


class RateLimitViewSet(viewsets.GenericViewSet):
    queryset = RateLimit.objects.all()

    @extend_schema(responses=docs.RateLimitListOut)
    def list(self, request: Request) -> Response:
        rate_limits = list(RateLimit.objects.order_by("created_at", "pk"))
        usage = live_usage([], rate_limits)
        return Response({"rate_limits": [rate_limit_json(r, usage) for r in rate_limits], "count": len(rate_limits)})
