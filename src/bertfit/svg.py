"""Charts written as SVG text for the training report: panels of lines and bars, and a heat map.

Every training run ends by building ``report.html`` (:mod:`bertfit.report`). Its four charts were drawn with
matplotlib, which cost 2.5 s of a 47 s run (importing pyplot alone 0.44 s, then the figures, ``tight_layout`` and
PNG encoding). Written here as inline SVG they take milliseconds, import nothing, and stay sharp at any width.

This draws what those charts need and no more. A :class:`Panel` is one plot area with a title, axis labels, linear
axes with round-number ticks (or a log y axis), optional fixed limits, a light grid, lines with optional circle
markers, dashed or dotted reference lines, bars and a legend; :func:`chart` sets panels side by side (as
matplotlib's ``subplots(1, n)``). :func:`heatmap` draws a square matrix of shares in matplotlib's "Blues" with a
colour bar. Colours follow matplotlib's tab10 cycle. Every text is XML-escaped (class names are user data), a None
or NaN value is skipped, and a value that a log axis cannot show (0) is not drawn.
The explore plots (:mod:`bertfit.plots`) are PNG files and still use matplotlib.
"""

from __future__ import annotations

import html
import itertools
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

__all__ = ["Panel", "chart", "heatmap", "nice_ticks", "log_ticks", "escape", "COLORS", "GRAY"]

COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")
GRAY = "#808080"
_BLUES = ("#f7fbff", "#deebf7", "#c6dbef", "#9ecae1", "#6baed6", "#4292c6", "#2171b5", "#08519c", "#08306b")
_DASHES = {"solid": "", "dashed": ' stroke-dasharray="6 4"', "dotted": ' stroke-dasharray="2 3"'}
_FONT = "system-ui,-apple-system,Segoe UI,Roboto,sans-serif"
_SIZE = 12  # px: ticks and legends; axis labels 13, titles 15
_ROW = 18  # px per legend entry
_CORNERS = ("upper right", "upper left", "lower left", "lower right")  # the order "best" tries them in
_LONGEST_LABEL = 24  # heat-map tick labels are cut to this many characters


@dataclass
class _Series:
    kind: str  # "line", "bars", "hline" or "vline"
    x: list[float | None]  # bars: left edges; hline: empty
    y: list[float | None]  # bars: heights; vline: empty
    label: str | None
    color: str | None
    dash: str = "solid"
    marker: bool = False
    width: float = 0.0  # bars, in x units


@dataclass
class Panel:
    """One plot area: add series with :meth:`line`, :meth:`bars`, :meth:`hline` and :meth:`vline`, draw with
    :func:`chart`. Limits left None fit the data (fixed ones do not clip it); ``legend`` is a corner ("upper left",
    ...), "best" (the corner covering the fewest points) or None.
    """

    title: str = ""
    xlabel: str = ""
    ylabel: str = ""
    xlim: tuple[float, float] | None = None
    ylim: tuple[float, float] | None = None
    ylog: bool = False
    legend: str | None = "best"
    series: list[_Series] = field(default_factory=list)

    def line(self, x, y, label: str | None = None, *, color=None, dash="solid", marker=False) -> Panel:
        """A line through the points ``(x, y)``; a None or NaN value breaks it there."""
        self.series.append(_Series("line", _floats(x), _floats(y), label, color, dash, marker))
        return self

    def bars(self, left, height, width: float, label: str | None = None, *, color=None) -> Panel:
        """Bars ``width`` wide from the ``left`` edges up to ``height`` (offset the edges to group several series)."""
        self.series.append(_Series("bars", _floats(left), _floats(height), label, color, width=width))
        return self

    def hline(self, y: float, label: str | None = None, *, color=GRAY, dash="dotted") -> Panel:
        """A horizontal reference line across the panel."""
        self.series.append(_Series("hline", [], _floats([y]), label, color, dash))
        return self

    def vline(self, x: float, label: str | None = None, *, color=GRAY, dash="dashed") -> Panel:
        """A vertical reference line across the panel."""
        self.series.append(_Series("vline", _floats([x]), [], label, color, dash))
        return self


