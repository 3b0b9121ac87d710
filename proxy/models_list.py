"""``GET /v1/models``: the models the caller may use, as ``provider/model`` ids.

For each provider the caller may use (its VK's allow-list; every provider in direct-key mode)
the upstream's own model list is fetched with one of its keys and filtered by the provider
config's ``allowed_models``. When the upstream cannot be asked (no usable key, down, odd
answer) the explicit names in the allow-list and key model lists are listed instead.
"""

from __future__ import annotations

import json
import logging

from governance.metering import snapshot
from governance.metering.snapshot import ProviderSnapshot, VirtualKeySnapshot
from proxy import upstream
from proxy.errors import ProxyError
from proxy.routing import Route

logger = logging.getLogger("bifrost.proxy")


def _upstream_models(provider: ProviderSnapshot) -> list[str] | None:
    key = next((k for k in provider.keys if k.enabled), None)
    if key is None:
        return None
    try:
        answer = upstream.send("GET", provider, key, "/v1/models", None, [], stream=False)
    except ProxyError:
        return None
    if answer.status != 200 or answer.data is None:  # data: always read, as stream=False
        return None
    try:
        data = json.loads(answer.data).get("data")
        return [item["id"] for item in data if isinstance(item, dict) and isinstance(item.get("id"), str)]
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


def list_models(route: Route, vk: VirtualKeySnapshot | None) -> bytes:
    providers = snapshot.providers()
    data = []
    for name, provider in sorted(providers.items()):
        if route.default_provider is not None and name != route.default_provider:
            continue
        allowed: tuple[str, ...] = ("*",)
        if vk is not None:
            config = vk.config_for(name)
            if config is None and not vk.allow_all_providers:
                continue
            if config is not None:
                allowed = config.allowed_models
        if not allowed:
            continue
        models = _upstream_models(provider)
        if models is None:
            models = _explicit_models(provider, allowed)
        for model in models:
            if "*" in allowed or model in allowed:
                data.append({"id": f"{name}/{model}", "object": "model", "created": 0, "owned_by": name})
    return json.dumps({"object": "list", "data": data}, separators=(",", ":")).encode()
