"""WSGI entry point of both servers (granian, gunicorn).

Inference paths (``/v1/``, ``/openai/``, ``/anthropic/``, ``/genai/``) go to the bare WSGI
function in ``proxy.wsgi``, which skips Django's per-request machinery on the hot path; everything
else (admin, management API, consent flow, the MCP gateway's ``/mcp`` and ``/v1/mcp/*``) goes to
Django's handler.

**Request slots** (``bifrost_site.slots``): at most ``BIFROST_THREADS`` requests of a worker run at
once, whatever the server's thread count. Under granian a worker has ``BIFROST_WAITING_THREADS``
more threads: a request's body is read first (a client sending it a byte at a time holds a thread,
nothing else), then the request takes a slot, and gives it back when the app returns (a stream
then relayed holds none). The slots bound what runs at once, and how many threads keep a database
connection. Under gunicorn the threads are the slots, so taking one never waits.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterable
from typing import TYPE_CHECKING

from django.conf import settings
from django.core.wsgi import get_wsgi_application

from bifrost_site import serving

if TYPE_CHECKING:
    from wsgiref.types import StartResponse, WSGIEnvironment

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bifrost_site.settings")

django_application = get_wsgi_application()

from bifrost_site.slots import Slots  # noqa: E402
from proxy.wsgi import PREFIXES  # noqa: E402  (needs the settings configured above)
from proxy.wsgi import application as proxy_application  # noqa: E402

slots = Slots(serving.threads())

# Under /v1/ but not inference: the MCP gateway's tool execution is a Django view.
DJANGO_UNDER_V1 = "/v1/mcp/"


def application(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    path = environ.get("PATH_INFO", "")
    if path.startswith(PREFIXES) and not path.startswith(DJANGO_UNDER_V1):
        return proxy_application(environ, start_response, slots)  # it reads the body, then takes a slot
    _read_body_first(environ)
    with slots:
        return django_application(environ, start_response)


def _read_body_first(environ: WSGIEnvironment) -> None:
    """A body Django would accept is read before the request takes a slot (Django reads it in the
    view, under the slot); a larger one, or one without a length, is left to Django's limits."""
    length = environ.get("CONTENT_LENGTH") or ""
    if length.isdigit() and 0 < int(length) <= settings.DATA_UPLOAD_MAX_MEMORY_SIZE:
        environ["wsgi.input"] = io.BytesIO(environ["wsgi.input"].read(int(length)))
