"""Bar charts as inline SVG, drawn on the server (docs/web.md).

``bar_chart`` computes the geometry; ``templates/parts/bar_chart.html`` writes the SVG, escaped
like any template, with a table of the same numbers for screen readers and for copying.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

WIDTH = 640
HEIGHT = 220
LEFT = 48  # room for the value axis labels
BOTTOM = 28  # room for the category labels
TOP = 18
RIGHT = 8


@dataclass(frozen=True)
class Bar:
    label: str
    value: float
    shown: str  # the value as people read it
    x: float
    y: float
    width: float
    height: float


@dataclass(frozen=True)
class Tick:
    y: float
    text: str


@dataclass(frozen=True)
class XLabel:
    x: float
    text: str
    anchor: str = "middle"  # the first and last labels stay inside the chart
    major: bool = True  # shown on narrow screens too (the first, the middle and the last)


@dataclass(frozen=True)
class BarChart:
    title: str
    description: str
    width: int
    height: int
    bars: Sequence[Bar]
    ticks: Sequence[Tick]
    labels: Sequence[XLabel]
    baseline: float
    left: float
    right: float
    value_label: str


def nice_max(value: float) -> float:
    """A round top for the value axis at or above ``value``: 1, 2, 2.5 or 5 times a power of 10."""
    if value <= 0:
        return 1
    magnitude = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        if value <= step * magnitude:
            return step * magnitude
    return 10 * magnitude


def bar_chart(
    points: Sequence[tuple[str, float]],
    title: str,
    description: str = "",
    value_label: str = "Value",
    show: Callable[[float], str] = lambda v: f"{v:g}",
    label_every: int = 0,
    whole: bool = True,
) -> BarChart:
    """A chart of ``points`` (label, value) in order. ``label_every`` labels every n-th bar
    under the axis (0: about six labels, always the first and the last). ``whole``: the values
    are counts, so the axis marks whole numbers only."""
    top = nice_max(max((v for _, v in points), default=0))
    steps = 4
    if whole:
        top = max(top, 4)
        steps = next(n for n in (4, 5, 2, 1) if top % n == 0)
    plot_width = WIDTH - LEFT - RIGHT
    plot_height = HEIGHT - TOP - BOTTOM
    slot = plot_width / max(1, len(points))
    gap = min(4.0, slot * 0.2)
    bars = []
    for i, (label, value) in enumerate(points):
        height = plot_height * (value / top) if top else 0
        if value > 0:
            height = max(height, 1.0)  # a small value stays visible
        bars.append(
            Bar(
                label=label,
                value=value,
                shown=show(value),
                x=round(LEFT + i * slot + gap / 2, 2),
                y=round(TOP + plot_height - height, 2),
                width=round(slot - gap, 2),
                height=round(height, 2),
            )
        )
    ticks = [
        Tick(y=round(TOP + plot_height * (1 - k / steps), 2), text=show(top * k / steps))
        for k in range(steps + 1)
    ]
    every = label_every or max(1, math.ceil(len(points) / 6))
    last = len(bars) - 1
    major = {0, last // 2, last}
    # Every n-th bar, less those that would crowd a major label.
    chosen = {
        i
        for i in range(0, len(bars), every)
        if not any(0 < abs(i - m) < every * 0.75 for m in major)
    }
    labels = [
        XLabel(
            x=bar.x if i == 0 else bar.x + bar.width if i == last else bar.x + bar.width / 2,
            text=bar.label,
            anchor="start" if i == 0 else "end" if i == last else "middle",
            major=i in major,
        )
        for i, bar in enumerate(bars)
        if i in chosen | major
    ]
    return BarChart(
        title=title,
        description=description,
        width=WIDTH,
        height=HEIGHT,
        bars=bars,
        ticks=ticks,
        labels=labels,
        baseline=TOP + plot_height,
        left=LEFT,
        right=WIDTH - RIGHT,
        value_label=value_label,
    )
