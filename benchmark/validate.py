"""``compose-bench validate``: check one submission folder, one clear line per problem.

Checks, in order (a later check needs the earlier ones to pass):
1. ``submission.yaml`` against the schema, licence included (YAML only: no code runs);
2. the entry point imports in a fresh Python process, sandboxed like a grid step
   (:func:`benchmark.isolation.check_import`), and the class follows the API (subclass,
   name, category, ``apply``): the harness itself never imports the submission's code;
3. in the same process, every hyperparameter block of ``submission.yaml`` at every level
   against the class's declared :class:`benchmark.api.Hyperparameters` model (types,
   ranges, unknown names), before any model loads;
4. optionally, a smoke application on the default model (or ``--model``: a Hub id or local folder)
   with a few real edits / texts in the step sandbox, through the grid's step executor (:mod:`benchmark.step_executor`): it must return the same
   architecture with finite weights within its time and memory budget.
"""

from __future__ import annotations

import json
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


def reserved_name_problem(sub: Submission, store: str | None = None) -> str | None:
    """One line when ``sub`` takes a baseline's name or a name ``store`` has published, else None."""
    from benchmark.reserved_names import reserved_names
    from benchmark.stores import StoreError

    try:
        reserved = reserved_names(store)
    except StoreError as exc:
        return f"cannot read the published names of {store}: {exc}".replace("\n", " ")
    problem = reserved.problem(sub.name, sub.folder, sub.sha256)
    return f"{sub.folder / 'submission.yaml'}: field 'name': {problem}" if problem else None


def check_import_and_api(
    sub: Submission, timeout_s: float = IMPORT_TIMEOUT_S
) -> tuple[str | None, str | None, str, str | None]:
    """(import problem, API problem, sandbox note, hyperparameter problem), from one fresh sandboxed process.

    The box (isolation.check_import) imports the class and validates every family block of
    ``submission.yaml``, at every level, against the class's declared hyperparameters;
    the problem line names the file, the field and the value (benchmark.hyperparameter_checks).
    """
    from benchmark.hyperparameter_checks import first_problem, settings_to_check
    from benchmark.isolation import check_import

    sets = settings_to_check(sub)
    verdict, message, report = check_import(sub.folder, timeout_s, [s.params for s in sets])
    if verdict != "ok":
        return (None, message, "", None) if verdict == "api" else (message, None, "", None)
    hp_problem = first_problem(sub, sets, report["errors"], report["class_name"]) if report.get("declared") else None
    if not report.get("declared") and any(s.params for s in sets):
        hp_problem = (
            f"{sub.folder / 'submission.yaml'}: field 'hyperparameters': class {report['class_name']} "
            "declares no Hyperparameters model, so these settings cannot be checked (see CONTRIBUTING.md)"
        )
    return None, None, message, hp_problem


