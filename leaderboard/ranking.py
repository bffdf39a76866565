"""The Ranking view: one row per intervention, its mean Order-free Error and Order
Sensitivity per criterion against each other category.

An intervention is ranked by the mean of its Order-free Errors over the shown
accuracy-like criteria (perplexity is left out of that mean: its error is unbounded
and on another scale). Interventions present at several levels (a compressor at
several sparsities) get one row averaged over their levels; the level column says
which, and the Compression curves view shows the dependence on level.
"""

from __future__ import annotations

import math
from typing import Iterable

import pandas as pd

from leaderboard.data import CATEGORY_ORDER, Board, fmt
from leaderboard.safe import cell

MEAN_COLUMN = "mean OFE (accuracy criteria)"
NOISE_COLUMN = "order effects beyond noise"


def bounded(board: Board, criterion: str) -> bool:
    """Whether the criterion's error is an accuracy-like error in [0, 1] (not perplexity, not descriptive)."""
    crit = board.criteria.get(criterion)
    return crit is not None and crit.has_error and crit.items != "perplexity"


def oriented(board: Board) -> pd.DataFrame:
    """Metrics rows seen from each side: ``name``, ``partner``, ``partner_category`` and the values."""
    if board.metrics.empty:
        return pd.DataFrame(columns=["name", "label", "partner", "partner_category", "criterion",
                                     "order_free_error", "order_sensitivity", "exceeds_noise"])
    info = board.interventions
    frames = []
    for this, other in (("a", "b"), ("b", "a")):
        df = board.metrics.copy()
        df["label"] = df[this]
        df["name"] = df[this].map(lambda l: info[l].name if l in info else l)
        df["partner"] = df[other]
        df["partner_category"] = df[f"{other}_category"]
        frames.append(df)
    return pd.concat(frames, ignore_index=True)


def ranking_table(board: Board, criteria: Iterable[str]) -> pd.DataFrame:
    """The ranking of ``board`` for the chosen criteria (columns in a stable order)."""
    criteria = [c for c in criteria if c in board.criteria]
    sides = oriented(board)
    sides = sides[sides["criterion"].isin(criteria)]
    partner_categories = [c for c in CATEGORY_ORDER if c in set(sides["partner_category"])]
    partner_categories += sorted(set(sides["partner_category"]) - set(partner_categories))
    rows = []
    for name in board.names():
        mine = sides[sides["name"] == name]
        levels = [board.interventions[l].level for l in board.labels_of(name)]
        row: dict[str, object] = {
            "intervention": cell(name),
            "category": cell(board.category_of(name)),
            "levels": cell([", ".join(f"{k}={v}" for k, v in lv.items()) for lv in levels if lv]) or "-",
            "partners": int(mine["partner"].nunique()),
        }
        ofes = []
        for category in partner_categories:
            for criterion in criteria:
                sel = mine[(mine["partner_category"] == category) & (mine["criterion"] == criterion)]
                ofe = sel["order_free_error"].mean() if not sel.empty else math.nan
                row[f"{criterion} OFE vs {category}"] = fmt(ofe)
                row[f"{criterion} OS vs {category}"] = fmt(sel["order_sensitivity"].mean() if not sel.empty else math.nan)
                if bounded(board, criterion) and not sel.empty:
                    ofes.extend(sel["order_free_error"].dropna().tolist())
        row[MEAN_COLUMN] = fmt(sum(ofes) / len(ofes)) if ofes else None
        row[NOISE_COLUMN] = f"{int(mine['exceeds_noise'].sum())} of {len(mine)}" if len(mine) else "-"
        rows.append(row)
    df = pd.DataFrame(rows)
    if df.empty:
        return pd.DataFrame(columns=["rank", "intervention", "category", "levels", "partners", MEAN_COLUMN, NOISE_COLUMN])
    df = df.sort_values(MEAN_COLUMN, na_position="last", kind="stable", ignore_index=True)
    df.insert(0, "rank", range(1, len(df) + 1))
    front = ["rank", "intervention", "category", "levels", "partners", MEAN_COLUMN, NOISE_COLUMN]
    return df[front + [c for c in df.columns if c not in front]]
