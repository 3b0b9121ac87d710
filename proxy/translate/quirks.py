"""What the OpenAI-compatible provider types do differently from OpenAI, as data.

Applied to the outgoing OpenAI-format body of every request to a provider of that type (passthrough
or translated), after the model and ``stream_options`` are set. The table reflects the providers'
public API references; a type not listed here takes the request as OpenAI would.

- ``max_tokens_field``: the one output-cap field the type takes; the other is renamed to it.
- ``stream_options``: False when the type refuses the field (it reports usage in its last chunk anyway).
- ``object_tool_choice``: False when ``{"type": "function", ...}`` is refused: it becomes
  ``"required"`` with the tool list narrowed to that function (the same effect).
- ``required_choice``: the word the type uses for "call some tool".
- ``tool_id``: ``(pattern, length)`` its tool-call ids must match; other ids are mapped
  deterministically (``hub.tool_id``), on the assistant turn and on its results alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from proxy.translate import hub


@dataclass(frozen=True, slots=True)
class Quirks:
    max_tokens_field: str | None = None
    stream_options: bool = True
    object_tool_choice: bool = True
    required_choice: str = "required"
    tool_id: tuple[str, int] | None = None


QUIRKS: dict[str, Quirks] = {
    "groq": Quirks(max_tokens_field="max_completion_tokens"),
    "cerebras": Quirks(max_tokens_field="max_completion_tokens"),
    "mistral": Quirks(
        max_tokens_field="max_tokens", stream_options=False, required_choice="any", tool_id=(r"[A-Za-z0-9]{9}", 9)
    ),
    "deepseek": Quirks(max_tokens_field="max_tokens"),
    "openrouter": Quirks(max_tokens_field="max_tokens"),
    "together": Quirks(max_tokens_field="max_tokens"),
    "fireworks": Quirks(max_tokens_field="max_tokens"),
    "ollama": Quirks(max_tokens_field="max_tokens", object_tool_choice=False),
    "vllm": Quirks(max_tokens_field="max_tokens"),
}
_CAP_FIELDS = ("max_tokens", "max_completion_tokens")


def accepts_stream_options(provider_type: str) -> bool:
    quirks = QUIRKS.get(provider_type)
    return quirks is None or quirks.stream_options


def apply(provider_type: str, body: dict[str, Any]) -> None:
    """Adjust ``body`` (an OpenAI chat/completions request, owned by the caller) in place."""
    quirks = QUIRKS.get(provider_type)
    if quirks is None:
        return
    if quirks.max_tokens_field:
        other = next(f for f in _CAP_FIELDS if f != quirks.max_tokens_field)
        if other in body:
            value = body.pop(other)
            body.setdefault(quirks.max_tokens_field, value)
    if not quirks.stream_options:
        body.pop("stream_options", None)
    _tool_choice(quirks, body)
    if quirks.tool_id is not None and isinstance(body.get("messages"), list):
        body["messages"] = [_map_ids(message, quirks.tool_id) for message in body["messages"]]


def _tool_choice(quirks: Quirks, body: dict[str, Any]) -> None:
    choice = body.get("tool_choice")
    if choice == "required":
        body["tool_choice"] = quirks.required_choice
    elif isinstance(choice, dict) and not quirks.object_tool_choice:
        name = (choice.get("function") or {}).get("name")
        tools = body.get("tools")
        if isinstance(tools, list):
            body["tools"] = [t for t in tools if isinstance(t, dict) and (t.get("function") or {}).get("name") == name]
        body["tool_choice"] = quirks.required_choice


def _map_ids(message: Any, rule: tuple[str, int]) -> Any:
    if not isinstance(message, dict):
        return message
    pattern, length = rule
    calls = message.get("tool_calls")
    if isinstance(calls, list):
        message = {**message, "tool_calls": [_mapped_call(call, pattern, length) for call in calls]}
    call_id = message.get("tool_call_id")
    if isinstance(call_id, str):
        message = {**message, "tool_call_id": hub.tool_id(call_id, pattern=pattern, prefix="", length=length)}
    return message


def _mapped_call(call: Any, pattern: str, length: int) -> Any:
    if isinstance(call, dict) and isinstance(call.get("id"), str):
        return {**call, "id": hub.tool_id(call["id"], pattern=pattern, prefix="", length=length)}
    return call
