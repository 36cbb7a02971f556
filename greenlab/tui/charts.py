"""What the TUI's plotext charts share: room for the legend plotext draws in a chart's top-left corner.

plotext draws a series legend over the plot's top-left cells, where a power trace starts and where the
energy/accuracy chart has its best runs (little energy, high accuracy): run 12 of a grid was hidden under
it. A line chart's y range is stretched so the legend sits above the data; a scatter names its series by
marker in the chart's subtitle instead, with no legend at all.
"""

from __future__ import annotations

# One marker per series of a scatter (plotext takes any single character): told apart without colour too.
MARKERS = ("•", "x", "+", "o", "*", "#", "@", "%", "&", "=")
CHART_CHROME_ROWS = 4  # a chart widget's rows that are not plot: its border, the x axis and its label


def legend_fits(series: int, rows: int) -> bool:
    """A legend of `series` lines leaves at least half of a chart `rows` tall to the data; on a shorter
    chart the legend is left out (the sparklines beside it name each component)."""
    return rows - CHART_CHROME_ROWS >= 2 * (series + 1)


def legend_headroom(top: float, series: int, rows: int) -> float:
    """The upper y limit that leaves the plot's top `series` rows (and one more) to the legend: `top`, the
    data's highest value, stays below them in a chart `rows` tall."""
    if top <= 0 or series <= 0:
        return top
    plot_rows = max(rows - CHART_CHROME_ROWS, series + 2)
    return top * plot_rows / max(plot_rows - series - 1, 1)


def marker_legend(names: list[str]) -> str:
    """'• baseline  x prune  + stego': which marker is which series, for a chart's subtitle."""
    return "  ".join(f"{MARKERS[i % len(MARKERS)]} {name}" for i, name in enumerate(names))
