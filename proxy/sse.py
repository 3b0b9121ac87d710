"""Server-sent event framing: line endings normalised across reads, and whole events split out.

Lines end in CRLF, LF or CR (the SSE spec allows all three); they come out as LF. A CRLF can be
split across reads: its CR already ended the line, so its LF is dropped, or the two events around
it would merge into one. Events are cut at blank lines only, so a multi-byte UTF-8 character or a
JSON document split across network reads is never decoded in pieces.
"""

from __future__ import annotations

import json
from typing import Any


class LineEnds:
    """Rewrites CRLF and CR to LF, statefully across reads."""

    __slots__ = ("_after_cr",)

    def __init__(self) -> None:
        self._after_cr = False  # the last read ended in CR: an LF starting the next one ends no line

    def normalise(self, data: bytes) -> bytes:
        if self._after_cr and data[:1] == b"\n":
            data = data[1:]
        if b"\r" in data:
            self._after_cr = data[-1:] == b"\r"
            return data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        if data:
            self._after_cr = False
        return data


class EventReader:
    """``feed(bytes)`` returns the complete events so far as ``(event name or None, data)``."""

    __slots__ = ("_ends", "_buffer")

    def __init__(self) -> None:
        self._ends = LineEnds()
        self._buffer = b""

    def feed(self, data: bytes) -> list[tuple[str | None, bytes]]:
        buffer = self._buffer + self._ends.normalise(data)
        cut = buffer.rfind(b"\n\n")
        if cut < 0:
            self._buffer = buffer
            return []
        ready, self._buffer = buffer[:cut], buffer[cut + 2 :]
        return [parsed for block in ready.split(b"\n\n") if (parsed := _event(block)) is not None]

    def flush(self) -> list[tuple[str | None, bytes]]:
        """What is left when the stream ends (a last event without its blank line)."""
        rest, self._buffer = self._buffer, b""
        parsed = _event(rest) if rest.strip() else None
        return [parsed] if parsed is not None else []


def _event(block: bytes) -> tuple[str | None, bytes] | None:
    name: str | None = None
    data: list[bytes] = []
    for line in block.split(b"\n"):
        if line.startswith(b"data:"):
            data.append(line[5:].lstrip(b" "))
        elif line.startswith(b"event:"):
            name = line[6:].strip().decode("utf-8", "replace")
    if not data:
        return None
    return name, b"\n".join(data)


_decode = json.JSONDecoder().decode  # events are UTF-8: skip json.loads' encoding detection


def decode(data: bytes) -> dict[str, Any] | None:
    """An event's JSON object, or None (``[DONE]``, a keep-alive, or not a JSON object)."""
    try:
        value = _decode(data.decode("utf-8"))
    except ValueError:  # UnicodeDecodeError is one too
        return None
    return value if isinstance(value, dict) else None
