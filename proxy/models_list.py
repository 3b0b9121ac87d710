"""The model lists: ``GET /v1/models``, ``/anthropic/v1/models`` and ``/genai/v1beta/models[/{model}]``.

For each provider the caller may use (its VK's allow-list; every provider in direct-key mode) the
upstream's own list is fetched with one of its keys, all providers in parallel, waiting at most
``PROXY_MODELS_LIST_TIMEOUT_SECONDS``; each type has its adapter (OpenAI-style and Anthropic
``/v1/models``, Gemini ``/v1beta/models``; Azure lists the deployments its keys map, without a
call). A provider that cannot be asked in time (no usable key, down, slow, odd answer) is listed
from the explicit names in the allow-list and key model lists. Ids are ``provider/model``,
filtered by the provider config's ``allowed_models``, and rendered in the route's format.
"""

from __future__ import annotations

import json
import logging
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import Any

from django.conf import settings

from governance.metering import snapshot
from governance.metering.snapshot import ProviderSnapshot, VirtualKeySnapshot
from proxy import upstream
from proxy.errors import ProxyError
from proxy.routing import Route
from proxy.translate import anthropic, gemini

logger = logging.getLogger("bifrost.proxy")
_pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="models-list")


def _ids(payload: Any, wire: str) -> list[str]:
    if wire == "gemini":
        items = payload.get("models")
        names = [item.get("name") for item in items if isinstance(item, dict)]
        return [name.removeprefix("models/") for name in names if isinstance(name, str)]
    return [item["id"] for item in payload.get("data") if isinstance(item, dict) and isinstance(item.get("id"), str)]


def _upstream_models(provider: ProviderSnapshot) -> list[str] | None:
    key = next((k for k in provider.keys if k.enabled), None)
    if key is None:
        return None
    if provider.provider_type == "azure":  # its keys' deployments are what can be called
        return [name for k in provider.keys if k.enabled and k.azure for name, _ in k.azure.deployments] or None
    path = "/v1beta/models?pageSize=1000" if provider.api_format == "gemini" else "/v1/models"
    try:
        answer = upstream.send("GET", provider, key, path, None, [], stream=False)
    except ProxyError:
        return None
    if answer.status != 200 or answer.data is None:  # data: always read, as stream=False
        return None
    try:
        return _ids(json.loads(answer.data), provider.api_format)
    except (ValueError, AttributeError, TypeError, KeyError):
        return None


def _explicit_models(provider: ProviderSnapshot, allowed: tuple[str, ...]) -> list[str]:
    if allowed and "*" not in allowed:
        return list(allowed)
    names: list[str] = []
    for key in provider.keys:
        if key.enabled:
            names += [m for m in key.models if m != "*" and m not in names]
    return names


def _allowed(name: str, vk: VirtualKeySnapshot | None) -> tuple[str, ...] | None:
    """The provider config's model allow-list for this caller; None when the provider is not allowed."""
    if vk is None:
        return ("*",)
    config = vk.config_for(name)
    if config is None:
        return ("*",) if vk.allow_all_providers else None
    return config.allowed_models or None


def model_ids(route: Route, vk: VirtualKeySnapshot | None) -> list[str]:
    providers = snapshot.providers()
    wanted: dict[str, tuple[ProviderSnapshot, tuple[str, ...]]] = {}
    for name, provider in sorted(providers.items()):
        if route.api_format == "openai" and route.default_provider not in (None, name):
            continue  # /openai/v1/models lists the openai provider only
        allowed = _allowed(name, vk)
        if allowed is not None:
            wanted[name] = (provider, allowed)
    asked: dict[str, Future[list[str] | None]] = {
        name: _pool.submit(_upstream_models, provider) for name, (provider, _) in wanted.items()
    }
    wait(asked.values(), timeout=settings.PROXY_MODELS_LIST_TIMEOUT_SECONDS)
    ids: list[str] = []
    for name, (provider, allowed) in wanted.items():
        future = asked[name]
        models = future.result() if future.done() else None
        if models is None:
            if not future.done():
                logger.info("model list timed out", extra={"provider": name})
            models = _explicit_models(provider, allowed)
        ids += [f"{name}/{model}" for model in models if "*" in allowed or model in allowed]
    return ids


def list_models(route: Route, vk: VirtualKeySnapshot | None, model: str | None = None) -> bytes:
    """The list in the route's format; with ``model`` (Gemini's ``GET .../models/{model}``) one entry."""
    ids = model_ids(route, vk)
    payload: dict[str, Any]
    if route.api_format == "gemini":
        if model is not None:
            if model not in ids and f"{route.default_provider}/{model}" in ids:
                model = f"{route.default_provider}/{model}"  # a bare Gemini name: the gemini provider's
            if model not in ids:
                raise ProxyError(404, f"model '{model}' is not available to this caller (ids are 'provider/model')")
            payload = gemini.model_entry(model)
        else:
            payload = gemini.models_page(ids)
    elif route.api_format == "anthropic":
        payload = anthropic.models_page(ids)
    else:
        data = [{"id": i, "object": "model", "created": 0, "owned_by": i.split("/", 1)[0]} for i in ids]
        payload = {"object": "list", "data": data}
    return json.dumps(payload, separators=(",", ":")).encode()
