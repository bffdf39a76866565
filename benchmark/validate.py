"""``compose-bench validate``: check one submission folder, one clear line per problem.

Checks, in order (a later check needs the earlier ones to pass):
1. ``submission.yaml`` against the schema, licence included;
2. the entry point imports in a fresh Python process (no state borrowed from ours);
3. the class follows the API (subclass, name, category, ``apply``);
4. optionally, a smoke application on the default model with a few real edits /
   texts: it must return the same architecture with finite weights within its time budget.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from benchmark.submissions import Submission, SubmissionError, load_submission

IMPORT_TIMEOUT_S = 300


@dataclass
class ValidationReport:
    folder: Path
    problems: list[str] = field(default_factory=list)
    passed: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def _import_in_fresh_process(sub: Submission) -> str | None:
    code = (
        "import sys\n"
        "from benchmark.submissions import load_submission, SubmissionError\n"
        "try:\n"
        f"    load_submission({str(sub.folder)!r}).load_class()\n"
        "except SubmissionError as exc:\n"
        "    print(exc, file=sys.stderr); sys.exit(3)\n"
    )
    try:
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=IMPORT_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return f"{sub.folder}: importing the entry point took over {IMPORT_TIMEOUT_S} s in a fresh process"
    if proc.returncode != 0:
        lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
        return lines[-1] if lines else f"{sub.folder}: import in a fresh process exited with {proc.returncode}"
    return None


def smoke_apply(sub: Submission, data_dir: str | Path | None = None, n_items: int = 4) -> str:
    """Apply the submission once to the default model; returns a one-line summary or raises StepFailed."""
    import torch

    from benchmark.api import InterventionContext
    from benchmark.data.corpora import load_calibration_corpus, load_forget_corpus, load_retain_corpus
    from benchmark.data.zsre import load_zsre, sample_edits
    from benchmark.models import DEFAULT_MODEL_ID, load_model, resolve_model
    from benchmark.resources import measure
    from benchmark.runner import StepFailed, _one_line, _signature, check_model_after, seed_everything

    resolved = resolve_model(DEFAULT_MODEL_ID)
    model, tokenizer = load_model(resolved, torch.bfloat16, torch.device("cpu"))
    level = sub.spec.levels.default if sub.spec.levels else None
    hp = sub.hyperparameters_for("smollm2", level)
    want = sub.spec.resources.dtype
    dtype = getattr(torch, want) if want else torch.bfloat16
    records, _ = load_zsre(data_dir)
    context = InterventionContext(
        hyperparameters=hp, seed=0, device=torch.device("cpu"), dtype=dtype, model_family="smollm2",
        edits=tuple(r.to_edit_request() for r in sample_edits(records, n_items, 0)),
        forget_texts=load_forget_corpus(2 * n_items, 0, data_dir).texts,
        retain_texts=load_retain_corpus(2 * n_items, 0, data_dir).texts,
        calibration_texts=load_calibration_corpus(n_items, 0, data_dir).texts,
        max_seq_len=256,
    )
    signature = _signature(model)
    intervention = sub.instantiate()
    seed_everything(0)
    model = model.to(dtype)
    with measure() as usage:
        try:
            model = intervention.apply(model, tokenizer, context)
        except Exception as exc:
            raise StepFailed(f"{sub.name}: apply raised {_one_line(exc)}") from exc
    if isinstance(model, torch.nn.Module):
        model = model.to(torch.bfloat16)
    check_model_after(sub.name, model, signature)
    budget = sub.spec.resources.time_budget_s
    if usage.seconds > budget:
        raise StepFailed(f"{sub.name}: smoke application took {usage.seconds:.0f} s, over its budget of {budget:.0f} s")
    return f"smoke application on the default model: {usage.seconds:.1f} s, peak {usage.peak_rss_mb:.0f} MB, finite weights, same architecture"


def validate_folder(folder: str | Path, smoke: bool = True, data_dir: str | Path | None = None) -> ValidationReport:
    report = ValidationReport(Path(folder))
    try:
        sub = load_submission(folder)
    except SubmissionError as exc:
        report.problems.append(str(exc))
        return report
    report.passed.append(f"schema and licence ({sub.spec.license}) of {sub.folder / 'submission.yaml'}")
    problem = _import_in_fresh_process(sub)
    if problem:
        report.problems.append(problem)
        return report
    report.passed.append(f"entry point {sub.spec.entry_point} imports in a fresh process")
    try:
        sub.load_class()
    except SubmissionError as exc:
        report.problems.append(str(exc))
        return report
    report.passed.append("class follows the intervention API")
    if smoke:
        from benchmark.runner import StepFailed

        try:
            report.passed.append(smoke_apply(sub, data_dir))
        except (StepFailed, SubmissionError) as exc:
            report.problems.append(str(exc))
    return report


def report_json(report: ValidationReport) -> str:
    return json.dumps({"folder": str(report.folder), "ok": report.ok, "problems": report.problems, "passed": report.passed})
