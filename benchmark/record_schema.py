"""The typed result record: one model of a line of ``records.jsonl``, read and written with the same types.

``benchmark.records`` reads and writes the file (atomically, one JSON object per line);
this module says what a line *is*: :class:`Record` with its :class:`SequenceStep` list,
scores, per-item values, :class:`Provenance` and :class:`Timings`, in the way inspect_ai's
evaluation log is a typed model. Every record the harness ever wrote still validates:
fields added later (``numerics``, ``compression_check``, ``cache``, the paper's
``reported`` block) are optional, and blocks that grow with the harness (provenance, the
step timings) keep keys this model does not name (``extra="allow"``), so an older or newer
harness's records load without loss. ``docs/FORMATS.md`` documents the same fields; a test
(tests/test_record_schema.py) checks the two agree.

The grouping key and the record's sequence labels are defined here once (:meth:`Record.group`,
:meth:`Record.labels`, :func:`step_label`, :func:`sequence_label`): the plan, the paper's imported
table and the leaderboard name steps and orders through them, and
:func:`benchmark.records.group_key` reads through the same key.

Scores and per-item values are strict numbers: a string or a boolean where a number belongs is an
error naming the cell and the field (:class:`RecordError`), never coerced, so a hand-edited record
cannot move a metric without a word.
"""

from __future__ import annotations

from typing import Any, Literal, Mapping, Sequence

from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt, ValidationError

__all__ = [
    "ARROW",
    "DIVERGED",
    "Score",
    "SequenceStep",
    "Provenance",
    "Timings",
    "Record",
    "RecordError",
    "validation_problem",
    "GroupKey",
    "group_of",
    "level_text",
    "step_label",
    "sequence_label",
]

DIVERGED: Literal["diverged"] = "diverged"
"""The score of a model that was evaluated and broke (NaN or infinite outputs); see benchmark/metrics.py."""

Number = StrictInt | StrictFloat
"""A number as JSON holds it: an int stays an int (``perplexity_tokens``), a bool or a string is refused."""

Score = Number | Literal["diverged"] | None
"""A criterion's score: a number, ``"diverged"`` (the model broke), or null (not measured)."""

ARROW = " -> "
"""Between the steps of a cell's label (``ft -> wanda(sparsity=0.25)``); the leaderboard shows its own arrow."""

REAPPLIED = " (re-applied)"
"""After a compressor applied again at the end of a cell (the protocol's re-application rule)."""


class RecordError(ValueError):
    """A record (a dict from a file or a store) that is not a :class:`Record`; one line naming the cell and field."""


def level_text(value: Any) -> str:
    """A level as labels write it: ``0.25``, ``4``, ``1e-05`` (``%g`` for floats, so 0.250 and 0.25 agree)."""
    return f"{value:g}" if isinstance(value, float) else str(value)


def step_label(name: str, level: Mapping[str, Any] | None) -> str:
    """The label of one step: ``name`` alone, or ``name(parameter=value)`` at a level.

    The one definition: the plan names its steps with it, the paper's imported table names
    its rows with it, so a reported record and a re-run of the same step pair on the same label.
    """
    if not level:
        return name
    (parameter, value), *rest = level.items()
    if rest:
        raise ValueError(f"step {name!r}: a level has one parameter, got {sorted(level)}")
    return f"{name}({parameter}={level_text(value)})"


def sequence_label(
    labels: Sequence[str], reapplied: str | None = None, *, arrow: str = ARROW, empty: str = "base"
) -> str:
    """A cell's label from its steps' labels: ``a -> b`` (plus ``-> c (re-applied)``); ``empty`` for the base model.

    The one definition of how an order is named: the plan's cells and the paper's imported
    records write it with the default arrow, the leaderboard shows it with its own.
    """
    if not labels:
        return empty
    text = arrow.join(labels)
    return f"{text}{arrow}{reapplied}{REAPPLIED}" if reapplied else text


GroupKey = tuple[str | None, str | None, str | None]
"""(model_id, profile, dtype): records that may be paired and ranked together."""


def group_of(provenance: Mapping[str, Any] | None) -> GroupKey:
    """(model_id, profile, dtype) of a record's provenance: the one definition of the grouping key.

    Scores move slightly with the dtype (bf16 vs float32 on the same weights), so two
    cells evaluated in different dtypes are never paired or ranked together, even when
    model and profile agree (a run resumed on a machine of another CPU kind).
    """
    prov = provenance or {}
    dtype = prov.get("dtype")
    return prov.get("model_id"), prov.get("profile"), None if dtype is None else str(dtype)


