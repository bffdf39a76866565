"""The composition runner: apply interventions in both orders and record every evaluated model.

For each group of cells that share a first intervention, the state after that first
intervention is computed once (and kept on disk while the group runs, so a killed run
resumes without recomputing it), then each second intervention starts from a fresh copy
of it. Every evaluated model becomes one record, appended atomically to
``records.jsonl``; cells whose id is already there are skipped, so re-running the same
command resumes. A failing intervention fails its cells with a one-line reason and the
grid goes on.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Literal, Mapping

import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from benchmark.api import Category
from benchmark.cost import (
    EvaluationTokens,
    StepPlan,
    count_tokens,
    estimate,
    evaluation_items,
    human,
    parameter_count,
    record_step_cost,
    step_cost_key,
)
from benchmark.hardware import matmul_gflops
from benchmark.models import own_storage, weights_sha256
from benchmark.plan import Cell, Step, build_plan, cell_id, steps_for
from benchmark.prefixes import PrefixKeeper, prefix_of
from benchmark.profiles import Profile
from benchmark.provenance import hardware, harness_version, library_versions
from benchmark.record_schema import Provenance, Record, SequenceStep, Timings
from benchmark.records import RECORDS_FILE, SCHEMA_VERSION, append_record, finished_cells, read_records
from benchmark.resources import measure
from benchmark.run_inputs import RunInputs, load_run_inputs
from benchmark.step_checks import StepFailed
from benchmark.step_executor import StepExecutor
from benchmark.submissions import Submission

__all__ = ["Runner", "RunInputs", "StepFailed", "summary_table"]

if TYPE_CHECKING:
    from benchmark.caches.run import RunCaches

log = logging.getLogger(__name__)


class Runner:
    """Runs one profile's grid into ``out_dir``."""

    def __init__(
        self,
        profile: Profile,
        submissions: list[Submission],
        out_dir: Path,
        data_dir: str | Path | None = None,
        model_id: str | None = None,
        device: str | None = None,
        retry_failed: bool = False,
        echo: Callable[[str], None] = print,
        isolate: bool = True,
        use_cache: bool = True,
    ) -> None:
        self.profile = profile
        self.submissions = submissions
        self.out_dir = Path(out_dir)
        self.data_dir = data_dir
        self.model_id = model_id or profile.model
        self.device_name = device or profile.device
        self.retry_failed = retry_failed
        self.isolate = isolate  # False: submissions run inside the harness (trusted code, debugging)
        self.echo = echo
        self.use_cache = use_cache  # False: --no-cache, neither cache is read or written
        self.caches: RunCaches | None = None  # opened in run()
        self.records_path = self.out_dir / RECORDS_FILE
        self.steps: list[Step] = []  # the plan: built by _load_inputs, once the model family is known
        self.cells: list[Cell] = []
        # applies every step (benchmark.step_executor); made by run() before any step is applied
        self.executor: StepExecutor = None  # type: ignore[assignment]

    # ---------------------------------------------------------------- set-up
    def check_hyperparameters(self) -> None:
        """Every submission's settings for this profile against its declared model, before any model loads."""
        from benchmark.hyperparameter_checks import check_submissions

        check_submissions(self.submissions, self.profile, self.isolate)

    def _load_inputs(self) -> RunInputs:
        """Load the run's inputs, then build the plan with every step's settings resolved for the model's family."""
        inputs = load_run_inputs(self.profile, self.out_dir, self.model_id, self.device_name, self.data_dir, self.echo)
        self.steps = steps_for(self.submissions, self.profile, inputs.family)
        self.cells = build_plan(
            self.steps, self.profile.protocol.recompress_when_first, self.profile.protocol.sequence_length
        )
        return inputs

    def make_executor(self, inputs: RunInputs) -> StepExecutor:
        """The step executor of this run: in or out of the sandbox, through the caches when open."""
        from benchmark.paths import cache_dir

        def on_cost(step: Step, seconds: float) -> None:
            n = inputs.numerics
            record_step_cost(self._step_plan(inputs, step).key, seconds, _matmul_rate(inputs), n.capability, n.name)

        return StepExecutor(
            inputs.materials,
            inputs.fresh,
            isolate=self.isolate,
            cache_root=cache_dir() / "steps",
            caches=self.caches,
            on_cost=on_cost,
        )

    # ---------------------------------------------------------------- records
    def _record(
        self,
        inputs: RunInputs,
        cell: Cell,
        cid: str,
        hps: list[dict],
        status: Literal["ok", "failed"],
        error: str | None,
        scores: dict | None = None,
        items: dict | None = None,
        timings: dict | None = None,
        peak_mb: float | None = None,
        weights_sha: str | None = None,
        **later: Any,
    ) -> Record:
        """The cell's :class:`Record`, built through the type that every reader uses.

        Every field is passed, so the written record holds the same keys as ever
        (``Record.to_json`` leaves out only what was not set); ``later`` carries the fields
        only an evaluated cell has (``cache``, ``compression_check``). A value of the wrong
        type (a score that is not a number) fails here, before anything is written.
        """
        sequence = [
            SequenceStep(
                name=step.submission.name,
                category=step.category.value,
                level=step.level_dict(),
                label=step.label,
                submission_sha256=step.submission.sha256,
                hyperparameters=hp,
                license=step.submission.spec.license,
                authors=step.submission.spec.authors,
                link=step.submission.spec.link,
            )
            for step, hp in zip(cell.steps, hps)
        ]
        p = self.profile
        provenance = Provenance(
            harness_version=harness_version(),
            profile=p.name,
            model_id=inputs.resolved.model_id,
            model_source=inputs.resolved.source,
            model_family=inputs.family,
            base_weights_sha256=inputs.base_sha,
            weights_sha256=weights_sha,
            dtype=inputs.numerics.name,
            dtype_requested=p.dtype,
            numerics=inputs.numerics.describe(),
            device=str(inputs.device),
            seed=p.seed,
            tasks=inputs.suite.provenance,
            prompt_format=p.evaluation.prompt_format,
            forget_corpus=inputs.forget.describe(),
            retain_corpus=inputs.retain.describe(),
            calibration=inputs.calibration.describe(),
            protocol=p.protocol.model_dump(mode="json"),
            profile_settings=p.settings(),
            hardware=hardware(),
            libraries=library_versions(),
        )
        return Record(
            schema_version=SCHEMA_VERSION,
            cell_id=cid,
            status=status,
            error=error,
            label=cell.label,
            sequence=sequence,
            recompressed_with=cell.recompress.label if cell.recompress else None,
            scores=scores or {},
            items=items or {},
            provenance=provenance,
            timings=Timings(**(timings or {})),
            peak_memory_mb=peak_mb,
            finished_at=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            **later,
        )

    def _evaluate_and_record(
        self, inputs: RunInputs, cell: Cell, cid: str, hps: list[dict], model: torch.nn.Module, entries: list[dict]
    ) -> Record:
        bits = [e["weight_bits"] for e in entries if e.get("weight_bits") is not None]
        weights_sha = weights_sha256(model)
        ev = self._evaluate(inputs, cell, cid, model, min(bits) if bits else None, weights_sha)
        timings = {
            "interventions": entries,
            "evaluation_s": round(ev.seconds, 3),
            "evaluation_parts_s": {k: round(v, 3) for k, v in ev.parts_s.items()},
            "total_s": round(ev.seconds + sum(e["seconds"] for e in entries), 3),
        }
        peak = max([ev.peak_rss_mb] + [e["peak_rss_mb"] for e in entries])
        record = self._record(
            inputs,
            cell,
            cid,
            hps,
            "ok",
            None,
            ev.scores,
            ev.items,
            timings,
            round(peak, 1),
            weights_sha,
            cache=ev.mark,
            compression_check=ev.compression,  # the steps' claimed bits beside the measured ones
        )
        self._emit(record)
        return record

    def _evaluate(
        self, inputs: RunInputs, cell: Cell, cid: str, model: torch.nn.Module, bits: float | None, weights_sha: str
    ):
        """The suite's evaluation of ``model``, through the evaluation cache unless --no-cache (benchmark.caches)."""
        from benchmark.caches.run import Evaluated

        if self.caches is not None:
            return self.caches.evaluate(inputs, model, bits, weights_sha, self.caches.origin(inputs, cell.label, cid))
        with measure() as usage:
            scores, items, parts, compression = inputs.suite.evaluate(model, inputs.tokenizer, bits, inputs.base_model)
        return Evaluated(scores, items, parts, usage.seconds, usage.peak_rss_mb, {"evaluation": "off"}, compression)

    def _fail(
        self, inputs: RunInputs, cell: Cell, cid: str, hps: list[dict], reason: str, entries: list[dict]
    ) -> Record:
        record = self._record(inputs, cell, cid, hps, "failed", reason, timings={"interventions": entries})
        self._emit(record)
        self.echo(f"FAILED {cell.label}: {reason}")
        return record

    def _emit(self, record: Record) -> None:
        """Append one finished cell's record (the Ray executor's workers return it to the driver instead)."""
        append_record(self.records_path, record)

    def _run_cell(
        self,
        inputs: RunInputs,
        cell: Cell,
        cid: str,
        hps: list[dict],
        first_entry: dict | None,
        state: dict[str, torch.Tensor] | None,
        first_error: str | None = None,
        prefixes: PrefixKeeper | None = None,
    ) -> Record:
        """One cell from the state after its first step (or its first two, kept in ``prefixes``): the rest, the evaluation, its record."""
        if first_error is not None:
            reason = first_error if len(cell.steps) == 1 else f"first intervention failed: {first_error}"
            return self._fail(inputs, cell, cid, hps, reason, [])
        entries = [dict(first_entry)] if first_entry is not None else []
        kept = prefixes.take(cell) if prefixes is not None else None
        if kept is not None:
            state, entries = kept
        applied = len(entries) if cell.steps else 0
        model = inputs.fresh(state)
        try:
            for step in cell.steps[applied:] + ((cell.recompress,) if cell.recompress else ()):
                model, entry = self.executor.apply(step, model)
                if step is cell.recompress:
                    entry["reapplied"] = True
                entries.append(entry)
                applied += 1
                if prefixes is not None and prefixes.wants(cell, applied):
                    prefixes.keep(cell, model, entries)
            return self._evaluate_and_record(inputs, cell, cid, hps, model, entries)
        except StepFailed as exc:
            return self._fail(inputs, cell, cid, hps, str(exc), entries)
        finally:
            del model

    # ---------------------------------------------------------------- the grid
    def run(self) -> list[dict]:
        self.check_hyperparameters()
        inputs = self._load_inputs()
        if self.use_cache:
            from benchmark.caches.run import open_run_caches

            self.caches = open_run_caches(inputs, "sandbox" if self.isolate else "in-process")
        self.executor = self.make_executor(inputs)
        ids = cell_ids(self.cells, inputs.context_key)
        done = finished_cells(read_records(self.records_path), self.retry_failed)
        todo = [c for c in self.cells if ids[c][0] not in done]
        self.echo(f"plan: {len(self.cells)} cells, {len(self.cells) - len(todo)} already recorded, {len(todo)} to run")
        planned = self._estimate(inputs, todo)
        if any(cell.steps for cell in todo):
            self.executor.launch()  # the box boots while the base model is evaluated
        bar = tqdm(
            total=max(1, round(sum(planned.values()))),
            desc="grid",
            unit="s",
            bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} estimated s [{elapsed}<{remaining}{postfix}]",
        )
        started, cells_done = time.perf_counter(), 0

        def finish(cell: Cell) -> None:
            nonlocal cells_done
            cells_done += 1
            bar.set_postfix_str(f"{cells_done}/{len(todo)} cells, {cell.label[:50]}")
            bar.update(round(planned.get(cell, 0.0)))

        if Cell(()) in todo:
            cid, hps = ids[Cell(())]
            self._run_cell(inputs, Cell(()), cid, hps, None, None)
            finish(Cell(()))

        for first in self.steps:
            group = [c for c in todo if c.first == first]
            if group:
                self._run_group(inputs, first, group, ids, finish)
        bar.close()
        if todo:
            spent = time.perf_counter() - started
            self.echo(f"grid time: {human(spent)} ({spent:.0f} s; estimated {sum(planned.values()):.0f} s)")
        if self.caches is not None:
            self.echo(self.caches.summary())
        self._remove_stale_states()
        return read_records(self.records_path)

    # ---------------------------------------------------------------- cost
    def _step_plan(self, inputs: RunInputs, step: Step, scale: float = 1.0) -> StepPlan:
        """The inputs of one application's cost; ``scale``: another profile's inputs relative to this one's."""
        category = step.category
        items = 0
        if category in (Category.EDITING, Category.MULTI):
            items += len(inputs.suite.edits)
        if category in (Category.UNLEARNING, Category.MULTI):
            items += len(inputs.forget.texts) + len(inputs.retain.texts)
        if category in (Category.COMPRESSION, Category.MULTI):
            items += len(inputs.calibration.texts)
        items = max(1, round(items * scale)) if scale != 1.0 else items
        n_params = parameter_count(inputs.base_model)
        key = step_cost_key(
            step.submission.name, step.submission.sha256, step.level, items, step.settings_json, n_params
        )
        cached = self.caches is not None and self.caches.stores_step(step)
        return StepPlan(step.submission.name, category.value, key, items, step.hyperparameters, cached, n_params)

    def _estimate(self, inputs: RunInputs, todo: list[Cell]) -> dict[Cell, float]:
        """Estimated seconds per cell still to run (its first step counted in the first cell of its group); prints the total."""
        if not todo:
            return {}
        rate = _matmul_rate(inputs)
        n_params = parameter_count(inputs.base_model)
        weights_gb = sum(t.numel() * t.element_size() for t in inputs.base_model.parameters()) / 1e9
        inputs.tokens = count_tokens(inputs.suite, inputs.tokenizer)
        tokens = _with_probes(inputs)
        applications: list[tuple[Cell, Step]] = []
        first_applied: set[Step] = set()
        prefix_applied: set[tuple[Step, ...]] = set()  # two-step prefixes shared by triples (benchmark/prefixes.py)
        for cell in todo:
            steps = list(cell.steps) + ([cell.recompress] if cell.recompress else [])
            if len(cell.steps) > 2 and prefix_of(cell) in prefix_applied:
                steps = steps[2:]
            elif cell.first is not None and len(cell.steps) > 1:
                if cell.first in first_applied or self._state_file(inputs, cell.first).exists():
                    steps = steps[1:]
                first_applied.add(cell.first)
                prefix = prefix_of(cell)
                if prefix is not None:
                    prefix_applied.add(prefix)
            elif cell.first is not None:
                first_applied.add(cell.first)
            applications += [(cell, step) for step in steps]
        est = estimate(
            tokens,
            n_params,
            rate,
            len(todo),
            [(step.label, self._step_plan(inputs, step)) for _, step in applications],
            sandboxed=self.isolate,
            dtype=inputs.numerics.name,
            weights_gb=weights_gb,
            device_type=inputs.device.type,
        )
        per_cell = {cell: est.evaluation_s for cell in todo}
        for (cell, _), (_, seconds, _) in zip(applications, est.steps_s):
            per_cell[cell] += seconds
        sources = sorted({source for _, _, source in est.steps_s})
        capped = f", costs at {est.cost_gflops:.0f}" if est.cost_gflops < rate else ""
        self.echo(
            f"estimate: {human(est.total_s)} on this machine ({inputs.numerics.capability}, {inputs.numerics.name} "
            f"matmul {rate:.0f} GFLOP/s{capped}): {len(todo)} evaluations of ~{est.evaluation_s:.0f} s "
            f"(MCQ {est.evaluation_parts_s['mcq']:.0f} s, zsRE {est.evaluation_parts_s['zsre']:.0f} s, "
            f"perplexity {est.evaluation_parts_s['perplexity']:.0f} s) + {len(est.steps_s)} intervention "
            f"applications {sum(s for _, s, _ in est.steps_s):.0f} s (costs from {', '.join(sources) or '-'})"
        )
        if sooner := self._sooner(inputs, est.total_s, rate, n_params, weights_gb):
            self.echo(sooner)
        return per_cell

    def _sooner(self, inputs: RunInputs, total_s: float, rate: float, n_params: int, weights_gb: float) -> str | None:
        """One line naming the quickest other profile for the same model, when one is at least twice as quick."""
        from benchmark.paths import baselines_dir
        from benchmark.profiles import ProfileError, available_profiles, load_profile
        from benchmark.submissions import SubmissionError, discover

        try:
            baselines = {s.name: s for s in discover(baselines_dir())}
        except SubmissionError:
            return None
        extra = [s for s in self.submissions if s.name not in baselines]
        best: tuple[float, str] | None = None
        for name in available_profiles():
            try:
                other = load_profile(name)
            except ProfileError:
                continue
            if name == self.profile.name or other.model != self.profile.model or other.device not in (None, "cpu"):
                continue
            if other.protocol.sequence_length < self.profile.protocol.sequence_length:
                continue  # a pairs-only grid is no quicker way to measure sequences of three
            subs = [baselines[n] for n in other.interventions if n in baselines] + extra
            cells = build_plan(
                steps_for(subs, other, inputs.family),
                other.protocol.recompress_when_first,
                other.protocol.sequence_length,
            )
            tokens = inputs.tokens.scaled(evaluation_items(other.evaluation))
            firsts = {c.first for c in cells if c.first is not None}
            steps = [
                s
                for c in cells
                for s in c.steps[1 if len(c.steps) < 3 else 2 :]  # a triple's prefix is its pair's
                + ((c.recompress,) if c.recompress else ())
            ]
            scale = _sizes_ratio(other, self.profile)
            plans = [(s.label, self._step_plan(inputs, s, scale.get(s.category, 1.0))) for s in [*firsts, *steps]]
            est = estimate(
                tokens,
                n_params,
                rate,
                len(cells),
                plans,
                sandboxed=self.isolate,
                dtype=inputs.numerics.name,
                weights_gb=weights_gb,
                device_type=inputs.device.type,
            )
            if best is None or est.total_s < best[0]:
                best = (est.total_s, name)
        if best is None or best[0] * 2 > total_s:
            return None
        return f"sooner: --profile {best[1]} (estimated {human(best[0])} here; smaller samples, wider intervals)"

    def _remove_stale_states(self) -> None:
        """A run killed between a group's last record and its clean-up leaves a state file behind."""
        states = self.out_dir / "states"
        if states.is_dir():
            for leftover in states.iterdir():
                leftover.unlink()
            states.rmdir()

    def _in_state_cache(self, entry: dict) -> bool:
        """Whether the step's output is in the run's state cache (a resumed run then reads it from there,
        so the group's own state file, 1.6 s to write for the default model here, would be a second copy)."""
        key = entry.get("cache_key")
        return self.caches is not None and bool(key) and self.caches.holds_state(str(key))

    def _state_file(self, inputs: RunInputs, first: Step) -> Path:
        return self.out_dir / "states" / f"{state_key(first, inputs.context_key)}.safetensors"

    def _run_group(self, inputs: RunInputs, first: Step, group: list[Cell], ids, finish) -> None:
        state_file = self._state_file(inputs, first)
        state: dict[str, torch.Tensor] | None = None
        first_entry: dict | None = None
        first_error: str | None = None
        if state_file.exists():
            state = load_file(str(state_file))
            first_entry = {"label": first.label, "seconds": None, "peak_rss_mb": 0.0, "reused_from_disk": True}
        else:
            self.echo(f"applying {first.label} (first intervention of {len(group)} cells)")
            model = inputs.fresh()
            try:
                model, first_entry = self.executor.apply(first, model)
                state = {k: v.detach().to("cpu").clone() for k, v in model.state_dict().items()}
                if self.profile.cache_states and len(group) > 1 and not self._in_state_cache(first_entry):
                    write_state(state_file, state, first_entry)
            except StepFailed as exc:
                first_error = str(exc)
            finally:
                del model
        if first_entry and first_entry.get("reused_from_disk"):
            first_entry = _entry_from_file(state_file) or first_entry
        prefixes = PrefixKeeper.for_group(group)
        for cell in group:
            cid, hps = ids[cell]
            self._run_cell(inputs, cell, cid, hps, first_entry, state, first_error, prefixes)
            finish(cell)
        prefixes.drop()
        if state_file.exists():
            state_file.unlink()


