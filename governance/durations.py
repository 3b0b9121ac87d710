"""Reset durations (``30s``, ``5m``, ``1h``, ``1d``, ``1w``, ``1M``, ``1Y``) and their windows.

Windows are fixed and anchored at ``last_reset``. Calendar-aligned windows (units d/w/M/Y only)
start at UTC midnight, on Monday, on the 1st of the month, on January 1st.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from django.core.exceptions import ValidationError

DURATION_RE = re.compile(r"([1-9][0-9]{0,5})([smhdwMY])")
UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400, "M": 30 * 86400, "Y": 365 * 86400}
CALENDAR_UNITS = frozenset("dwMY")
# The grammar admits 999999Y, whose windows end past year 9999, where date arithmetic fails.
MAX_DURATION_SECONDS = 100 * UNIT_SECONDS["Y"]


def parse_duration(text: str) -> tuple[int, str]:
    """``(count, unit)``; the whole text must match (no stray whitespace or newline)."""
    found = _parsed.get(text) if isinstance(text, str) else None
    if found is not None:
        return found
    match = DURATION_RE.fullmatch(text) if isinstance(text, str) else None
    if not match:
        raise ValidationError(
            f"invalid duration {text!r}: use <number><unit> with unit s, m, h, d, w, M or Y (e.g. 30s, 1h, 1M)",
            code="invalid_duration",
        )
    parsed = int(match.group(1)), match.group(2)
    if len(_parsed) < 10_000:  # every request's window reads its duration: parse each text once
        _parsed[text] = parsed
    return parsed


_parsed: dict[str, tuple[int, str]] = {}


def validate_duration(text: str) -> None:
    """The grammar, and at most 100 years: the one rule for the API, the admin and config import."""
    count, unit = parse_duration(text)
    if count * UNIT_SECONDS[unit] > MAX_DURATION_SECONDS:
        raise ValidationError(f"duration {text!r} is too long: at most 100 years (100Y)", code="duration_too_long")


def duration_seconds(text: str) -> int:
    count, unit = parse_duration(text)
    return count * UNIT_SECONDS[unit]


def validate_calendar_alignment(text: str, calendar_aligned: bool) -> None:
    if calendar_aligned and parse_duration(text)[1] not in CALENDAR_UNITS:
        raise ValidationError("calendar_aligned needs a duration in days, weeks, months or years (d, w, M, Y)")


def _add_months(moment: datetime, months: int) -> datetime:
    index = moment.month - 1 + months
    return moment.replace(year=moment.year + index // 12, month=index % 12 + 1)


def calendar_window_start(text: str, now: datetime) -> datetime:
    """Start of the calendar-aligned window containing ``now`` (UTC)."""
    count, unit = parse_duration(text)
    now = now.astimezone(UTC)
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    if unit == "d":
        epoch_days = (midnight - datetime(1970, 1, 1, tzinfo=UTC)).days
        return midnight - timedelta(days=epoch_days % count)
    if unit == "w":
        monday = midnight - timedelta(days=midnight.weekday())
        # 1970-01-05 was a Monday: count whole weeks from there for multi-week windows.
        weeks = (monday - datetime(1970, 1, 5, tzinfo=UTC)).days // 7
        return monday - timedelta(weeks=weeks % count)
    if unit == "M":
        first = midnight.replace(day=1)
        months = first.year * 12 + first.month - 1
        return _add_months(first, -(months % count))
    first_of_year = midnight.replace(month=1, day=1)
    return first_of_year.replace(year=first_of_year.year - (first_of_year.year % count if count > 1 else 0))


def calendar_window_end(text: str, start: datetime) -> datetime:
    count, unit = parse_duration(text)
    if unit == "d":
        return start + timedelta(days=count)
    if unit == "w":
        return start + timedelta(weeks=count)
    if unit == "M":
        return _add_months(start, count)
    return start.replace(year=start.year + count)


def window_start(text: str, last_reset: datetime, now: datetime, calendar_aligned: bool) -> datetime:
    """Start of the window that contains ``now`` given the window last started at ``last_reset``."""
    if calendar_aligned:
        return calendar_window_start(text, now)
    length = timedelta(seconds=duration_seconds(text))
    if now < last_reset + length:
        return last_reset
    elapsed_windows = (now - last_reset) // length
    return last_reset + elapsed_windows * length


def window_end(text: str, start: datetime, calendar_aligned: bool) -> datetime:
    if calendar_aligned:
        return calendar_window_end(text, start)
    return start + timedelta(seconds=duration_seconds(text))
