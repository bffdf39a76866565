"""The one place that applies a step: build its context, run it in or out of the sandbox, check and measure.

Every user of an intervention goes through :class:`StepExecutor`: the local runner
(:mod:`benchmark.runner`), the Ray executor (:mod:`benchmark.ray_executor`), ``validate``'s
smoke application (:mod:`benchmark.validate`) and the tuning scripts (``scripts/tune_*.py``).
What a step is handed, how its dtype is chosen, how it is seeded, which checks its output
passes and which figures are recorded are therefore the same wherever it runs.

The executor does not load inputs or write states: it takes a model and gives back a model
and the step's timing entry (raising :class:`StepFailed` with the one-line reason). Where
the step's code runs is :mod:`benchmark.isolation` (the sandboxed child) or this process
(trusted baselines, ``--in-process``); the sandbox itself (:mod:`benchmark.sandbox`) knows
nothing of interventions.
"""

from __future__ import annotations

import logging
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import torch

from benchmark.api import Category, EditRequest, InterventionContext
from benchmark.isolation import StepJob, launch_step_box, run_isolated, verify_built
from benchmark.numerics import parse_dtype
from benchmark.resources import measure
from benchmark.step_cache import StepCache, open_step_cache
from benchmark.step_checks import StepFailed, check_model_after, one_line, seed_everything, signature
from benchmark.submissions import SubmissionError

if TYPE_CHECKING:
    from benchmark.caches.run import RunCaches
    from benchmark.plan import Step

__all__ = ["StepMaterials", "StepExecutor", "StepFailed", "materials_for", "copies_of"]

log = logging.getLogger(__name__)

FreshModel = Callable[[dict[str, torch.Tensor] | None], torch.nn.Module]


@dataclass(frozen=True)
class StepMaterials:
    """What every step of one run is built from: the model's identity and the category inputs.

    A step's context holds only what its category needs (edits for editors, corpora for
    unlearners, calibration texts for compressors); :meth:`context` picks them.
    """

    seed: int
    device: torch.device
    dtype: torch.dtype  # the run's dtype: a step's weights come back in it
    family: str
    model_id: str
    model_path: str  # folder or Hub id the sandbox reads the config and tokenizer from (never the weights)
    base_sha: str
    tokenizer: Any
    signature: dict[str, tuple[int, ...]]
    edits: tuple[EditRequest, ...] = ()
    reference_texts: tuple[str, ...] = ()
    forget_texts: tuple[str, ...] = ()
    retain_texts: tuple[str, ...] = ()
    calibration_texts: tuple[str, ...] = ()
    forget_corpus_name: str = ""
    max_seq_len: int = 256

    @property
    def dtype_name(self) -> str:
        return str(self.dtype).removeprefix("torch.")

    def apply_dtype(self, step: "Step") -> torch.dtype:
        """The dtype the step runs in: the one its submission asks for, else the run's."""
        want = step.submission.spec.resources.dtype
        return parse_dtype(want) if want else self.dtype

    def context(self, step: "Step") -> InterventionContext:
        """The step's context: its resolved hyperparameters and what its category needs, nothing else."""
        category = step.category
        edits: tuple = ()
        forget: tuple[str, ...] = ()
        retain: tuple[str, ...] = ()
        calibration: tuple[str, ...] = ()
        reference: tuple[str, ...] = ()
        if category in (Category.EDITING, Category.MULTI):
            edits, reference = self.edits, self.reference_texts
        if category in (Category.UNLEARNING, Category.MULTI):
            forget, retain = self.forget_texts, self.retain_texts
        if category in (Category.COMPRESSION, Category.MULTI):
            calibration = self.calibration_texts
        return InterventionContext(
            hyperparameters=step.hyperparameters,
            seed=self.seed,
            device=self.device,
            dtype=self.apply_dtype(step),
            model_family=self.family,
            edits=edits,
            forget_texts=forget,
            retain_texts=retain,
            calibration_texts=calibration,
            reference_texts=reference,
            forget_corpus_name=self.forget_corpus_name if forget else "",
            max_seq_len=self.max_seq_len,
        )


def materials_for(resolved: Any, model: torch.nn.Module, tokenizer: Any, seed: int, **inputs: Any) -> StepMaterials:
    """Materials for steps on ``model`` (as loaded from ``resolved``, a ResolvedModel) outside a grid run.

    ``inputs`` are the category inputs (``edits=``, ``forget_texts=``, ...); the family is
    read from the model's config, as a run reads it.
    """
    from benchmark.models import family_of, weights_sha256

    return StepMaterials(
        seed=seed,
        device=next(model.parameters()).device,
        dtype=next(model.parameters()).dtype,
        family=family_of(resolved.model_id, model.config),
        model_id=resolved.model_id,
        model_path=resolved.path,
        base_sha=weights_sha256(model),
        tokenizer=tokenizer,
        signature=signature(model),
        **inputs,
    )


def copies_of(model: torch.nn.Module) -> FreshModel:
    """``fresh(state)`` for a model held in memory: a deep copy, holding ``state`` when given."""

    def fresh(state: dict[str, torch.Tensor] | None = None) -> torch.nn.Module:
        from benchmark.models import copy_holding

        return copy_holding(model, state)

    return fresh