def cell_ids(cells: list[Cell], context_key: dict[str, Any]) -> dict[Cell, tuple[str, list[dict]]]:
    """Each cell's content id and its steps' resolved hyperparameters (what the records carry)."""
    ids = {}
    for cell in cells:
        hps = [s.hyperparameters for s in cell.steps]
        ids[cell] = (cell_id(cell, context_key, hps), hps)
    return ids


def state_key(first: Step, context_key: dict[str, Any]) -> str:
    """The name of the state after ``first`` alone: the id of the cell that applies only it."""
    return cell_id(Cell((first,)), context_key, [first.hyperparameters])


def write_state(path: Path, state: dict[str, torch.Tensor], entry: dict) -> str:
    """Write a first-stage state atomically (the step's entry in the metadata); returns the file's SHA-256."""
    import hashlib

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file(own_storage(state), str(tmp), metadata={"entry": _json(entry)})
    digest = hashlib.sha256(tmp.read_bytes()).hexdigest()
    tmp.replace(path)
    return digest


def _json(obj: Any) -> str:
    return json.dumps(obj, default=str)


def _entry_from_file(path: Path) -> dict | None:
    from safetensors import safe_open

    with safe_open(str(path), "pt") as fh:
        meta = fh.metadata() or {}
    return json.loads(meta["entry"]) if "entry" in meta else None


