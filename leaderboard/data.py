"""A store snapshot as the tables every view reads, filtered by model and profile.

The views never touch raw records: they read a :class:`Board`, which holds the
records of one (model, profile, dtype) as :class:`benchmark.record_schema.Record` (the store's
dicts are validated once, in :func:`build_board`) with their interventions resolved
to names, categories and levels, plus the composability rows of the same group.
Filtering happens here once so that every view shows the same subset.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Mapping

import pandas as pd

from benchmark.metrics import Criterion, headline_criteria, load_criteria
from benchmark.record_schema import Record
from benchmark.stores import Snapshot

GROUP_COLUMNS = ("model_id", "profile", "dtype")  # what benchmark.records.group_key returns

CATEGORY_ORDER = ("editing", "unlearning", "compression", "multi")
ARROW = " → "

CATEGORY_CRITERIA = {
    "editing": ("edit_success", "generalization", "locality"),
    "unlearning": ("wmdp",),
    "compression": ("mmlu", "perplexity"),
}
"""What each category is judged on, shown first in its ranking: an editor by its edits, an unlearner by
WMDP, a compressor by the utility it keeps (MMLU, perplexity; its level is the axis, not a score)."""

HEADLINE_LEVELS = {"bits": 4, "sparsity": 0.25}
"""The levels the paper's composability figures use (4-bit quantization, sparsity 0.25): the default
of the level selectors, so a pair matrix holds one level per compressor (at most ten by ten)."""

REPORTED_MARK = "reported in the paper, not re-run"


@dataclass(frozen=True)
class Intervention:
    """One intervention at one level, as it appears in records (its ``label``)."""

    label: str
    name: str
    category: str
    level: Mapping[str, Any] | None = None

    @property
    def level_parameter(self) -> str | None:
        return next(iter(self.level), None) if self.level else None

    @property
    def level_value(self) -> float | None:
        if not self.level:
            return None
        value = next(iter(self.level.values()))
        return float(value) if isinstance(value, (int, float)) else None


def _steps(record: Record) -> list[Intervention]:
    return [Intervention(step.label, step.name, step.category, step.level) for step in record.sequence]


def order_label(record: Record) -> str:
    """``a → b`` (plus the re-applied compressor, if any): how the views name an order (:func:`sequence_label`)."""
    return record.order(arrow=ARROW, empty="base model")


def fmt(value: Any, digits: int = 3) -> float | None:
    """A rounded float for a table cell, or None for missing / non-finite values."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return round(value, digits) if math.isfinite(value) else None


def significance_text(row: Any) -> str:
    """A composability row's order effect in words: beyond noise ("yes"), within noise ("no"), unknown (no per-item
    scores, e.g. reported figures) or diverged (a model's outputs were not finite).

    Reads the ``significance`` and ``mde`` columns of benchmark/metrics.py; a table written before them has only
    ``exceeds_noise``.
    """
    significance = getattr(row, "significance", None)
    if not isinstance(significance, str):
        return "yes" if bool(row.exceeds_noise) else "no"
    if significance == "beyond_noise":
        return "yes"
    if significance == "within_noise":
        return "no"
    if significance == "diverged":
        return "diverged (one order's model gave non-finite outputs)"
    return "unknown (no per-item scores)"


def resolvable_text(row: Any) -> str:
    """The smallest order effect this row's sample resolves (the ``mde`` column: 80% power of the paired bootstrap),
    so that "no" reads as "not resolvable at this size" where the sample is small; "-" where not estimable."""
    mde = getattr(row, "mde", None)
    if isinstance(mde, (int, float)) and math.isfinite(mde) and mde > 0:
        return f"{mde:.3g}"
    return "-"


