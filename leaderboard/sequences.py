"""The Sequences of three view: one triple's six orders side by side, what they add up to, and why.

Three tables for the chosen triple (benchmark/sequence_metrics.py computes every figure):

* **orders**: the six orders, one row each (its full label, with a re-applied compressor), with
  each chosen criterion's score, so the orders read side by side down a column;
* **summary**: per criterion, the Order-free Error over the six orders (and which order gives it),
  the Order Sensitivity as their spread (max - min) with its 95% interval, the spread that
  evaluation noise alone gives, and whether the spread exceeds it;
* **swaps**: the six adjacent swaps, each the difference made by swapping two neighbours with the
  third intervention before or after them, with its interval: the terms the spread is made of.

Labels come from submissions and are untrusted: they go into ``str`` cells only (never into
column headers, Markdown or HTML), as everywhere in the app (:mod:`leaderboard.safe`).
"""

from __future__ import annotations

import math
from typing import Any, Iterable

import pandas as pd

from benchmark.sequence_metrics import ORDERS
from leaderboard.data import Board, fmt, order_label
from leaderboard.safe import cell

SEPARATOR = " / "


def triple_choices(board: Board) -> list[str]:
    """The board's triples, as ``a / b / c`` (labels sorted): the choices of the view's dropdown."""
    triples, _, _ = board.sequences
    return [SEPARATOR.join(t.labels) for t in triples]


def _triple(board: Board, choice: str | None):
    triples, _, _ = board.sequences
    return next((t for t in triples if SEPARATOR.join(t.labels) == choice), None)


def _ci(low: Any, high: Any) -> str:
    if any(not isinstance(v, (int, float)) or math.isnan(v) for v in (low, high)):
        return "no CI (no per-item scores)"
    if any(math.isinf(v) for v in (low, high)):
        return "diverged"
    return f"[{low:.3f}, {high:.3f}]"


def _in_words(significance: Any) -> str:
    return {
        "beyond_noise": "yes",
        "within_noise": "no",
        "diverged": "diverged (an order gave non-finite outputs)",
        "unknown": "unknown (no per-item scores)",
    }.get(str(significance), str(significance))


def _order_text(triple: Any, order: str) -> str:
    """An order's full label as the records name it (with a re-applied compressor)."""
    return order_label(triple.records[order])


def orders_table(board: Board, choice: str | None, criteria: Iterable[str]) -> pd.DataFrame:
    """The six orders of the triple, one row each, with each criterion's score (``diverged`` left empty)."""
    triple = _triple(board, choice)
    if triple is None:
        return pd.DataFrame()
    rows = []
    for order in ORDERS:
        record = triple.records[order]
        row: dict[str, Any] = {"order": cell(_order_text(triple, order)), "positions": order}
        for criterion in criteria:
            row[criterion] = fmt(record.score(criterion))
        row["cell_id"] = cell(record.cell_id)
        rows.append(row)
    return pd.DataFrame(rows)


def summary_table(board: Board, choice: str | None, criteria: Iterable[str]) -> pd.DataFrame:
    """Per criterion: OFE over the orders (and the best one), OS as the spread, its interval and the noise flag."""
    triple = _triple(board, choice)
    _, table, _ = board.sequences
    if triple is None or table.empty:
        return pd.DataFrame()
    mine = table[(table["a"] == triple.labels[0]) & (table["b"] == triple.labels[1]) & (table["c"] == triple.labels[2])]
    rows = []
    for criterion in criteria:
        sel = mine[mine["criterion"] == criterion]
        if sel.empty:
            continue
        r = sel.iloc[0]
        tied = r["order_sensitivity"] == 0  # every order scored the same: no order is the best or the highest

        def named(order: Any, tied: bool = bool(tied)) -> str:
            return "all six equal" if tied else cell(_order_text(triple, order)) if order in ORDERS else "-"

        rows.append(
            {
                "criterion": criterion,
                "Order-free Error": fmt(r["order_free_error"]),
                "OFE 95% CI": _ci(r["ofe_ci_low"], r["ofe_ci_high"]),
                "best order": named(r["best_order"]),
                "Order Sensitivity (max - min)": fmt(r["order_sensitivity"]),
                "OS 95% CI": _ci(r["os_ci_low"], r["os_ci_high"]),
                "highest": named(r["max_order"]),
                "lowest": named(r["min_order"]),
                "noise spread (95%)": fmt(r["noise_spread"]),
                "beyond noise": _in_words(r["significance"]),
                "items": int(r["n_items"]),
            }
        )
    return pd.DataFrame(rows)


def swaps_table(board: Board, choice: str | None, criteria: Iterable[str]) -> pd.DataFrame:
    """The six adjacent swaps per criterion: score(order) - score(swapped order), with its interval."""
    triple = _triple(board, choice)
    _, _, swaps = board.sequences
    if triple is None or swaps.empty:
        return pd.DataFrame()
    mine = swaps[(swaps["a"] == triple.labels[0]) & (swaps["b"] == triple.labels[1]) & (swaps["c"] == triple.labels[2])]
    rows = []
    for criterion in criteria:
        for r in mine[mine["criterion"] == criterion].itertuples():
            rows.append(
                {
                    "criterion": criterion,
                    "swapped pair": cell(r.pair),
                    "third": cell(f"{r.other} ({r.other_position} the pair)"),
                    "order": cell(_order_text(triple, r.order)),
                    "swapped order": cell(_order_text(triple, r.swapped_order)),
                    "difference": fmt(r.diff),
                    "95% CI": _ci(r.diff_ci_low, r.diff_ci_high),
                    "beyond noise": _in_words(r.significance),
                }
            )
    return pd.DataFrame(rows)


def note_markdown(board: Board) -> str:
    """The line above the view: what it shows, or why it is empty."""
    if not board.sequences[0]:
        return (
            "_No sequence of three in this selection: run a profile with `protocol.sequence_length: 3` "
            "(`compose-bench run --profile triples`)._"
        )
    return (
        "The six orders of three interventions (one per category), side by side; `positions` names each order "
        "by the sorted labels a, b, c. **OFE**: the best order's error; **OS**: max - min of the six scores, beyond "
        "noise when above the spread that evaluation noise alone gives (paired bootstrap over the items). "
        "**Swaps**: the difference between two orders one adjacent swap apart; the spread is a sum of them along "
        "a path of swaps."
    )
