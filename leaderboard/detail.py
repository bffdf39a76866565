"""The Intervention detail view: for one intervention, every partner in both orders.

Four tables, all from the same (model, profile) selection:

* the intervention's display metadata (from the store; escaped, links not live);
* every evaluated model that involves it (alone, and with each partner in both
  orders), with its scores: the raw evidence;
* per partner and criterion, the score in each order, Order-free Error and Order
  Sensitivity with their 95% CIs, and whether the order effect exceeds noise;
* the provenance of each of those records (harness, weights, data, hardware, time),
  and the full provenance of one record on demand.
"""

from __future__ import annotations

from typing import Any, Iterable

import pandas as pd

from leaderboard.data import Board, fmt, resolvable_text, significance_text
from leaderboard.safe import cell, link_text, md


def header_markdown(board: Board, name: str) -> str:
    """Name, category and the submission's metadata, every field escaped."""
    meta = board.interventions_meta.get(name) or {}
    lines = [f"### {md(name)} ({md(board.category_of(name))})"]
    if meta.get("description"):
        lines.append(md(meta["description"]))
    authors = meta.get("authors")
    if authors:
        lines.append("**Authors:** " + md("; ".join(map(str, authors)) if isinstance(authors, list) else authors))
    if meta.get("link"):
        lines.append("**Paper or code:** " + link_text(meta["link"]))
    if meta.get("license"):
        lines.append("**Licence:** " + md(meta["license"]))
    if not meta:
        lines.append("_No submission metadata in this store for this intervention._")
    return "\n\n".join(lines)


def _involving(board: Board, name: str) -> pd.DataFrame:
    cells = board.cells
    if cells.empty:
        return cells
    mask = (cells["n_steps"] == 0) | (cells["first_name"] == name) | (cells["second_name"] == name)
    return cells[mask & (cells["n_steps"] <= 2)]  # sequences of three have their own view (leaderboard/sequences.py)


def orders_table(board: Board, name: str, criteria: Iterable[str]) -> pd.DataFrame:
    """Every record involving ``name`` (and the base model), one row each, with its scores."""
    rows = []
    involving = _involving(board, name)
    for rec in involving.to_dict("records"):
        if rec["n_steps"] == 0:
            role, partner = "reference: base model", ""
        elif rec["n_steps"] == 1:
            role, partner = "alone", ""
        else:
            first_is_me = rec["first_name"] == name
            partner = rec["second"] if first_is_me else rec["first"]
            role = f"{name} first" if first_is_me else f"{name} second"
        row: dict[str, Any] = {
            "order": cell(rec["order"]),
            "partner": cell(partner),
            "role": cell(role),
            "status": cell(rec["status"]) + (f": {cell(rec['error'])}" if rec.get("error") else ""),
        }
        for criterion in criteria:
            row[criterion] = fmt(rec.get(f"score:{criterion}"))
        row["finished_at"] = cell(rec["finished_at"])
        row["cell_id"] = cell(rec["cell_id"])
        rows.append(row)
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    rank = {"reference: base model": 0, "alone": 1}
    df["_sort"] = df["role"].map(lambda r: rank.get(r, 2))
    return df.sort_values(["_sort", "partner", "role"], kind="stable").drop(columns="_sort").reset_index(drop=True)


def _ci(low: Any, high: Any) -> str:
    low, high = fmt(low), fmt(high)
    return "" if low is None or high is None else f"[{low:.3f}, {high:.3f}]"


