"""Charts as server-rendered SVG: pure functions from numbers to markup, no script needed to see them.

Every chart is an image with a title and a one-sentence description (``role="img"``, ``aria-labelledby``) and
carries its numbers as a table in a ``<details>`` beside it, so a screen reader, a copy-paste and a printout get
the same figures as the eye. Labels are escaped like any other text (Markup's ``format``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from markupsafe import Markup

__all__ = ["SeriesPoint", "bar_chart", "format_number", "inline_bar", "time_series"]

WIDTH = 720
HEIGHT = 220
PAD_LEFT = 48
PAD_RIGHT = 12
PAD_TOP = 12
PAD_BOTTOM = 28
GRID_LINES = 4


@dataclass(frozen=True)
class SeriesPoint:
    """One x position of a time series: its label (a day), the value, and the previous period's value there."""

    label: str
    value: float
    previous: float | None = None


def format_number(value: float) -> str:
    """``1234`` → ``1,234``; fractions keep one decimal."""
    if float(value).is_integer():
        return f"{int(value):,}"
    return f"{value:,.1f}"


def _nice_ceiling(value: float) -> float:
    """The smallest 1, 2 or 5 times a power of ten at or above ``value``, so the axis reads in round steps."""
    if value <= 0:
        return 1.0
    magnitude = 1.0
    while magnitude * 10 <= value:
        magnitude *= 10
    while magnitude > value:
        magnitude /= 10
    for step in (1, 2, 5, 10):
        if step * magnitude >= value:
            return step * magnitude
    return 10 * magnitude


def _path(points: Sequence[tuple[float, float]]) -> str:
    return " ".join(f"{'M' if i == 0 else 'L'}{x:.1f},{y:.1f}" for i, (x, y) in enumerate(points))


