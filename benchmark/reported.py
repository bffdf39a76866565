"""Results reported by someone else, as records: the paper's Llama-3-8B table.

``compose-bench import-reported`` turns ``shared/data/paper/llama3_8b_compositions.csv`` (the
310 evaluated models of Kolbeinsson et al., ICLR 2025, as the authors published them) into
result records of model ``meta-llama/Meta-Llama-3-8B``, profile ``paper``, so that the
leaderboard and :mod:`benchmark.metrics` read them like every other record: Order-free Error
and Order Sensitivity are computed by the same code, from the same ``scores``.

What keeps them apart from the harness's own results:

* each record has a ``reported`` block (source, file hash, ``re_run: false``,
  ``per_item_scores: false``, the row as printed) and no ``items``: no confidence interval
  can be computed, so the significance of every order effect is unknown;
* their ``provenance.dtype`` is ``reported`` (the CSV does not say in which numerics the
  paper evaluated), and dtype is part of the grouping key
  (:func:`benchmark.records.group_key`), so a re-run of the ``paper`` profile on the same
  model (dtype ``bfloat16``) is never paired, ranked or tabled with them;
* ``finished_at`` and ``harness_version`` are null: nothing was run here.

Diverged models (``inf`` perplexity in the CSV) get the score ``"diverged"``, as the harness
stores a non-finite score (ranked worst, with its order, by the metrics), and are listed in
``reported.diverged``. Where GPTQ, SparseGPT
or Wanda came first, the paper compressed again at the end (not AWQ): ``recompressed_with`` says
so, as in a re-run's record.
"""

from __future__ import annotations

import csv
import hashlib
import io
import math
from pathlib import Path
from typing import Any, Iterable, Mapping

from benchmark.record_schema import Provenance, Record, Score, SequenceStep, sequence_label, step_label
from benchmark.records import DIVERGED

REPORTED_DTYPE = "reported"
PAPER_MODEL = "meta-llama/Meta-Llama-3-8B"
PAPER_PROFILE = "paper"
PAPER_SOURCE = (
    "Kolbeinsson et al., Composable Interventions for Language Models (ICLR 2025, arXiv 2407.06483), "
    "appendix tables, Llama-3-8B"
)
PAPER_DATA = "analysis notebook of hartvigsen-group/composable-interventions, commit 506ad44"
PAPER_CSV = Path("paper") / "llama3_8b_compositions.csv"

# the CSV's score columns -> the criteria of tasks/criteria.yaml
SCORE_COLUMNS = {
    "edit_success": "edit_success",
    "generalization": "generalization",
    "locality": "locality",
    "avg_bits": "avg_bits",
    "avg_wmdp": "wmdp",
    "mmlu": "mmlu",
    "wikitext_ppl": "perplexity",
}
STEP_COLUMNS = ("first", "first_level", "second", "second_level")
# compressors the paper compressed again at the end when they came first (not AWQ): see DESIGN.md and the
# baselines' `protocol.reapply_when_first`; the CSV does not mark it, the paper's protocol does
PAPER_REAPPLIED = frozenset({"gptq", "sparsegpt", "wanda"})
# the paper's spelling -> the harness's submission names (submissions/baselines/)
PAPER_NAMES = {
    "FT": "ft",
    "LoRA": "lora",
    "MEMIT": "memit",
    "GA": "ga",
    "GD": "gd",
    "RMU": "rmu",
    "GPTQ": "gptq",
    "AWQ": "awq",
    "SparseGPT": "sparsegpt",
    "Wanda": "wanda",
}


class ReportedError(ValueError):
    """A reported-results file that cannot be imported; the message names the file, line and field."""


