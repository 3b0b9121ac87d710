"""The one error body used by every JSON surface (management API, proxy, consent actions).

Shape (Bifrost's)::

    {"is_bifrost_error": false, "status_code": 400, "error": {"message": "..."}, "extra_fields": {}}

Enforcement errors add a top-level ``type``; field errors may add ``error.details``.
"""

from __future__ import annotations

import json
from typing import Any

from django.http import HttpResponse


def error_body(
    status: int, message: str, *, type_: str | None = None, details: Any = None, extra_fields: dict | None = None
) -> dict[str, Any]:
    error: dict[str, Any] = {"message": message}
    if details:
        error["details"] = details
    body: dict[str, Any] = {
        "is_bifrost_error": False,
        "status_code": status,
        "error": error,
        "extra_fields": extra_fields or {},
    }
    if type_:
        body["type"] = type_
    return body


def error_bytes(status: int, message: str, **kwargs: Any) -> bytes:
    return json.dumps(error_body(status, message, **kwargs), separators=(",", ":")).encode()


def error_response(status: int, message: str, *, headers: dict[str, str] | None = None, **kwargs: Any) -> HttpResponse:
    response = HttpResponse(error_bytes(status, message, **kwargs), status=status, content_type="application/json")
    for name, value in (headers or {}).items():
        response[name] = value
    return response
