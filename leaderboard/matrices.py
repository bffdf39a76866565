"""The Pair matrices view: Order-free Error and Order Sensitivity as heatmaps,
interventions by interventions, one criterion at a time (the paper's figures).

Both metrics are symmetric in the pair, so the matrix is symmetric; same-category
cells are empty (the grid composes across categories only). Each cell is annotated
with its value and a ``*`` where the order effect exceeds evaluation noise; the
hover text gives the 95% confidence interval, both orders' scores and the command that
reproduces the pair. Compressors appear at one chosen level each (``levels``, the paper's
4 bits and sparsity 0.25 by default), so that a matrix of the paper's ten baselines is ten
by ten and its labels and values stay legible (fonts of 12-13 px, a fixed cell size).
For reported figures (no per-item scores) the hover says the significance is unknown.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import pandas as pd
import plotly.graph_objects as go

from benchmark.results import reproduce_command
from leaderboard.data import Board, resolvable_text, significance_text
from leaderboard.safe import plot_text

METRICS = {
    "order_free_error": ("Order-free Error", "ofe_ci_low", "ofe_ci_high", "Reds"),
    "order_sensitivity": ("Order Sensitivity", "os_ci_low", "os_ci_high", "Blues"),
}


CELL_PX = 62  # height of one matrix row: room for a 12 px value and a 13 px label
FONT_PX = 13


def axis_labels(board: Board, levels: Mapping[str, Any] | None = None) -> list[str]:
    """Intervention labels at ``levels`` (every level when None), by category, name and level."""
    return board.labels_at(levels)


def _ci(low: float, high: float) -> str:
    if any(isinstance(v, float) and math.isnan(v) for v in (low, high)):
        return "no CI (no per-item scores)"
    return f"[{low:.3f}, {high:.3f}]"


def _noise(board: Board, row: Any) -> str:
    if board.reported and significance_text(row).startswith("unknown"):
        return "unknown (reported in the paper: no per-item scores)"
    return significance_text(row)


def pair_rows(board: Board, criterion: str, levels: Mapping[str, Any] | None = None) -> pd.DataFrame:
    """The composability rows one matrix shows (pairs of labels at ``levels``), with each pair's command."""
    if board.metrics.empty:
        return board.metrics.assign(reproduce=pd.Series(dtype=str))
    kept = set(axis_labels(board, levels))
    rows = board.metrics[
        (board.metrics["criterion"] == criterion) & board.metrics["a"].isin(kept) & board.metrics["b"].isin(kept)
    ].reset_index(drop=True)
    cells = board.cells
    commands = []
    for row in rows.itertuples(index=False):
        ids = cells.loc[
            ((cells["first"] == row.a) & (cells["second"] == row.b))
            | ((cells["first"] == row.b) & (cells["second"] == row.a)),
            "cell_id",
        ]
        commands.append(reproduce_command([r for r in map(board.record, ids) if r is not None]))
    return rows.assign(reproduce=commands)


def pair_matrix(
    board: Board, criterion: str, metric: str, levels: Mapping[str, Any] | None = None
) -> tuple[list[str], list[list[float | None]], list[list[str]]]:
    """Axis labels, values (None where no pair) and hover texts of the matrix for ``metric``."""
    title, low_col, high_col, _ = METRICS[metric]
    labels = axis_labels(board, levels)
    index = {label: i for i, label in enumerate(labels)}
    n = len(labels)
    values: list[list[float | None]] = [[None] * n for _ in range(n)]
    hover = [[""] * n for _ in range(n)]
    for row in pair_rows(board, criterion, levels).itertuples(index=False):
        if row.a not in index or row.b not in index:
            continue
        value = getattr(row, metric)
        if value is None or (isinstance(value, float) and math.isnan(value)):
            continue
        low, high = getattr(row, low_col), getattr(row, high_col)
        text = (
            f"{plot_text(row.a)} × {plot_text(row.b)}<br>{title} ({plot_text(criterion)}): {value:.3f}"
            f"<br>95% CI {_ci(low, high)}<br>score {plot_text(row.a)} first: {row.score_ab:.3f}"
            f"<br>score {plot_text(row.b)} first: {row.score_ba:.3f}"
            f"<br>order effect beyond noise: {_noise(board, row)}; smallest resolvable: {resolvable_text(row)}"
            f"<br>reproduce: {plot_text(row.reproduce)}"
        )
        for i, j in ((index[row.a], index[row.b]), (index[row.b], index[row.a])):
            values[i][j] = float(value)
            hover[i][j] = text
    return labels, values, hover


def heatmap_figure(board: Board, criterion: str, metric: str, levels: Mapping[str, Any] | None = None) -> go.Figure:
    """A Plotly heatmap of ``metric`` for ``criterion`` at ``levels``; an annotated empty figure when there is no pair."""
    title, _, _, scale = METRICS[metric]
    labels, values, hover = pair_matrix(board, criterion, metric, levels)
    noise = {}
    if not board.metrics.empty and not board.reported:
        for row in board.metrics[board.metrics["criterion"] == criterion].itertuples(index=False):
            noise[(row.a, row.b)] = noise[(row.b, row.a)] = bool(row.exceeds_noise)
    text = [
        [
            "" if v is None else f"{v:.3f}{'*' if metric == 'order_sensitivity' and noise.get((a, b)) else ''}"
            for b, v in zip(labels, row)
        ]
        for a, row in zip(labels, values)
    ]
    shown = [plot_text(label) for label in labels]
    fig = go.Figure(
        go.Heatmap(
            z=values,
            x=shown,
            y=shown,
            text=text,
            texttemplate="%{text}",
            customdata=hover,
            hovertemplate="%{customdata}<extra></extra>",
            colorscale=scale,
            hoverongaps=False,
            textfont={"size": FONT_PX - 1},
            colorbar={"title": {"text": "lower is better" if metric == "order_free_error" else "|AB − BA|"}},
        )
    )
    fig.update_layout(
        title={"text": f"{title}: {plot_text(criterion)}"},
        font={"size": FONT_PX},
        xaxis={"side": "bottom", "tickangle": -40, "tickfont": {"size": FONT_PX}},
        yaxis={"autorange": "reversed", "tickfont": {"size": FONT_PX}},
        margin={"l": 170, "r": 20, "t": 60, "b": 150},
        height=max(420, 210 + CELL_PX * len(labels)),
    )
    if not any(v is not None for row in values for v in row):
        fig.add_annotation(
            text="no pair with both orders recorded for this selection",
            showarrow=False,
            xref="paper",
            yref="paper",
            x=0.5,
            y=0.5,
        )
    return fig
