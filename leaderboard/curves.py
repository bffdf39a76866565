"""The Compression curves view: a criterion against sparsity or bits, one line per order.

For a chosen pair (an intervention X and a compressor C), every record of the grid
that applied both is placed at C's level (its configured level, or the sparsity or
average bits measured on the final model) with one line for "X then C" and one for
"C then X". Two references come from the same grid: C alone at each level (dotted)
and X alone, uncompressed (a single marker; only on axes where "uncompressed" has a
place: measured sparsity 0, measured bits, or a sparsity level of 0). Every point is
a real record; nothing is interpolated or extrapolated.
"""

from __future__ import annotations

import plotly.graph_objects as go

from leaderboard.data import ARROW, Board
from leaderboard.safe import plot_text

X_AXES = {
    "level": "configured level",
    "sparsity": "measured sparsity",
    "avg_bits": "measured average bits",
}
PAIR_SEPARATOR = " × "


def curve_pairs(board: Board) -> list[str]:
    """``X × C`` for every intervention X composed with a compressor C (by name)."""
    cells = board.cells
    if cells.empty:
        return []
    pairs = set()
    two = cells[(cells["n_steps"] == 2) & (cells["status"] == "ok")]
    for first, second in zip(two["first_name"], two["second_name"]):
        for x, c in ((first, second), (second, first)):
            if board.category_of(c) == "compression" and board.category_of(x) != "compression":
                pairs.add(f"{x}{PAIR_SEPARATOR}{c}")
    return sorted(pairs)


def compressor_parameter(board: Board, compressor: str) -> str | None:
    """The level parameter (``sparsity``, ``bits``, ...) of a compressor's labels in this board."""
    return next((i.level_parameter for i in board.interventions.values() if i.name == compressor and i.level), None)


def _x_value(board: Board, row: dict, compressor_label: str | None, axis: str, parameter: str | None) -> float | None:
    if axis == "level":
        if compressor_label is None:  # uncompressed: only a sparsity level has a natural 0
            return 0.0 if parameter == "sparsity" else None
        return board.interventions[compressor_label].level_value
    return row.get(f"score:{axis}")


def curve_traces(board: Board, pair: str, criterion: str, axis: str = "level") -> list[dict]:
    """The plotted series: name, style and points ``(x, y, order label)`` sorted by x."""
    x_name, _, c_name = pair.partition(PAIR_SEPARATOR)
    cells = board.cells
    if cells.empty or not c_name:
        return []
    ok = cells[cells["status"] == "ok"]
    parameter = compressor_parameter(board, c_name)
    series: dict[str, dict] = {
        "x_first": {"name": f"{x_name}{ARROW}{c_name}", "dash": "solid", "points": []},
        "c_first": {"name": f"{c_name}{ARROW}{x_name}", "dash": "solid", "points": []},
        "c_alone": {"name": f"{c_name} alone", "dash": "dot", "points": []},
        "x_alone": {"name": f"{x_name} alone (uncompressed)", "dash": "marker", "points": []},
    }
    for row in ok.to_dict("records"):
        y = row.get(f"score:{criterion}")
        names = (row["first_name"], row["second_name"])
        if row["n_steps"] == 2 and names == (x_name, c_name):
            key, compressor = "x_first", row["second"]
        elif row["n_steps"] == 2 and names == (c_name, x_name):
            key, compressor = "c_first", row["first"]
        elif row["n_steps"] == 1 and row["first_name"] == c_name:
            key, compressor = "c_alone", row["first"]
        elif row["n_steps"] == 1 and row["first_name"] == x_name:
            key, compressor = "x_alone", None
        else:
            continue
        x = _x_value(board, row, compressor, axis, parameter)
        if x is None or y is None:
            continue
        series[key]["points"].append((float(x), float(y), row["order"]))
        if row["recompressed_with"] and key == "c_first":
            series[key]["name"] = f"{c_name}{ARROW}{x_name}{ARROW}{c_name} (re-applied)"
    for entry in series.values():
        entry["points"].sort()
    return [s for s in series.values() if s["points"]]


def curve_figure(board: Board, pair: str, criterion: str, axis: str = "level") -> go.Figure:
    """The Plotly figure of :func:`curve_traces` (an annotated empty figure when nothing matches)."""
    fig = go.Figure()
    for entry in curve_traces(board, pair, criterion, axis):
        xs, ys, orders = zip(*entry["points"])
        marker_only = entry["dash"] == "marker"
        fig.add_trace(
            go.Scatter(
                x=list(xs),
                y=list(ys),
                name=plot_text(entry["name"]),
                mode="markers" if marker_only else "lines+markers",
                line=None if marker_only else {"dash": entry["dash"]},
                marker={"size": 12 if marker_only else 9, "symbol": "diamond" if marker_only else "circle"},
                customdata=[plot_text(o) for o in orders],
                hovertemplate="%{customdata}<br>x=%{x:.3f}, y=%{y:.4f}<extra></extra>",
            )
        )
    crit = board.criteria.get(criterion)
    direction = {"higher_is_better": "higher is better", "lower_is_better": "lower is better"}.get(
        crit.direction if crit else "", "descriptive"
    )
    parameter = compressor_parameter(board, pair.partition(PAIR_SEPARATOR)[2])
    x_title = f"{X_AXES.get(axis, axis)}" + (f" ({plot_text(parameter)})" if axis == "level" and parameter else "")
    fig.update_layout(
        title={"text": f"{plot_text(pair)}: {plot_text(criterion)} ({direction})"},
        xaxis={"title": {"text": x_title}},
        yaxis={"title": {"text": plot_text(criterion)}},
        height=420,
        margin={"l": 60, "r": 20, "t": 60, "b": 60},
        legend={"orientation": "h", "y": -0.2},
    )
    if not fig.data:
        fig.add_annotation(
            text="no record of this pair at any level for this selection",
            showarrow=False,
            xref="paper",
            yref="paper",
            x=0.5,
            y=0.5,
        )
    return fig