def summary_table(records: Iterable[Record | Mapping[str, Any]]):
    """One row per evaluated model with its main scores (pandas DataFrame).

    The columns are the headline criteria, then the descriptive ones, under their short
    headers (:func:`benchmark.metrics.per_cell_columns`, from tasks/criteria.yaml).
    """
    import pandas as pd

    from benchmark.metrics import per_cell_columns

    columns = per_cell_columns()
    rows = []
    for r in map(Record.of, records):
        row: dict[str, Any] = {"cell": r.label, "status": r.status}
        row.update({c.header: r.score(c.key) for c in columns})
        row["seconds"] = r.timings.total_s
        rows.append(row)
    return pd.DataFrame(rows)


def _with_probes(inputs: RunInputs) -> EvaluationTokens:
    """The evaluation's tokens with the robustness probes' work counted as MCQ scoring (benchmark.probes)."""
    from dataclasses import replace

    from benchmark.probes import probe_tokens

    extra = probe_tokens(inputs.suite.mcq, inputs.profile.evaluation.probes, inputs.tokenizer)
    return replace(inputs.tokens, tokens={**inputs.tokens.tokens, "mcq": inputs.tokens.tokens["mcq"] + extra})


# seconds of the rate the estimate and the step-cost history use: the dtype probe's 0.15 s decides a 5-60x
# question; a cost needs the rate itself, and a 0.15 s reading on a shared VM can dip by a quarter
# (the likely cause of a suite grid estimated at 62 s that ran 37 s under the AVX2 emulation, 47 vs 43 s alone)
RATE_PROBE_S = 1.0