def chart(panels: Sequence[Panel], alt: str, width: int = 1000, height: int = 460) -> str:
    """An SVG element of ``panels`` side by side.

    Args:
        panels: The plot areas, left to right, each ``width / len(panels)`` wide.
        alt: The chart's accessible name (its ``<title>``).
        width: Pixels of the whole chart.
        height: Pixels of the whole chart.

    Returns:
        The ``<svg>`` text.

    >>> loss = Panel("Loss", "epoch").line([1, 2, 3], [0.7, 0.5, 0.4], "train loss", marker=True)
    >>> chart([loss], "learning curves").startswith('<svg xmlns="http://www.w3.org/2000/svg"')
    True
    """
    slot = width / max(len(panels), 1)
    return _svg(width, height, alt, [_panel(panel, k * slot, slot, height) for k, panel in enumerate(panels)])


def heatmap(
    values: Sequence[Sequence[float]],
    labels: Sequence[str],
    alt: str,
    *,
    title: str = "",
    xlabel: str = "",
    ylabel: str = "",
    scale_label: str = "",
    cell_text: Sequence[Sequence[str]] | None = None,
) -> str:
    """An SVG heat map of a square matrix of values in [0, 1], in matplotlib's "Blues", with a colour bar.

    Args:
        values: ``values[i][j]`` colours row ``i`` (``labels[i]``, top down), column ``j`` (``labels[j]``).
        labels: The names of the rows and columns; past 4 the column names are slanted, and names longer than 24
            characters are cut (the full name shows on hover).
        alt: The chart's accessible name (its ``<title>``).
        title: Above the matrix.
        xlabel: Under the column names.
        ylabel: Left of the row names.
        scale_label: Beside the colour bar.
        cell_text: Written in the cells (white on dark ones); None writes nothing.

    Returns:
        The ``<svg>`` text.
    """
    n = len(labels)
    names = [label if len(label) <= _LONGEST_LABEL else label[: _LONGEST_LABEL - 1] + "…" for label in labels]
    longest = max((_width(name) for name in names), default=0)
    slanted = n > 4
    side = max(440, min(36 * n, 800))  # px of the matrix
    cell = side / max(n, 1)
    left, top = 36 + longest, 34
    bottom = top + side
    width, height = round(left + side + 110), round(bottom + 46 + (longest * 0.71 if slanted else 0))
    cells, texts = [], []
    for i, j in itertools.product(range(n), range(n)):
        x, y, value = left + j * cell, top + i * cell, min(max(float(values[i][j]), 0.0), 1.0)
        cells.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{cell:.1f}" height="{cell:.1f}" fill="{_blue(value)}"/>')
        if cell_text is not None:
            color = ' fill="#fff"' if value > 0.6 else ""
            texts.append(_text(x + cell / 2, y + cell / 2, cell_text[i][j], size=min(14, cell * 0.3), attrs=color))
    parts = [f'<g class="cells" stroke="#fff" stroke-width=".5">{"".join(cells)}</g>', *texts]
    parts.append(
        f'<rect class="frame" x="{left:.1f}" y="{top}" width="{side}" height="{side}" fill="none" stroke="#333"/>'
    )
    for k, (name, label) in enumerate(zip(names, labels)):
        centre, hover = k * cell + cell / 2, f"<title>{escape(label)}</title>" if name != label else ""
        parts.append(_text(left - 6, top + centre + 4, name, "end", hover=hover))
        if slanted:
            x, y = left + centre, bottom + 14
            parts.append(_text(x, y, name, "end", attrs=f' transform="rotate(-45 {x:.1f} {y:.1f})"', hover=hover))
        else:
            parts.append(_text(left + centre, bottom + 18, name, hover=hover))
    parts += _colour_bar(left + side + 24, top, side, scale_label)
    parts.append(_text(left + side / 2, top - 12, title, size=15))
    parts.append(_text(left + side / 2, height - 8, xlabel, size=13))
    parts.append(_text(14, top + side / 2, ylabel, size=13, attrs=f' transform="rotate(-90 14 {top + side / 2:.1f})"'))
    return _svg(width, height, alt, parts)


def nice_ticks(lo: float, hi: float, count: int = 6) -> list[float]:
    """About ``count`` round-number ticks (1, 2, 2.5 or 5 times a power of ten apart) covering ``[lo, hi]``.

    >>> nice_ticks(0.43, 0.66)
    [0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7]
    """
    raw = (hi - lo) / max(count - 1, 1) or 1.0
    power = 10.0 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw * (1 - 1e-9))
    first, last = math.floor(lo / step + 1e-9), math.ceil(hi / step - 1e-9)
    return [round(k * step, 12) for k in range(first, max(last, first + 1) + 1)]


