"""WSGI entry point used by gunicorn.

Inference paths (``/v1/``, ``/openai/``, ``/anthropic/``, ``/genai/``) go to the bare WSGI
function in ``proxy.wsgi``, which skips Django's per-request machinery on the hot path; everything
else (admin, management API, consent flow, the MCP gateway's ``/mcp`` and ``/v1/mcp/*``) goes to
Django's handler.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import TYPE_CHECKING

from django.core.wsgi import get_wsgi_application

if TYPE_CHECKING:
    from wsgiref.types import StartResponse, WSGIEnvironment

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bifrost_site.settings")

django_application = get_wsgi_application()

from proxy.wsgi import PREFIXES  # noqa: E402  (needs the settings configured above)
from proxy.wsgi import application as proxy_application  # noqa: E402

# Under /v1/ but not inference: the MCP gateway's tool execution is a Django view.
DJANGO_UNDER_V1 = "/v1/mcp/"


def application(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    path = environ.get("PATH_INFO", "")
    if path.startswith(PREFIXES) and not path.startswith(DJANGO_UNDER_V1):
        return proxy_application(environ, start_response)
    return django_application(environ, start_response)