def pairs_table(board: Board, name: str, criteria: Iterable[str]) -> pd.DataFrame:
    """Per partner and criterion: both orders' scores, OFE and OS with CIs, beyond noise or not."""
    if board.metrics.empty:
        return pd.DataFrame()
    info = board.interventions
    criteria = list(criteria)
    rows = []
    metrics = board.metrics[board.metrics["criterion"].isin(criteria)]
    for row in metrics.itertuples(index=False):
        a_is_me = info[row.a].name == name if row.a in info else row.a == name
        b_is_me = info[row.b].name == name if row.b in info else row.b == name
        if not (a_is_me or b_is_me):
            continue
        me, partner = (row.a, row.b) if a_is_me else (row.b, row.a)
        mine_first, partner_first = (row.score_ab, row.score_ba) if a_is_me else (row.score_ba, row.score_ab)
        rows.append(
            {
                "intervention": cell(me),
                "partner": cell(partner),
                "partner category": cell(row.b_category if a_is_me else row.a_category),
                "criterion": cell(row.criterion),
                "score, intervention first": fmt(mine_first),
                "score, partner first": fmt(partner_first),
                "Order-free Error": fmt(row.order_free_error),
                "OFE 95% CI": _ci(row.ofe_ci_low, row.ofe_ci_high),
                "Order Sensitivity": fmt(row.order_sensitivity),
                "OS 95% CI": _ci(row.os_ci_low, row.os_ci_high),
                "AB−BA 95% CI": _ci(row.diff_ci_low, row.diff_ci_high),
                "beyond noise": (
                    "unknown (reported: no per-item scores)"
                    if board.reported and significance_text(row).startswith("unknown")
                    else significance_text(row)
                ),
                "smallest resolvable OS": resolvable_text(row),
                "items": int(row.n_items),
                "_order": criteria.index(row.criterion),
            }
        )
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    return df.sort_values(["partner", "_order"], kind="stable").drop(columns="_order").reset_index(drop=True)


def provenance_table(board: Board, name: str) -> pd.DataFrame:
    """A summary of each record's provenance (harness, model weights, data, hardware, cost)."""
    rows = []
    for cell_id in _involving(board, name)["cell_id"] if not board.cells.empty else []:
        record = board.record(cell_id)
        if record is None:
            continue
        prov, timings = record.provenance, record.timings
        hardware = prov.hardware or {}
        rows.append(
            {
                "order": cell(board.cells.loc[board.cells["cell_id"] == cell_id, "order"].iloc[0]),
                "harness": cell(prov.harness_version),
                "model source": cell(prov.model_source),
                "weights sha256": cell(str(prov.weights_sha256 or "")[:16]),
                "dtype / device": cell(f"{prov.dtype} / {prov.device}"),
                "seed": cell(prov.seed),
                "prompt format": cell(prov.prompt_format),
                "forget corpus": cell((prov.forget_corpus or {}).get("name")),
                "calibration": cell((prov.calibration or {}).get("name")),
                "protocol": cell(", ".join(f"{k}={v}" for k, v in (prov.protocol or {}).items())),
                "hardware": cell(f"{hardware.get('cpu')}, {hardware.get('cores')} cores, gpu {hardware.get('gpu')}"),
                "total s": fmt(timings.total_s, 1),
                "peak MB": fmt(record.peak_memory_mb, 0),
                "cell_id": cell(cell_id),
            }
        )
    return pd.DataFrame(rows)


def record_choices(board: Board, name: str) -> list[tuple[str, str]]:
    """(shown text, cell id) of the records involving ``name``, for the full-provenance picker."""
    involving = _involving(board, name)
    return [(cell(o), str(c)) for o, c in zip(involving.get("order", []), involving.get("cell_id", []))]


def record_details(board: Board, cell_id: str | None) -> dict[str, Any]:
    """The full provenance, sequence, timings and status of one record (shown by gr.JSON, as text)."""
    record = board.record(cell_id) if cell_id else None
    if record is None:
        return {}
    keep = (
        "cell_id",
        "label",
        "status",
        "error",
        "sequence",
        "recompressed_with",
        "provenance",
        "timings",
        "peak_memory_mb",
        "finished_at",
        "schema_version",
    )
    stored = record.to_json()
    return {k: stored[k] for k in keep if k in stored}
