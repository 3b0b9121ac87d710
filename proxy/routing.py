"""The route table (``ROUTES``) and which provider, model and key serve a request.

- ``provider/model``: the prefix counts only when it names a configured provider
  (``openrouter/openai/gpt-4o`` = provider ``openrouter``, model ``openai/gpt-4o``).
- Unprefixed: ``/openai/*`` defaults to ``openai``, ``/anthropic/*`` to ``anthropic`` and
  ``/genai/*`` to ``gemini``; on ``/v1/*`` (and Azure-style ``/openai/deployments/{model}/*``) the
  VK's provider configs with a weight that allow the model are chosen by weighted random; the
  others follow as fallbacks, heaviest first.
- Formats: a chat route (``translatable``) reaches a provider of any type, its request translated
  (``proxy.translation``); every other route only providers that speak its format.
- ``fallbacks`` in the body come after that, in order.
- Routing rules (``proxy.rules``) are evaluated first: a matching rule's targets and fallbacks
  replace the primary and the weighted configs (the body's ``fallbacks`` still come last), and a
  target's ``key_id`` pins the key. Every candidate still passes the checks below.
- Allow-lists (Bifrost v1.5): a provider is allowed when the VK has a config for it or has
  ``allow_all_providers`` (so a VK without configs allows nothing unless that flag is set); a
  config's ``allowed_models`` decides the model (``["*"]`` all, ``[]`` none).
- Key choice: enabled keys of the provider that allow the model and that the VK's config allows,
  weighted random.

This module does not talk HTTP; it answers ``ProxyError`` for the 400/403 cases.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any, NotRequired, TypedDict, TypeVar

from governance.metering.snapshot import KeySnapshot, ProviderConfigSnapshot, ProviderSnapshot, VirtualKeySnapshot
from governance.routing_rules import CompiledRule, Target
from proxy import errors, rules


@dataclass(frozen=True, slots=True)
class Route:
    """One inference endpoint: what it is, which API format it speaks, where it goes upstream, and
    the facts of its request type the proxy acts on (a new endpoint is one entry in ``ROUTES``)."""

    request_type: str
    api_format: str
    default_provider: str | None
    upstream_path: str
    method: str = "POST"
    streamable: bool = False  # ``"stream": true`` asks for an event stream
    produces_output: bool = True  # output tokens are reserved for it (not for embeddings)
    # Its streams report usage only when asked (``stream_options.include_usage``): the proxy asks,
    # and hides the extra chunk from a client that did not.
    usage_option: bool = False
    sse_marker: bytes = b'"delta"'  # what marks an event that carries content, counted when usage is missing
    translatable: bool = False  # a chat request: reaches providers of every format, translated
    stream_always: bool = False  # the route itself asks for a stream (Gemini's :streamGenerateContent)


class _EndpointFacts(TypedDict):
    """The :class:`Route` fields that differ between the OpenAI endpoints."""

    request_type: str
    streamable: NotRequired[bool]
    produces_output: NotRequired[bool]
    usage_option: NotRequired[bool]
    sse_marker: NotRequired[bytes]
    translatable: NotRequired[bool]


_OPENAI_ENDPOINTS: dict[str, _EndpointFacts] = {
    "chat/completions": {
        "request_type": "chat_completion",
        "streamable": True,
        "usage_option": True,
        "translatable": True,
    },
    "completions": {
        "request_type": "text_completion",
        "streamable": True,
        "usage_option": True,
        "sse_marker": b'"text"',
    },
    "embeddings": {"request_type": "embedding", "produces_output": False},
    "responses": {"request_type": "responses", "streamable": True},
}


def _openai_routes() -> dict[str, Route]:
    routes: dict[str, Route] = {}
    for name, facts in _OPENAI_ENDPOINTS.items():
        upstream = f"/v1/{name}"
        for path, default in ((f"/v1/{name}", None), (f"/openai/v1/{name}", "openai"), (f"/openai/{name}", "openai")):
            routes[path] = Route(api_format="openai", default_provider=default, upstream_path=upstream, **facts)
    for path, default in (("/v1/models", None), ("/openai/v1/models", "openai"), ("/openai/models", "openai")):
        routes[path] = Route("list_models", "openai", default, "/v1/models", method="GET", produces_output=False)
    return routes


ROUTES: dict[str, Route] = {
    **_openai_routes(),
    "/anthropic/v1/messages": Route(
        "messages", "anthropic", "anthropic", "/v1/messages", streamable=True, translatable=True
    ),
    "/anthropic/v1/messages/count_tokens": Route(
        "count_tokens", "anthropic", "anthropic", "/v1/messages/count_tokens", produces_output=False, translatable=True
    ),
    "/anthropic/v1/models": Route("list_models", "anthropic", "anthropic", "/v1/models", method="GET"),
}


# Gemini's paths carry the model (``/genai/v1beta/models/{model}:{action}``), and Azure's the
# deployment (``/openai/deployments/{deployment}/chat/completions``): matched by ``find``.
def _gemini(request_type: str, **facts: Any) -> Route:
    return Route(request_type, "gemini", "gemini", "", sse_marker=b'"text"', **facts)


GEMINI_ACTIONS: dict[str, Route] = {
    "generateContent": _gemini("generate_content", translatable=True),
    "streamGenerateContent": _gemini("generate_content", translatable=True, streamable=True, stream_always=True),
    "countTokens": _gemini("count_tokens", translatable=True, produces_output=False),
}
GEMINI_MODELS = _gemini("list_models", method="GET", produces_output=False)
GEMINI_PREFIXES = ("/genai/v1beta/models", "/genai/v1/models")
AZURE_PREFIX = "/openai/deployments/"


def find(path: str) -> tuple[Route, str | None] | None:
    """The route for ``path`` and the model its path names (Gemini, Azure-style), if any."""
    route = ROUTES.get(path)
    if route is not None:
        return route, None
    for prefix in GEMINI_PREFIXES:
        if path == prefix:
            return GEMINI_MODELS, None
        if path.startswith(prefix + "/"):
            model, sep, action = path[len(prefix) + 1 :].rpartition(":")
            if not sep:
                return (GEMINI_MODELS, action) if action else None
            found = GEMINI_ACTIONS.get(action)
            return (found, model) if found is not None and model else None
    if path.startswith(AZURE_PREFIX):
        deployment, sep, endpoint = path[len(AZURE_PREFIX) :].partition("/")
        while sep and endpoint not in _OPENAI_ENDPOINTS:  # a deployment name may hold a '/' (provider/model)
            more, sep, endpoint = endpoint.partition("/")
            deployment = f"{deployment}/{more}"
        route = ROUTES.get(f"/v1/{endpoint}") if sep else None
        return (route, deployment) if route is not None and deployment else None
    return None


@dataclass(frozen=True, slots=True)
class InferenceRequest:
    """The facts of one inference request, gathered once by the handler before routing."""

    route: Route
    body: dict[str, Any]  # without ``fallbacks``, which the gateway consumes
    model: str  # as the client wrote it
    stream: bool
    fallbacks: list[str]
    vk: VirtualKeySnapshot | None
    client_headers: list[tuple[str, str]]  # the ones that may go upstream
    started: float  # monotonic time the request arrived
    raw: bytes = b""  # the body as received (a same-format Gemini request is sent on as it is)
    # Per-request memo, e.g. the request translated to OpenAI chat once for every attempt.
    cache: dict[str, Any] = field(default_factory=dict)
    # The WSGI environ, read by routing rules that look at the request's headers (``proxy.rules``).
    environ: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)
    request_id: str = ""  # as the client sees it in x-request-id (``proxy.handler``)
    log_content: bool = False  # store its bodies (``BIFROST_CONTENT_LOGGING`` or the VK's ``log_content``)


@dataclass(frozen=True, slots=True)
class Candidate:
    """One attempt to make: a provider and the model to ask it for (and the key a routing
    rule's target pins, if any)."""

    provider: str
    model: str
    key_id: str = ""


@dataclass(frozen=True, slots=True)
class Resolved:
    """The seam handed to accounting: one attempt of a request, decided before its upstream call."""

    request: InferenceRequest
    provider: ProviderSnapshot
    config: ProviderConfigSnapshot | None
    key: KeySnapshot
    model: str  # as the provider is asked for it

    @property
    def vk(self) -> VirtualKeySnapshot | None:
        return self.request.vk

    @property
    def body(self) -> dict[str, Any]:
        return self.request.body

    @property
    def stream(self) -> bool:
        return self.request.stream

    @property
    def route(self) -> Route:
        return self.request.route


def split_model(model: str, providers: dict[str, ProviderSnapshot]) -> tuple[str | None, str]:
    prefix, sep, rest = model.partition("/")
    if sep and rest and prefix in providers:
        return prefix, rest
    return None, model


def plan(request: InferenceRequest, providers: dict[str, ProviderSnapshot]) -> list[Candidate]:
    """Primary first, then the fallbacks; 400 when no provider can be named for the model.

    A routing rule that matches (``proxy.rules``) replaces the primary and the weighted configs
    by its targets (one picked by weight, the others following heaviest first) and its own
    ``fallbacks``; the request's ``fallbacks`` come last either way."""
    provider, bare = split_model(request.model, providers)
    rule = rules.matching(request, provider or request.route.default_provider or "", bare)
    if rule is None:
        candidates = _asked(request, providers, provider, bare)
    else:
        candidates = _ruled(rule, request, providers, provider, bare)
    for entry in request.fallbacks:
        fb_provider, fb_model = split_model(entry, providers)
        candidates.append(Candidate(fb_provider or "", fb_model))
    return candidates


def _ruled(
    rule: CompiledRule,
    request: InferenceRequest,
    providers: dict[str, ProviderSnapshot],
    provider: str | None,
    bare: str,
) -> list[Candidate]:
    """A matching rule's candidates: its targets, then its fallbacks. A target without a provider
    keeps the one the request would have gone to; ``"provider/"`` in the fallbacks keeps the model.
    A target whose provider has been deleted since the rule was saved is skipped (none left: the
    request's own provider and model lead)."""
    targets = [t for t in rule.targets if not t.provider or t.provider in providers]
    if not targets:
        targets = [Target("", "", "", 1.0)]
    primary = _weighted_pick(targets, [t.weight for t in targets])
    ordered = [primary, *sorted((t for t in targets if t is not primary), key=lambda t: -t.weight)]
    candidates: list[Candidate] = []
    for target in ordered:
        model = target.model or bare
        if target.provider:
            candidates.append(Candidate(target.provider, model, target.key_id))
        else:
            candidates += _asked(request, providers, provider, model)
    for entry in rule.fallbacks:
        fb_provider, _, fb_model = entry.partition("/")
        candidates.append(Candidate(fb_provider, fb_model or bare))
    return candidates


def _asked(
    request: InferenceRequest, providers: dict[str, ProviderSnapshot], provider: str | None, bare: str
) -> list[Candidate]:
    """The candidates of the model as asked: its provider prefix, the route's provider, or the
    VK's weighted configs that allow it (one picked by weight, the others following)."""
    route, vk = request.route, request.vk
    candidates: list[Candidate] = []
    if provider is not None:
        candidates.append(Candidate(provider, bare))
    elif route.default_provider is not None:
        candidates.append(Candidate(route.default_provider, bare))
    else:
        weighted = [
            c
            for c in (vk.provider_configs if vk else ())
            if c.weight is not None
            and c.allows_model(bare)
            and c.provider in providers
            and (route.translatable or providers[c.provider].api_format == route.api_format)
        ]
        if not weighted:
            raise errors.bad_request(
                f"no provider found for model '{bare}': use the 'provider/model' form"
                + (" or give this virtual key a weighted provider config that allows it" if vk else "")
            )
        primary = _weighted_pick(weighted, [c.weight or 0.0 for c in weighted])
        rest = sorted((c for c in weighted if c is not primary), key=lambda c: -(c.weight or 0.0))
        candidates += [Candidate(c.provider, bare) for c in (primary, *rest)]
    return candidates


def parse_fallbacks(value: Any) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(item, str) and item for item in value):
        raise errors.bad_request("fallbacks must be a list of 'provider/model' strings")
    return value