def time_series(
    chart_id: str,
    title: str,
    points: Sequence[SeriesPoint],
    *,
    value_name: str,
    previous_name: str = "Previous period",
) -> Markup:
    """A line-and-area chart of ``points`` (the previous period dashed when given) with its numbers as a table."""
    total = sum(p.value for p in points)
    has_previous = any(p.previous is not None for p in points)
    if not points:
        description = f"No {value_name.lower()} in this period."
    else:
        peak = max(points, key=lambda p: p.value)
        description = (
            f"{format_number(total)} {value_name.lower()} over {len(points)} "
            f"{'day' if len(points) == 1 else 'days'}, most on {peak.label} ({format_number(peak.value)})"
        )
        if has_previous:
            before = sum(p.previous or 0 for p in points)
            description += f"; {format_number(before)} in the previous period"
        description += "."
    # Counts are whole numbers: a small range keeps whole steps on the axis instead of 0.5, 1.5 …
    top = max(GRID_LINES, _nice_ceiling(max([p.value for p in points] + [p.previous or 0 for p in points] + [0])))
    inner_w = WIDTH - PAD_LEFT - PAD_RIGHT
    inner_h = HEIGHT - PAD_TOP - PAD_BOTTOM

    def x_of(index: int) -> float:
        # One point sits in the middle; more spread edge to edge.
        return PAD_LEFT + (inner_w / 2 if len(points) == 1 else inner_w * index / (len(points) - 1))

    def y_of(value: float) -> float:
        return PAD_TOP + inner_h * (1 - value / top)

    parts: list[Markup] = []
    for step in range(GRID_LINES + 1):
        value = top * step / GRID_LINES
        y = y_of(value)
        parts.append(
            Markup('<line class="grid" x1="{}" y1="{:.1f}" x2="{}" y2="{:.1f}"/>').format(
                PAD_LEFT, y, WIDTH - PAD_RIGHT, y
            )
        )
        parts.append(
            Markup('<text class="axis" x="{}" y="{:.1f}" text-anchor="end">{}</text>').format(
                PAD_LEFT - 6, y + 4, format_number(value)
            )
        )
    if points:
        current = [(x_of(i), y_of(p.value)) for i, p in enumerate(points)]
        baseline = y_of(0)
        area = _path(current) + f" L{current[-1][0]:.1f},{baseline:.1f} L{current[0][0]:.1f},{baseline:.1f} Z"
        if has_previous:
            previous_line = [(x_of(i), y_of(p.previous or 0)) for i, p in enumerate(points)]
            parts.append(Markup('<path class="previous" d="{}"/>').format(_path(previous_line)))
        parts.append(Markup('<path class="area" d="{}"/>').format(area))
        parts.append(Markup('<path class="line" d="{}"/>').format(_path(current)))
        if len(points) == 1:
            parts.append(Markup('<circle class="dot" cx="{:.1f}" cy="{:.1f}" r="4"/>').format(*current[0]))
        # At most ~7 date labels, always the first and the last.
        every = max(1, -(-len(points) // 7))
        for i, p in enumerate(points):
            if i % every == 0 or i == len(points) - 1:
                if i != len(points) - 1 and len(points) - 1 - i < every / 2:
                    continue  # too close to the last label
                anchor = "start" if i == 0 and len(points) > 1 else ("end" if i == len(points) - 1 and i else "middle")
                parts.append(
                    Markup('<text class="axis" x="{:.1f}" y="{}" text-anchor="{}">{}</text>').format(
                        x_of(i), HEIGHT - 8, anchor, p.label
                    )
                )
    svg = Markup(
        '<svg class="chart" viewBox="0 0 {w} {h}" role="img" aria-labelledby="{id}-title {id}-desc" '
        'xmlns="http://www.w3.org/2000/svg">'
        '<title id="{id}-title">{title}</title><desc id="{id}-desc">{desc}</desc>{body}</svg>'
    ).format(w=WIDTH, h=HEIGHT, id=chart_id, title=title, desc=description, body=Markup("").join(parts))
    head = Markup("<tr><th scope='col'>Day</th><th scope='col' class='num'>{}</th>{}</tr>").format(
        value_name, Markup("<th scope='col' class='num'>{}</th>").format(previous_name) if has_previous else ""
    )
    rows = Markup("").join(
        Markup("<tr><th scope='row'>{}</th><td class='num'>{}</td>{}</tr>").format(
            p.label,
            format_number(p.value),
            Markup("<td class='num'>{}</td>").format(format_number(p.previous or 0)) if has_previous else "",
        )
        for p in points
    )
    return Markup(
        '<figure class="chart-figure">{svg}<details class="chart-numbers"><summary>{title} as a table</summary>'
        "<table><caption class='visually-hidden'>{title}</caption><thead>{head}</thead><tbody>{rows}</tbody>"
        "</table></details></figure>"
    ).format(svg=svg, title=title, head=head, rows=rows)


def bar_chart(chart_id: str, title: str, rows: Sequence[tuple[str, float]], *, value_name: str) -> Markup:
    """Horizontal bars, one per ``(label, value)``, longest first as given, with the numbers as a table."""
    bar_h = 22
    gap = 6
    label_w = 180
    height = max(1, len(rows)) * (bar_h + gap) + gap
    top = max([v for _, v in rows] + [0]) or 1
    if rows:
        leader = max(rows, key=lambda r: r[1])
        description = (
            f"{len(rows)} {'row' if len(rows) == 1 else 'rows'}; the most {value_name.lower()} from "
            f"{leader[0]} ({format_number(leader[1])})."
        )
    else:
        description = f"No {value_name.lower()} in this period."
    parts: list[Markup] = []
    for i, (label, value) in enumerate(rows):
        y = gap + i * (bar_h + gap)
        width = (WIDTH - label_w - 70) * value / top
        parts.append(
            Markup(
                '<text class="axis" x="{lx}" y="{ty}" text-anchor="end">{label}</text>'
                '<rect class="bar" x="{x}" y="{y}" width="{w:.1f}" height="{h}" rx="3"/>'
                '<text class="axis" x="{vx:.1f}" y="{ty}">{value}</text>'
            ).format(
                lx=label_w - 8,
                ty=y + bar_h * 0.7,
                label=label,
                x=label_w,
                y=y,
                w=width,
                h=bar_h,
                vx=label_w + width + 6,
                value=format_number(value),
            )
        )
    svg = Markup(
        '<svg class="chart" viewBox="0 0 {w} {h}" role="img" aria-labelledby="{id}-title {id}-desc" '
        'xmlns="http://www.w3.org/2000/svg"><title id="{id}-title">{title}</title>'
        '<desc id="{id}-desc">{desc}</desc>{body}</svg>'
    ).format(w=WIDTH, h=height, id=chart_id, title=title, desc=description, body=Markup("").join(parts))
    table_rows = Markup("").join(
        Markup("<tr><th scope='row'>{}</th><td class='num'>{}</td></tr>").format(label, format_number(value))
        for label, value in rows
    )
    return Markup(
        '<figure class="chart-figure">{svg}<details class="chart-numbers"><summary>{title} as a table</summary>'
        "<table><caption class='visually-hidden'>{title}</caption><thead><tr><th scope='col'>Name</th>"
        "<th scope='col' class='num'>{value_name}</th></tr></thead><tbody>{rows}</tbody></table></details></figure>"
    ).format(svg=svg, title=title, value_name=value_name, rows=table_rows)


def inline_bar(value: float, maximum: float) -> Markup:
    """The bar behind a breakdown row (Plausible's tables): its width is the row's share of the largest row."""
    share = 0.0 if maximum <= 0 else max(0.0, min(1.0, value / maximum))
    return Markup('<span class="inline-bar" style="width:{:.1f}%" aria-hidden="true"></span>').format(share * 100)