class StepExecutor:
    """Applies steps for one run: ``apply(step, model) -> (model, entry)``, or :class:`StepFailed`.

    ``fresh(state)`` builds a harness-owned model holding ``state`` (the base model's
    weights for ``None``): a sandboxed step's returned weights are loaded into one and
    compared byte for byte before anyone evaluates them. ``cache_root`` holds the
    submissions' own step caches (:mod:`benchmark.step_cache`); ``caches`` is the run's
    state cache for trusted steps (:mod:`benchmark.caches.run`); ``on_cost(step, seconds)``
    receives each computed step's duration (the cost history).
    """

    def __init__(
        self,
        materials: StepMaterials,
        fresh: FreshModel,
        *,
        isolate: bool,
        cache_root: Path,
        caches: "RunCaches | None" = None,
        on_cost: Callable[["Step", float], None] | None = None,
    ) -> None:
        self.materials = materials
        self.fresh = fresh
        self.isolate = isolate
        self.cache_root = Path(cache_root)
        self.caches = caches
        self.on_cost = on_cost

    def launch(self) -> None:
        """Boot the sandbox for this run's steps in the background (nothing to do in-process)."""
        if self.isolate:
            m = self.materials
            launch_step_box(m.model_path, m.dtype_name, str(m.device))

    def apply(self, step: "Step", model: torch.nn.Module) -> tuple[torch.nn.Module, dict]:
        """Apply ``step`` to ``model`` (which it consumes), through the state cache where one is open."""
        if self.caches is not None:
            return self.caches.step(step, model, self._compute, self.materials.context(step), self.fresh)
        return self._compute(step, model)

    def _compute(self, step: "Step", model: torch.nn.Module) -> tuple[torch.nn.Module, dict]:
        """Run the step's code; its own cache folder is kept only when it succeeded."""
        settings = {
            "hyperparameters": step.hyperparameters,
            "dtype": str(self.materials.apply_dtype(step)).removeprefix("torch."),
            "model": self.materials.model_id,
        }
        cache = open_step_cache(self.cache_root, step.submission.sha256, self.materials.base_sha, settings)
        try:
            run = self._isolated if self.isolate else self._in_process
            model, entry = run(step, model, cache)
        except BaseException:
            cache.discard()
            raise
        cache.keep()
        if entry.get("seconds") and self.on_cost is not None:
            self.on_cost(step, entry["seconds"])
        return model, entry

    def _in_process(self, step: "Step", model: torch.nn.Module, cache: StepCache) -> tuple[torch.nn.Module, dict]:
        """Trusted code (baselines, ``--in-process``): import and apply the class in this process."""
        m = self.materials
        sub = step.submission
        dtype = m.apply_dtype(step)
        try:
            intervention = sub.instantiate()
        except SubmissionError as exc:
            raise StepFailed(f"{step.label}: {exc}") from exc
        if dtype != m.dtype:
            model = model.to(dtype)
        context = m.context(step)
        seed_everything(m.seed)
        with measure() as usage, cache.in_process():
            try:
                model = intervention.apply(model, m.tokenizer, context)
            except (KeyboardInterrupt, SystemExit):
                raise
            except torch.OutOfMemoryError as exc:
                raise StepFailed(f"{step.label}: out of memory: {one_line(exc)}") from exc
            except Exception as exc:
                log.debug("intervention %s failed:\n%s", step.label, traceback.format_exc())
                raise StepFailed(f"{step.label}: {one_line(exc)}") from exc
        if isinstance(model, torch.nn.Module) and dtype != m.dtype:
            model = model.to(m.dtype)
        check_model_after(step.label, model, m.signature)
        budget = sub.spec.resources.time_budget_s
        if usage.seconds > budget:
            raise StepFailed(f"{step.label}: ran {usage.seconds:.0f} s, over its time budget of {budget:.0f} s")
        return model, {
            "label": step.label,
            "seconds": round(usage.seconds, 3),
            "peak_rss_mb": round(usage.peak_rss_mb, 1),
            "peak_cuda_mb": usage.peak_cuda_mb,
            "dtype": str(dtype).removeprefix("torch."),
            "weight_bits": intervention.weight_bits(context),
            "isolation": {"process": False},
        }

    def _isolated(self, step: "Step", model: torch.nn.Module, cache: StepCache) -> tuple[torch.nn.Module, dict]:
        """Untrusted code: apply in a sandboxed child (benchmark.isolation); this process never imports it."""
        m = self.materials
        sub = step.submission
        dtype = m.apply_dtype(step)
        job = StepJob(
            submission=sub,
            context=m.context(step),
            model_path=m.model_path,
            model_dtype=m.dtype_name,
            apply_dtype=str(dtype).removeprefix("torch."),
            device=str(m.device),
            threads=torch.get_num_threads(),
            label=step.label,
            step_cache=cache.environment(),
        )
        res = sub.spec.resources
        outcome = run_isolated(job, model.state_dict(), res.time_budget_s, res.memory_budget_gb)
        del model
        if outcome.error is not None:
            if outcome.log_tail:
                log.info("output of %s ends: %s", step.label, outcome.log_tail)
            raise StepFailed(outcome.error)
        built = self.fresh(outcome.state)
        mismatch = verify_built(built, outcome.state, step.label)  # evaluate exactly what came back
        if mismatch:
            raise StepFailed(mismatch)
        return built, {
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
