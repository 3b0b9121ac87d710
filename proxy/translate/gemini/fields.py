"""Reading Gemini wire fields: camelCase or, as the SDK sends some nested ones, snake_case."""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any


@lru_cache(maxsize=256)
def _snake(name: str) -> str:
    return re.sub(r"([A-Z])", lambda match: "_" + match.group(1).lower(), name)


def _get(obj: dict[str, Any], name: str) -> Any:
    """``obj[name]`` in camelCase or, as the SDK sends some nested fields, in snake_case."""
    value = obj.get(name)
    return obj.get(_snake(name)) if value is None else value


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []
