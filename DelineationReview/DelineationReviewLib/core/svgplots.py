"""Small, dependency-free plots as self-contained SVG text (box plots, grouped bar plots, paired-line plots).

The core may only use numpy/scipy/SimpleITK/pydicom, so study reports draw their plots here instead of with
matplotlib. Every function returns one ``<svg>`` element (a string) that can be inlined in HTML or saved as
``.svg``; it carries its own ``<title>`` for accessibility and uses no external fonts, scripts or style sheets.

Box plots follow Tukey's convention (Tukey 1977, *Exploratory Data Analysis*): the box spans the first to the
third quartile (``numpy.percentile`` with linear interpolation, Hyndman & Fan type 7), the line is the median,
whiskers reach the most extreme data within 1.5 × IQR of the box, values beyond are drawn as outliers. All
individual values are also drawn as small points (deterministic horizontal spread, not random), because
delineation studies have few observations per group. NaN values are left out and counted in the ``n=`` label.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape

import numpy as np

__all__ = ["PALETTE", "boxStatistics", "boxPlotSvg", "groupedBarPlotSvg", "pairedPlotSvg", "niceTicks"]

# Colour-blind-friendly palette (Okabe & Ito 2008), then greys.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000",
           "#777777", "#AAAAAA")

_FONT = 'font-family="Helvetica, Arial, sans-serif"'
_MARGIN_LEFT = 64
_MARGIN_RIGHT = 16
_MARGIN_TOP = 36
_MARGIN_BOTTOM_BASE = 46


def _attr(value) -> str:
    return escape(str(value), quote=True)


def _fmt(value: float) -> str:
    """Number formatting for coordinates (2 decimals is far below a pixel)."""
    return f"{value:.2f}".rstrip("0").rstrip(".") if math.isfinite(value) else "0"


def _tickLabel(value: float, step: float) -> str:
    """Shortest decimal text that shows ``value`` exactly at the resolution of the tick ``step``."""
    for decimals in range(0, 7):
        if abs(round(step, decimals) - step) < step * 1e-6:
            break
    return f"{0.0 if abs(value) < step * 1e-9 else value:.{decimals}f}"


def _rotatedLabelOverhang(centres: Sequence[float], labels: Sequence[str]) -> float:
    """Extra left margin so that labels rotated by -35° (anchored at their end) do not leave the picture."""
    return max([0.0] + [len(label) * 5.0 - centre for centre, label in zip(centres, labels, strict=False)])


def _titleWidth(title: str) -> float:
    return 9.5 * len(title) + 40.0


def niceTicks(low: float, high: float, count: int = 5) -> list[float]:
    """Round tick values covering [low, high] with steps of 1, 2, 2.5 or 5 × 10^k."""
    if not (math.isfinite(low) and math.isfinite(high)):
        return [0.0, 1.0]
    if high <= low:
        high = low + (abs(low) if low else 1.0)
    rawStep = (high - low) / max(count, 1)
    magnitude = 10.0 ** math.floor(math.log10(rawStep))
    step = next(m * magnitude for m in (1.0, 2.0, 2.5, 5.0, 10.0) if m * magnitude >= rawStep)
    first = math.floor(low / step + 1e-9) * step
    ticks = []
    value = first
    while value <= high + step * 1e-6 or len(ticks) < 2:
        ticks.append(round(value, 12))
        value += step
        if len(ticks) > 50:
            break
    if ticks[-1] < high - step * 1e-6:
        ticks.append(round(ticks[-1] + step, 12))
    return ticks


def boxStatistics(values: Sequence[float]) -> dict:
    """Tukey box statistics of the finite values: n, median, q1, q3, whisker ends, outliers, nMissing."""
    array = np.asarray([float(v) for v in values if v is not None], dtype=float)
    finite = array[np.isfinite(array)]
    stats = {"n": int(finite.size), "nMissing": int(len(values) - finite.size)}
    if finite.size == 0:
        return stats
    q1, median, q3 = (float(v) for v in np.percentile(finite, [25, 50, 75]))
    iqr = q3 - q1
    inside = finite[(finite >= q1 - 1.5 * iqr) & (finite <= q3 + 1.5 * iqr)]
    stats.update(median=median, q1=q1, q3=q3, whiskerLow=float(inside.min()), whiskerHigh=float(inside.max()),
                 outliers=sorted(float(v) for v in finite if v < q1 - 1.5 * iqr or v > q3 + 1.5 * iqr))
    return stats


class _Axes:
    """A vertical value axis mapping data values to SVG y coordinates."""

    def __init__(self, low: float, high: float, top: float, bottom: float):
        self.ticks = niceTicks(low, high)
        self.low, self.high = self.ticks[0], self.ticks[-1]
        self.top, self.bottom = top, bottom

    def y(self, value: float) -> float:
        span = self.high - self.low or 1.0
        return self.bottom - (value - self.low) / span * (self.bottom - self.top)

    def draw(self, left: float, right: float, label: str) -> list[str]:
        out = []
        step = self.ticks[1] - self.ticks[0] if len(self.ticks) > 1 else 1.0
        for tick in self.ticks:
            y = _fmt(self.y(tick))
            out.append(f'<line x1="{_fmt(left)}" y1="{y}" x2="{_fmt(right)}" y2="{y}" stroke="#e4e4e4"/>')
            out.append(f'<text x="{_fmt(left - 6)}" y="{y}" dy="0.32em" text-anchor="end" font-size="11" {_FONT}>'
                       f"{_tickLabel(tick, step)}</text>")
        out.append(f'<line x1="{_fmt(left)}" y1="{_fmt(self.top)}" x2="{_fmt(left)}" y2="{_fmt(self.bottom)}" '
                   'stroke="#444"/>')
        middle = _fmt((self.top + self.bottom) / 2)
        out.append(f'<text x="14" y="{middle}" transform="rotate(-90 14 {middle})" text-anchor="middle" '
                   f'font-size="12" {_FONT}>{escape(label)}</text>')
        return out


def _svgOpen(width: float, height: float, title: str) -> list[str]:
    return [f'<svg xmlns="http://www.w3.org/2000/svg" width="{_fmt(width)}" height="{_fmt(height)}" '
            f'viewBox="0 0 {_fmt(width)} {_fmt(height)}" role="img" class="plot">',
            f"<title>{escape(title)}</title>",
            f'<rect x="0" y="0" width="{_fmt(width)}" height="{_fmt(height)}" fill="white"/>',
            f'<text x="{_fmt(width / 2)}" y="20" text-anchor="middle" font-size="14" font-weight="bold" {_FONT}>'
            f"{escape(title)}</text>"]


def _dataRange(allValues: list[float], yMin: float | None, yMax: float | None) -> tuple[float, float]:
    finite = [v for v in allValues if v is not None and math.isfinite(v)]
    low = yMin if yMin is not None else (min(finite) if finite else 0.0)
    high = yMax if yMax is not None else (max(finite) if finite else 1.0)
    if yMin is None and finite and low > 0 and low < 0.5 * high:
        low = 0.0  # keep zero on the axis when the data are not far from it
    if high <= low:
        high = low + 1.0
    return low, high


def _categoryLabel(x: float, baseline: float, lines: Sequence[str], rotate: bool) -> list[str]:
    out = []
    if rotate:
        text = " ".join(lines)
        out.append(f'<text x="{_fmt(x)}" y="{_fmt(baseline)}" transform="rotate(-35 {_fmt(x)} {_fmt(baseline)})" '
                   f'text-anchor="end" font-size="11" {_FONT}>{escape(text)}</text>')
    else:
        for index, line in enumerate(lines):
            out.append(f'<text x="{_fmt(x)}" y="{_fmt(baseline + 13 * index)}" text-anchor="middle" font-size="11" '
                       f'{_FONT}>{escape(line)}</text>')
    return out


def boxPlotSvg(groups: Sequence[tuple[str, Sequence[float]]], *, title: str, yLabel: str,
               yMin: float | None = None, yMax: float | None = None, height: float = 320,
               groupWidthPx: float = 70, showPoints: bool = True, colourIndices: Sequence[int] | None = None) -> str:
    """One box per group, with its values drawn as points.

    Parameters
    ----------
    groups : ``[(label, values), ...]`` in display order; NaN/None values are left out (counted in ``n=``).
    title, yLabel : plot title and value-axis label (units in the label, e.g. "HD95 (mm)").
    yMin, yMax : fixed axis range (e.g. 0 and 1 for Dice); default: from the data.
    colourIndices : palette index per group (e.g. the round of each case); default: one colour per group.
    """
    rotate = len(groups) > 8 or any(len(label) > 12 for label, _ in groups)
    bottomMargin = _MARGIN_BOTTOM_BASE + (max((len(label) for label, _ in groups), default=0) * 5 if rotate else 0)
    labels = [f"{label} (n={boxStatistics(list(values))['n']})" for label, values in groups]
    left = _MARGIN_LEFT + (_rotatedLabelOverhang([_MARGIN_LEFT + groupWidthPx * (i + 0.5) for i in range(len(groups))],
                                                  labels) if rotate else 0.0)
    plotWidth = max(groupWidthPx * max(len(groups), 1), _titleWidth(title) - _MARGIN_LEFT - _MARGIN_RIGHT)
    width = left + _MARGIN_RIGHT + plotWidth
    groupWidthPx = plotWidth / max(len(groups), 1)
    height = height + (bottomMargin - _MARGIN_BOTTOM_BASE)
    allValues = [float(v) for _, values in groups for v in values if v is not None]
    low, high = _dataRange(allValues, yMin, yMax)
    axes = _Axes(low, high, _MARGIN_TOP, height - bottomMargin)
    out = _svgOpen(width, height, title)
    out += axes.draw(left, width - _MARGIN_RIGHT, yLabel)
    for index, (label, values) in enumerate(groups):
        centre = left + groupWidthPx * (index + 0.5)
        colour = PALETTE[(colourIndices[index] if colourIndices is not None else index) % len(PALETTE)]
        stats = boxStatistics(list(values))
        half = min(groupWidthPx, 70.0) * 0.28
        out.append(f'<g class="box" data-label="{_attr(label)}" data-n="{stats["n"]}">')
        if stats["n"]:
            yq1, yq3, ymed = axes.y(stats["q1"]), axes.y(stats["q3"]), axes.y(stats["median"])
            ylo, yhi = axes.y(stats["whiskerLow"]), axes.y(stats["whiskerHigh"])
            out.append(f'<line x1="{_fmt(centre)}" y1="{_fmt(ylo)}" x2="{_fmt(centre)}" y2="{_fmt(yq1)}" '
                       'stroke="#333"/>')
            out.append(f'<line x1="{_fmt(centre)}" y1="{_fmt(yq3)}" x2="{_fmt(centre)}" y2="{_fmt(yhi)}" '
                       'stroke="#333"/>')
            for yEnd in (ylo, yhi):
                out.append(f'<line x1="{_fmt(centre - half / 2)}" y1="{_fmt(yEnd)}" x2="{_fmt(centre + half / 2)}" '
                           f'y2="{_fmt(yEnd)}" stroke="#333"/>')
            out.append(f'<rect x="{_fmt(centre - half)}" y="{_fmt(yq3)}" width="{_fmt(2 * half)}" '
                       f'height="{_fmt(max(yq1 - yq3, 0.5))}" fill="{colour}" fill-opacity="0.35" stroke="{colour}"/>')
            out.append(f'<line x1="{_fmt(centre - half)}" y1="{_fmt(ymed)}" x2="{_fmt(centre + half)}" '
                       f'y2="{_fmt(ymed)}" stroke="#111" stroke-width="2"/>')
            if showPoints:
                finite = [float(v) for v in values if v is not None and math.isfinite(float(v))]
                for pointIndex, value in enumerate(finite):
                    offset = ((pointIndex * 0.618034) % 1.0 - 0.5) * half * 1.2
                    out.append(f'<circle cx="{_fmt(centre + offset)}" cy="{_fmt(axes.y(value))}" r="2.5" '
                               f'fill="{colour}" stroke="#222" stroke-width="0.5"/>')
        else:
            out.append(f'<text x="{_fmt(centre)}" y="{_fmt((axes.top + axes.bottom) / 2)}" text-anchor="middle" '
                       f'font-size="11" fill="#888" {_FONT}>no data</text>')
        out.append("</g>")
        out += _categoryLabel(centre, axes.bottom + 16, [label, f"n={stats['n']}"] if not rotate
                              else [f"{label} (n={stats['n']})"], rotate)
    out.append("</svg>")
    return "\n".join(out)


def groupedBarPlotSvg(categories: Sequence[str], series: Sequence[tuple[str, Sequence[float]]], *, title: str,
                      yLabel: str, height: float = 320, barWidthPx: float = 12) -> str:
    """Bars grouped by category, one colour per series (e.g. one group per case, one bar per observer).

    ``series`` is ``[(name, values), ...]`` with one value per category (NaN/None: no bar). A legend lists the
    series.
    """
    nSeries = max(len(series), 1)
    groupWidth = barWidthPx * nSeries + 18
    rotate = len(categories) > 6 or any(len(c) > 10 for c in categories)
    bottomMargin = _MARGIN_BOTTOM_BASE + (max((len(c) for c in categories), default=0) * 5 if rotate else 0)
    legendWidth = 24 + 7 * max((len(name) for name, _ in series), default=4)
    plotLeft = _MARGIN_LEFT + (_rotatedLabelOverhang(
        [_MARGIN_LEFT + groupWidth * (i + 0.5) for i in range(len(categories))], categories) if rotate else 0.0)
    width = max(plotLeft + _MARGIN_RIGHT + legendWidth + groupWidth * max(len(categories), 1), _titleWidth(title))
    height = max(height, _MARGIN_TOP + 18 * len(series) + 40) + (bottomMargin - _MARGIN_BOTTOM_BASE)
    allValues = [float(v) for _, values in series for v in values if v is not None]
    low, high = _dataRange(allValues + [0.0], None, None)
    axes = _Axes(min(low, 0.0), high, _MARGIN_TOP, height - bottomMargin)
    plotRight = width - _MARGIN_RIGHT - legendWidth
    out = _svgOpen(width, height, title)
    out += axes.draw(plotLeft, plotRight, yLabel)
    zeroY = axes.y(0.0)
    for categoryIndex, category in enumerate(categories):
        left = plotLeft + groupWidth * categoryIndex + 9
        for seriesIndex, (name, values) in enumerate(series):
            value = values[categoryIndex] if categoryIndex < len(values) else None
            if value is None or not math.isfinite(float(value)):
                continue
            y = axes.y(float(value))
            out.append(f'<rect x="{_fmt(left + barWidthPx * seriesIndex)}" y="{_fmt(min(y, zeroY))}" '
                       f'width="{_fmt(barWidthPx - 1)}" height="{_fmt(max(abs(zeroY - y), 0.5))}" '
                       f'fill="{PALETTE[seriesIndex % len(PALETTE)]}" class="bar" data-series="{_attr(name)}" '
                       f'data-category="{_attr(category)}" data-value="{float(value):.6g}"/>')
        out += _categoryLabel(left + barWidthPx * nSeries / 2, axes.bottom + 16, [category], rotate)
    for seriesIndex, (name, _) in enumerate(series):
        y = _MARGIN_TOP + 18 * seriesIndex
        out.append(f'<rect x="{_fmt(plotRight + 12)}" y="{_fmt(y)}" width="12" height="12" '
                   f'fill="{PALETTE[seriesIndex % len(PALETTE)]}"/>')
        out.append(f'<text x="{_fmt(plotRight + 30)}" y="{_fmt(y + 10)}" font-size="11" {_FONT}>{escape(name)}</text>')
    out.append("</svg>")
    return "\n".join(out)


def pairedPlotSvg(conditions: Sequence[str], subjects: Sequence[tuple[str, Sequence[float]]], *, title: str,
                  yLabel: str, yMin: float | None = None, yMax: float | None = None, height: float = 320) -> str:
    """Paired values (e.g. one case's median Dice in round 1 and round 2) joined by a line per subject."""
    step = 120.0
    width = max(_MARGIN_LEFT + _MARGIN_RIGHT + step * max(len(conditions), 2), _titleWidth(title))
    step = (width - _MARGIN_LEFT - _MARGIN_RIGHT) / max(len(conditions), 2)
    allValues = [float(v) for _, values in subjects for v in values if v is not None]
    low, high = _dataRange(allValues, yMin, yMax)
    axes = _Axes(low, high, _MARGIN_TOP, height - _MARGIN_BOTTOM_BASE)
    out = _svgOpen(width, height, title)
    out += axes.draw(_MARGIN_LEFT, width - _MARGIN_RIGHT, yLabel)
    xs = [_MARGIN_LEFT + step * (index + 0.5) for index in range(len(conditions))]
    for subjectIndex, (name, values) in enumerate(subjects):
        colour = PALETTE[subjectIndex % len(PALETTE)]
        points = [(x, axes.y(float(v))) for x, v in zip(xs, values, strict=False)
                  if v is not None and math.isfinite(float(v))]
        out.append(f'<g class="subject" data-label="{_attr(name)}">')
        if len(points) > 1:
            path = " ".join(f"{_fmt(x)},{_fmt(y)}" for x, y in points)
            out.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="1.5"/>')
        for x, y in points:
            out.append(f'<circle cx="{_fmt(x)}" cy="{_fmt(y)}" r="3" fill="{colour}"/>')
        out.append("</g>")
    for x, condition in zip(xs, conditions, strict=False):
        out += _categoryLabel(x, axes.bottom + 16, [condition], False)
    out.append("</svg>")
    return "\n".join(out)
