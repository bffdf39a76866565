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

import copy
import datetime as dt
import json
import logging
import random
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from benchmark.api import Category, InterventionContext
from benchmark.cost import (EvaluationTokens, StepPlan, count_tokens, estimate, evaluation_items, human,
                            record_step_cost, step_cost_key)
from benchmark.isolation import StepJob, run_isolated, verify_built
from benchmark.data.corpora import Corpus, load_calibration_corpus, load_forget_corpus, load_retain_corpus
from benchmark.models import ResolvedModel, load_model, model_family, pick_device, resolve_model, weights_sha256
from benchmark.hardware import matmul_gflops
from benchmark.numerics import DtypeChoice, choose_dtype, parse_dtype
from benchmark.plan import Cell, Step, build_plan, cell_id, steps_for
from benchmark.profiles import Profile
from benchmark.provenance import hardware, harness_version, library_versions
from benchmark.records import RECORDS_FILE, SCHEMA_VERSION, append_record, finished_cells, read_records
from benchmark.resources import measure
from benchmark.step_cache import StepCache, open_step_cache
from benchmark.submissions import Submission, SubmissionError
from benchmark.suite import EvaluationSuite

log = logging.getLogger(__name__)


class StepFailed(RuntimeError):
    """An intervention failed; ``str()`` is the one-line reason that goes into the record."""


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _one_line(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".strip().replace("\n", " ")
    return text[:500]


def _signature(model: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    return {name: tuple(p.shape) for name, p in model.state_dict().items()}


def check_architecture(step_label: str, model: Any, base_signature: dict[str, tuple[int, ...]]) -> None:
    """The intervention returned a torch model of the same architecture (names and shapes)."""
    if not isinstance(model, torch.nn.Module):
        raise StepFailed(f"{step_label}: apply returned {type(model).__name__}, not a torch model")
    signature = _signature(model)
    if signature != base_signature:
        missing = sorted(set(base_signature) - set(signature))[:3]
        added = sorted(set(signature) - set(base_signature))[:3]
        reshaped = sorted(k for k in set(signature) & set(base_signature) if signature[k] != base_signature[k])[:3]
        raise StepFailed(
            f"{step_label}: architecture changed (missing {missing}, added {added}, reshaped {reshaped})"
        )


def check_model_after(step_label: str, model: Any, base_signature: dict[str, tuple[int, ...]]) -> None:
    """The intervention returned a model of the same architecture with finite weights."""
    check_architecture(step_label, model, base_signature)
    for name, tensor in model.state_dict().items():
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise StepFailed(f"{step_label}: weights are not finite (NaN or inf in {name})")


@dataclass
class RunInputs:
    """Everything loaded once per run and shared by every cell."""

    profile: Profile
    resolved: ResolvedModel
    family: str
    device: torch.device
    dtype: torch.dtype
    numerics: DtypeChoice  # how dtype was chosen (recorded)
    base_model: torch.nn.Module  # pristine, never handed to an intervention
    tokenizer: Any
    base_sha: str
    signature: dict[str, tuple[int, ...]]
    suite: EvaluationSuite
    forget: Corpus
    retain: Corpus
    calibration: Corpus
    out_dir: Path
    context_key: dict[str, Any] = field(default_factory=dict)
    tokens: EvaluationTokens | None = None  # tokens one evaluation processes (cost model)
    reference: Corpus | None = None  # generic text for editors' statistics (the whole retain corpus)


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
        self.caches = None  # benchmark.caches.run.RunCaches, opened in run()
        self.records_path = self.out_dir / RECORDS_FILE
        self.steps = steps_for(submissions, profile)
        self.cells = build_plan(self.steps, profile.protocol.recompress_when_first)

    # ---------------------------------------------------------------- set-up
    def _load_inputs(self) -> RunInputs:
        p = self.profile
        if p.threads:
            torch.set_num_threads(p.threads)
        device = pick_device(self.device_name)
        numerics = choose_dtype(p.dtype, str(device))
        dtype = numerics.dtype
        if warning := numerics.slow_warning():
            self.echo(warning)
        resolved = resolve_model(self.model_id)
        self.echo(f"model: {resolved.model_id} from {resolved.source} ({numerics.name} on {device}, {numerics.reason})")
        base_model, tokenizer = load_model(resolved, dtype, device)
        from benchmark.paths import tasks_dir
        import yaml

        families = yaml.safe_load((tasks_dir() / "model_families.yaml").read_text()) or {}
        family = model_family(resolved.model_id, base_model.config, families)
        base_sha = weights_sha256(base_model)
        c = p.corpora
        forget = load_forget_corpus(c.forget_n, p.seed, self.data_dir, c.bio_forget_path)
        retain = load_retain_corpus(c.retain_n, p.seed, self.data_dir)
        calibration = load_calibration_corpus(c.calibration_n, p.seed, self.data_dir)
        suite = EvaluationSuite.build(p.evaluation, p.seed, self.data_dir, forget.name)
        self.echo(
            f"data: {len(suite.edits)} edits, {len(suite.mcq['mmlu'])} MMLU, "
            f"{len(suite.mcq['wmdp_bio'])}+{len(suite.mcq['wmdp_cyber'])} WMDP ({p.evaluation.prompt_format}), "
            f"forget corpus {forget.name}"
        )
        self.out_dir.mkdir(parents=True, exist_ok=True)
        suite.prepare_reference(base_model, tokenizer, self.out_dir / "locality_reference.json", base_sha)
        context_key = {
            "model_id": resolved.model_id,
            "weights_sha256": base_sha,
            "dtype": numerics.name,
            "seed": p.seed,
            "evaluation": p.evaluation.model_dump(mode="json"),
            "corpora": {"forget": forget.describe(), "retain": retain.describe(), "calibration": calibration.describe()},
            "protocol": p.protocol.model_dump(mode="json"),
            "tasks": suite.provenance,
        }
        return RunInputs(
            p, resolved, family, device, dtype, numerics, base_model, tokenizer, base_sha, _signature(base_model),
            suite, forget, retain, calibration, self.out_dir, context_key,
            reference=load_retain_corpus(None, p.seed, self.data_dir),
        )

    def _context(self, inputs: RunInputs, step: Step, hp: dict[str, Any], dtype: torch.dtype) -> InterventionContext:
        category = step.category
        edits = forget = retain = calibration = reference = ()
        if category in (Category.EDITING, Category.MULTI):
            edits = tuple(r.to_edit_request() for r in inputs.suite.edits)  # prompt, subject, target only
            reference = inputs.reference.texts if inputs.reference else ()
        if category in (Category.UNLEARNING, Category.MULTI):
            forget, retain = inputs.forget.texts, inputs.retain.texts
        if category in (Category.COMPRESSION, Category.MULTI):
            calibration = inputs.calibration.texts
        return InterventionContext(
            hyperparameters=hp,
            seed=inputs.profile.seed,
            device=inputs.device,
            dtype=dtype,
            model_family=inputs.family,
            edits=edits,
            forget_texts=forget,
            retain_texts=retain,
            calibration_texts=calibration,
            reference_texts=reference,
            forget_corpus_name=inputs.forget.name if forget else "",
            max_seq_len=inputs.profile.evaluation.perplexity_seq_len,
        )

    # ---------------------------------------------------------------- steps
    def _apply(self, inputs: RunInputs, step: Step, model: torch.nn.Module) -> tuple[torch.nn.Module, dict]:
        """Apply one step to ``model``; returns the model it leaves and its timing entry (its cost goes to the history).

        The step gets its own cache (benchmark.step_cache): what it writes there is kept for
        this submission only, and only when the step succeeded.
        """
        cache = self._step_cache(inputs, step)
        try:
            model, entry = self._apply_step(inputs, step, model, cache)
        except BaseException:
            cache.discard()
            raise
        cache.keep()
        if entry.get("seconds"):
            n = inputs.numerics
            record_step_cost(self._step_plan(inputs, step).key, entry["seconds"], _matmul_rate(inputs), n.capability, n.name)
        return model, entry

    def _step_cache(self, inputs: RunInputs, step: Step) -> StepCache:
        from benchmark.paths import cache_dir

        want = step.submission.spec.resources.dtype or inputs.numerics.name
        settings = {"hyperparameters": step.hyperparameters(inputs.family), "dtype": want, "model": inputs.resolved.model_id}
        return open_step_cache(cache_dir() / "steps", step.submission.sha256, inputs.base_sha, settings)

    def _apply_step(self, inputs: RunInputs, step: Step, model: torch.nn.Module, cache: StepCache) -> tuple[torch.nn.Module, dict]:
        if self.isolate:
            return self._apply_isolated(inputs, step, model, cache)
        sub = step.submission
        hp = step.hyperparameters(inputs.family)
        want = sub.spec.resources.dtype
        dtype = parse_dtype(want) if want else inputs.dtype
        try:
            intervention = sub.instantiate()
        except SubmissionError as exc:
            raise StepFailed(f"{step.label}: {exc}") from exc
        if dtype != inputs.dtype:
            model = model.to(dtype)
        context = self._context(inputs, step, hp, dtype)
        seed_everything(inputs.profile.seed)
        with measure() as usage, cache.in_process():
            try:
                model = intervention.apply(model, inputs.tokenizer, context)
            except (KeyboardInterrupt, SystemExit):
                raise
            except torch.OutOfMemoryError as exc:
                raise StepFailed(f"{step.label}: out of memory: {_one_line(exc)}") from exc
            except Exception as exc:
                log.debug("intervention %s failed:\n%s", step.label, traceback.format_exc())
                raise StepFailed(f"{step.label}: {_one_line(exc)}") from exc
        if isinstance(model, torch.nn.Module) and dtype != inputs.dtype:
            model = model.to(inputs.dtype)
        check_model_after(step.label, model, inputs.signature)
        budget = sub.spec.resources.time_budget_s
        if usage.seconds > budget:
            raise StepFailed(f"{step.label}: ran {usage.seconds:.0f} s, over its time budget of {budget:.0f} s")
        weight_bits = intervention.weight_bits(context)
        entry = {
            "label": step.label,
            "seconds": round(usage.seconds, 3),
            "peak_rss_mb": round(usage.peak_rss_mb, 1),
            "peak_cuda_mb": usage.peak_cuda_mb,
            "dtype": str(dtype).removeprefix("torch."),
            "weight_bits": weight_bits,
            "isolation": {"process": False},
        }
        return model, entry

    def _step(self, inputs: RunInputs, step: Step, model: torch.nn.Module) -> tuple[torch.nn.Module, dict]:
        """Apply one step, through the state cache when it is trusted code (benchmark.caches)."""
        if self.caches is None:
            return self._apply(inputs, step, model)
        return self.caches.step(inputs, step, model, self._apply, self._context, self._fresh)

    def _apply_isolated(
        self, inputs: RunInputs, step: Step, model: torch.nn.Module, cache: StepCache,
    ) -> tuple[torch.nn.Module, dict]:
        """Apply one step in a sandboxed child (benchmark.isolation); the harness never imports the code."""
        sub = step.submission
        hp = step.hyperparameters(inputs.family)
        want = sub.spec.resources.dtype
        dtype = parse_dtype(want) if want else inputs.dtype
        job = StepJob(
            submission=sub, context=self._context(inputs, step, hp, dtype), model_path=inputs.resolved.path,
            model_dtype=str(inputs.dtype).removeprefix("torch."), apply_dtype=str(dtype).removeprefix("torch."),
            device=str(inputs.device), threads=torch.get_num_threads(), label=step.label,
            step_cache=cache.environment(),
        )
        res = sub.spec.resources
        outcome = run_isolated(job, model.state_dict(), res.time_budget_s, res.memory_budget_gb)
        del model
        if outcome.error is not None:
            if outcome.log_tail:
                log.info("output of %s ends: %s", step.label, outcome.log_tail)
            raise StepFailed(outcome.error)
        fresh = self._fresh(inputs, outcome.state)
        mismatch = verify_built(fresh, outcome.state, step.label)  # evaluate exactly what came back
        if mismatch:
            raise StepFailed(mismatch)
        entry = {
            "label": step.label,
            "seconds": outcome.seconds,  # measured by the harness: process start to exit (import, __init__, apply)
            "peak_rss_mb": round(outcome.peak_rss_mb, 1),  # resident set + the box's /tmp and /dev/shm
            "peak_cuda_mb": None,
            "dtype": str(dtype).removeprefix("torch."),
            "weight_bits": outcome.weight_bits,
            "reported_apply_s": outcome.reported_apply_s,
            "returned_sha256": outcome.returned_sha256,
            "isolation": outcome.isolation,
            "isolation_overhead_s": round(outcome.wall_s - (outcome.seconds or 0.0), 3),
        }
        return fresh, entry

    def _fresh(self, inputs: RunInputs, state: dict[str, torch.Tensor] | None) -> torch.nn.Module:
        model = copy.deepcopy(inputs.base_model)
        if state is not None:
            model.load_state_dict(state, strict=True)
        return model

    # ---------------------------------------------------------------- records
    def _record(
        self, inputs: RunInputs, cell: Cell, cid: str, hps: list[dict], status: str, error: str | None,
        scores: dict | None = None, items: dict | None = None, timings: dict | None = None,
        peak_mb: float | None = None, weights_sha: str | None = None,
    ) -> dict:
        sequence = []
        for step, hp in zip(cell.steps, hps):
            sequence.append({
                "name": step.submission.name,
                "category": step.category.value,
                "level": step.level_dict(),
                "label": step.label,
                "submission_sha256": step.submission.sha256,
                "hyperparameters": hp,
                "license": step.submission.spec.license,
                "authors": step.submission.spec.authors,
                "link": step.submission.spec.link,
            })
        p = self.profile
        return {
            "schema_version": SCHEMA_VERSION,
            "cell_id": cid,
            "status": status,
            "error": error,
            "label": cell.label,
            "sequence": sequence,
            "recompressed_with": cell.recompress.label if cell.recompress else None,
            "scores": scores or {},
            "items": items or {},
            "provenance": {
                "harness_version": harness_version(),
                "profile": p.name,
                "model_id": inputs.resolved.model_id,
                "model_source": inputs.resolved.source,
                "model_family": inputs.family,
                "base_weights_sha256": inputs.base_sha,
                "weights_sha256": weights_sha,
                "dtype": inputs.numerics.name,
                "dtype_requested": p.dtype,
                "numerics": inputs.numerics.describe(),
                "device": str(inputs.device),
                "seed": p.seed,
                "tasks": inputs.suite.provenance,
                "prompt_format": p.evaluation.prompt_format,
                "forget_corpus": inputs.forget.describe(),
                "retain_corpus": inputs.retain.describe(),
                "calibration": inputs.calibration.describe(),
                "protocol": p.protocol.model_dump(mode="json"),
                "profile_settings": p.settings(),
                "hardware": hardware(),
                "libraries": library_versions(),
            },
            "timings": timings or {},
            "peak_memory_mb": peak_mb,
            "finished_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        }

    def _evaluate_and_record(
        self, inputs: RunInputs, cell: Cell, cid: str, hps: list[dict], model: torch.nn.Module, entries: list[dict]
    ) -> dict:
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
        record = self._record(inputs, cell, cid, hps, "ok", None, ev.scores, ev.items, timings, round(peak, 1), weights_sha)
        record["cache"] = ev.mark
        record["compression_check"] = ev.compression  # the steps' claimed bits beside the measured ones
        append_record(self.records_path, record)
        return record

    def _evaluate(self, inputs: RunInputs, cell: Cell, cid: str, model: torch.nn.Module, bits: float | None, weights_sha: str):
        """The suite's evaluation of ``model``, through the evaluation cache unless --no-cache (benchmark.caches)."""
        from benchmark.caches.run import Evaluated

        if self.caches is not None:
            return self.caches.evaluate(inputs, model, bits, weights_sha, self.caches.origin(inputs, cell.label, cid))
        with measure() as usage:
            scores, items, parts, compression = inputs.suite.evaluate(model, inputs.tokenizer, bits, inputs.base_model)
        return Evaluated(scores, items, parts, usage.seconds, usage.peak_rss_mb, {"evaluation": "off"}, compression)

    def _fail(self, inputs: RunInputs, cell: Cell, cid: str, hps: list[dict], reason: str, entries: list[dict]) -> dict:
        record = self._record(inputs, cell, cid, hps, "failed", reason, timings={"interventions": entries})
        append_record(self.records_path, record)
        self.echo(f"FAILED {cell.label}: {reason}")
        return record

    # ---------------------------------------------------------------- the grid
    def run(self) -> list[dict]:
        inputs = self._load_inputs()
        if self.use_cache:
            from benchmark.caches.run import open_run_caches

            self.caches = open_run_caches(inputs, "sandbox" if self.isolate else "in-process")
        ids: dict[Cell, tuple[str, list[dict]]] = {}
        for cell in self.cells:
            hps = [s.hyperparameters(inputs.family) for s in cell.steps]
            ids[cell] = (cell_id(cell, inputs.context_key, hps), hps)
        done = finished_cells(read_records(self.records_path), self.retry_failed)
        todo = [c for c in self.cells if ids[c][0] not in done]
        self.echo(f"plan: {len(self.cells)} cells, {len(self.cells) - len(todo)} already recorded, {len(todo)} to run")
        planned = self._estimate(inputs, todo)
        bar = tqdm(total=max(1, round(sum(planned.values()))), desc="grid", unit="s",
                   bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} estimated s [{elapsed}<{remaining}{postfix}]")
        started, cells_done = time.perf_counter(), 0

        def finish(cell: Cell) -> None:
            nonlocal cells_done
            cells_done += 1
            bar.set_postfix_str(f"{cells_done}/{len(todo)} cells, {cell.label[:50]}")
            bar.update(round(planned.get(cell, 0.0)))

        if Cell(()) in todo:
            cid, hps = ids[Cell(())]
            self._evaluate_and_record(inputs, Cell(()), cid, hps, self._fresh(inputs, None), [])
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
        key = step_cost_key(step.submission.name, step.submission.sha256, step.level, items)
        return StepPlan(step.submission.name, category.value, key, items)

    def _estimate(self, inputs: RunInputs, todo: list[Cell]) -> dict[Cell, float]:
        """Estimated seconds per cell still to run (its first step counted in the first cell of its group); prints the total."""
        if not todo:
            return {}
        rate = _matmul_rate(inputs)
        n_params = sum(t.numel() for t in {id(t): t for t in inputs.base_model.state_dict().values()}.values())
        inputs.tokens = count_tokens(inputs.suite, inputs.tokenizer)
        applications: list[tuple[Cell, Step]] = []
        first_applied: set[Step] = set()
        for cell in todo:
            steps = list(cell.steps) + ([cell.recompress] if cell.recompress else [])
            if cell.first is not None and len(cell.steps) > 1:
                if cell.first in first_applied or self._state_file(inputs, cell.first).exists():
                    steps = steps[1:]
                first_applied.add(cell.first)
            elif cell.first is not None:
                first_applied.add(cell.first)
            applications += [(cell, step) for step in steps]
        est = estimate(inputs.tokens, n_params, rate, len(todo),
                       [(step.label, self._step_plan(inputs, step)) for _, step in applications],
                       sandboxed=self.isolate, dtype=inputs.numerics.name)
        per_cell = {cell: est.evaluation_s for cell in todo}
        for (cell, _), (_, seconds, _) in zip(applications, est.steps_s):
            per_cell[cell] += seconds
        sources = sorted({source for _, _, source in est.steps_s})
        self.echo(
            f"estimate: {human(est.total_s)} on this machine ({inputs.numerics.capability}, {inputs.numerics.name} "
            f"matmul {rate:.0f} GFLOP/s): {len(todo)} evaluations of ~{est.evaluation_s:.0f} s "
            f"(MCQ {est.evaluation_parts_s['mcq']:.0f} s, zsRE {est.evaluation_parts_s['zsre']:.0f} s, "
            f"perplexity {est.evaluation_parts_s['perplexity']:.0f} s) + {len(est.steps_s)} intervention "
            f"applications {sum(s for _, s, _ in est.steps_s):.0f} s (costs from {', '.join(sources) or '-'})"
        )
        if sooner := self._sooner(inputs, est.total_s, rate, n_params):
            self.echo(sooner)
        return per_cell

    def _sooner(self, inputs: RunInputs, total_s: float, rate: float, n_params: int) -> str | None:
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
            subs = [baselines[n] for n in other.interventions if n in baselines] + extra
            cells = build_plan(steps_for(subs, other), other.protocol.recompress_when_first)
            tokens = inputs.tokens.scaled(evaluation_items(other.evaluation))
            firsts = {c.first for c in cells if c.first is not None}
            steps = [s for c in cells for s in c.steps[1:] + ((c.recompress,) if c.recompress else ())]
            scale = _sizes_ratio(other, self.profile)
            plans = [(s.label, self._step_plan(inputs, s, scale.get(s.category, 1.0))) for s in [*firsts, *steps]]
            est = estimate(tokens, n_params, rate, len(cells), plans, sandboxed=self.isolate, dtype=inputs.numerics.name)
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

    def _state_file(self, inputs: RunInputs, first: Step) -> Path:
        hp = first.hyperparameters(inputs.family)
        key = cell_id(Cell((first,)), inputs.context_key, [hp])
        return self.out_dir / "states" / f"{key}.safetensors"

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
            model = self._fresh(inputs, None)
            try:
                model, first_entry = self._step(inputs, first, model)
                state = {k: v.detach().to("cpu").clone() for k, v in model.state_dict().items()}
                if self.profile.cache_states and len(group) > 1:
                    state_file.parent.mkdir(parents=True, exist_ok=True)
                    tmp = state_file.with_suffix(".tmp")
                    save_file(_untied(state), str(tmp), metadata={"entry": _json(first_entry)})
                    tmp.replace(state_file)
            except StepFailed as exc:
                first_error = str(exc)
            finally:
                del model
        if first_entry and first_entry.get("reused_from_disk"):
            first_entry = _entry_from_file(state_file) or first_entry
        for cell in group:
            cid, hps = ids[cell]
            if first_error is not None:
                self._fail(inputs, cell, cid, hps, first_error if len(cell.steps) == 1 else f"first intervention failed: {first_error}", [])
                finish(cell)
                continue
            entries = [dict(first_entry)]
            model = self._fresh(inputs, state)
            try:
                for step in cell.steps[1:] + ((cell.recompress,) if cell.recompress else ()):
                    model, entry = self._step(inputs, step, model)
                    if step is cell.recompress:
                        entry["reapplied"] = True
                    entries.append(entry)
                self._evaluate_and_record(inputs, cell, cid, hps, model, entries)
            except StepFailed as exc:
                self._fail(inputs, cell, cid, hps, str(exc), entries)
            finally:
                del model
            finish(cell)
        if state_file.exists():
            state_file.unlink()


def _untied(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """safetensors refuses shared storage: give tied tensors their own copy (restored tied on load)."""
    seen: dict[int, str] = {}
    out = {}
    for name, tensor in state.items():
        ptr = tensor.data_ptr()
        out[name] = tensor.clone() if ptr in seen else tensor.contiguous()
        seen.setdefault(ptr, name)
    return out


def _json(obj: Any) -> str:
    return json.dumps(obj, default=str)


def _entry_from_file(path: Path) -> dict | None:
    from safetensors import safe_open

    with safe_open(str(path), "pt") as fh:
        meta = fh.metadata() or {}
    return json.loads(meta["entry"]) if "entry" in meta else None


def summary_table(records: list[dict]):
    """One row per evaluated model with its main scores (pandas DataFrame)."""
    import pandas as pd

    rows = []
    for r in records:
        s = r.get("scores") or {}
        rows.append({
            "cell": r["label"],
            "status": r["status"],
            "edit": s.get("edit_success"),
            "gen": s.get("generalization"),
            "loc": s.get("locality"),
            "wmdp": s.get("wmdp"),
            "mmlu": s.get("mmlu"),
            "mmlu_p": s.get("mmlu_prob"),  # the continuous forms (tasks/criteria.yaml): signal where acc is at chance
            "wmdp_p": s.get("wmdp_prob"),
            "ppl": s.get("perplexity"),
            "bits": s.get("avg_bits"),
            "sparsity": s.get("sparsity"),
            "seconds": (r.get("timings") or {}).get("total_s"),
        })
    return pd.DataFrame(rows)


def _matmul_rate(inputs: RunInputs) -> float:
    """The run dtype's matmul rate: the dtype probe's measurement, or a probe now where it measured none."""
    return inputs.numerics.gflops.get(inputs.numerics.name) or matmul_gflops(inputs.dtype, inputs.device)


def _sizes_ratio(other: Profile, this: Profile) -> dict[Category, float]:
    """How much larger each category's inputs are in ``other`` than in ``this`` (edits, forget+retain, calibration)."""
    def ratio(a: int | None, b: int | None) -> float:
        return (a or 1) / (b or 1)

    editing = ratio(other.evaluation.n_edits, this.evaluation.n_edits)
    unlearning = ratio((other.corpora.forget_n or 0) + (other.corpora.retain_n or 0),
                       (this.corpora.forget_n or 0) + (this.corpora.retain_n or 0))
    compression = ratio(other.corpora.calibration_n, this.corpora.calibration_n)
    return {Category.EDITING: editing, Category.UNLEARNING: unlearning, Category.COMPRESSION: compression,
            Category.MULTI: max(editing, unlearning, compression)}

