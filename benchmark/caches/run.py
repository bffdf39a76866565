"""The runner's use of the two caches: what a key is made of, and what a hit puts in the record.

The runner calls :meth:`RunCaches.evaluate` around the suite's evaluation and
:meth:`RunCaches.step` around applying a step; both fall through to the real computation
on a miss and store its result. Timings in a record keep the compute cost of each part
(the seconds of the run that computed it); a hit adds ``cached: true`` and the seconds
the lookup took, so a cost model keeps reading what computing the cell costs.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import torch

from benchmark.caches.evaluations import CachedEvaluation, EvaluationCache
from benchmark.caches.folders import open_caches
from benchmark.caches.keys import (
    EVALUATION_CODE_EXCLUDES,
    STEP_CODE_EXCLUDES,
    canonical_sha256,
    code_digest,
    config_digest,
    device_kind,
    library_versions,
    tokenizer_digest,
)
from benchmark.caches.states import StateCache
from benchmark.paths import is_trusted
from benchmark.resources import measure

if TYPE_CHECKING:
    from benchmark.api import InterventionContext
    from benchmark.plan import Step
    from benchmark.run_inputs import RunInputs

log = logging.getLogger(__name__)


def context_digest(context: "InterventionContext") -> dict[str, Any]:
    """What the step is handed, as digests: the edits, texts and settings of its context."""
    from dataclasses import asdict, fields

    out: dict[str, Any] = {}
    for f in fields(context):
        value = getattr(context, f.name)
        if f.name == "edits":
            value = [asdict(e) for e in value]
        elif isinstance(value, (list, tuple)):
            value = list(value)
        elif isinstance(value, torch.device):
            value = device_kind(value)
        elif isinstance(value, torch.dtype):
            value = str(value).removeprefix("torch.")
        out[f.name] = canonical_sha256(value) if isinstance(value, list) else value
    return out


@dataclass
class Evaluated:
    """An evaluation as the runner records it, from the cache or computed now."""

    scores: dict
    items: dict
    parts_s: dict
    seconds: float
    peak_rss_mb: float
    mark: dict  # the record's ``cache`` field
    compression: dict  # the record's ``compression_check``


class RunCaches:
    """The caches as one run uses them: key parts fixed for the run, counters of its hits."""

    def __init__(self, inputs: "RunInputs", executor: str, root: Path | None = None) -> None:
        self.evaluations, self.states = open_caches(root)
        self.executor = executor
        self.counts = {"evaluation_hits": 0, "evaluation_misses": 0, "state_hits": 0, "state_misses": 0}
        tok = tokenizer_digest(inputs.tokenizer)
        device = device_kind(inputs.device)
        self._evaluation_base = {
            "evaluation": inputs.profile.evaluation.model_dump(mode="json"),
            "tasks": inputs.suite.provenance,
            "locality_reference_sha256": canonical_sha256(inputs.suite.reference),
            "base_weights_sha256": inputs.base_sha,  # measured bits compare with the base model
            "dtype": str(inputs.dtype).removeprefix("torch."),
            "device": device,
            "tokenizer_sha256": tok,
            "code_sha256": code_digest(EVALUATION_CODE_EXCLUDES),
            "libraries": library_versions(),
        }
        self._step_base = {
            "dtype": str(inputs.dtype).removeprefix("torch."),
            "device": device,
            "tokenizer_sha256": tok,
            "code_sha256": code_digest(STEP_CODE_EXCLUDES),
            "libraries": library_versions(),
            "executor": executor,
        }

    # ------------------------------------------------------------ evaluations
    def evaluation_material(self, model: torch.nn.Module, weights_sha: str, weight_bits: float | None) -> dict:
        return {
            **self._evaluation_base,
            "weights_sha256": weights_sha,
            "weight_bits": weight_bits,
            "config_sha256": config_digest(model),
        }

    def evaluate(
        self,
        inputs: "RunInputs",
        model: torch.nn.Module,
        weight_bits: float | None,
        weights_sha: str,
        origin: dict[str, Any],
    ) -> Evaluated:
        """The suite's evaluation of ``model``: from the cache when these weights were evaluated before."""
        t0 = time.perf_counter()
        try:
            material = self.evaluation_material(model, weights_sha, weight_bits)
            key = EvaluationCache.key(material)
        except Exception as exc:  # a key that cannot be built is a bug to report, not a reason to fail the cell
            log.warning("evaluation cache skipped: cannot build the key: %s: %s", type(exc).__name__, exc)
            material, key = None, None
        found = self.evaluations.get(key) if key else None
        if found is not None:
            self.counts["evaluation_hits"] += 1
            mark = {
                "evaluation": "hit",
                "key": key,
                "lookup_s": round(time.perf_counter() - t0, 3),
                "computed": found.origin,
            }
            log.info("evaluation of %s from the cache (computed in %.1f s)", origin.get("cell"), found.seconds)
            return Evaluated(
                found.scores, found.items, found.parts_s, found.seconds, found.peak_rss_mb, mark, found.compression
            )
        self.counts["evaluation_misses"] += 1
        with measure() as usage:
            scores, items, parts, compression = inputs.suite.evaluate(
                model, inputs.tokenizer, weight_bits, inputs.base_model
            )
        parts = {k: round(v, 3) for k, v in parts.items()}
        result = CachedEvaluation(
            scores, items, parts, round(usage.seconds, 3), round(usage.peak_rss_mb, 1), origin, compression
        )
        stored = self.evaluations.put(key, material, result) if key else False
        mark = {"evaluation": "miss", "key": key, "stored": stored}
        return Evaluated(scores, items, parts, usage.seconds, usage.peak_rss_mb, mark, compression)

    # ------------------------------------------------------------ steps
    def step(
        self,
        step: "Step",
        model: torch.nn.Module,
        compute: Callable[["Step", torch.nn.Module], tuple[torch.nn.Module, dict]],
        context: "InterventionContext",
        fresh: Callable[[dict[str, torch.Tensor]], torch.nn.Module],
    ) -> tuple[torch.nn.Module, dict]:
        """Apply ``step`` to ``model`` (``compute``), or load its output from the cache when the step is trusted.

        ``context`` is the one the step is handed (benchmark.step_executor), part of the key.
        """
        sub = step.submission
        if not is_trusted(sub.folder):
            return compute(step, model)
        t0 = time.perf_counter()
        try:
            material = self._step_material(step, model, context)
        except Exception as exc:  # as for evaluations: never fail a cell over its cache key
            log.warning("state cache skipped for %s: cannot build the key: %s: %s", step.label, type(exc).__name__, exc)
            return compute(step, model)
        key = StateCache.key(material)
        found = self.states.get(key)
        if found is not None:
            state, entry = found
            del model
            out = fresh(state)
            self.counts["state_hits"] += 1
            entry = {**entry, "cached": True, "cache_key": key, "lookup_s": round(time.perf_counter() - t0, 3)}
            log.info("%s from the state cache (computed in %s s)", step.label, entry.get("seconds"))
            return out, entry
        self.counts["state_misses"] += 1
        out, entry = compute(step, model)
        state = {k: v.detach().to("cpu") for k, v in out.state_dict().items()}
        self.states.put(key, material, state, entry)
        return out, {**entry, "cached": False, "cache_key": key}

    def holds_state(self, key: str) -> bool:
        """Whether a step's output is stored under ``key`` now (another run may still evict it later)."""
        return self.states.store.path(key).exists()

    def stores_step(self, step: "Step") -> bool:
        """Whether applying ``step`` writes its output to the state cache (what the pre-run estimate counts)."""
        return is_trusted(step.submission.folder) and self.states.store.limit_bytes > 0

    def _step_material(self, step: "Step", model: torch.nn.Module, context: "InterventionContext") -> dict[str, Any]:
        from benchmark.models import weights_sha256

        sub = step.submission
        return {
            **self._step_base,
            "input_weights_sha256": weights_sha256(model),
            "config_sha256": config_digest(model),
            "submission": sub.name,
            "submission_sha256": sub.sha256,
            "level": step.level_dict(),
            "hyperparameters": step.hyperparameters,
            "apply_dtype": str(context.dtype).removeprefix("torch."),
            "context": context_digest(context),
        }

    def summary(self) -> str:
        c = self.counts
        return (
            f"cache: evaluations {c['evaluation_hits']} hit(s), {c['evaluation_misses']} computed; "
            f"trusted steps {c['state_hits']} hit(s), {c['state_misses']} computed "
            f"({self.evaluations.store.folder.parent})"
        )

    def origin(self, inputs: "RunInputs", label: str, cell_id: str) -> dict[str, Any]:
        from benchmark.provenance import harness_version

        return {"profile": inputs.profile.name, "cell": label, "cell_id": cell_id, "harness_version": harness_version()}


def open_run_caches(inputs: "RunInputs", executor: str) -> RunCaches | None:
    """The caches for one run, or None (with a warning) when they cannot be opened; bad settings still raise."""
    from benchmark.caches.store import CacheConfigError

    try:
        return RunCaches(inputs, executor)
    except CacheConfigError:
        raise
    except Exception as exc:
        log.warning("running without the caches: %s: %s", type(exc).__name__, exc)
        return None