def log_ticks(lo: float, hi: float) -> list[float]:
    """Powers of ten covering ``[lo, hi]`` (both > 0), at least two, every n-th of them past 8.

    >>> log_ticks(6, 97)
    [1.0, 10.0, 100.0]
    """
    first, last = math.floor(math.log10(lo) + 1e-9), math.ceil(math.log10(hi) - 1e-9)
    last = max(last, first + 1)
    every = math.ceil((last - first + 1) / 8)
    return [10.0**k for k in range(first, last + every, every)]


# -- drawing -------------------------------------------------------------------------------------------------------


@dataclass
class _Scale:
    """Data to pixels along one axis: ``lo`` lands on ``start``, ``hi`` on ``end``."""

    lo: float
    hi: float
    ticks: list[float]
    log: bool
    start: float = 0.0
    end: float = 1.0

    def __call__(self, value: float) -> float:
        f = math.log10 if self.log else float
        return self.start + (f(value) - f(self.lo)) / (f(self.hi) - f(self.lo)) * (self.end - self.start)

    def label(self, tick: float) -> str:
        if self.log:
            return f"{tick:,.0f}" if tick >= 1 else f"{tick:g}"
        step = self.ticks[1] - self.ticks[0] if len(self.ticks) > 1 else 1.0
        decimals = next(d for d in range(13) if abs(round(step, d) - step) < 1e-9 * step or d == 12)
        return f"{tick:,.{decimals}f}"


def _scale(values: list[float], fixed: tuple[float, float] | None, log: bool) -> _Scale:
    if log:
        values = [v for v in values if v > 0]
        if fixed is not None and min(fixed) <= 0:
            raise ValueError(f"a log axis needs limits above 0, not {fixed}")
    if fixed is not None:
        lo, hi = fixed
    elif values:
        lo, hi = min(values), max(values)
    else:
        lo, hi = (1.0, 10.0) if log else (0.0, 1.0)
    if log:
        ticks = log_ticks(lo, hi)
        lo, hi = fixed or (ticks[0], ticks[-1])
        return _Scale(lo, hi, [t for t in ticks if lo <= t <= hi], True)
    if hi - lo <= 1e-12 * max(1.0, abs(lo)):  # one value: a span around it
        half = abs(lo) * 0.05 or 0.5
        lo, hi = lo - half, hi + half
    ticks = nice_ticks(lo, hi)
    if fixed is None:
        pad = 0.03 * (ticks[-1] - ticks[0])  # keep the data off the frame, as matplotlib's margins do
        lo, hi = ticks[0] - pad, ticks[-1] + pad
    margin = 1e-9 * (hi - lo)
    return _Scale(lo, hi, [t for t in ticks if lo - margin <= t <= hi + margin], False)


def _floats(values: Iterable) -> list[float | None]:
    out = [None if v is None else float(v) for v in values]
    return [v if v is not None and math.isfinite(v) else None for v in out]


def _runs(series: _Series, ylog: bool) -> list[list[tuple[float, float]]]:
    """The drawable points of a line, split where a value is missing (or not above 0 on a log axis)."""
    runs: list[list[tuple[float, float]]] = [[]]
    for x, y in zip(series.x, series.y):
        if x is None or y is None or (ylog and y <= 0):
            runs.append([])
        else:
            runs[-1].append((x, y))
    return [run for run in runs if run]


def _extent(panel: Panel, axis: str) -> list[float]:
    """The values the axis must show: the lines' drawable points, the bars (and a linear axis' 0), the rules."""
    values: list[float] = []
    for s in panel.series:
        if s.kind == "line":
            values += [p[axis == "y"] for run in _runs(s, panel.ylog) for p in run]
        elif s.kind == "bars" and axis == "x":
            values += [v for x in s.x if x is not None for v in (x, x + s.width)]
        elif s.kind == "bars":
            values += [v for v in (*s.y, 0.0) if v is not None]
        elif (s.kind == "hline") == (axis == "y"):
            values += [v for v in s.x + s.y if v is not None]
    return values


