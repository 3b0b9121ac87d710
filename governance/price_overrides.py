"""Which pricing override prices a request, and what it changes (the rule, in one place).

**Matching a request.** A request has a virtual key (or none), a provider, the provider key its
attempt uses, a model (as routed: the name sent upstream, ``openai/`` prefix removed) and a
request type (``chat_completion``, ``messages``, ``embedding``...). An override matches it when

- its scope covers the request: ``global`` always; ``provider`` / ``provider_key`` /
  ``virtual_key`` when the request's provider / provider key / virtual key is the override's;
  ``virtual_key_provider`` and ``virtual_key_provider_key`` when both are;
- its pattern matches the model, case-sensitively: ``exact`` the whole name; ``wildcard`` a
  prefix (``claude-3*``: the pattern ends with ``*``, the only ``*`` in it; ``*`` alone matches
  every model); ``pattern`` a glob over the whole name where ``*`` is any run of characters
  (``/`` included) and ``?`` one character, every other character literal (not a regex, no
  ``[...]`` classes);
- its ``request_types`` is empty (every type) or names the request's type. ``chat_completion``
  also covers the chat requests of the other client formats (``messages``: Anthropic,
  ``generate_content``: Gemini), as Bifrost's does; ``messages`` / ``generate_content`` name only
  those.

**Which wins** when several match: the most specific scope (``virtual_key_provider_key`` >
``virtual_key_provider`` > ``virtual_key`` > ``provider_key`` > ``provider`` > ``global``), then
the most specific match (``exact`` > ``wildcard``, longest prefix first > ``pattern``), then the
newest (created last; an edit does not reorder).

**What it changes** (``governance.metering.snapshot``): each price field the override sets
replaces the catalog's (``governance.pricing.find_price``) for that field; a field it leaves empty
keeps the catalog's value, or costs 0 when the catalog has no row for the model (an override
prices a model the catalog does not know). ``cost_per_request`` is added once to every successful
request. An override's price also wins over a cost the upstream reports in its answer.

Lookups are dictionary reads by scope: the cost of one is the number of overrides in the scopes
the request belongs to, never the total.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

# The request types of this gateway's routes that are priced (``proxy.routing``), and those
# Bifrost documents for overrides that this gateway does not serve (accepted, so a Bifrost
# configuration imports; they match no request here).
SERVED_REQUEST_TYPES = ("chat_completion", "text_completion", "responses", "embedding", "messages", "generate_content")
BIFROST_ONLY_REQUEST_TYPES = (
    "rerank",
    "speech",
    "transcription",
    "image_generation",
    "image_variation",
    "image_edit",
    "video_generation",
    "video_remix",
)
REQUEST_TYPES = SERVED_REQUEST_TYPES + BIFROST_ONLY_REQUEST_TYPES
# A request type covered by an override naming the family's type (Bifrost's chat_completion
# covers a chat request whatever format the client speaks).
FAMILY = {"messages": "chat_completion", "generate_content": "chat_completion"}
MAX_PATTERN = 255
# The price fields of Bifrost's ``patch`` this gateway applies -> the model's field. Bifrost's
# other fields (image, audio, batch, tiered prices) price nothing here and are refused.
PATCH_FIELDS = {
    "input_cost_per_token": "input_cost_per_token",
    "output_cost_per_token": "output_cost_per_token",
    "cache_read_input_token_cost": "cached_input_cost_per_token",
    "cost_per_request": "cost_per_request",
}
# Where the API and the import name each model field of an override.
API_NAMES = {
    "virtual_key": "virtual_key_id",
    "provider": "provider_id",
    "provider_key": "provider_key_id",
    **{model: f"patch.{api}" for api, model in PATCH_FIELDS.items()},
}

# Scope kinds, most specific first (the order requests search them in).
SCOPE_ORDER = (
    "virtual_key_provider_key",
    "virtual_key_provider",
    "virtual_key",
    "provider_key",
    "provider",
    "global",
)


def pattern_problem(match_type: str, pattern: object) -> str | None:
    """Why ``pattern`` cannot be an override's pattern for ``match_type``, or None. A pattern that
    matches no model today is allowed (the model may come later)."""
    if not isinstance(pattern, str) or not pattern.strip():
        return "must be a non-empty string"
    if len(pattern) > MAX_PATTERN:
        return f"must be at most {MAX_PATTERN} characters"
    if "\x00" in pattern:
        return "must not contain NUL characters"
    if pattern != pattern.strip():
        return "must not start or end with whitespace"
    if match_type == "wildcard":
        if not pattern.endswith("*"):
            return "a wildcard pattern is a prefix ending with * (e.g. 'claude-3*')"
        if "*" in pattern[:-1] or "?" in pattern:
            return "a wildcard pattern has one *, at its end: use match_type 'pattern' for a glob"
    return None


def request_types_problem(value: object) -> str | None:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        return "must be a list of request types"
    unknown = [item for item in value if item not in REQUEST_TYPES]
    if unknown:
        return f"unknown request type {unknown[0]!r}: one of {', '.join(REQUEST_TYPES)}"
    if len(set(value)) != len(value):
        return "duplicate entries are not allowed"
    return None


def glob_regex(pattern: str) -> re.Pattern[str]:
    """``*`` any run of characters, ``?`` one character, anything else literal; whole name."""
    parts = [".*" if ch == "*" else "." if ch == "?" else re.escape(ch) for ch in pattern]
    return re.compile("".join(parts), re.DOTALL)


@dataclass(frozen=True, slots=True)
class OverrideSnapshot:
    """One override as the hot path reads it (``scope``: the key of the scope it lives in)."""

    id: str
    scope: tuple[str, ...]
    match_type: str
    pattern: str
    request_types: frozenset[str]
    created_at: datetime
    input_cost_per_token: Decimal | None = None
    output_cost_per_token: Decimal | None = None
    cached_input_cost_per_token: Decimal | None = None
    cost_per_request: Decimal | None = None
    regex: re.Pattern[str] | None = field(default=None, compare=False)

    def applies_to(self, request_type: str | None) -> bool:
        types = self.request_types
        if not types or request_type is None:
            return not types
        return request_type in types or FAMILY.get(request_type) in types


def scope_key(kind: str, *, virtual_key: Any = None, provider: Any = None, provider_key: Any = None) -> tuple[str, ...]:
    """The key of a scope: the kind and its identifiers (VK and key ids as text, the provider by name)."""
    if kind == "virtual_key_provider_key":
        return (kind, str(virtual_key), str(provider_key))
    if kind == "virtual_key_provider":
        return (kind, str(virtual_key), str(provider))
    if kind == "virtual_key":
        return (kind, str(virtual_key))
    if kind == "provider_key":
        return (kind, str(provider_key))
    if kind == "provider":
        return (kind, str(provider))
    return (kind,)


def request_scopes(virtual_key: str | None, provider: str, provider_key: str | None) -> list[tuple[str, ...]]:
    """The scopes a request belongs to, most specific first."""
    scopes: list[tuple[str, ...]] = []
    if virtual_key:
        if provider_key:
            scopes.append(("virtual_key_provider_key", virtual_key, provider_key))
        scopes.append(("virtual_key_provider", virtual_key, provider))
        scopes.append(("virtual_key", virtual_key))
    if provider_key:
        scopes.append(("provider_key", provider_key))
    scopes.append(("provider", provider))
    scopes.append(("global",))
    return scopes


class _Bucket:
    """The overrides of one scope, in match order: exact by name, prefixes longest first, globs."""

    __slots__ = ("exact", "prefixes", "patterns")

    def __init__(self, overrides: list[OverrideSnapshot]) -> None:
        newest = sorted(overrides, key=lambda o: (o.created_at, o.id), reverse=True)
        self.exact: dict[str, list[OverrideSnapshot]] = {}
        for o in newest:
            if o.match_type == "exact":
                self.exact.setdefault(o.pattern, []).append(o)
        # sorted() is stable: within one prefix length the newest stays first.
        self.prefixes = sorted(
            [(o.pattern[:-1], o) for o in newest if o.match_type == "wildcard"], key=lambda item: -len(item[0])
        )
        self.patterns = [(o.regex, o) for o in newest if o.match_type == "pattern" and o.regex is not None]

    def find(self, model: str, request_type: str | None) -> OverrideSnapshot | None:
        for o in self.exact.get(model, ()):
            if o.applies_to(request_type):
                return o
        for prefix, o in self.prefixes:
            if model.startswith(prefix) and o.applies_to(request_type):
                return o
        for regex, o in self.patterns:
            if regex.fullmatch(model) and o.applies_to(request_type):
                return o
        return None


class OverrideIndex:
    """Every override, by scope."""

    def __init__(self, overrides: Iterable[OverrideSnapshot] = ()) -> None:
        grouped: dict[tuple[str, ...], list[OverrideSnapshot]] = {}
        for o in overrides:
            grouped.setdefault(o.scope, []).append(o)
        self.buckets = {scope: _Bucket(items) for scope, items in grouped.items()}

    def __bool__(self) -> bool:
        return bool(self.buckets)

    def find(
        self,
        *,
        model: str,
        provider: str,
        virtual_key: str | None = None,
        provider_key: str | None = None,
        request_type: str | None = None,
    ) -> OverrideSnapshot | None:
        """The override that prices this request by the rule in the module docstring, or None."""
        for scope in request_scopes(virtual_key, provider, provider_key):
            bucket = self.buckets.get(scope)
            if bucket is not None:
                found = bucket.find(model, request_type)
                if found is not None:
                    return found
        return None
