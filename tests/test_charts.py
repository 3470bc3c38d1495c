"""The dashboard's SVG charts: valid SVG a parser accepts, labelled for screen readers, numbers kept as a table,
and sane for the edge cases a new site produces (no data, one day, all zeros)."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from api.web.charts import SeriesPoint, bar_chart, format_number, inline_bar, time_series

SVG = "{http://www.w3.org/2000/svg}"


def parsed(markup: str) -> ET.Element:
    return ET.fromstring(str(markup))


def the_svg(figure: ET.Element) -> ET.Element:
    svg = figure.find(f"{SVG}svg")
    assert svg is not None
    return svg


def test_a_time_series_is_valid_svg_with_a_title_a_description_and_its_numbers_as_a_table() -> None:
    points = [SeriesPoint("Nov 1", 3, 1), SeriesPoint("Nov 2", 7, 2), SeriesPoint("Nov 3", 0, 4)]
    figure = parsed(time_series("visitors", "Visitors per day", points, value_name="Visitors"))
    svg = the_svg(figure)
    assert svg.get("role") == "img"
    assert svg.get("aria-labelledby") == "visitors-title visitors-desc"
    assert svg.findtext(f"{SVG}title") == "Visitors per day"
    description = svg.findtext(f"{SVG}desc") or ""
    assert "10 visitors over 3 days" in description
    assert "most on Nov 2 (7)" in description
    assert "7 in the previous period" in description
    assert svg.find(f"{SVG}path[@class='previous']") is not None, "the previous period is drawn"
    rows = [[c.text for c in row] for row in figure.iter("tr")]
    assert rows == [
        ["Day", "Visitors", "Previous period"],
        ["Nov 1", "3", "1"],
        ["Nov 2", "7", "2"],
        ["Nov 3", "0", "4"],
    ]


def test_labels_are_escaped_everywhere() -> None:
    hostile = '<script>alert("x")</script>&'
    for markup in (
        time_series("t", hostile, [SeriesPoint(hostile, 1)], value_name="Visits"),
        bar_chart("b", hostile, [(hostile, 2)], value_name="Visitors"),
    ):
        assert "<script>" not in str(markup)
        figure = parsed(markup)
        assert the_svg(figure).findtext(f"{SVG}title") == hostile
        assert hostile in [cell.text for cell in figure.iter("th")]


def test_an_empty_series_says_so_and_still_parses() -> None:
    figure = parsed(time_series("empty", "Visitors per day", [], value_name="Visitors"))
    assert the_svg(figure).findtext(f"{SVG}desc") == "No visitors in this period."
    assert the_svg(figure).find(f"{SVG}path[@class='line']") is None
    assert parsed(bar_chart("none", "Sources", [], value_name="Visitors")) is not None


def test_one_point_is_drawn_as_a_dot_in_the_middle() -> None:
    svg = the_svg(parsed(time_series("one", "Today", [SeriesPoint("Dec 1", 5)], value_name="Visitors")))
    dot = svg.find(f"{SVG}circle")
    assert dot is not None
    assert abs(float(dot.get("cx", "0")) - (48 + (720 - 48 - 12) / 2)) < 0.1
    assert "5 visitors over 1 day" in (svg.findtext(f"{SVG}desc") or "")


def test_all_zero_values_stay_on_the_baseline_without_dividing_by_zero() -> None:
    points = [SeriesPoint(f"Nov {d}", 0, 0) for d in range(1, 5)]
    svg = the_svg(parsed(time_series("zero", "Visitors", points, value_name="Visitors")))
    line = svg.find(f"{SVG}path[@class='line']")
    assert line is not None
    ys = {segment.split(",")[1] for segment in (line.get("d") or "").split(" ")}
    assert len(ys) == 1, "every point on the same (zero) line"
    bars = the_svg(parsed(bar_chart("zb", "Zero", [("a", 0), ("b", 0)], value_name="Visitors")))
    assert [r.get("width") for r in bars.iter(f"{SVG}rect")] == ["0.0", "0.0"]
    assert str(inline_bar(0, 0)).count("width:0.0%") == 1


def test_bars_are_proportional_to_the_largest_row() -> None:
    bars = the_svg(parsed(bar_chart("p", "Sources", [("google", 10), ("newsletter", 5)], value_name="Visitors")))
    widths = [float(r.get("width") or 0) for r in bars.iter(f"{SVG}rect")]
    assert widths[0] == 2 * widths[1]
    assert "width:50.0%" in str(inline_bar(5, 10))
    assert format_number(1234) == "1,234"
    assert format_number(2.5) == "2.5"
