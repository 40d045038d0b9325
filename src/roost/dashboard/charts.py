"""Line charts as SVG text, drawn on the server: no JavaScript library, nothing fetched, and the
same markup for the first page load and every live update."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

WIDTH, HEIGHT = 480, 220
_LEFT, _RIGHT, _TOP, _BOTTOM = 52, 12, 28, 30
_COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd")
MAX_POINTS = 500
"""A line keeps at most this many points (every k-th round, and the last): a chart is 480 pixels
wide, so more points draw nothing new and only make the page heavier."""


@dataclass(frozen=True)
class Line:
    """One named line: `(x, y)` points in order of x."""

    label: str
    points: Sequence[tuple[float, float]]


def _thinned(points: Sequence[tuple[float, float]]) -> Sequence[tuple[float, float]]:
    if len(points) <= MAX_POINTS:
        return points
    step = -(-len(points) // MAX_POINTS)
    kept = list(points[::step])
    if kept[-1] != points[-1]:
        kept.append(points[-1])
    return kept


def _span(low: float, high: float) -> tuple[float, float]:
    pad = (high - low) * 0.05 if high - low >= 1e-12 else (abs(high) * 0.05 or 1.0)
    # Values that never go below 0 (losses, accuracy, ε) get no axis below 0.
    return (low - pad if low < 0 or low - pad >= 0 else 0.0), high + pad


def _tick(value: float) -> str:
    return f"{value:.3g}"


def line_chart(
    chart_id: str,
    title: str,
    lines: Sequence[Line],
    *,
    limit: tuple[str, float] | None = None,
    empty: str = "no rounds yet",
) -> str:
    """An SVG chart of `lines` against the round; `limit` (label, y) draws a dashed
    horizontal line (ε's target). With no points it says `empty` instead of drawing axes."""
    # A line keeps its colour (its place in `lines`) whether or not the others have points.
    drawn = [(i, Line(line.label, _thinned(line.points))) for i, line in enumerate(lines)]
    drawn = [(i, line) for i, line in drawn if line.points]
    head = (
        f'<svg id="{escape(chart_id)}" class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" '
        f'role="img" aria-label="{escape(title)}" xmlns="http://www.w3.org/2000/svg">'
        f'<text x="{_LEFT}" y="16" class="chart-title">{escape(title)}</text>'
    )
    if not drawn:
        return (
            head + f'<text x="{_LEFT}" y="{HEIGHT // 2}" class="empty">{escape(empty)}</text></svg>'
        )
    xs = [x for _, line in drawn for x, _ in line.points]
    ys = [y for _, line in drawn for _, y in line.points] + ([limit[1]] if limit else [])
    x0, x1 = min(xs), max(xs)
    if x0 == x1:
        x0, x1 = x0 - 1, x1 + 1
    y0, y1 = _span(min(ys), max(ys))
    inner_w, inner_h = WIDTH - _LEFT - _RIGHT, HEIGHT - _TOP - _BOTTOM

    def sx(x: float) -> float:
        return _LEFT + (x - x0) / (x1 - x0) * inner_w

    def sy(y: float) -> float:
        return _TOP + (1 - (y - y0) / (y1 - y0)) * inner_h

    parts = [head, _axes(x0, x1, y0, y1, sx, sy)]
    if limit is not None:
        y = sy(limit[1])
        parts.append(
            f'<line class="limit" x1="{_LEFT}" x2="{WIDTH - _RIGHT}" y1="{y:.1f}" y2="{y:.1f}"/>'
            f'<text class="legend" x="{WIDTH - _RIGHT - 4}" y="{y - 4:.1f}" text-anchor="end">'
            f"{escape(limit[0])} {_tick(limit[1])}</text>"
        )
    for shown, (index, line) in enumerate(drawn):
        colour = _COLOURS[index % len(_COLOURS)]
        path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in line.points)
        parts.append(
            f'<polyline class="series" data-series="{escape(line.label)}" '
            f'data-points="{len(line.points)}" fill="none" stroke="{colour}" '
            f'stroke-width="1.6" points="{path}"/>'
        )
        if len(line.points) == 1:
            x, y = line.points[0]
            parts.append(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="3" fill="{colour}"/>')
        lx = _LEFT + 8 + shown * 150
        parts.append(
            f'<rect x="{lx}" y="{HEIGHT - 12}" width="10" height="3" fill="{colour}"/>'
            f'<text class="legend" x="{lx + 14}" y="{HEIGHT - 8}">{escape(line.label)}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _axes(x0: float, x1: float, y0: float, y1: float, sx, sy) -> str:
    bottom, right = HEIGHT - _BOTTOM, WIDTH - _RIGHT
    parts = [
        f'<line class="axis" x1="{_LEFT}" y1="{_TOP}" x2="{_LEFT}" y2="{bottom}"/>'
        f'<line class="axis" x1="{_LEFT}" y1="{bottom}" x2="{right}" y2="{bottom}"/>'
    ]
    for fraction in (0.0, 0.5, 1.0):
        y = y0 + fraction * (y1 - y0)
        parts.append(
            f'<text class="tick" x="{_LEFT - 4}" y="{sy(y) + 4:.1f}" text-anchor="end">'
            f"{_tick(y)}</text>"
        )
    first, last = round(x0), round(x1)
    for x in sorted({first, last, round((first + last) / 2)}):
        parts.append(
            f'<text class="tick" x="{sx(x):.1f}" y="{bottom + 14}" text-anchor="middle">{x}</text>'
        )
    return "".join(parts)
