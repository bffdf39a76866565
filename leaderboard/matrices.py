"""The Pair matrices view: Order-free Error and Order Sensitivity as heatmaps,
interventions by interventions, one criterion at a time (the paper's figures).

Both metrics are symmetric in the pair, so the matrix is symmetric; same-category
cells are empty (the grid composes across categories only). Each cell is annotated
with its value and a ``*`` where the order effect exceeds evaluation noise; the
hover text gives the 95% confidence interval.
"""

from __future__ import annotations

import math

import pandas as pd
import plotly.graph_objects as go

from leaderboard.data import Board
from leaderboard.safe import plot_text

METRICS = {
    "order_free_error": ("Order-free Error", "ofe_ci_low", "ofe_ci_high", "Reds"),
    "order_sensitivity": ("Order Sensitivity", "os_ci_low", "os_ci_high", "Blues"),
}


def axis_labels(board: Board) -> list[str]:
    """Intervention labels, by category, name and level."""
    return [label for name in board.names() for label in board.labels_of(name)]


def pair_matrix(board: Board, criterion: str, metric: str) -> tuple[list[str], list[list[float | None]], list[list[str]]]:
    """Axis labels, values (None where no pair) and hover texts of the matrix for ``metric``."""
    title, low_col, high_col, _ = METRICS[metric]
    labels = axis_labels(board)
    index = {label: i for i, label in enumerate(labels)}
    n = len(labels)
    values: list[list[float | None]] = [[None] * n for _ in range(n)]
    hover = [[""] * n for _ in range(n)]
    rows = board.metrics[board.metrics["criterion"] == criterion] if not board.metrics.empty else pd.DataFrame()
    for row in rows.itertuples(index=False):
        if row.a not in index or row.b not in index:
            continue
        value = getattr(row, metric)
        if value is None or (isinstance(value, float) and math.isnan(value)):
            continue
        low, high = getattr(row, low_col), getattr(row, high_col)
        text = (
            f"{plot_text(row.a)} × {plot_text(row.b)}<br>{title} ({plot_text(criterion)}): {value:.3f}"
            f"<br>95% CI [{low:.3f}, {high:.3f}]<br>score {plot_text(row.a)} first: {row.score_ab:.3f}, "
            f"{plot_text(row.b)} first: {row.score_ba:.3f}<br>order effect beyond noise: {'yes' if row.exceeds_noise else 'no'}"
        )
        for i, j in ((index[row.a], index[row.b]), (index[row.b], index[row.a])):
            values[i][j] = float(value)
            hover[i][j] = text
    return labels, values, hover


def heatmap_figure(board: Board, criterion: str, metric: str) -> go.Figure:
    """A Plotly heatmap of ``metric`` for ``criterion``; an annotated empty figure when there is no pair."""
    title, _, _, scale = METRICS[metric]
    labels, values, hover = pair_matrix(board, criterion, metric)
    noise = {}
    if not board.metrics.empty:
        for row in board.metrics[board.metrics["criterion"] == criterion].itertuples(index=False):
            noise[(row.a, row.b)] = noise[(row.b, row.a)] = bool(row.exceeds_noise)
    text = [
        ["" if v is None else f"{v:.3f}{'*' if metric == 'order_sensitivity' and noise.get((a, b)) else ''}"
         for b, v in zip(labels, row)]
        for a, row in zip(labels, values)
    ]
    shown = [plot_text(label) for label in labels]
    fig = go.Figure(
        go.Heatmap(
            z=values, x=shown, y=shown, text=text, texttemplate="%{text}", customdata=hover,
            hovertemplate="%{customdata}<extra></extra>", colorscale=scale, hoverongaps=False,
            colorbar={"title": {"text": "lower is better" if metric == "order_free_error" else "|AB − BA|"}},
        )
    )
    fig.update_layout(
        title={"text": f"{title}: {plot_text(criterion)}"},
        xaxis={"side": "bottom"},
        yaxis={"autorange": "reversed"},
        margin={"l": 150, "r": 20, "t": 60, "b": 120},
        height=420,
    )
    if not any(v is not None for row in values for v in row):
        fig.add_annotation(text="no pair with both orders recorded for this selection", showarrow=False,
                           xref="paper", yref="paper", x=0.5, y=0.5)
    return fig
