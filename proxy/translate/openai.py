"""The hub format itself, behind the same members as the other format modules, so the proxy
treats every client and upstream format alike: requests and answers pass as they are; streams
are chunk dicts in and ``data:`` lines out."""

from __future__ import annotations

from typing import Any

from bifrost_site.errors import error_bytes
from proxy.translate import hub


def request_to_openai(body: dict[str, Any], model: str) -> dict[str, Any]:
    return {**body, "model": model}


def request_from_openai(body: dict[str, Any], model: str) -> dict[str, Any]:
    return {**body, "model": model}


def response_to_openai(payload: dict[str, Any], model: str) -> dict[str, Any]:
    return payload


def response_from_openai(payload: dict[str, Any], model: str) -> dict[str, Any]:
    return payload


class StreamToOpenAI:
    """Chunks as the upstream sent them, minus those that carry nothing for a translated client:
    Azure's first chunk (prompt filter results, no choices) and any other chunk without choices
    or usage."""

    def __init__(self, model: str) -> None:
        self.model = model
        self.finished = False

    def feed(self, event: str | None, data: dict[str, Any]) -> list[dict[str, Any]]:
        if "error" in data and "choices" not in data:
            error = data["error"] if isinstance(data["error"], dict) else {"message": str(data["error"])}
            raise hub.StreamError(502, str(error.get("message") or "the upstream stream reported an error"))
        choices = data.get("choices")
        if choices:
            for choice in choices:
                if isinstance(choice, dict) and choice.get("finish_reason"):
                    self.finished = True
            return [data]
        return [data] if isinstance(data.get("usage"), dict) else []

    def finish(self) -> list[dict[str, Any]]:
        if not self.finished:
            raise hub.StreamError(502, "the upstream stream ended before its finish reason")
        return []


class StreamFromOpenAI:
    """``data: <chunk>`` events and the closing ``data: [DONE]``; the usage-only chunk reaches the
    client only when it asked for it (``stream_options.include_usage``)."""

    def __init__(self, model: str, *, include_usage: bool = False) -> None:
        self.model = model
        self.include_usage = include_usage

    def feed(self, chunk: dict[str, Any]) -> bytes:
        if not chunk.get("choices") and not self.include_usage:
            return b""
        return b"data: " + hub.compact_bytes(chunk) + b"\n\n"

    def finish(self) -> bytes:
        return b"data: [DONE]\n\n"

    def error(self, status: int, message: str) -> bytes:
        return (
            b"data: "
            + hub.compact_bytes({"error": {"message": message, "type": "upstream_error", "code": status}})
            + b"\n\n"
        )


def error_body(status: int, message: str, type_: str | None = None) -> bytes:
    return error_bytes(status, message, type_=type_)
