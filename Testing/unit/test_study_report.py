"""svgplots (box / bar / paired plots as SVG) and htmlreport (self-contained HTML) used by study reports."""

import base64
import math
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from DelineationReviewLib.core.htmlreport import HtmlReport, formatCell
from DelineationReviewLib.core.svgplots import boxPlotSvg, boxStatistics, groupedBarPlotSvg, niceTicks, pairedPlotSvg

SVG = "{http://www.w3.org/2000/svg}"


def test_box_statistics_tukey():
    values = [1, 2, 3, 4, 5, 6, 7, 8, 9, 100, float("nan"), None]
    stats = boxStatistics(values)
    # numpy linear percentiles of 1..9, 100: q1 = 3.25, median = 5.5, q3 = 7.75; fences 3.25 - 6.75, 7.75 + 6.75
    assert stats["n"] == 10 and stats["nMissing"] == 2
    assert (stats["q1"], stats["median"], stats["q3"]) == pytest.approx((3.25, 5.5, 7.75))
    assert stats["whiskerLow"] == 1 and stats["whiskerHigh"] == 9 and stats["outliers"] == [100]
    assert boxStatistics([float("nan")]) == {"n": 0, "nMissing": 1}


def test_nice_ticks():
    assert niceTicks(0.0, 1.0) == pytest.approx([0.0, 0.2, 0.4, 0.6, 0.8, 1.0])
    assert niceTicks(0.3, 7.7) == pytest.approx([0.0, 2.0, 4.0, 6.0, 8.0])
    assert niceTicks(0.0, 11.2) == pytest.approx([0.0, 2.5, 5.0, 7.5, 10.0, 12.5])
    ticks = niceTicks(5.0, 5.0)
    assert ticks[0] <= 5.0 <= ticks[-1] and len(ticks) >= 2


def test_box_plot_svg_geometry():
    svg = boxPlotSvg([("round1", [0.4, 0.5, 0.6]), ("round2", [0.8, 0.9, float("nan")]), ("none", [])],
                     title="Dice <per> round & more", yLabel="Dice", yMin=0.0, yMax=1.0)
    root = ET.fromstring(svg)
    assert root.tag == f"{SVG}svg" and root.find(f"{SVG}title").text == "Dice <per> round & more"
    boxes = root.findall(f".//{SVG}g[@class='box']")
    assert [(b.get("data-label"), b.get("data-n")) for b in boxes] == [("round1", "3"), ("round2", "2"),
                                                                         ("none", "0")]
    assert len(boxes[0].findall(f"{SVG}circle")) == 3 and len(boxes[1].findall(f"{SVG}circle")) == 2
    assert "no data" in ET.tostring(boxes[2], encoding="unicode")
    # value axis 0..1 from y = 36 (top margin) to y = 320 - 46 (bottom margin): the median 0.5 sits at y = 155
    medianLine = [line for line in boxes[0].findall(f"{SVG}line") if line.get("stroke-width") == "2"][0]
    assert float(medianLine.get("y1")) == pytest.approx(274 - 0.5 * (274 - 36), abs=0.01)
    box = boxes[0].find(f"{SVG}rect")  # q1 = 0.45, q3 = 0.55
    assert float(box.get("height")) == pytest.approx(0.1 * (274 - 36), abs=0.02)


def test_grouped_bar_plot_heights_are_proportional():
    svg = groupedBarPlotSvg(["case1", "case2"], [("obs1", [1.0, 2.0]), ("obs2", [4.0, None])], title="Volumes",
                            yLabel="volume (cc)")
    bars = ET.fromstring(svg).findall(f".//{SVG}rect[@class='bar']")
    assert [(b.get("data-series"), b.get("data-category"), float(b.get("data-value"))) for b in bars] == [
        ("obs1", "case1", 1.0), ("obs2", "case1", 4.0), ("obs1", "case2", 2.0)]
    heights = [float(b.get("height")) for b in bars]
    assert heights[1] / heights[0] == pytest.approx(4.0, rel=1e-3) and heights[2] / heights[0] == pytest.approx(2.0,
                                                                                                               rel=1e-3)


def test_paired_plot_has_one_line_per_subject():
    svg = pairedPlotSvg(["round1", "round2"], [("a", [0.5, 0.8]), ("b", [0.6, None])], title="t", yLabel="Dice",
                        yMin=0, yMax=1)
    subjects = ET.fromstring(svg).findall(f".//{SVG}g[@class='subject']")
    assert len(subjects) == 2
    assert len(subjects[0].findall(f"{SVG}polyline")) == 1 and len(subjects[1].findall(f"{SVG}polyline")) == 0


def test_format_cell():
    assert formatCell(None) == "n/a" and formatCell(float("nan")) == "n/a"
    assert formatCell(0.850512) == "0.8505" and formatCell(12.3456) == "12.35" and formatCell(3) == "3"
    assert formatCell(0.0) == "0" and formatCell(2.0) == "2" and formatCell(1.0) == "1"  # counts read as counts
    assert formatCell(1.5e-6) == "1.500e-06" and formatCell(True) == "yes"


def test_html_report_is_self_contained_and_well_formed():
    png = b"\x89PNG\r\n\x1a\n" + bytes(range(32))
    report = HtmlReport("Study <1> & co")
    report.heading("Plots")
    report.svg(boxPlotSvg([("a", [1.0, 2.0])], title="p1", yLabel="v"), caption="first")
    report.svg(groupedBarPlotSvg(["c"], [("s", [1.0])], title="p2", yLabel="v"))
    report.table(["case", "Dice"], [["x<y", 0.5], ["z", None]], caption="t")
    report.png(png, alt="picture")
    report.bulletList(["one & two"], "warning")
    html = report.toHtml()
    root = ET.fromstring(html.replace("<!DOCTYPE html>", ""))
    assert root.find(".//{http://www.w3.org/1999/xhtml}title").text == "Study <1> & co"
    assert len(root.findall(f".//{SVG}svg")) == 2 == report.svgCount
    cells = [td.text for td in root.findall(".//{http://www.w3.org/1999/xhtml}td")]
    assert cells == ["x<y", "0.5000", "z", "n/a"]
    image = root.find(".//{http://www.w3.org/1999/xhtml}img")
    assert base64.b64decode(image.get("src").split(",", 1)[1]) == png
    assert "http://" not in html.replace("http://www.w3.org/", "")  # no external resource
    with pytest.raises(ValueError):
        report.png(b"GIF89a", alt="not a png")
    with pytest.raises(ValueError):
        report.svg("<div/>")


def test_box_plot_values_match_numpy():
    rng = np.random.default_rng(3)
    values = list(rng.normal(0.8, 0.05, 40))
    stats = boxStatistics(values)
    assert stats["median"] == pytest.approx(float(np.median(values)))
    assert math.isclose(stats["q3"] - stats["q1"], float(np.subtract(*np.percentile(values, [75, 25]))))