def smoke_apply(
    sub: Submission, data_dir: str | Path | None = None, n_items: int = 4, model_id: str | None = None
) -> str:
    """Apply the submission once to ``model_id`` (default: the default model) through the step executor, sandboxed;
    a summary line, or StepFailed.

    The same executor as a grid step (benchmark.step_executor), with the default model's
    family resolving the settings and a few real edits / texts; the step's cache is a
    throw-away folder (a smoke application keeps nothing).
    """
    import tempfile

    import torch

    from benchmark.data.corpora import load_calibration_corpus, load_forget_corpus, load_retain_corpus
    from benchmark.data.zsre import load_zsre, sample_edits
    from benchmark.models import DEFAULT_MODEL_ID, load_model, resolve_model
    from benchmark.numerics import choose_dtype
    from benchmark.plan import Step
    from benchmark.step_executor import StepExecutor, copies_of, materials_for

    resolved = resolve_model(model_id or DEFAULT_MODEL_ID)
    dtype = choose_dtype("auto", "cpu").dtype  # as the CPU profiles compute: bf16 only where it is fast
    model, tokenizer = load_model(resolved, dtype, torch.device("cpu"))
    records, _ = load_zsre(data_dir)
    materials = materials_for(
        resolved,
        model,
        tokenizer,
        0,
        edits=tuple(r.to_edit_request() for r in sample_edits(records, n_items, 0)),
        reference_texts=load_retain_corpus(None, 0, data_dir).texts
        if sub.category.value in ("editing", "multi")
        else (),
        forget_texts=load_forget_corpus(2 * n_items, 0, data_dir).texts,
        retain_texts=load_retain_corpus(2 * n_items, 0, data_dir).texts,
        calibration_texts=load_calibration_corpus(n_items, 0, data_dir).texts,
        max_seq_len=256,
    )
    step = Step(sub, sub.spec.levels.default if sub.spec.levels else None, (), materials.family)
    fresh = copies_of(model)
    res = sub.spec.resources
    with tempfile.TemporaryDirectory(prefix="compose-bench-validate-cache-") as cache_root:
        executor = StepExecutor(materials, fresh, isolate=True, cache_root=Path(cache_root))
        _, entry = executor.apply(step, fresh(None))
    sandbox = "sandboxed" if str(entry["isolation"].get("sandbox", "")).startswith("bubblewrap") else "NOT sandboxed"
    return (
        f"smoke application on {'the default model' if model_id is None else resolved.model_id}: "
        f"{entry['seconds']:.1f} s of {res.time_budget_s:g} s, "
        f"peak {entry['peak_rss_mb']:.0f} MB of {res.memory_budget_gb:g} GB, finite weights, same architecture, "
        f"{sandbox}"
    )


def validate_folder(
    folder: str | Path,
    smoke: bool = True,
    data_dir: str | Path | None = None,
    store: str | None = None,
    model: str | None = None,
) -> ValidationReport:
    """Every check of the module docstring; ``store`` names the results store whose published names are reserved,
    ``model`` the model of the smoke application (a Hub id or local folder; default: the default model)."""
    report = ValidationReport(Path(folder))
    if smoke:
        from benchmark.paths import data_dir as resolve_data_dir

        try:
            resolve_data_dir(data_dir)  # before anything runs: a missing folder is one line, not a traceback
        except (FileNotFoundError, OSError) as exc:
            report.problems.append(str(exc).replace("\n", " "))
            return report
    try:
        sub = load_submission(folder)
    except SubmissionError as exc:
        report.problems.append(str(exc))
        return report
    name_problem = reserved_name_problem(sub, store)
    if name_problem:
        report.problems.append(name_problem)
        return report
    report.passed.append(f"schema and licence ({sub.spec.license}) of {sub.folder / 'submission.yaml'}")
    import_problem, api_problem, sandbox, hp_problem = check_import_and_api(sub)
    if import_problem:
        report.problems.append(import_problem)
        return report
    report.passed.append(
        f"entry point {sub.spec.entry_point} imports in a fresh process" + (f" ({sandbox})" if sandbox else "")
    )
    if api_problem:
        report.problems.append(api_problem)
        return report
    report.passed.append("class follows the intervention API")
    if hp_problem:  # before the smoke application: no model loads for a bad value
        report.problems.append(hp_problem)
        return report
    report.passed.append("hyperparameters of every block and level match the class's declared types and ranges")
    if smoke:
        from benchmark.models import ModelLoadError
        from benchmark.step_checks import StepFailed

        try:
            report.passed.append(smoke_apply(sub, data_dir, model_id=model))
        except (StepFailed, SubmissionError, ModelLoadError) as exc:
            report.problems.append(str(exc))
        except (OSError, ValueError) as exc:  # the data folder lacks a file, or holds a malformed one
            report.problems.append(
                f"smoke application: cannot load its data: {type(exc).__name__}: {exc}".replace("\n", " ")[:700]
            )
    return report


def report_json(report: ValidationReport) -> str:
    return json.dumps(
        {"folder": str(report.folder), "ok": report.ok, "problems": report.problems, "passed": report.passed}
    )
