"""Server-rendered SVG charts (no JavaScript, no CDN: the admin works offline)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from decimal import Decimal
from html import escape

from django.utils.safestring import SafeString, mark_safe

WIDTH, HEIGHT = 720, 200
LEFT, BOTTOM, TOP = 64, 28, 12


def bar_chart(
    labels: Sequence[str],
    values: Sequence[Decimal | int],
    *,
    title: str,
    fmt: Callable[[Decimal | int], str],
    color: str = "#417690",
) -> SafeString:
    """A bar chart with a y axis (0, half, max), a label every few bars, and a tooltip per bar."""
    count = max(len(values), 1)
    peak = max([v for v in values if v] or [1])
    plot_w, plot_h = WIDTH - LEFT - 8, HEIGHT - BOTTOM - TOP
    step = plot_w / count
    bar_w = max(step * 0.7, 1)
    parts = [
        f'<svg class="bf-chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{escape(title)}" '
        f'xmlns="http://www.w3.org/2000/svg"><title>{escape(title)}</title>'
    ]
    for fraction in (0, 0.5, 1):
        y = TOP + plot_h * (1 - fraction)
        parts.append(f'<line x1="{LEFT}" x2="{WIDTH - 8}" y1="{y:.1f}" y2="{y:.1f}" class="bf-grid"/>')
        value = peak * Decimal(str(fraction)) if isinstance(peak, Decimal) else int(peak * fraction)
        parts.append(
            f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end" class="bf-axis">{escape(fmt(value))}</text>'
        )
    label_every = max(1, count // 10)
    for index, (label, value) in enumerate(zip(labels, values, strict=True)):
        height = float(value) / float(peak) * plot_h if value else 0
        x = LEFT + index * step + (step - bar_w) / 2
        y = TOP + plot_h - height
        parts.append(
            f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar_w:.1f}" height="{height:.1f}" fill="{color}">'
            f"<title>{escape(label)}: {escape(fmt(value))}</title></rect>"
        )
        if index % label_every == 0:
            parts.append(
                f'<text x="{x + bar_w / 2:.1f}" y="{HEIGHT - 10}" text-anchor="middle" class="bf-axis">'
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
