"""The inference entry point: a bare WSGI function for ``/v1/*``, ``/openai/*``, ``/anthropic/*`` and ``/genai/*``.

``bifrost_site.wsgi`` sends those paths here and everything else to Django's handler. The
inference path skips Django's per-request machinery (URL resolver, middleware, HttpRequest and
HttpResponse objects: about 180 µs a call on a 2-core machine) while settings and the ORM stay
Django's. Neither ``request_started`` nor ``request_finished`` is sent (a signal dispatch costs
more than the work of its receivers here); the one cleanup that matters on this path, closing
database connections past ``CONN_MAX_AGE`` or broken by an error, runs when the body is closed
(``proxy.bodies.request_done``), as Django runs it after a view.
This module is the only place that speaks WSGI; the work is in ``proxy.handler``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from contextlib import AbstractContextManager, nullcontext
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.db import InterfaceError, OperationalError

from proxy import errors, handler
from proxy.bodies import Body
from proxy.errors import ProxyError
from proxy.routing import find as find_route

if TYPE_CHECKING:
    from wsgiref.types import StartResponse, WSGIEnvironment

logger = logging.getLogger("bifrost.proxy")

PREFIXES = ("/v1/", "/openai/", "/anthropic/", "/genai/")
DATABASE_UNAVAILABLE = "The database is unavailable, so this request cannot be checked; retry shortly"
_STATUS_LINES = {status.value: f"{status.value} {status.phrase}" for status in HTTPStatus}
_STATUS_LINES[499] = "499 Client Closed Request"  # nginx's name for it; not in HTTPStatus


def status_line(status: int) -> str:
    """An upstream may answer any code: one the standard does not name keeps its number alone."""
    return _STATUS_LINES.get(status) or f"{status} Unknown"


def _read_body(environ: WSGIEnvironment) -> bytes:
    limit = settings.MAX_REQUEST_BODY_BYTES
    length_header = environ.get("CONTENT_LENGTH") or ""
    stream = environ["wsgi.input"]
    if length_header:
        try:
            length = int(length_header)
        except ValueError:
            raise errors.bad_request("Content-Length must be an integer") from None
        if length > limit:
            raise ProxyError(413, f"Request body too large (limit {limit} bytes)")
        return stream.read(length) if length > 0 else b""
    data = stream.read(limit + 1)  # chunked request body: the server de-chunks it
    if len(data) > limit:
        raise ProxyError(413, f"Request body too large (limit {limit} bytes)")
    return data


_NO_SLOTS: AbstractContextManager[Any] = nullcontext()


def application(
    environ: WSGIEnvironment, start_response: StartResponse, slots: AbstractContextManager[Any] = _NO_SLOTS
) -> Iterable[bytes]:
    """``slots``: taken once the body is in, given back when the answer is ready to be relayed
    (``bifrost_site.wsgi``, "Request slots")."""
    path = environ.get("PATH_INFO", "")
    found = find_route(path)
    client_format = found[0].api_format if found else ("gemini" if path.startswith("/genai/") else "openai")
    request_id = handler.request_id_of(environ)
    try:
        if found is None:
            raise ProxyError(404, f"Not found: {path}")
        route, path_model = found
        if environ.get("REQUEST_METHOD") != route.method:
            raise ProxyError(405, f"Method not allowed: use {route.method} {path}", headers={"Allow": route.method})
        raw = _read_body(environ) if route.method == "POST" else b""
        with slots:
            reply = handler.handle(route, environ, raw, path_model, request_id)
    except ProxyError as exc:
        reply = handler.error_reply(exc, client_format, request_id)
    except (OperationalError, InterfaceError) as exc:
        # The configuration of this key (or provider, or price) was not cached and the database
        # cannot be reached: a transient outage the client should retry, not a server bug.
        logger.warning("database unavailable", extra={"path": path, "error": type(exc).__name__})
        unavailable = ProxyError(503, DATABASE_UNAVAILABLE, headers={"Retry-After": "1"})
        reply = handler.error_reply(unavailable, client_format, request_id)
    except Exception:
        # Never a traceback to the client; the log has it (without request bodies or keys).
        logger.exception("unhandled proxy error", extra={"path": path})
        reply = handler.error_reply(ProxyError(500, "Internal server error"), client_format, request_id)
    start_response(status_line(reply.status), reply.headers)
    body = reply.body
    return body.handed_over() if isinstance(body, Body) else body