def _number(path: Path, line: int, column: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ReportedError(f"{path}:{line}: field '{column}' is not a number: {text!r}") from None
    if math.isnan(value) or value < 0:
        raise ReportedError(f"{path}:{line}: field '{column}' must be a non-negative number or inf, got {text!r}")
    return value


def _step(
    path: Path, line: int, row: Mapping[str, str], which: str, baselines: Mapping[str, Mapping[str, Any]]
) -> SequenceStep | None:
    name_text = (row.get(which) or "").strip()
    level_text = (row.get(f"{which}_level") or "").strip()
    if which == "second" and name_text in ("", "None"):
        if level_text:
            raise ReportedError(f"{path}:{line}: field 'second_level' is {level_text!r} but 'second' is None")
        return None
    name = PAPER_NAMES.get(name_text)
    if name is None:
        raise ReportedError(
            f"{path}:{line}: field '{which}' names an unknown method {name_text!r} (known: {', '.join(PAPER_NAMES)})"
        )
    meta = baselines.get(name)
    if meta is None:
        raise ReportedError(f"{path}:{line}: field '{which}': no baseline submission named {name!r}")
    parameter = meta.get("level_parameter")
    if parameter and not level_text:
        raise ReportedError(f"{path}:{line}: field '{which}_level' is empty but {name_text} has levels ({parameter})")
    if not parameter and level_text:
        raise ReportedError(f"{path}:{line}: field '{which}_level' is {level_text!r} but {name_text} has no levels")
    level = None
    if parameter:
        value = _number(path, line, f"{which}_level", level_text)
        value = int(value) if parameter == "bits" and value.is_integer() else value
        level = {parameter: value}
    label = step_label(name, level)  # the plan's own label of this step: a re-run pairs with it
    category = meta.get("category")
    if category not in ("editing", "unlearning", "compression", "multi"):
        raise ReportedError(f"{path}:{line}: field '{which}': baseline {name!r} has no known category ({category!r})")
    return SequenceStep(name=name, label=label, category=category, level=level, submission_sha256=None)


def _cell_id(labels: Iterable[str]) -> str:
    text = "|".join(["reported", PAPER_PROFILE, PAPER_MODEL, *labels])
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:24]


def records_from_csv(path: str | Path, baselines: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One record per row of the paper's CSV (see ``shared/data/paper/README.md``).

    ``baselines`` is the display metadata of the baseline submissions
    (:func:`benchmark.stores.metadata.metadata_from_folders`): it gives each method's harness
    name, category and level parameter, so the records use the same labels as a re-run.
    Raises :class:`ReportedError` naming the file, line and field on bad content.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ReportedError(f"{path}: cannot read ({exc.strerror or exc})") from None
    reader = csv.DictReader(io.StringIO(data.decode("utf-8")))
    missing = [c for c in (*STEP_COLUMNS, *SCORE_COLUMNS) if c not in (reader.fieldnames or [])]
    if missing:
        raise ReportedError(f"{path}: missing column(s) {missing}")
    file_sha = hashlib.sha256(data).hexdigest()
    records: list[dict[str, Any]] = []
    seen: dict[str, int] = {}
    for line, row in enumerate(reader, start=2):
        steps = [
            s
            for s in (_step(path, line, row, "first", baselines), _step(path, line, row, "second", baselines))
            if s is not None
        ]
        scores: dict[str, Score] = {}
        diverged = []
        for column, criterion in SCORE_COLUMNS.items():
            value = _number(path, line, column, (row.get(column) or "").strip())
            if math.isinf(value):
                diverged.append(criterion)
                scores[criterion] = DIVERGED  # as the harness stores a non-finite score
            else:
                scores[criterion] = value
        labels = [s.label for s in steps]
        again = (
            steps[0].label
            if (len(steps) == 2 and steps[0].category == "compression" and steps[0].name in PAPER_REAPPLIED)
            else None
        )
        label = sequence_label(labels, again)
        if label in seen:
            raise ReportedError(f"{path}:{line}: duplicate row for {label!r} (first at line {seen[label]})")
        seen[label] = line
        record = Record(
            cell_id=_cell_id(labels),
            label=label,
            status="ok",
            error=None,
            finished_at=None,
            items={},
            scores=scores,
            sequence=steps,
            recompressed_with=again,
            schema_version=1,
            provenance=Provenance(
                model_id=PAPER_MODEL,
                profile=PAPER_PROFILE,
                dtype=REPORTED_DTYPE,
                harness_version=None,
                model_source="reported in the paper",
                weights_sha256=None,
            ),
            reported={
                "source": PAPER_SOURCE,
                "data": PAPER_DATA,
                "file": path.name,
                "file_sha256": file_sha,
                "line": line,
                "re_run": False,
                "per_item_scores": False,
                "printed": {k: row[k] for k in (*STEP_COLUMNS, *SCORE_COLUMNS)},
                "diverged": diverged,
            },
        )
        records.append(record.to_json())  # built through the type every reader uses, stored as the file holds it
    if not records:
        raise ReportedError(f"{path}: no rows")
    return records
