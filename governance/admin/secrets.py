"""The one-time page that shows freshly generated secrets (VK values, admin API tokens).

The values arrive through the session (``common.stash_secrets``) and are deleted from it by the
read that renders them, so reloading the page shows nothing.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import reverse

from governance.admin.common import take_secrets


def one_time_secret_view(request: HttpRequest, model_admin: admin.ModelAdmin[Any]) -> HttpResponse:
    """Show the stashed secrets once; the response is never cached (``admin_view`` sets no-cache)."""
    opts = model_admin.model._meta
    secrets = take_secrets(request)
    context = {
        **model_admin.admin_site.each_context(request),
        "opts": opts,
        "title": f"New {secrets[0]['kind']}" if len(secrets) == 1 else f"New {opts.verbose_name_plural}",
        "secrets": secrets,
        "changelist_url": reverse(f"admin:{opts.app_label}_{opts.model_name}_changelist"),
        "media": model_admin.media,
    }
    response = TemplateResponse(request, "admin/governance/one_time_secret.html", context)
    # Keep the page out of any cache and out of the referrer of the next click.
    response["Cache-Control"] = "no-store, private"
    response["Referrer-Policy"] = "no-referrer"
    return response
