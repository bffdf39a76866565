"""Load a results store as pandas frames: the Python side of the leaderboard.

    >>> from benchmark.results import load
    >>> res = load("runs")                       # a folder, or "hf://datasets/OWNER/NAME"
    >>> res.records.query("status == 'ok'")[["label", "score:mmlu", "reported"]]
    >>> res.metrics.query("criterion == 'edit_success'")     # Order-free Error / Order Sensitivity rows
    >>> res.runs                                             # one row per run: ok / failed counts
    >>> res.failures                                         # one row per failed cell, with its reason

``records`` has one row per stored record (the one the leaderboard shows for each cell):
its group (``model_id``, ``profile``, ``dtype``), ``harness_version``, ``label``, ``first``,
``second``, ``status``, ``error``, ``finished_at``, ``reported`` (True for figures reported by
a paper, not re-run: see :mod:`benchmark.reported`), ``reproduce`` (the command that re-runs
it) and one ``score:<criterion>`` column per criterion. ``metrics`` has the columns of
``composability.csv`` (docs/FORMATS.md) plus ``reported``. Nothing here imports torch.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

import pandas as pd

from benchmark.record_schema import Record
from benchmark.stores import Snapshot, open_store

_REVISION = re.compile(r"\+g([0-9a-f]{7,40})")

RUN_KEY = ["model_id", "profile", "dtype", "harness_version"]


def reproduce_command(records: Iterable[Record | Mapping[str, Any]]) -> str:
    """The command that reproduces ``records`` (one cell, or both orders of a pair), on one line.

    It names the profile and model, checks out the harness revision the records were made
    with (from ``harness_version``'s ``+g<hash>``), and lists each intervention's submission
    hash so a re-run can be checked against it. Reported records get the command that re-runs
    the paper's protocol with this harness, with a note that the shown figures are the paper's.
    """
    typed = [Record.of(r) for r in records]
    if not typed:
        return ""
    prov = typed[0].provenance
    run = f"compose-bench run --profile {prov.profile} --model {prov.model_id}"
    if all(r.is_reported for r in typed):
        return f"{run}  # re-runs the paper's protocol here; the figures shown are the paper's (reported, not re-run)"
    versions = sorted({str(r.provenance.harness_version) for r in typed})
    revisions = sorted({m.group(1) for v in versions for m in [_REVISION.search(v)] if m})
    prefix = f"git checkout {revisions[0]} && " if len(revisions) == 1 else ""
    hashes: dict[str, str] = {}
    for record in typed:
        for step in record.sequence:
            if step.submission_sha256:
                hashes.setdefault(step.name, step.submission_sha256[:12])
    notes = [f"harness {', '.join(versions)}"] + [f"{name} sha256:{sha}" for name, sha in sorted(hashes.items())]
    return f"{prefix}{run}  # " + "; ".join(notes)


def records_frame(records: Iterable[Record | Mapping[str, Any]]) -> pd.DataFrame:
    """One row per record: group, harness, steps, status, the reported mark, the command and every score."""
    rows = []
    for record in map(Record.of, records):
        prov, labels = record.provenance, record.labels
        row: dict[str, Any] = {
            "cell_id": record.cell_id,
            "model_id": prov.model_id,
            "profile": prov.profile,
            "dtype": prov.dtype,
            "harness_version": prov.harness_version,
            "label": record.label or " -> ".join(labels) or "base",
            "first": labels[0] if labels else None,
            "second": labels[1] if len(labels) > 1 else None,
            "status": record.status,
            "error": record.error,
            "finished_at": record.finished_at,
            "reported": record.is_reported,
            "reproduce": reproduce_command([record]),
        }
        for key, value in record.scores.items():
            row[f"score:{key}"] = value
        rows.append(row)
    return pd.DataFrame(rows)


def one_line(text: Any, limit: int = 200) -> str:
    """The first line of a failure reason, at most ``limit`` characters (the full text stays in the record)."""
    lines = [line.strip() for line in str(text or "").splitlines() if line.strip()]
    first = lines[0] if lines else "(no reason recorded)"
    return first if len(first) <= limit else first[: limit - 1] + "…"


def _run_key(record: Record) -> tuple[str, ...]:
    prov = record.provenance
    return tuple("-" if getattr(prov, k) is None else str(getattr(prov, k)) for k in RUN_KEY)


def runs_frame(records: Iterable[Record | Mapping[str, Any]]) -> pd.DataFrame:
    """One row per run (model, profile, dtype, harness version): source, when, cells, ok and failed counts.

    A "run" is what one harness version produced for one group; records carry no run id, and a
    resumed run is the same run. ``reproduce`` is the command for the whole run.
    """
    columns = [*RUN_KEY, "source", "first_finished", "last_finished", "cells", "ok", "failed", "reproduce"]
    runs: dict[tuple[str, ...], list[Record]] = {}
    for record in map(Record.of, records):
        runs.setdefault(_run_key(record), []).append(record)
    rows = []
    for key in sorted(runs):
        group = runs[key]
        when = sorted(str(r.finished_at) for r in group if r.finished_at)
        ok = sum(1 for r in group if r.status == "ok")
        rows.append(
            {
                **dict(zip(RUN_KEY, key)),
                "source": "reported in the paper, not re-run"
                if all(r.is_reported for r in group)
                else "re-run by the harness",
                "first_finished": when[0] if when else None,
                "last_finished": when[-1] if when else None,
                "cells": len(group),
                "ok": ok,
                "failed": len(group) - ok,
                "reproduce": reproduce_command(group),
            }
        )
    return pd.DataFrame(rows, columns=columns)


def failures_frame(records: pd.DataFrame) -> pd.DataFrame:
    """One row per failed cell: its run, its label and the one-line reason."""
    columns = [*RUN_KEY, "label", "status", "reason", "cell_id"]
    if records.empty:
        return pd.DataFrame(columns=columns)
    failed = records[records["status"] != "ok"]
    out = failed.assign(
        reason=failed["error"].map(one_line),
        **{c: failed[c].map(lambda v: "-" if v is None else str(v)) for c in RUN_KEY},
    )
    return out[columns].reset_index(drop=True)


@dataclass(frozen=True)
class Results:
    """A store's content as frames (see the module docstring); ``snapshot`` keeps the raw records."""

    records: pd.DataFrame
    metrics: pd.DataFrame
    runs: pd.DataFrame
    failures: pd.DataFrame
    snapshot: Snapshot


def from_snapshot(snapshot: Snapshot) -> Results:
    """The frames of an already-read store snapshot."""
    typed = [Record.of(r) for r in snapshot.records]  # validated once, read through the same type everywhere below
    records = records_frame(typed)
    groups = {tuple(str(x) for x in r.group) for r in typed if r.is_reported}
    metrics = snapshot.metrics.copy()
    metrics["reported"] = (
        [
            (str(m), str(p), str(d)) in groups
            for m, p, d in zip(metrics["model_id"], metrics["profile"], metrics["dtype"])
        ]
        if not metrics.empty
        else pd.Series(dtype=bool)
    )
    return Results(records, metrics.reset_index(drop=True), runs_frame(typed), failures_frame(records), snapshot)


def load(store: str | Path = "runs") -> Results:
    """Read a results store (a folder, or ``hf://datasets/OWNER/NAME``) into :class:`Results`."""
    return from_snapshot(open_store(store).read())