def resolve(candidate: Candidate, request: InferenceRequest, providers: dict[str, ProviderSnapshot]) -> Resolved:
    """Check the allow-lists and choose a key for one candidate (ProxyError 400/403 otherwise)."""
    vk = request.vk
    provider = providers.get(candidate.provider)
    if provider is None:
        name = candidate.provider or candidate.model
        raise errors.bad_request(f"provider '{name}' is not configured")
    config = None
    if vk is not None:
        config = vk.config_for(provider.name)
        if config is None and not vk.allow_all_providers:
            raise errors.provider_blocked(provider.name)
        if config is not None and not config.allows_model(candidate.model):
            raise errors.model_blocked(candidate.model)
    route = request.route
    if provider.api_format != route.api_format and not route.translatable:
        message = (
            f"provider '{provider.name}' speaks the {provider.api_format} API, and {route.request_type} requests are"
            " not translated between formats: only chat requests are (/v1/chat/completions, /anthropic/v1/messages,"
            " /genai/.../models/{model}:generateContent)"
        )
        raise errors.bad_request(message)
    if candidate.key_id:
        key = pinned_key(provider, candidate.model, config, candidate.key_id)
    else:
        key = choose_key(provider, candidate.model, config)
    return Resolved(request, provider, config, key, candidate.model)