def _panel(panel: Panel, x0: float, width: float, height: float) -> str:
    xs = _scale(_extent(panel, "x"), panel.xlim, log=False)
    ys = _scale(_extent(panel, "y"), panel.ylim, panel.ylog)
    left = x0 + 32 + max((_width(ys.label(t)) for t in ys.ticks), default=0)
    right, top, bottom = x0 + width - 16, 34.0, height - 46.0
    xs.start, xs.end, ys.start, ys.end = left, right, bottom, top
    grid = "".join(f"M{xs(t):.1f} {top}V{bottom}" for t in xs.ticks)
    grid += "".join(f"M{left:.1f} {ys(t):.1f}H{right:.1f}" for t in ys.ticks)
    parts = [f'<path d="{grid}" stroke="#000" stroke-opacity=".1"/>']
    colors = itertools.cycle(COLORS)
    entries, covered = [], []
    for s in panel.series:
        color = s.color or next(colors)
        drawn, points = _draw(s, color, xs, ys)
        parts += drawn
        covered += points
        if s.label is not None and drawn:
            entries.append((s, color))
    ticks = "".join(f"M{xs(t):.1f} {bottom}v4" for t in xs.ticks)
    ticks += "".join(f"M{left:.1f} {ys(t):.1f}h-4" for t in ys.ticks)
    parts.append(f'<path d="{ticks}" stroke="#333"/>')
    parts.append(
        f'<rect class="frame" x="{left:.1f}" y="{top}" width="{right - left:.1f}" height="{bottom - top}" '
        'fill="none" stroke="#333"/>'
    )
    parts += [_text(xs(t), bottom + 17, xs.label(t)) for t in xs.ticks]
    parts += [_text(left - 7, ys(t) + 4, ys.label(t), "end") for t in ys.ticks]
    middle_x, middle_y = (left + right) / 2, (top + bottom) / 2
    parts.append(_text(middle_x, top - 12, panel.title, size=15))
    parts.append(_text(middle_x, height - 8, panel.xlabel, size=13))
    turn = f' transform="rotate(-90 {x0 + 14:.1f} {middle_y:.1f})"'
    parts.append(_text(x0 + 14, middle_y, panel.ylabel, size=13, attrs=turn))
    if panel.legend and entries:
        parts.append(_legend(entries, panel.legend, (left, top, right, bottom), covered))
    return "".join(parts)


