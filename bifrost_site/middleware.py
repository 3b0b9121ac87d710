"""Turns failures outside DRF into the project's JSON error shape on API-like paths."""

from __future__ import annotations

import logging
from collections.abc import Callable

from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, HttpResponse

from bifrost_site.errors import error_response

logger = logging.getLogger("bifrost.errors")

JSON_PREFIXES = ("/api/", "/v1/", "/openai/", "/anthropic/", "/genai/", "/.well-known/", "/health", "/mcp")


def wants_json(path: str) -> bool:
    return path.startswith(JSON_PREFIXES)


class JsonErrorMiddleware:
    """Answers unhandled exceptions and 404s on JSON paths in the error shape.

    Django's own handler would render an HTML page (or a traceback with DEBUG); clients of the
    API and the proxy must always get the documented JSON body and no internals.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if response.status_code == 404 and wants_json(request.path) and not _is_json(response):
            return error_response(404, f"Not found: {request.path}")
        return response

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if isinstance(exception, RequestDataTooBig):
            return error_response(413, "Request body too large")
        if not wants_json(request.path):
            return None
        logger.exception("unhandled error", extra={"path": request.path, "method": request.method})
        return error_response(500, "Internal server error")


def _is_json(response: HttpResponse) -> bool:
    return response.get("Content-Type", "").startswith("application/json")