def pinned_key(
    provider: ProviderSnapshot, model: str, config: ProviderConfigSnapshot | None, key_id: str
) -> KeySnapshot:
    """The key a routing rule's target names: it must be an enabled key of the provider that
    serves the model, and the VK's provider config must allow it (403 otherwise)."""
    key = next((k for k in provider.keys if k.id == key_id), None)
    if key is None or not key.enabled or not key.allows_model(model):
        raise errors.bad_request(
            f"no keys found that support model: {model} (the routing rule pins key '{key_id}', which is not"
            f" an enabled key of provider '{provider.name}' for this model)"
        )
    if config is not None and not config.allows_key(key.id):
        message = f"Key '{key.name}' of provider '{provider.name}' is not allowed for this virtual key"
        raise errors.ProxyError(403, message, type_="key_blocked")
    return key


def choose_key(provider: ProviderSnapshot, model: str, config: ProviderConfigSnapshot | None) -> KeySnapshot:
    usable = [
        key
        for key in provider.keys
        if key.enabled and key.allows_model(model) and (config is None or config.allows_key(key.id))
    ]
    if not usable:
        message = f"no keys found that support model: {model}"  # Bifrost's words, kept as the prefix
        if config is not None and any(key.enabled and key.allows_model(model) for key in provider.keys):
            message += (
                f" (the virtual key's provider config for '{provider.name}' allows none of the provider's"
                ' keys: set its key_ids, e.g. ["*"] for all)'
            )
        raise errors.bad_request(message)
    if len(usable) == 1:
        return usable[0]
    return _weighted_pick(usable, [key.weight for key in usable])


_T = TypeVar("_T")


def _weighted_pick(items: list[_T], weights: list[float]) -> _T:
    if len(items) == 1:
        return items[0]
    if sum(weights) <= 0:
        return random.choice(items)
    return random.choices(items, weights=weights, k=1)[0]