@functools.lru_cache(maxsize=None)
def _measured_rate(dtype: torch.dtype, device: str) -> float:
    return matmul_gflops(dtype, device, seconds=RATE_PROBE_S)


def _matmul_rate(inputs: RunInputs) -> float:
    """The run dtype's matmul rate for costs: measured once per process over :data:`RATE_PROBE_S`
    (best of three slices)."""
    return _measured_rate(inputs.dtype, str(inputs.device))


def _sizes_ratio(other: Profile, this: Profile) -> dict[Category, float]:
    """How much larger each category's inputs are in ``other`` than in ``this`` (edits, forget+retain, calibration)."""

    def ratio(a: int | None, b: int | None) -> float:
        return (a or 1) / (b or 1)

    editing = ratio(other.evaluation.n_edits, this.evaluation.n_edits)
    unlearning = ratio(
        (other.corpora.forget_n or 0) + (other.corpora.retain_n or 0),
        (this.corpora.forget_n or 0) + (this.corpora.retain_n or 0),
    )
    compression = ratio(other.corpora.calibration_n, this.corpora.calibration_n)
    return {
        Category.EDITING: editing,
        Category.UNLEARNING: unlearning,
        Category.COMPRESSION: compression,
        Category.MULTI: max(editing, unlearning, compression),
    }
