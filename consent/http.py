"""HTTP helpers shared by the consent views: the browser cookie, redirects, method guards."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any
from urllib.parse import urlencode, urlsplit

from django.conf import settings
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import reverse

from bifrost_site.errors import error_response
from consent.models import FLOW_LIFETIME_SECONDS

COOKIE_PREFIX = "bifrost_consent_"


def browser_secret(request: HttpRequest, flow_id: str) -> str | None:
    """The secret this browser holds for ``flow_id`` (one cookie per flow, so two tabs with two
    flows do not overwrite each other)."""
    return request.COOKIES.get(COOKIE_PREFIX + flow_id) if flow_id else None


def set_browser_secret(response: HttpResponse, flow_id: str, secret: str) -> None:
    # HttpOnly: page scripts never see it. SameSite=Lax: sent on the top-level navigation that
    # brings the user back from the client, not on cross-site subrequests or POSTs.
    response.set_cookie(
        COOKIE_PREFIX + flow_id,
        secret,
        max_age=FLOW_LIFETIME_SECONDS,
        httponly=True,
        samesite="Lax",
        secure=settings.BIFROST_TLS,
        path="/",
    )


def identity_page_url(flow_id: str, error: str | None = None) -> str:
    """``/oauth/consent?flow_id=<id>[&error=<url-encoded message>]``."""
    params = {"flow_id": flow_id}
    if error:
        params["error"] = error
    return f"{reverse('consent:identity')}?{urlencode(params)}"


def mcps_page_url(flow_id: str) -> str:
    return f"{reverse('consent:mcps')}?{urlencode({'flow_id': flow_id})}"


class ClientRedirect(HttpResponseRedirect):
    """A 302 to a registered client redirect URI, which may use a private-use scheme.

    Django's redirect only allows http/https/ftp; the URI was validated at registration
    (``consent.oauth.validate_redirect_uri``), so its own scheme is allowed here.
    """

    def __init__(self, url: str):
        self.allowed_schemes = ["http", "https", urlsplit(url).scheme]
        super().__init__(url)


def json_methods(*methods: str) -> Callable[[Callable[..., HttpResponse]], Callable[..., HttpResponse]]:
    """Like ``require_http_methods`` but answers 405 in the project's JSON error shape."""

    def decorator(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
        @wraps(view)
        def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            if request.method not in methods:
                allowed = ", ".join(methods)
                return error_response(
                    405, f"Method {request.method} not allowed; use {allowed}", headers={"Allow": allowed}
                )
            return view(request, *args, **kwargs)

        return wrapped

    return decorator


def no_store(response: HttpResponse) -> HttpResponse:
    """Consent pages and token responses carry per-user state: never cache them."""
    response["Cache-Control"] = "no-store"
    response["Pragma"] = "no-cache"
    return response


def public_base_url(request: HttpRequest) -> str:
    """The gateway's public URL, in every link and metadata document it gives out: the
    ``BIFROST_PUBLIC_URL`` setting, else the request's scheme and host (``X-Forwarded-Proto``
    counts only when ``BIFROST_TLS`` trusts it)."""
    configured = settings.BIFROST_PUBLIC_URL
    return configured.rstrip("/") if configured else request.build_absolute_uri("/").rstrip("/")
