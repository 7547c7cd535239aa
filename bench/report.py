# SPDX-License-Identifier: BSD-2-Clause
"""Printing benchmark figures: text tables, and SVG charts without a plotting library."""

import math

__all__ = ["table", "svg_line_chart"]


def table(rows: list[dict], columns: list[str]) -> str:
    """`rows` as a right-aligned text table of `columns`, with a header line."""
    widths = [max(len(c), *(len(str(r[c])) for r in rows)) for c in columns]
    lines = ["  ".join(c.rjust(w) for c, w in zip(columns, widths))]
    lines += ["  ".join(str(r[c]).rjust(w) for c, w in zip(columns, widths)) for r in rows]
    return "\n".join(lines)


#: Series colours (colour-blind safe, Okabe-Ito), in order of use.
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000")
_DASHES = {"solid": None, "dashed": "6 4", "dotted": "2 3", "line": "8 3 2 3"}


def _escape(text) -> str:
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def svg_line_chart(panels: list[dict], *, x_label: str, y_label: str, x_ticks: list,
                   y_ticks: list, log_x: bool = False, log_y: bool = False,
                   panel_width: int = 300, panel_height: int = 260) -> str:
    """A self-contained SVG of line charts side by side, sharing the axes' scales.

    Each panel is ``{"title": str, "series": [series]}``; a series is
    ``{"label": str, "points": [(x, y)], "style": "solid" | "dashed" | "dotted" | "line",
    "marker": bool, "color": "#rrggbb"}`` (style, marker and color optional; series with
    the same label share a colour and one legend entry). Axes span the ticks.
    """
    def scale(value, low, high, log):
        if log:
            value, low, high = math.log(value), math.log(low), math.log(high)
        return (value - low) / (high - low)

    left, right, top, bottom, gap = 56, 12, 28, 44, 24
    colours, legend = {}, []
    for panel in panels:
        for series in panel["series"]:
            if series["label"] not in colours:
                colours[series["label"]] = series.get("color") or \
                    PALETTE[sum(1 for s in legend if "color" not in s) % len(PALETTE)]
                legend.append(series)
    legend_rows = -(-len(legend) // 2)
    width = left + len(panels) * (panel_width + gap) - gap + right
    height = top + panel_height + bottom + 18 * legend_rows + 8
    x_low, x_high, y_low, y_high = x_ticks[0], x_ticks[-1], y_ticks[0], y_ticks[-1]
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11">',
           f'<rect width="{width}" height="{height}" fill="white"/>']
    for index, panel in enumerate(panels):
        x0 = left + index * (panel_width + gap)

        def at(x, y, x0=x0):
            return (x0 + panel_width * scale(x, x_low, x_high, log_x),
                    top + panel_height * (1 - scale(y, y_low, y_high, log_y)))

        out.append(f'<text x="{x0 + panel_width / 2}" y="{top - 10}" text-anchor="middle" '
                   f'font-size="12" font-weight="bold">{_escape(panel["title"])}</text>')
        for tick in x_ticks:
            x, _ = at(tick, y_low)
            out.append(f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{top + panel_height}" '
                       f'stroke="#e4e4e4"/>')
            out.append(f'<text x="{x:.1f}" y="{top + panel_height + 14}" '
                       f'text-anchor="middle">{_escape(tick)}</text>')
        for tick in y_ticks:
            _, y = at(x_low, tick)
            out.append(f'<line x1="{x0}" y1="{y:.1f}" x2="{x0 + panel_width}" y2="{y:.1f}" '
                       f'stroke="#e4e4e4"/>')
            if index == 0:
                out.append(f'<text x="{x0 - 6}" y="{y + 4:.1f}" '
                           f'text-anchor="end">{_escape(tick)}</text>')
        out.append(f'<rect x="{x0}" y="{top}" width="{panel_width}" height="{panel_height}" '
                   f'fill="none" stroke="#444"/>')
        out.append(f'<text x="{x0 + panel_width / 2}" y="{top + panel_height + 32}" '
                   f'text-anchor="middle">{_escape(x_label)}</text>')
        # Lines past the axes' range are cut at the panel's edge.
        out.append(f'<clipPath id="panel{index}"><rect x="{x0 - 4}" y="{top - 4}" '
                   f'width="{panel_width + 8}" height="{panel_height + 8}"/></clipPath>')
        out.append(f'<g clip-path="url(#panel{index})">')
        for series in panel["series"]:
            colour = colours[series["label"]]
            points = [at(x, y) for x, y in series["points"]]
            dash = _DASHES[series.get("style", "solid")]
            out.append(f'<polyline fill="none" stroke="{colour}" stroke-width="1.6"'
                       + (f' stroke-dasharray="{dash}"' if dash else "")
                       + ' points="' + " ".join(f"{x:.1f},{y:.1f}" for x, y in points) + '"/>')
            if series.get("marker"):
                out += [f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{colour}"/>'
                        for x, y in points]
        out.append("</g>")
    out.append(f'<text transform="translate(14 {top + panel_height / 2}) rotate(-90)" '
               f'text-anchor="middle">{_escape(y_label)}</text>')
    for index, series in enumerate(legend):
        x = left + (index % 2) * (width - left) / 2
        y = top + panel_height + bottom + 18 * (index // 2) + 6
        dash = _DASHES[series.get("style", "solid")]
        out.append(f'<line x1="{x:.1f}" y1="{y}" x2="{x + 28:.1f}" y2="{y}" '
                   f'stroke="{colours[series["label"]]}" stroke-width="1.6"'
                   + (f' stroke-dasharray="{dash}"' if dash else "") + '/>')
        out.append(f'<text x="{x + 34:.1f}" y="{y + 4}">{_escape(series["label"])}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"
