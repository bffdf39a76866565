"""Rules shared by every store: which record of a cell wins, and where metrics come from.

A store may hold a cell more than once (re-runs, newer harness versions, records
published from several machines). The leaderboard shows one record per cell and
computes composability metrics from exactly those records, so the choice is made
here once, for the app, ``publish`` and both stores alike.
"""

from __future__ import annotations

import hashlib
import io
import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import pandas as pd

from benchmark.metrics import COLUMNS, compute_composability, write_composability
from benchmark.record_schema import Record
from benchmark.stores.layout import Group, is_intervention_path, is_metrics_csv, is_record_path

DEFAULT_BOOTSTRAP = 1000
DEFAULT_CONFIDENCE = 0.95


class StoreError(RuntimeError):
    """A store that cannot be read or written; the message names the store and the file."""


_STRING_COLUMNS = ["model_id", "profile", "dtype", "a", "a_category", "b", "b_category", "criterion"]


def _rank(record: Mapping[str, Any]) -> tuple[bool, str]:
    typed = Record.of(record)
    return typed.status == "ok", typed.finished_at or ""


def replaces(old: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    """True when ``new`` should replace ``old`` for the same cell.

    A successful record beats a failed one; among equals the later ``finished_at``
    wins; a tie keeps what is there (so publishing twice changes nothing).
    """
    return _rank(new) > _rank(old)


def cell_key(record: Mapping[str, Any]) -> tuple[Any, ...]:
    """One cell of one grid, whatever harness version produced it."""
    typed = Record.of(record)
    return (*typed.group, typed.cell_id)


def best_by_cell(
    records: Iterable[Mapping[str, Any]], key: Callable[[Mapping[str, Any]], Any] = cell_key
) -> dict[Any, Mapping[str, Any]]:
    """The winning record (see :func:`replaces`) for every value of ``key`` (a cell by default); objects kept as given."""
    best: dict[Any, Mapping[str, Any]] = {}
    for record in records:
        k = key(record)
        if k not in best or replaces(best[k], record):
            best[k] = record
    return best


def oldest_first(records: Iterable[Mapping[str, Any]]) -> list[dict]:
    def when(record: Mapping[str, Any]) -> tuple[str, str]:
        typed = Record.of(record)
        return typed.finished_at or "", typed.cell_id

    return sorted(records, key=when)


def select_latest(records: Iterable[Mapping[str, Any]]) -> list[dict]:
    """The winning record of every cell (see :func:`replaces`), oldest first.

    Oldest first matters: :func:`benchmark.metrics.find_pairs` lets the last record of
    an ordered pair win, which is then the newest.
    """
    return oldest_first(dict(r) for r in best_by_cell(records).values())


def by_group(records: Iterable[Mapping[str, Any]]) -> dict[Group, list[dict]]:
    groups: dict[Group, list[dict]] = {}
    for record in records:
        groups.setdefault(Record.of(record).group, []).append(dict(record))
    return groups


def _group_seed(records: list[dict]) -> int:
    for record in records:
        seed = Record.of(record).provenance.seed
        if seed is not None and seed >= 0:
            return seed
    return 0


def group_metrics(
    records: list[dict], n_bootstrap: int = DEFAULT_BOOTSTRAP, confidence: float = DEFAULT_CONFIDENCE
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Composability rows of one group's selected records, and the settings that produced them.

    The settings hold nothing that differs between two publishers of the same records
    (no paths, no clocks), so the files written from them are byte-identical.
    """
    records = select_latest(records)
    seed = _group_seed(records)
    df = compute_composability(records, n_bootstrap=n_bootstrap, seed=seed, confidence=confidence)
    cells = "\n".join(sorted(f"{r.cell_id}:{r.finished_at}:{r.status}" for r in map(Record.of, records)))
    settings = {
        "n_bootstrap": n_bootstrap,
        "seed": seed,
        "confidence": confidence,
        "n_records": len(records),
        "records_sha256": hashlib.sha256(cells.encode()).hexdigest(),
    }
    return df, settings


def metrics_bytes(df: pd.DataFrame, settings: Mapping[str, Any]) -> tuple[bytes, bytes]:
    """``composability.csv`` and ``.json`` exactly as :func:`benchmark.metrics.write_composability` writes them."""
    with tempfile.TemporaryDirectory(prefix="compose-bench-metrics-") as tmp:
        csv_path, json_path = write_composability(df, Path(tmp), dict(settings))
        return csv_path.read_bytes(), json_path.read_bytes()


def empty_metrics() -> pd.DataFrame:
    return pd.DataFrame(columns=COLUMNS)


def _add_later_columns(df: pd.DataFrame) -> None:
    """Fill ``significance`` and ``mde`` (added 2026-12-01) in a table written before them.

    The significance follows from what the old table says: no CI (NaN) means no per-item
    scores, i.e. ``unknown``; otherwise ``exceeds_noise``. The MDE cannot be recovered: NaN.
    """
    if "significance" not in df.columns and {"exceeds_noise", "diff_ci_low"} <= set(df.columns):
        beyond = df["exceeds_noise"].astype(str).str.lower().eq("true")
        df["significance"] = [
            "unknown" if pd.isna(low) else ("beyond_noise" if b else "within_noise")
            for low, b in zip(df["diff_ci_low"], beyond)
        ]
    if "mde" not in df.columns:
        df["mde"] = float("nan")


def read_metrics_csv(data: bytes | str | Path) -> dict[Group, pd.DataFrame]:
    """A ``composability.csv`` split by (model_id, profile, dtype).

    A table written before dtype joined the group has no ``dtype`` column: its rows get
    dtype None, a group no record belongs to, so those metrics are recomputed from the records.
    """
    source = io.BytesIO(data) if isinstance(data, bytes) else data
    df = pd.read_csv(source, dtype={c: "string" for c in _STRING_COLUMNS})
    if "dtype" not in df.columns:
        df.insert(COLUMNS.index("dtype"), "dtype", pd.Series([pd.NA] * len(df), dtype="string"))
    _add_later_columns(df)
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"composability table lacks column(s) {missing}")
    df = df[COLUMNS].astype({c: object for c in _STRING_COLUMNS})
    df[_STRING_COLUMNS] = df[_STRING_COLUMNS].where(df[_STRING_COLUMNS].notna(), None)
    df["exceeds_noise"] = df["exceeds_noise"].astype(str).str.lower().eq("true")
    out: dict[Group, pd.DataFrame] = {}
    for group, rows in df.groupby(["model_id", "profile", "dtype"], dropna=False, sort=False):
        out[tuple(None if pd.isna(g) else g for g in group)] = rows.reset_index(drop=True)
    return out


@dataclass
class Source:
    """What one place in a store holds: records, metrics it computed itself, display metadata."""

    name: str
    records: list[dict] = field(default_factory=list)
    metrics: dict[Group, pd.DataFrame] = field(default_factory=dict)
    interventions: dict[str, dict] = field(default_factory=dict)


@dataclass(frozen=True)
class Snapshot:
    """A store's content as the leaderboard uses it: one record per cell and their metrics."""

    description: str
    records: list[dict]
    metrics: pd.DataFrame
    interventions: dict[str, dict]
    metrics_origin: dict[Group, str]


def merge_sources(
    description: str,
    sources: list[Source],
    n_bootstrap: int = DEFAULT_BOOTSTRAP,
    confidence: float = DEFAULT_CONFIDENCE,
) -> Snapshot:
    """One :class:`Snapshot` from the sources of a store.

    A group's stored metrics are used when every selected record of the group comes
    from the one source that stored them (they were computed from exactly those
    records); otherwise the metrics are recomputed from the selected records.
    Intervention metadata: the first source that describes a name wins.
    """
    origin_of: dict[int, Source] = {}
    everything: list[dict] = []
    for source in sources:
        for record in source.records:
            origin_of[id(record)] = source
            everything.append(record)
    best = best_by_cell(everything)
    selected = oldest_first(best.values())
    source_of_cell = {key: origin_of[id(r)] for key, r in best.items()}

    frames: list[pd.DataFrame] = []
    origin: dict[Group, str] = {}
    for group, records in by_group(selected).items():
        owners = {id(source_of_cell[cell_key(r)]): source_of_cell[cell_key(r)] for r in records}
        owner = next(iter(owners.values())) if len(owners) == 1 else None
        if owner is not None and group in owner.metrics:
            frames.append(owner.metrics[group])
            origin[group] = f"stored in {owner.name}"
        else:
            df, _ = group_metrics(records, n_bootstrap=n_bootstrap, confidence=confidence)
            frames.append(df)
            origin[group] = "recomputed from the records"
    frames = [f for f in frames if not f.empty]
    metrics = pd.concat(frames, ignore_index=True) if frames else empty_metrics()

    interventions: dict[str, dict] = {}
    for source in sources:
        for name, meta in source.interventions.items():
            interventions.setdefault(name, meta)
    return Snapshot(description, selected, metrics, interventions, origin)


def layout_source(name: str, files: Mapping[str, bytes]) -> Source:
    """The :class:`Source` of a store layout (see :mod:`benchmark.stores.layout`) given its files."""
    source = Source(name)
    for path in sorted(files):
        data = files[path]
        try:
            if is_record_path(path):
                record = json.loads(data)
                if not isinstance(record, dict):
                    raise ValueError(f"not a result record (a {type(record).__name__}, not an object)")
                Record.of(record)  # validated here, so a wrong record names its store and file
                source.records.append(record)
            elif is_metrics_csv(path):
                source.metrics.update(read_metrics_csv(data))
            elif is_intervention_path(path):
                meta = json.loads(data)
                if isinstance(meta, dict) and isinstance(meta.get("name"), str):
                    source.interventions[meta["name"]] = meta
        except ValueError as exc:  # json.JSONDecodeError and pandas' parser errors are ValueErrors
            raise StoreError(f"{name}: {path}: cannot be read ({exc})") from None
    return source
