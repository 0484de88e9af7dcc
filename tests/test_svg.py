"""The report's SVG charts: well-formed, escaped, on round-number axes, and robust to missing or zero values."""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from bertfit.svg import COLORS, Panel, chart, heatmap, log_ticks, nice_ticks

NS = "{http://www.w3.org/2000/svg}"


def _parse(svg: str) -> ET.Element:
    root = ET.fromstring(svg)  # well-formed XML, or this raises
    assert root.tag == f"{NS}svg" and root.get("role") == "img"
    width, height = int(root.get("width")), int(root.get("height"))
    assert root.get("viewBox") == f"0 0 {width} {height}"
    assert not re.search(r"nan|inf", svg, re.IGNORECASE)  # no coordinate went astray
    return root


def _texts(root: ET.Element) -> list[str]:
    return ["".join(t.itertext()) for t in root.iter(f"{NS}text")]


def _frame(root: ET.Element) -> list[tuple[float, float, float, float]]:
    frames = [r for r in root.iter(f"{NS}rect") if r.get("class") == "frame"]
    return [tuple(float(r.get(k)) for k in ("x", "y", "width", "height")) for r in frames]


def _inside(x: float, y: float, frame: tuple[float, float, float, float]) -> bool:
    left, top, width, height = frame
    return left <= x <= left + width and top <= y <= top + height


def test_every_text_is_escaped_and_the_chart_is_well_formed_xml():
    name = 'a<b & "c"'
    panel = Panel(title=name, xlabel="x > y", ylabel="it's").line([0, 1], [0, 1], name).hline(0.5, f"chance {name}")
    root = _parse(chart([panel], f"curves of {name}"))
    assert root.find(f"{NS}title").text == f"curves of {name}"
    assert {name, "x > y", "it's", f"chance {name}"} <= set(_texts(root))
    matrix = _parse(heatmap([[1, 0], [0.5, 0.5]], [name, "d'e"], name, cell_text=[["1", "0"], ["1", "1"]]))
    assert _texts(matrix).count(name) == 2 and _texts(matrix).count("d'e") == 2  # a row and a column label each


@pytest.mark.parametrize(
    "lo, hi", [(0.437, 0.655), (0.0, 1.0), (0.49, 1.0), (-3.2, 17.5), (1e-5, 3e-5), (0.0, 123_456.0), (5.0, 5.0)]
)
def test_ticks_are_evenly_spaced_round_numbers_covering_the_data(lo, hi):
    ticks = nice_ticks(lo, hi)
    assert ticks[0] <= lo and ticks[-1] >= hi and 2 <= len(ticks) <= 12
    steps = np.diff(ticks)
    assert np.allclose(steps, steps[0])
    mantissa = steps[0] / 10 ** math.floor(math.log10(steps[0]))
    assert any(math.isclose(mantissa, m) for m in (1, 2, 2.5, 5))


def test_log_ticks_are_powers_of_ten_covering_the_counts():
    assert log_ticks(6, 97) == [1, 10, 100]
    assert log_ticks(1, 1) == [1, 10]
    many = log_ticks(1e-3, 1e12)
    assert many[0] <= 1e-3 and many[-1] >= 1e12 and len(many) <= 9


def test_a_log_axis_leaves_out_zero_counts_as_matplotlib_does():
    panel = Panel(xlim=(0, 1), ylog=True, legend=None).bars([0.0, 0.1, 0.2, 0.3], [0, 5, 120, 0], 0.1, "counts")
    root = _parse(chart([panel], "counts"))
    bars = [r for r in root.iter(f"{NS}rect") if r.get("fill") == COLORS[0]]
    assert len(bars) == 2 and all(float(b.get("height")) > 0 for b in bars)
    assert [t for t in _texts(root) if t in ("1", "10", "100", "1,000")] == ["1", "10", "100", "1,000"]
    (frame,) = _frame(root)
    assert all(_inside(float(b.get("x")), float(b.get("y")), frame) for b in bars)
    nothing = Panel(ylog=True).bars([0, 1], [0, 0], 1).line([0, 1], [0, -1])  # nothing a log axis can show
    assert not list(_parse(chart([nothing], "empty")).iter(f"{NS}polyline"))