def validation_problem(exc: ValidationError) -> str:
    """``field 'scores.mmlu': <why> (got '0.5')`` for the first wrong field of a validation error.

    A value that matches no member of a union (a score: integer, number, ``"diverged"`` or
    null) gives one error per member, each with the member's name appended to the field's
    path; they are folded back into one line about the field itself.
    """
    errors = exc.errors()
    first = errors[0]
    if first["type"] == "missing":
        return f"field '{'.'.join(str(p) for p in first['loc'])}' is missing"
    same = [e for e in errors if e["loc"][:-1] == first["loc"][:-1] and e.get("input") is first.get("input")]
    loc = first["loc"][:-1] if len(same) > 1 else first["loc"]
    why = "; ".join(dict.fromkeys(e["msg"] for e in same))
    return f"field '{'.'.join(str(p) for p in loc)}': {why} (got {first.get('input')!r:.60})"


class _Open(BaseModel):
    """A block that keeps keys it does not name (they grow with the harness)."""

    model_config = ConfigDict(extra="allow", strict=False)


class SequenceStep(_Open):
    """One applied intervention of a cell, in order."""

    name: str
    category: Literal["editing", "unlearning", "compression", "multi"]
    level: dict[str, Any] | None = None  # {parameter: value}, None without levels
    label: str  # "wanda(sparsity=0.25)"
    submission_sha256: str | None = None  # None in records imported from the paper's table
    hyperparameters: dict[str, Any] = Field(default_factory=dict)
    license: str | None = None
    authors: list[str] | None = None
    link: str | None = None
    reapplied: bool | None = None


class Provenance(_Open):
    """Where a cell's numbers come from; the first three fields are its group (:attr:`Record.group`)."""

    model_id: str | None = None
    profile: str | None = None
    dtype: str | None = None  # the dtype computed in ("reported" for the paper's own numbers)
    harness_version: str | None = None
    model_source: str | None = None
    model_family: str | None = None
    base_weights_sha256: str | None = None
    weights_sha256: str | None = None
    dtype_requested: str | None = None
    numerics: dict[str, Any] | None = None
    device: str | None = None
    seed: int | None = None
    tasks: dict[str, Any] | None = None
    prompt_format: str | None = None
    forget_corpus: dict[str, Any] | None = None
    retain_corpus: dict[str, Any] | None = None
    calibration: dict[str, Any] | None = None
    protocol: dict[str, Any] | None = None
    profile_settings: dict[str, Any] | None = None
    hardware: dict[str, Any] | None = None
    libraries: dict[str, Any] | None = None


class Timings(_Open):
    interventions: list[dict[str, Any]] = Field(default_factory=list)  # one entry per applied step
    evaluation_s: float | None = None
    evaluation_parts_s: dict[str, float] = Field(default_factory=dict)
    total_s: float | None = None


class Record(BaseModel):
    """One evaluated model (a cell) of ``records.jsonl``."""

    # keys a newer harness adds (another branch's fields) are kept, never a reason to refuse a store
    model_config = ConfigDict(extra="allow")

    schema_version: int = 1
    cell_id: str = Field(min_length=1)
    status: Literal["ok", "failed"]
    error: str | None = None
    label: str
    sequence: list[SequenceStep] = Field(default_factory=list)  # [] is the base model
    recompressed_with: str | None = None
    scores: dict[str, Score] = Field(default_factory=dict)
    items: dict[str, list[Number | None]] = Field(default_factory=dict)
    provenance: Provenance = Field(default_factory=Provenance)
    timings: Timings = Field(default_factory=Timings)
    peak_memory_mb: float | None = None
    finished_at: str | None = None
    compression_check: dict[str, Any] | None = None
    cache: dict[str, Any] | None = None
    reported: dict[str, Any] | None = None  # records imported from the paper's table (benchmark/reported.py)

    @property
    def group(self) -> GroupKey:
        """The group a record's metrics are computed in (:func:`group_of`)."""
        return group_of(self.provenance.model_dump())

    @property
    def labels(self) -> tuple[str, ...]:
        """The applied steps' labels, in order (``()`` for the base model): what the metrics pair on."""
        return tuple(step.label for step in self.sequence)

    @property
    def is_reported(self) -> bool:
        """Figures reported by someone else (the paper's table), not re-run by this harness."""
        return self.reported is not None

    def order(self, *, arrow: str = ARROW, empty: str = "base") -> str:
        """The cell's order from its steps (:func:`sequence_label`), with the re-applied compressor if any."""
        return sequence_label(self.labels, self.recompressed_with, arrow=arrow, empty=empty)

    def score(self, key: str) -> Score:
        """The score of criterion ``key``: a number, ``"diverged"``, or None when not measured."""
        return self.scores.get(key)

    @classmethod
    def of(cls, record: "Record | Mapping[str, Any]") -> "Record":
        """``record`` as a :class:`Record` (a dict read from a file or store is validated once).

        Raises :class:`RecordError` naming the cell and the first wrong field.
        """
        if isinstance(record, Record):
            return record
        try:
            return cls.model_validate(record)
        except ValidationError as exc:
            cell = record.get("cell_id") if isinstance(record, Mapping) else None
            raise RecordError(f"record {cell!r}: {validation_problem(exc)}") from None

    def to_json(self) -> dict[str, Any]:
        """The record as the file stores it (keys the harness did not set are left out)."""
        return self.model_dump(mode="json", exclude_unset=True)
