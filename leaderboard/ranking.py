"""The Ranking view: one table per category, each intervention at one chosen level.

Errors of different categories are over different criteria (an editor's edit success, an
unlearner's WMDP accuracy), so a single list across categories would rank incomparable
numbers; and a compressor averaged over its levels would mix 2-bit with 8-bit. So a ranking
holds one category, compressors at the chosen bits / sparsity (the paper's 4 bits and 0.25 by
default), and its partners at the same levels. Columns: for each criterion, the mean
Order-free Error (**OFE**) and Order Sensitivity (**OS**) over the intervention's partners,
its category's criteria first (:data:`leaderboard.data.CATEGORY_CRITERIA`); the rank is by
the mean OFE over the category's bounded criteria (perplexity's error is unbounded and on
another scale, so it is shown, not averaged).
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Mapping

import pandas as pd

from benchmark.results import reproduce_command
from leaderboard.data import CATEGORY_CRITERIA, REPORTED_MARK, Board, fmt
from leaderboard.safe import cell

SCORE_COLUMN = "mean OFE"
NOISE_COLUMN = "order effects beyond noise"
SOURCE_COLUMN = "source"
REPRODUCE_COLUMN = "reproduce"
FRONT = ["rank", "intervention", SCORE_COLUMN]
BACK = ["partners", NOISE_COLUMN, SOURCE_COLUMN, REPRODUCE_COLUMN]


def bounded(board: Board, criterion: str) -> bool:
    """Whether the criterion's error is an accuracy-like error in [0, 1] (not perplexity, not descriptive)."""
    crit = board.criteria.get(criterion)
    return crit is not None and crit.has_error and crit.items != "perplexity"


def oriented(board: Board) -> pd.DataFrame:
    """Metrics rows seen from each side: ``label``, ``name``, ``partner``, ``partner_category`` and the values."""
    if board.metrics.empty:
        return pd.DataFrame(
            columns=[
                "name",
                "label",
                "partner",
                "partner_category",
                "criterion",
                "order_free_error",
                "order_sensitivity",
                "exceeds_noise",
            ]
        )
    info = board.interventions
    frames = []
    for this, other in (("a", "b"), ("b", "a")):
        df = board.metrics.copy()
        df["label"] = df[this]
        df["name"] = df[this].map(lambda lab: info[lab].name if lab in info else lab)
        df["partner"] = df[other]
        df["partner_category"] = df[f"{other}_category"]
        frames.append(df)
    return pd.concat(frames, ignore_index=True)


def ranked_criteria(board: Board, category: str, criteria: Iterable[str]) -> list[str]:
    """The category's own criteria first, then the other chosen ones, each once, if the board has them."""
    own = [c for c in CATEGORY_CRITERIA.get(category, ()) if c in board.criteria]
    rest = [c for c in criteria if c in board.criteria and c not in own]
    return own + rest


def significance(board: Board, rows: pd.DataFrame) -> str:
    """How many order effects exceed noise, or why that is unknown (reported figures have no items)."""
    if rows.empty:
        return "-"
    if board.reported:
        return f"unknown for all {len(rows)} (reported: no per-item scores)"
    return f"{int(rows['exceeds_noise'].sum())} of {len(rows)}"


def category_ranking(
    board: Board, category: str, criteria: Iterable[str], levels: Mapping[str, Any] | None = None
) -> pd.DataFrame:
    """The ranking of one category of ``board`` at ``levels`` (see the module docstring)."""
    criteria = ranked_criteria(board, category, criteria)
    own = [c for c in CATEGORY_CRITERIA.get(category, ()) if c in criteria and bounded(board, c)]
    kept = set(board.labels_at(levels))
    sides = oriented(board)
    sides = sides[sides["label"].isin(kept) & sides["partner"].isin(kept) & sides["criterion"].isin(criteria)]
    by_label = {label: group for label, group in sides.groupby("label")}
    rows = []
    for label in board.labels_at(levels):
        item = board.interventions[label]
        if item.category != category:
            continue
        mine = by_label.get(label, sides.iloc[0:0])
        row: dict[str, Any] = {
            "intervention": cell(label),  # the name, with its level for a compressor: gptq(bits=4)
            "partners": int(mine["partner"].nunique()),
        }
        errors = []
        for criterion in criteria:
            sel = mine[mine["criterion"] == criterion]
            row[f"{criterion} OFE"] = fmt(sel["order_free_error"].mean() if not sel.empty else math.nan)
            row[f"{criterion} OS"] = fmt(sel["order_sensitivity"].mean() if not sel.empty else math.nan)
            if criterion in own:
                errors.extend(sel["order_free_error"].dropna().tolist())
        row[SCORE_COLUMN] = fmt(sum(errors) / len(errors)) if errors else None
        row[NOISE_COLUMN] = significance(board, mine)
        row[SOURCE_COLUMN] = REPORTED_MARK if board.reported else "re-run by the harness"
        cells = [board.record(c) for c in _cells_of(board, label)]
        row[REPRODUCE_COLUMN] = reproduce_command([c for c in cells if c is not None])
        rows.append(row)
    metric_columns = [f"{c} {m}" for c in criteria for m in ("OFE", "OS")]
    columns = FRONT + metric_columns + BACK
    if not rows:
        return pd.DataFrame(columns=columns)
    df = pd.DataFrame(rows)
    df = df.sort_values([SCORE_COLUMN, "intervention"], na_position="last", kind="stable", ignore_index=True)
    df.insert(0, "rank", range(1, len(df) + 1))
    return df[columns]


def _cells_of(board: Board, label: str) -> list[str]:
    cells = board.cells
    if cells.empty:
        return []
    mask = ((cells["first"] == label) | (cells["second"] == label)) & (cells["n_steps"] <= 2)  # pairs, not triples
    return cells.loc[mask, "cell_id"].tolist()


def categories(board: Board) -> list[str]:
    """The categories with a ranking in this board, in the usual order."""
    present = {i.category for i in board.interventions.values()}
    return [c for c in ("editing", "unlearning", "compression", "multi") if c in present]