def test_points_land_inside_the_plot_area_and_keep_their_order():
    rng = np.random.default_rng(0)
    x, y = np.sort(rng.uniform(-5, 50, 30)), rng.normal(100, 30, 30)
    fixed = Panel(xlim=(0, 1), ylim=(0, 1)).line([0, 0.5, 1], [0, 1, 0.25], marker=True)
    root = _parse(chart([Panel().line(x, y, marker=True), fixed], "two panels"))  # no legend: only the points
    frames = _frame(root)
    circles = [(float(c.get("cx")), float(c.get("cy"))) for c in root.iter(f"{NS}circle")]
    data = [c for c in circles if c[0] < frames[1][0]]
    assert len(data) == 30 and all(_inside(cx, cy, frames[0]) for cx, cy in data)
    assert [cx for cx, _ in data] == sorted(cx for cx, _ in data)
    assert np.argmax([-cy for _, cy in data]) == np.argmax(y)  # larger y is higher up
    left, top, width, height = frames[1]  # fixed limits: (0, 0) and (1, 1) are the frame's corners
    corners = [c for c in circles if c[0] >= left][:2]
    assert corners[0] == pytest.approx((left, top + height), abs=0.1)
    assert corners[1] == pytest.approx((left + width / 2, top), abs=0.1)


def test_missing_values_are_skipped_and_break_the_line():
    panel = Panel().line([1, 2, 3, 4, 5, 6], [0.1, None, float("nan"), 0.4, 0.5, 0.6], "loss", marker=True)
    root = _parse(chart([panel], "gaps"))
    assert len(list(root.iter(f"{NS}circle"))) == 4 + 1  # the drawn points and the legend's marker
    (line,) = root.iter(f"{NS}polyline")  # 0.1 stands alone; 0.4, 0.5, 0.6 are joined
    assert len(line.get("points").split()) == 3
    empty = Panel().line([1, 2], [None, None], "never measured").line([1, 2], [3, 4], "measured")
    assert "never measured" not in _texts(_parse(chart([empty], "one empty series")))


def test_a_heat_map_of_20_classes_has_400_cells_and_slanted_labels():
    labels = [f"class {k}" for k in range(20)]
    share = np.random.default_rng(0).dirichlet(np.ones(20), size=20)
    text = [[str(k) for k in range(20)] for _ in range(20)]
    root = _parse(heatmap(share.tolist(), labels, "confusion", title="t", scale_label="share", cell_text=text))
    (cells,) = [g for g in root.iter(f"{NS}g") if g.get("class") == "cells"]
    assert len(cells) == 400
    (frame,) = _frame(root)
    assert all(_inside(float(c.get("x")), float(c.get("y")), frame) for c in cells)
    slanted = [t for t in root.iter(f"{NS}text") if "rotate(-45" in (t.get("transform") or "")]
    assert ["".join(t.itertext()) for t in slanted] == labels
    assert len([t for t in _texts(root) if t.isdigit()]) >= 400
    white = [t for t in root.iter(f"{NS}text") if t.get("fill") == "#fff"]
    assert len(white) == int((share > 0.6).sum())  # white text on the dark cells only


def test_a_long_class_name_is_cut_and_shown_whole_on_hover():
    name = "a very long class name that goes on and on"
    root = _parse(heatmap([[1.0]], [name], "one class"))
    shown = [t for t in root.iter(f"{NS}text") if t.find(f"{NS}title") is not None]
    assert len(shown) == 2 and all(t.text.endswith("…") and t.find(f"{NS}title").text == name for t in shown)


def test_a_chart_with_no_series_still_renders():
    root = _parse(chart([Panel("Nothing yet", "epoch", "loss"), Panel()], "empty"))
    assert len(_frame(root)) == 2 and {"Nothing yet", "epoch", "loss"} <= set(_texts(root))
    assert not [g for g in root.iter(f"{NS}g") if g.get("class") == "legend"]
    assert _parse(heatmap([], [], "no classes")) is not None


def test_the_best_legend_corner_is_one_the_data_leave_free():
    rising = Panel().line(np.linspace(0, 1, 50), np.linspace(0, 1, 50) ** 3, "rising")  # the upper left is free
    root = _parse(chart([rising], "legend"))
    (frame,) = _frame(root)
    (legend,) = [g for g in root.iter(f"{NS}g") if g.get("class") == "legend"]
    box = legend.find(f"{NS}rect")
    assert float(box.get("x")) < frame[0] + 20 and float(box.get("y")) < frame[1] + 20
