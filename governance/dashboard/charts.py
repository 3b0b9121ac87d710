"""Server-rendered SVG charts (no JavaScript, no CDN: the admin works offline)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from decimal import Decimal
from html import escape

from django.utils.safestring import SafeString, mark_safe

WIDTH, HEIGHT = 720, 200
LEFT, RIGHT, BOTTOM, TOP = 64, 18, 28, 12
# A bar never gets wider than this (viewBox units): a selection of one or two buckets draws
# narrow bars on an empty axis instead of one block across the chart.
MAX_BAR = 26
LABEL_CHAR = 6.2  # the width of one axis-label character at the axis font size, for spacing labels


def bar_chart(
    labels: Sequence[str],
    values: Sequence[Decimal | int],
    *,
    title: str,
    fmt: Callable[[Decimal | int], str],
    color: str = "#417690",
    tips: Sequence[str] | None = None,
    stacks: Sequence[tuple[str, str, Sequence[int]]] = (),
    width: int = WIDTH,
    height: int = HEIGHT,
) -> SafeString:
    """A bar chart with a y axis (0, half, max), as many x labels as fit without overlapping, and a
    tooltip per bar (``tips``, else ``label: value``).

    ``stacks`` are ``(name, colour, values)`` parts of each bar drawn over it from its top down
    (e.g. the errors and refusals among a bucket's requests); the rest of the bar is ``color``.
    """
    count = max(len(values), 1)
    peak = max([v for v in values if v] or [1])
    plot_w, plot_h = width - LEFT - RIGHT, height - BOTTOM - TOP
    step = plot_w / count
    bar_w = min(max(step * 0.7, 1), MAX_BAR)
    parts = [
        f'<svg class="bf-chart" viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}" '
        f'xmlns="http://www.w3.org/2000/svg"><title>{escape(title)}</title>'
    ]
    shown: set[str] = set()
    # All zero: only the zero line is labelled (a made-up peak would read as a figure).
    for fraction in (0, 0.5, 1) if any(values) else (0,):
        y = TOP + plot_h * (1 - fraction)
        parts.append(f'<line x1="{LEFT}" x2="{width - RIGHT}" y1="{y:.1f}" y2="{y:.1f}" class="bf-grid"/>')
        value = peak * Decimal(str(fraction)) if isinstance(peak, Decimal) else int(peak * fraction)
        text = fmt(value)
        if text not in shown:  # a peak of 1 request: no second "0" half way up
            shown.add(text)
            parts.append(
                f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end" class="bf-axis">{escape(text)}</text>'
            )
    widest = max((len(label) for label in labels), default=1) * LABEL_CHAR + 10
    label_every = max(1, math.ceil(count / max(plot_w // widest, 1)))
    for index, (label, value) in enumerate(zip(labels, values, strict=True)):
        height_px = float(value) / float(peak) * plot_h if value else 0
        x = LEFT + index * step + (step - bar_w) / 2
        y = TOP + plot_h - height_px
        tip = tips[index] if tips is not None else f"{label}: {fmt(value)}"
        parts.append(
            f'<g class="bf-bar-group"><title>{escape(tip)}</title>'
            f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar_w:.1f}" height="{height_px:.1f}" fill="{color}"/>'
        )
        top = y
        for _name, stack_color, stack_values in stacks:
            part = float(stack_values[index]) / float(peak) * plot_h if stack_values[index] else 0
            if part:
                parts.append(
                    f'<rect x="{x:.1f}" y="{top:.1f}" width="{bar_w:.1f}" height="{part:.1f}" fill="{stack_color}"/>'
                )
                top += part
        parts.append("</g>")
        if index % label_every == 0:
            parts.append(
                f'<text x="{x + bar_w / 2:.1f}" y="{height - 10}" text-anchor="middle" class="bf-axis">'
                f"{escape(label)}</text>"
            )
    parts.append("</svg>")
    return mark_safe("".join(parts))  # noqa: S308 - every interpolated text is escaped above


def usage_level(fraction: float) -> str:
    """Colour class by level: green below 70 %, amber below 90 %, red from 90 %."""
    if fraction < 0.7:
        return "ok"
    if fraction < 0.9:
        return "warn"
    return "over"


def money(value: Decimal | int) -> str:
    """``$12.35``, ``$0.0123``, ``$0.00001485``: the one USD format of the admin, the dashboard and
    the ``usd`` filter.

    Cents from a dollar up; below, four decimals, since one LLM call costs fractions of a cent;
    below a cent, every digit the amount has (money is stored to 10 decimals), because a spend or a
    budget that is not zero must never read as ``$0.00``.
    """
    value = Decimal(value)
    if value == 0 or abs(value) >= 1:
        return f"${value:,.2f}"
    if abs(value) >= Decimal("0.01"):
        places = 4
    else:
        # Finite here (a NaN fails the comparisons above, an infinity is >= 1): an int exponent.
        exponent = value.normalize().as_tuple().exponent
        assert isinstance(exponent, int)
        places = max(4, -exponent)
    return f"${value:.{places}f}"


def tokens(value: Decimal | int) -> str:
    value = int(value)
    if value >= 1_000_000:
        return f"{value / 1_000_000:.1f}M"
    if value >= 1_000:
        return f"{value / 1_000:.1f}k"
    return str(value)
