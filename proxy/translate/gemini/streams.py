"""Event streams: Gemini SSE -> OpenAI chunks (``StreamToOpenAI``) and back (``StreamFromOpenAI``)."""

from __future__ import annotations

from typing import Any

from proxy.translate import hub
from proxy.translate.gemini.answers import _error_object, _finish_to_openai, _usage_from_openai, _usage_to_openai
from proxy.translate.gemini.calls import _digest, _gemini_call_part, _openai_call
from proxy.translate.gemini.fields import _dict, _get, _list
from proxy.translate.gemini.tables import _BLOCKED, _NO_FINISH, FINISH_FROM_OPENAI


def _event(payload: dict[str, Any]) -> bytes:
    # Gemini ends its SSE events with CRLF pairs; the SDK splits on any blank line.
    return b"data: " + hub.compact_bytes(payload) + b"\r\n\r\n"


# -- streams ----------------------------------------------------------------------------------


class StreamToOpenAI:
    """Gemini SSE events (one GenerateContentResponse each) -> OpenAI ``chat.completion.chunk`` dicts."""

    def __init__(self, model: str) -> None:
        self.model = model
        self.created = hub.now()
        self.id = ""
        self.scope = ""
        self.started: set[int] = set()
        self.calls: dict[int, int] = {}  # candidate index -> function calls seen (the next call's index)
        self.finishes: dict[int, str] = {}  # candidate index -> OpenAI finish reason
        self.usage: Any = None

    def _chunk(self, index: int, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        out = hub.chunk(self.id, self.model, self.created, delta, finish)
        out["choices"][0]["index"] = index
        return out

    def _begin(self, index: int, out: list[dict[str, Any]]) -> None:
        if index not in self.started:
            self.started.add(index)
            out.append(self._chunk(index, {"role": "assistant", "content": ""}))

    def feed(self, event: str | None, data: dict[str, Any]) -> list[dict[str, Any]]:
        error = data.get("error")
        if isinstance(error, dict):
            code = error.get("code")
            raise hub.StreamError(
                code if isinstance(code, int) else 502,
                str(error.get("message") or "the upstream reported an error"),
                error.get("status") if isinstance(error.get("status"), str) else None,
            )
        if not self.id:
            self.scope = str(data.get("responseId") or "")
            self.id = self.scope or "chatcmpl-gemini-" + _digest(hub.compact(data), 24)
        out: list[dict[str, Any]] = []
        if data.get("usageMetadata") is not None:
            self.usage = data["usageMetadata"]  # cumulative: the last one counts
        candidates = [c for c in _list(data.get("candidates")) if isinstance(c, dict)]
        if not candidates:
            self._begin(0, out)
            reason = _dict(data.get("promptFeedback")).get("blockReason")
            if reason:
                out.append(self._chunk(0, {"refusal": _BLOCKED.format(reason)}))
                self.finishes[0] = "content_filter"
            return out
        for position, candidate in enumerate(candidates):
            index = candidate.get("index")
            index = index if isinstance(index, int) else position
            self._begin(index, out)
            for part in _list(_dict(candidate.get("content")).get("parts")):
                if isinstance(part, dict):
                    self._part(index, part, out)
            if candidate.get("finishReason"):
                self.finishes[index] = _finish_to_openai(candidate["finishReason"])
        return out

    def _part(self, index: int, part: dict[str, Any], out: list[dict[str, Any]]) -> None:
        call = _get(part, "functionCall")
        if isinstance(call, dict):
            k = self.calls.get(index, 0)
            self.calls[index] = k + 1
            tool_call = _openai_call(call, f"{self.scope}:{index}", k, _get(part, "thoughtSignature"))
            out.append(self._chunk(index, {"tool_calls": [{"index": k, **tool_call}]}))
        elif isinstance(part.get("text"), str) and part["text"]:
            key = "reasoning_content" if part.get("thought") else "content"
            out.append(self._chunk(index, {key: part["text"]}))

    def finish(self) -> list[dict[str, Any]]:
        if not self.finishes:
            raise hub.StreamError(502, _NO_FINISH)
        out = [
            self._chunk(index, {}, "tool_calls" if self.calls.get(index) else reason)
            for index, reason in sorted(self.finishes.items())
        ]
        out.append(hub.usage_chunk(self.id, self.model, self.created, _usage_to_openai(self.usage)))
        return out


class _Call:
    """An OpenAI tool call being assembled from its stream fragments."""

    __slots__ = ("id", "name", "arguments")

    def __init__(self) -> None:
        self.id = ""
        self.name = ""
        self.arguments = ""


class _Choice:
    __slots__ = ("calls", "finish", "refused")

    def __init__(self) -> None:
        self.calls: dict[int, _Call] = {}  # calls not yet sent, by their OpenAI index
        self.finish: str | None = None
        self.refused = False


class StreamFromOpenAI:
    """OpenAI ``chat.completion.chunk`` dicts -> Gemini SSE events (``data: <json>`` + CRLF CRLF)."""

    def __init__(self, model: str) -> None:
        self.model = model
        self.id = ""
        self.choices: dict[int, _Choice] = {}
        self.usage: Any = None
        self.done = False

    def _event(self, candidates: list[dict[str, Any]], usage: dict[str, Any] | None = None) -> bytes:
        payload: dict[str, Any] = {"candidates": candidates}
        if usage is not None:
            payload["usageMetadata"] = usage
        payload["modelVersion"] = self.model
        payload["responseId"] = self.id
        return _event(payload)

    @staticmethod
    def _flush(state: _Choice, below: int | None = None) -> list[dict[str, Any]]:
        """The function-call parts of the complete calls: all, or those before index ``below``."""
        ready = sorted(k for k in state.calls if below is None or k < below)
        return [_gemini_call_part(call.id, call.name, call.arguments) for call in map(state.calls.pop, ready)]

    def feed(self, chunk: dict[str, Any]) -> bytes:
        if self.done:
            return b""
        self.id = self.id or str(chunk.get("id") or "")
        if chunk.get("usage"):
            self.usage = chunk["usage"]
        out = b""
        for position, choice in enumerate(_list(chunk.get("choices"))):
            choice = _dict(choice)
            index = choice.get("index")
            index = index if isinstance(index, int) else position
            state = self.choices.setdefault(index, _Choice())
            delta = _dict(choice.get("delta"))
            parts: list[dict[str, Any]] = []
            if delta.get("reasoning_content"):
                parts.append({"text": str(delta["reasoning_content"]), "thought": True})
            if delta.get("content"):
                parts.append({"text": str(delta["content"])})
            if delta.get("refusal"):
                parts.append({"text": str(delta["refusal"])})
                state.refused = True
            for fragment in _list(delta.get("tool_calls")):
                fragment = _dict(fragment)
                k = fragment.get("index")
                k = k if isinstance(k, int) else 0
                if k not in state.calls:
                    parts.extend(self._flush(state, below=k))  # a later call starting completes the earlier ones
                    state.calls[k] = _Call()
                call = state.calls[k]
                call.id = call.id or str(fragment.get("id") or "")
                function = _dict(fragment.get("function"))
                call.name = call.name or str(function.get("name") or "")
                call.arguments += str(function.get("arguments") or "")
            if choice.get("finish_reason"):
                state.finish = str(choice["finish_reason"])
                parts.extend(self._flush(state))
            if parts:
                out += self._event([{"content": {"role": "model", "parts": parts}, "index": index}])
        return out

    def finish(self) -> bytes:
        if self.done:
            return b""
        self.done = True
        candidates: list[dict[str, Any]] = []
        for index, state in sorted((self.choices or {0: _Choice()}).items()):
            reason = "SAFETY" if state.refused else FINISH_FROM_OPENAI.get(state.finish or "stop", "STOP")
            candidates.append(
                {"content": {"role": "model", "parts": self._flush(state)}, "finishReason": reason, "index": index}
            )
        return self._event(candidates, _usage_from_openai(self.usage) if self.usage else None)

    def error(self, status: int, message: str) -> bytes:
        self.done = True
        return _event(_error_object(status, message))