@dataclass
class Board:
    """Records and metrics of one (model, profile), or of the whole store when unfiltered."""

    records: list[Record]
    metrics: pd.DataFrame
    interventions_meta: dict[str, dict]
    criteria: dict[str, Criterion]
    description: str = ""
    metrics_origin: dict = field(default_factory=dict)

    # ------------------------------------------------------------------ filters

    @cached_property
    def groups(self) -> pd.DataFrame:
        """(model_id, profile, dtype, records) of every group, the largest first."""
        rows = [r.group for r in self.records]
        df = pd.DataFrame(rows, columns=list(GROUP_COLUMNS)).astype(str)
        counts = df.value_counts().rename("records").reset_index()
        return counts.sort_values(["records", *GROUP_COLUMNS], ascending=[False, True, True, True], ignore_index=True)

    def models(self) -> list[str]:
        return list(dict.fromkeys(self.groups["model_id"]))

    def profiles(self, model_id: str | None) -> list[str]:
        return list(dict.fromkeys(self.groups.loc[self.groups["model_id"] == str(model_id), "profile"]))

    def dtypes(self, model_id: str | None, profile: str | None) -> list[str]:
        rows = self.groups[(self.groups["model_id"] == str(model_id)) & (self.groups["profile"] == str(profile))]
        return list(dict.fromkeys(rows["dtype"]))

    def select(self, model_id: str | None, profile: str | None, dtype: str | None = None) -> "Board":
        """The board of one group (an empty board when there is no such group).

        ``dtype`` None picks the group's largest dtype, so a (model, profile) evaluated in
        one dtype only needs no third choice; records of two dtypes are never mixed.
        """
        if dtype is None:
            dtypes = self.dtypes(model_id, profile)
            dtype = dtypes[0] if dtypes else None
        wanted = (str(model_id), str(profile), str(dtype))

        def keep(record: Record) -> bool:
            return tuple(str(part) for part in record.group) == wanted

        metrics = self.metrics
        if not metrics.empty:
            same = pd.Series(True, index=metrics.index)
            for column, value in zip(GROUP_COLUMNS, wanted):
                same &= metrics[column].astype(str) == value
            metrics = metrics[same]
        return Board(
            [r for r in self.records if keep(r)],
            metrics.reset_index(drop=True),
            self.interventions_meta,
            self.criteria,
            self.description,
            self.metrics_origin,
        )

    # ------------------------------------------------------------------ source and levels

    @cached_property
    def reported(self) -> bool:
        """Whether this board holds figures reported by someone else (every record has a ``reported`` block).

        A board is one (model, profile, dtype) group and reported records carry their own dtype
        (``reported``), so a board is either all reported or all re-run.
        """
        return bool(self.records) and all(r.is_reported for r in self.records)

    def level_values(self, parameter: str) -> list[float]:
        """The values of a level parameter (``bits``, ``sparsity``) present in this board, ascending."""
        values = {
            i.level_value
            for i in self.interventions.values()
            if i.level_parameter == parameter and i.level_value is not None
        }
        return sorted(values)

    def level_default(self, parameter: str) -> float | None:
        """The paper's headline level when present, else the lowest level, else None."""
        values = self.level_values(parameter)
        headline = HEADLINE_LEVELS.get(parameter)
        if headline is not None and any(math.isclose(v, headline) for v in values):
            return float(headline)
        return values[0] if values else None

    def labels_at(self, levels: Mapping[str, Any] | None) -> list[str]:
        """Labels of interventions without a level, and of those at the chosen value of their parameter.

        ``levels`` maps a parameter to a value (None or a missing parameter keeps every level of it).
        Ordered by category, name and level.
        """
        levels = {k: v for k, v in (levels or {}).items() if v not in (None, "")}
        out = []
        for name in self.names():
            for label in self.labels_of(name):
                item = self.interventions[label]
                wanted = levels.get(item.level_parameter) if item.level_parameter else None
                if wanted is not None and (
                    item.level_value is None or not math.isclose(item.level_value, float(wanted))
                ):
                    continue
                out.append(label)
        return out

    # ------------------------------------------------------------------ tables

    @cached_property
    def ok_records(self) -> list[Record]:
        return [r for r in self.records if r.status == "ok"]

    @cached_property
    def interventions(self) -> dict[str, Intervention]:
        """Every intervention label applied in this board's records."""
        out: dict[str, Intervention] = {}
        for record in self.records:
            for step in _steps(record):
                out.setdefault(step.label, step)
        return out

    def names(self) -> list[str]:
        """Intervention names, by category then name."""
        by_name = {i.name: i.category for i in self.interventions.values()}
        rank = {c: n for n, c in enumerate(CATEGORY_ORDER)}
        return sorted(by_name, key=lambda n: (rank.get(by_name[n], len(rank)), n))

    def category_of(self, name: str) -> str:
        return next((i.category for i in self.interventions.values() if i.name == name), "?")

    def labels_of(self, name: str) -> list[str]:
        return sorted(
            (i.label for i in self.interventions.values() if i.name == name),
            key=lambda lab: (
                self.interventions[lab].level_value if self.interventions[lab].level_value is not None else -1,
                lab,
            ),
        )

    @cached_property
    def cells(self) -> pd.DataFrame:
        """One row per record: ids, status, its steps and every score (columns ``score:<criterion>``)."""
        rows = []
        for record in self.records:
            steps = _steps(record)
            prov = record.provenance
            row: dict[str, Any] = {
                "cell_id": record.cell_id,
                "status": record.status,
                "error": record.error,
                "order": order_label(record),
                "n_steps": len(steps),
                "first": steps[0].label if steps else None,
                "second": steps[1].label if len(steps) > 1 else None,
                "first_name": steps[0].name if steps else None,
                "second_name": steps[1].name if len(steps) > 1 else None,
                "recompressed_with": record.recompressed_with,
                "finished_at": record.finished_at,
                "model_id": prov.model_id,
                "profile": prov.profile,
                "dtype": prov.dtype,
            }
            for key, value in record.scores.items():
                row[f"score:{key}"] = fmt(value, 6)
            rows.append(row)
        return pd.DataFrame(rows)

    @cached_property
    def sequences(self) -> tuple[list, pd.DataFrame, pd.DataFrame]:
        """Sequences of three in this board: (triples, their table, their swap terms); see benchmark/sequence_metrics.py.

        Computed from the records when first asked (no store holds them yet); empty without triples.
        """
        from benchmark.sequence_metrics import compute_sequences, find_triples

        triples, _ = find_triples(self.ok_records)
        if not triples:
            return [], *compute_sequences([], criteria=self.criteria)
        return triples, *compute_sequences(self.ok_records, criteria=self.criteria)

    def record(self, cell_id: str) -> Record | None:
        return next((r for r in self.records if r.cell_id == cell_id), None)

    def criteria_with_scores(self) -> list[str]:
        """Criteria present in the metrics (or, without pairs, in the scores), in criteria.yaml order."""
        present = (
            set(self.metrics["criterion"])
            if not self.metrics.empty
            else {c.removeprefix("score:") for c in self.cells.columns if c.startswith("score:")}
        )
        return [k for k in self.criteria if k in present]

    def headline(self) -> list[str]:
        """The headline criteria (tasks/criteria.yaml) this board has scores for: the default selection.

        The paper's table has no probabilities, so its view shows the paper's six; a re-run adds
        the continuous MCQ probabilities.
        """
        present = set(self.criteria_with_scores())
        return [k for k in headline_criteria(self.criteria) if k in present]


META_FROM_RECORDS = ("name", "category", "authors", "link", "license")


def metadata_with_records(snapshot: Snapshot) -> dict[str, dict]:
    """The store's intervention metadata, completed from the records' own sequence entries.

    Records carry the authors, link and licence of each intervention they applied; the
    newest record describing a name is used where the store holds no metadata for it.
    """
    meta = {name: dict(m) for name, m in snapshot.interventions.items()}
    for record in map(Record.of, reversed(snapshot.records)):
        for step in record.sequence:
            if step.name not in meta and (step.authors or step.link or step.license):
                meta[step.name] = {k: getattr(step, k) for k in META_FROM_RECORDS}
    return meta


def build_board(snapshot: Snapshot, criteria: dict[str, Criterion] | None = None) -> Board:
    """The unfiltered board of a store snapshot (its records validated once, as :class:`Record`)."""
    return Board(
        records=[Record.of(r) for r in snapshot.records],
        metrics=snapshot.metrics.reset_index(drop=True),
        interventions_meta=metadata_with_records(snapshot),
        criteria=dict(criteria) if criteria is not None else load_criteria(),
        description=snapshot.description,
        metrics_origin=dict(snapshot.metrics_origin),
    )