def _draw(s: _Series, color: str, xs: _Scale, ys: _Scale) -> tuple[list[str], list[tuple[float, float]]]:
    """The SVG elements of one series, and the pixels it covers (for placing the legend)."""
    stroke = f'stroke="{color}" stroke-width="1.8"{_DASHES[s.dash]}'
    if s.kind in ("hline", "vline"):
        value = (s.x + s.y)[0]
        if value is None or (s.kind == "hline" and ys.log and value <= 0):
            return [], []
        if s.kind == "hline":
            ends = [(xs.start, ys(value)), (xs.end, ys(value))]
        else:
            ends = [(xs(value), ys.start), (xs(value), ys.end)]
        (x1, y1), (x2, y2) = ends
        return [f'<line x1="{x1:.1f}" y1="{y1:.1f}" x2="{x2:.1f}" y2="{y2:.1f}" {stroke}/>'], _along(ends)
    if s.kind == "bars":
        return _bars(s, color, xs, ys)
    parts, covered = [], []
    for run in _runs(s, ys.log):
        pixels = [(xs(x), ys(y)) for x, y in run]
        keys = [(round(x), round(y)) for x, y in pixels]  # a dense curve keeps one point per pixel it passes
        pixels = [p for k, p in enumerate(pixels) if k == 0 or keys[k] != keys[k - 1]]
        if len(pixels) > 1:
            points = " ".join(f"{x:.1f},{y:.1f}" for x, y in pixels)
            parts.append(f'<polyline points="{points}" fill="none" {stroke} stroke-linejoin="round"/>')
        if s.marker:
            parts += [f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3.5" fill="{color}"/>' for x, y in pixels]
        covered += _along(pixels)
    return parts, covered


def _bars(s: _Series, color: str, xs: _Scale, ys: _Scale) -> tuple[list[str], list[tuple[float, float]]]:
    parts, covered = [], []
    base = ys.start if ys.log else min(max(ys(0.0), ys.end), ys.start)  # a log axis has no 0: bars rise from the foot
    for left, height in zip(s.x, s.y):
        if left is None or height is None or height == 0 or (ys.log and height < 0):
            continue
        top = min(max(ys(height), ys.end), ys.start)
        x1, x2, y1, y2 = xs(left), xs(left + s.width), min(top, base), max(top, base)
        parts.append(f'<rect x="{x1:.1f}" y="{y1:.1f}" width="{x2 - x1:.1f}" height="{y2 - y1:.1f}" fill="{color}"/>')
        covered += _along([((x1 + x2) / 2, y1), ((x1 + x2) / 2, y2)])
    return parts, covered


def _along(pixels: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The points, and more every 8 px along the segments between them."""
    out = pixels[:1]
    for (x1, y1), (x2, y2) in itertools.pairwise(pixels):
        steps = max(1, int(math.hypot(x2 - x1, y2 - y1) // 8))
        out += [(x1 + (x2 - x1) * k / steps, y1 + (y2 - y1) * k / steps) for k in range(1, steps + 1)]
    return out


def _legend(entries, where: str, frame: tuple[float, float, float, float], covered) -> str:
    left, top, right, bottom = frame
    w = 46 + max(_width(s.label) for s, _ in entries)
    h = 6 + _ROW * len(entries)
    corners = {
        "upper right": (right - 8 - w, top + 8),
        "upper left": (left + 8, top + 8),
        "lower left": (left + 8, bottom - 8 - h),
        "lower right": (right - 8 - w, bottom - 8 - h),
    }

    def cost(corner: str) -> int:
        x, y = corners[corner]
        return sum(x - 6 <= px <= x + w + 6 and y - 6 <= py <= y + h + 6 for px, py in covered)  # 6: a marker

    x, y = corners[min(_CORNERS, key=cost) if where == "best" else where]
    parts = [
        f'<rect x="{x:.1f}" y="{y:.1f}" width="{w:.1f}" height="{h}" rx="3" fill="#fff" fill-opacity=".85" '
        'stroke="#ccc"/>'
    ]
    for k, (s, color) in enumerate(entries):
        middle = y + 3 + _ROW * k + _ROW / 2
        if s.kind == "bars":
            parts.append(f'<rect x="{x + 10:.1f}" y="{middle - 5:.1f}" width="20" height="10" fill="{color}"/>')
        else:
            dash = _DASHES[s.dash]
            parts.append(f'<path d="M{x + 8:.1f} {middle:.1f}h24" stroke="{color}" stroke-width="1.8"{dash}/>')
        if s.marker:
            parts.append(f'<circle cx="{x + 20:.1f}" cy="{middle:.1f}" r="3.5" fill="{color}"/>')
        parts.append(_text(x + 38, middle + 4, s.label, "start"))
    return f'<g class="legend">{"".join(parts)}</g>'


def _colour_bar(x: float, top: float, side: float, label: str) -> list[str]:
    stops = "".join(f'<stop offset="{k / 8:.3f}" stop-color="{c}"/>' for k, c in enumerate(_BLUES))
    scale = _Scale(0.0, 1.0, nice_ticks(0, 1), False, top + side, top)
    marks = "".join(f"M{x + 16:.1f} {scale(t):.1f}h4" for t in scale.ticks)
    middle = top + side / 2
    return [
        f'<defs><linearGradient id="bertfit-blues" x1="0" y1="1" x2="0" y2="0">{stops}</linearGradient></defs>',
        f'<rect x="{x:.1f}" y="{top}" width="16" height="{side}" fill="url(#bertfit-blues)" stroke="#333"/>',
        f'<path d="{marks}" stroke="#333"/>',
        *(_text(x + 23, scale(t) + 4, scale.label(t), "start") for t in scale.ticks),
        _text(x + 62, middle, label, size=13, attrs=f' transform="rotate(-90 {x + 62:.1f} {middle:.1f})"'),
    ]


def _blue(value: float) -> str:
    """``value`` in [0, 1] as a colour of matplotlib's "Blues" (linear between its nine anchors)."""
    k = min(int(value * 8), 7)
    t = value * 8 - k
    a, b = (tuple(int(c[i : i + 2], 16) for i in (1, 3, 5)) for c in _BLUES[k : k + 2])
    return "#" + "".join(f"{round(u + (v - u) * t):02x}" for u, v in zip(a, b))


def _text(x: float, y: float, text: str, anchor="middle", *, size: float | None = None, attrs="", hover="") -> str:
    if not text:
        return ""
    size_attr = f' font-size="{size:g}"' if size else ""
    return f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}"{size_attr}{attrs}>{escape(text)}{hover}</text>'


def _width(text: str, size: float = _SIZE) -> float:
    return 0.56 * size * len(text)  # an estimate: no font metrics without a renderer


def escape(value: object) -> str:
    """``value`` as text that is safe in HTML or SVG content and attribute values (quotes escaped too)."""
    return html.escape(str(value), quote=True)


def _svg(width: int, height: int, alt: str, parts: Sequence[str]) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
        f'role="img" font-family="{_FONT}" font-size="{_SIZE}" fill="#222"><title>{escape(alt)}</title>'
        f'<rect width="{width}" height="{height}" fill="#fff"/>{"".join(parts)}</svg>'
    )
