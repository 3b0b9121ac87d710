"""Helpers to validate models and report errors under the input path that caused them."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, TypeVar

from django.core.exceptions import ValidationError
from django.db import models


def prefixed(exc: ValidationError, prefix: str) -> ValidationError:
    """Re-key a ValidationError: ``{"max_limit": [...]}`` under ``budgets[0]`` -> ``budgets[0].max_limit``."""
    if hasattr(exc, "error_dict"):
        return ValidationError(
            {f"{prefix}.{field}" if prefix else field: errors for field, errors in exc.error_dict.items()}
        )
    return ValidationError({prefix: exc.messages}) if prefix else exc


def check(instance: models.Model, prefix: str = "", *, exclude: list[str] | None = None) -> None:
    """``full_clean()`` with errors re-keyed under ``prefix``."""
    try:
        instance.full_clean(exclude=exclude)
    except ValidationError as exc:
        raise prefixed(exc, prefix) from None


M = TypeVar("M", bound=models.Model)


def save_patched(*, instance: M, changes: dict[str, Any], fields: Iterable[str], keep_when_none: bool = False) -> M:
    """Patch semantics for every ``*_update`` service: the listed fields present in ``changes`` are
    set (``keep_when_none``: a None leaves the field as it is), then validated and saved."""
    for field in fields:
        if field in changes and not (keep_when_none and changes[field] is None):
            setattr(instance, field, changes[field])
    check(instance)
    instance.save()
    return instance


def field_error(field: str, message: str) -> ValidationError:
    return ValidationError({field: [message]})


class FieldProblems:
    """Field errors collected while cleaning a whole body, raised together (each a 400 naming its field)."""

    def __init__(self) -> None:
        self.errors: dict[str, list[str]] = {}

    def add(self, field: str, message: str) -> None:
        self.errors.setdefault(field, []).append(message)

    def raise_if_any(self) -> None:
        if self.errors:
            raise ValidationError(self.errors)

    def text(self, field: str, value: Any, *, max_length: int, blank: bool = True) -> str | None:
        """``value`` when it is a string a column can store (no NUL, no unpaired surrogate: both
        refused by PostgreSQL), at most ``max_length``, not blank unless allowed; else None and
        the problem recorded under ``field``."""
        if not isinstance(value, str):
            self.add(field, "must be a string")
            return None
        if not blank and not value.strip():
            self.add(field, "must not be blank")
            return None
        if len(value) > max_length:
            self.add(field, f"must be at most {max_length} characters")
            return None
        if "\x00" in value:
            self.add(field, "must not contain NUL characters")
            return None
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            self.add(field, "must not contain unpaired surrogates")
            return None
        return value
