"""JSON request bodies as text: what ``json.loads`` takes but no UTF-8 text can carry.

``json.loads`` reads a ``\\ud800`` escape (or, from bytes, that code point's own bytes) as a lone
UTF-16 surrogate: no character, so no upstream body, log line or database row can hold it, and
the first ``encode()`` on the way raises. ``loads`` refuses such a body as invalid JSON up front.
It looks for one only when the text could hold one: an escaped pair (an emoji from a client that
escapes everything non-ASCII) is a character and passes.
"""

from __future__ import annotations

import json
import re
from typing import Any

LONE_SURROGATE = "Invalid JSON: a \\u escape names a lone UTF-16 surrogate, not a character"
# A \uD800-\uDFFF escape, or such a code point's bytes (json.loads decodes bytes with surrogatepass).
_MAYBE_SURROGATE = re.compile(rb"\\u[dD][89a-fA-F]|\xed[\xa0-\xbf]").search


class LoneSurrogate(ValueError):
    """The JSON names a lone UTF-16 surrogate (``LONE_SURROGATE``)."""


def loads(raw: bytes | str) -> Any:
    """``json.loads(raw)``; raises ``LoneSurrogate`` (a ``ValueError``) for a lone surrogate."""
    value = json.loads(raw)
    text = raw if isinstance(raw, bytes) else raw.encode("utf-8", "surrogatepass")
    if _MAYBE_SURROGATE(text):
        try:
            json.dumps(value, ensure_ascii=False).encode()
        except UnicodeEncodeError:
            raise LoneSurrogate(LONE_SURROGATE) from None
    return value
