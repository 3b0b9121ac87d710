"""The management API's single exception handler: every failure in the project's error shape."""

from __future__ import annotations

import logging
from typing import Any

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import RequestDataTooBig
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import DataError, IntegrityError
from django.http import Http404
from rest_framework import exceptions
from rest_framework.response import Response

from bifrost_site.errors import error_body

logger = logging.getLogger("bifrost.errors")


def flatten_errors(detail: Any, path: str = "") -> list[str]:
    """``{"budgets": [{"max_limit": ["bad"]}]}`` -> ``["budgets[0].max_limit: bad"]``."""
    if isinstance(detail, dict):
        out: list[str] = []
        for key, value in detail.items():
            if key in ("non_field_errors", "__all__"):
                out += flatten_errors(value, path)
            elif isinstance(key, int) or (isinstance(key, str) and key.isdigit()):
                out += flatten_errors(value, f"{path}[{key}]")  # a list item (DRF reports them by index)
            else:
                out += flatten_errors(value, f"{path}.{key}" if path else str(key))
        return out
    if isinstance(detail, list | tuple):
        if all(not isinstance(item, dict | list | tuple) for item in detail):
            return [f"{path}: {item}" if path else str(item) for item in detail]
        out = []
        for index, item in enumerate(detail):
            if item:
                out += flatten_errors(item, f"{path}[{index}]")
        return out
    return [f"{path}: {detail}" if path else str(detail)]


def django_validation_detail(exc: DjangoValidationError) -> Any:
    if hasattr(exc, "error_dict"):
        return {field: [str(m) for e in errors for m in e.messages] for field, errors in exc.error_dict.items()}
    return list(exc.messages)


def validation_response(detail: Any) -> Response:
    messages = flatten_errors(detail) or ["Invalid input"]
    return Response(error_body(400, "; ".join(messages), details=detail), status=400)


def api_exception_handler(exc: Exception, context: dict) -> Response:
    if isinstance(exc, RequestDataTooBig):
        return Response(error_body(413, "Request body too large"), status=413)
    if isinstance(exc, exceptions.ParseError):
        return Response(error_body(400, "Invalid JSON"), status=400)
    if isinstance(exc, RecursionError):
        # Only hostile nesting gets here: the JSON parser gives up on a body nested ~1000 deep.
        return Response(error_body(400, "Invalid JSON: nested too deeply"), status=400)
    if isinstance(exc, exceptions.ValidationError):
        return validation_response(exc.detail)
    if isinstance(exc, DjangoValidationError):
        return validation_response(django_validation_detail(exc))
    if isinstance(exc, Http404):
        return Response(error_body(404, str(exc) or "Not found"), status=404)
    if isinstance(exc, DjangoPermissionDenied):
        return Response(error_body(403, str(exc) or "Permission denied"), status=403)
    if isinstance(exc, DataError):
        # A backstop: serializers refuse what a backend cannot store. The database's text can quote
        # the offending value, which may be a secret, so neither the answer nor the log repeats it.
        logger.warning("data error", extra={"view": type(context.get("view")).__name__})
        message = "A value in the request cannot be stored (invalid characters or out of range)"
        return Response(error_body(400, message), status=400)
    if isinstance(exc, IntegrityError):
        # A concurrent write won the race on a unique or check constraint.
        logger.info("integrity conflict", extra={"error": str(exc).splitlines()[0][:200]})
        return Response(error_body(409, "Conflict with the current state of the resource; retry"), status=409)
    if isinstance(exc, exceptions.APIException):
        status = exc.status_code
        if isinstance(exc, exceptions.NotAuthenticated | exceptions.AuthenticationFailed):
            status = 401
        message = exc.detail if isinstance(exc.detail, str) else "; ".join(flatten_errors(exc.detail))
        response = Response(error_body(status, str(message)), status=status)
        if status == 401:
            response["WWW-Authenticate"] = 'Bearer realm="api", Basic realm="api"'
        if getattr(exc, "wait", None):
            response["Retry-After"] = str(int(exc.wait))
        return response
    logger.exception("unhandled API error", extra={"view": type(context.get("view")).__name__})
    return Response(error_body(500, "Internal server error"), status=500)
