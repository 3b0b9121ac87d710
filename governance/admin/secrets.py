"""The one-time page that shows freshly generated secrets (VK values, admin API tokens).

The values arrive through the session (``common.stash_secrets``) and are deleted from it by the
read that renders them, so reloading the page shows nothing. A virtual key's value comes with
ready-to-paste snippets (OpenAI SDK, Anthropic SDK, curl) that call this gateway with it: they
exist only on this page, since the value is shown nowhere else.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from django.contrib import admin
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import reverse

from governance.admin.common import take_secrets
from governance.models import ModelPrice
from governance.pricing import find_price, index_by_model
from governance.selectors import ProviderReach, ReachableProvider, provider_reach, virtual_key_by_value

VK_KIND = "virtual key"
# A cheap, catalog-priced model to show per wire format (a key with a budget is refused an
# unpriced model), tried in order; the README's examples use the same names.
EXAMPLE_MODELS = {
    "openai": ("gpt-4o-mini", "gpt-4o"),
    "anthropic": ("claude-3-5-haiku-latest", "claude-sonnet-4-5"),
    "gemini": ("gemini-2.0-flash", "gemini-2.5-flash"),
}
FALLBACK_MODEL = "openai/gpt-4o-mini"  # for a key that can call nothing yet
HELLO = [{"role": "user", "content": "Hello!"}]


@dataclass(frozen=True)
class Snippet:
    id: str
    title: str
    code: str


def one_time_secret_view(request: HttpRequest, model_admin: admin.ModelAdmin[Any]) -> HttpResponse:
    """Show the stashed secrets once; the response is never cached (``admin_view`` sets no-cache)."""
    opts = model_admin.model._meta
    secrets = take_secrets(request)
    gateway = request.build_absolute_uri("/").rstrip("/")
    shown = [{**secret, **_extras(secret, gateway, index)} for index, secret in enumerate(secrets, start=1)]
    context = {
        **model_admin.admin_site.each_context(request),
        "opts": opts,
        "title": f"New {secrets[0]['kind']}" if len(secrets) == 1 else f"New {opts.verbose_name_plural}",
        "secrets": shown,
        "changelist_url": reverse(f"admin:{opts.app_label}_{opts.model_name}_changelist"),
        "media": model_admin.media,
    }
    response = TemplateResponse(request, "admin/governance/one_time_secret.html", context)
    # Keep the page out of any cache and out of the referrer of the next click.
    response["Cache-Control"] = "no-store, private"
    response["Referrer-Policy"] = "no-referrer"
    return response


def _extras(secret: dict[str, str], gateway: str, index: int) -> dict[str, Any]:
    """A virtual key's snippets and whether it can call a provider yet; nothing for other secrets."""
    if secret.get("kind") != VK_KIND:
        return {}
    vk = virtual_key_by_value(secret["value"])
    reach = provider_reach([vk])[vk.pk] if vk is not None else ProviderReach((), "")
    return {
        "snippets": snippets(gateway, secret["value"], reach, prefix=f"gov-snippet-{index}"),
        "reach_problem": reach.problem,
    }


def snippets(gateway: str, value: str, reach: ProviderReach, *, prefix: str = "gov-snippet") -> list[Snippet]:
    """OpenAI SDK, Anthropic SDK and curl calls of ``gateway`` with the key ``value``.

    Models are written ``provider/model``, which every route accepts for any provider the key
    may call (``proxy.routing``): chat requests are translated between formats.
    """
    chat_model = example_model(reach, prefer="openai")
    messages_model = example_model(reach, prefer="anthropic")
    hello = json.dumps(HELLO)
    # Single-quoted for the shell: a quote in a model name is closed, escaped and reopened.
    curl_body = json.dumps({"model": chat_model, "messages": HELLO}).replace("'", "'\\''")
    return [
        Snippet(
            f"{prefix}-openai",
            "OpenAI SDK (Python)",
            "from openai import OpenAI\n\n"
            f'client = OpenAI(base_url="{gateway}/v1", api_key="{value}")\n'
            "reply = client.chat.completions.create(\n"
            f'    model="{chat_model}",\n'
            f"    messages={hello},\n"
            ")\n"
            "print(reply.choices[0].message.content)\n",
        ),
        Snippet(
            f"{prefix}-anthropic",
            "Anthropic SDK (Python)",
            "from anthropic import Anthropic\n\n"
            f'client = Anthropic(base_url="{gateway}/anthropic", api_key="{value}")\n'
            "reply = client.messages.create(\n"
            f'    model="{messages_model}",\n'
            "    max_tokens=256,\n"
            f"    messages={hello},\n"
            ")\n"
            "print(reply.content[0].text)\n",
        ),
        Snippet(
            f"{prefix}-curl",
            "curl",
            f"curl {gateway}/v1/chat/completions \\\n"
            f'  -H "Authorization: Bearer {value}" \\\n'
            '  -H "Content-Type: application/json" \\\n'
            f"  -d '{curl_body}'\n",
        ),
    ]


def example_model(reach: ProviderReach, *, prefer: str) -> str:
    """``provider/model`` the key can call, priced in the catalog where possible: a provider of
    the ``prefer`` wire format first, then any other the key can call."""
    if not reach.providers:
        return FALLBACK_MODEL
    rows = {(row.provider, row.model): row for row in ModelPrice.objects.all()}
    by_model = index_by_model(rows.items())
    ordered = sorted(reach.providers, key=lambda p: (p.api_format != prefer, p.api_format != "openai", p.name))
    picks = [(provider, _model_for(provider, rows, by_model)) for provider in ordered]
    provider, (model, _) = next(((p, pick) for p, pick in picks if pick[1]), picks[0])
    return f"{provider.name}/{model}"


def _model_for(
    provider: ReachableProvider, rows: dict[tuple[str, str], ModelPrice], by_model: dict[str, ModelPrice]
) -> tuple[str, bool]:
    """A model ``provider`` may be asked for by the key, and whether the catalog prices it."""

    def priced(model: str) -> bool:
        found = find_price(rows, by_model, provider=provider.name, provider_type=provider.provider_type, model=model)
        return found is not None

    candidates = list(provider.models) or list(EXAMPLE_MODELS.get(provider.api_format, ()))
    if not provider.models:
        candidates += sorted(model for owner, model in rows if owner in (provider.name, provider.provider_type))
    for model in candidates:
        if priced(model):
            return model, True
    return (candidates[0] if candidates else FALLBACK_MODEL.split("/", 1)[1]), False
