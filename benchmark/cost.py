"""How long a grid will take on this machine, said before it starts and kept honest while it runs.

The estimate is a cost model, not a guess:

* **evaluation** of one model = forward FLOPs of the tokens every scorer processes
  (``2 x parameters x tokens``, counted from this run's own items and tokenizer) divided
  by the matmul rate the dtype probe measured in this process
  (:mod:`benchmark.numerics`) times each scorer's measured efficiency (the fraction of
  that rate it reaches: ``tasks/cost_model.yaml``, from ``benchmarks/``), plus a fixed
  per-model overhead;
* **a step** (one intervention applied once) = its recorded work in GFLOP-equivalents
  (seconds x the matmul rate of the machine and dtype it ran on) divided by this
  machine's rate. Recorded work comes from this machine's own history (every applied step
  appends its cost to ``<results cache>/costs/steps.jsonl``, per dtype), else from the shipped table of
  ``tasks/cost_model.yaml`` (the baselines, measured), else from the category's typical cost.
  A shipped cost has a ``setup`` part that does not grow with the step's work settings (a
  compressor's pipeline is built once per model however few calibration windows it sees)
  and a part that does. Added per step: the sandbox's call when sandboxed, and writing the
  result to the state cache when the step is a cached (trusted) one: its bytes, hashed and
  serialized.

Scaling seconds by the matmul rate is what lets a cost measured on a machine with fast
bf16 predict one with AVX2 only: both the steps and the scorers are dominated by dense
matmuls of the model's own shapes, up to a point. A dtype's table may set ``rate_cap_gflops``:
beyond it the shipped costs stop shrinking, because what is not a matmul (norms, softmax,
the optimizer, Python) then takes most of the time. Measured: in bfloat16 an AMD EPYC
(974 GFLOP/s) and an Intel Xeon with AMX (2,500 GFLOP/s) evaluated a model and applied
FT, GA and Wanda in about the same seconds, so dividing by the Xeon's rate estimated its
grid at half its time. Costs from this machine's own history are not capped: they were
measured at this machine's rate. Written by hand: no library estimates LLM grid times.
"""

from __future__ import annotations

import json
import logging
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import yaml

from benchmark.paths import tasks_dir

log = logging.getLogger(__name__)

COST_MODEL_FILE = "cost_model.yaml"
HISTORY_FILE = "steps.jsonl"
SCORERS = ("mcq", "zsre", "perplexity")


@dataclass(frozen=True)
class CostModel:
    """The measured constants of ``tasks/cost_model.yaml`` for one dtype.

    Per dtype because the fraction of the matmul rate that real work reaches differs: on a
    CPU with AMX, bf16 matmuls are four times faster than float32 ones but the rest of a
    forward pass (norms, attention, softmax, Python) is not.
    """

    efficiency: dict[str, float]  # scorer -> achieved fraction of the matmul rate
    evaluation_overhead_s: float
    step_overhead_s: dict[str, float]  # "sandboxed" / "in_process" -> seconds per step
    steps: dict[str, dict[str, float]]  # name (or "category:<c>") -> {setup, fixed, per_item} in GFLOP-equivalents
    measured_at: dict[str, dict[str, float]] = field(
        default_factory=dict
    )  # name -> hyperparameters the work scales with
    state_cache_s_per_gb: float = 0.0  # a cached step's output: key hash, serialization, file hash
    measured_on_params: int = 0  # parameters of the model the step costs were measured on (0: do not scale)
    rate_cap_gflops: float | None = None  # the shipped costs' rate stops growing here (non-matmul work dominates)

    def cost_rate(self, gflops: float) -> float:
        """The matmul rate the shipped costs are divided by on a machine measuring ``gflops``: capped by the table."""
        return min(gflops, self.rate_cap_gflops) if self.rate_cap_gflops else gflops

    def size_ratio(self, n_params: int) -> float:
        """How much larger a model of ``n_params`` is than the one the costs were measured on (1 when unknown)."""
        return n_params / self.measured_on_params if n_params and self.measured_on_params else 1.0

    @classmethod
    def load(cls, dtype: str = "float32", path: Path | None = None, device_type: str = "cpu") -> "CostModel":
        """The table of ``dtype``; its ``rate_cap_gflops`` only on a CPU, where it was measured (a GPU's
        bf16 rate is hundreds of times the cap: capping it would estimate a GPU grid at a CPU's seconds)."""
        path = path or tasks_dir() / COST_MODEL_FILE
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
            table = raw["dtypes"].get(dtype) or raw["dtypes"]["float32"]
            return cls(
                efficiency={k: float(table["evaluation_efficiency"][k]) for k in SCORERS},
                evaluation_overhead_s=float(table["evaluation_overhead_s"]),
                step_overhead_s={k: float(v) for k, v in raw["step_overhead_s"].items()},
                steps={
                    str(k): {part: float(v.get(part, 0.0)) for part in ("setup", "fixed", "per_item")}
                    for k, v in table["steps"].items()
                },
                measured_at={
                    str(k): {str(h): float(x) for h, x in v["measured_at"].items()}
                    for k, v in table["steps"].items()
                    if v.get("measured_at")
                },
                state_cache_s_per_gb=float(raw["state_cache_s_per_gb"]),
                measured_on_params=int(raw["measured_on_params"]),
                rate_cap_gflops=(
                    float(table["rate_cap_gflops"]) if table.get("rate_cap_gflops") and device_type == "cpu" else None
                ),
            )
        except (OSError, yaml.YAMLError, KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ValueError(f"{path}: not a usable cost model ({type(exc).__name__}: {exc})") from None


@dataclass(frozen=True)
class EvaluationTokens:
    """Tokens one evaluated model costs, per scorer, and the item counts they came from."""

    tokens: dict[str, int]
    items: dict[str, int]

    def scaled(self, items: dict[str, int]) -> "EvaluationTokens":
        """The same per-item token averages for other item counts (another profile's sizes)."""
        return EvaluationTokens(
            {k: round(self.tokens[k] * items[k] / max(1, self.items[k])) for k in SCORERS}, dict(items)
        )


def evaluation_items(settings: Any, n_mcq: int | None = None) -> dict[str, int]:
    """Item counts of one evaluation: MCQ questions, zsRE edits, perplexity windows (of ``seq_len`` tokens)."""
    mcq = n_mcq if n_mcq is not None else (settings.mmlu_n or 14042) + 2 * (settings.wmdp_n_per_subset or 1500)
    return {"mcq": mcq, "zsre": settings.n_edits, "perplexity": (settings.perplexity_windows or 64)}


def count_tokens(suite: Any, tokenizer: Any) -> EvaluationTokens:
    """Tokens each scorer processes for one model of ``suite`` (benchmark.suite.EvaluationSuite).

    MCQ: each question once plus every choice (questions are shared across their choices).
    zsRE: prompt + target of the edit, its paraphrase and the locality prompt once (one
    teacher-forced pass gives the greedy continuation up to its first disagreement; the
    decoding of the rest is in the scorer's measured efficiency). Perplexity: windows x length.
    """

    def n(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    mcq_items = [item for items in suite.mcq.values() for item in items]
    mcq = sum(n(item.question) + sum(n(" " + c) for c in item.choices) + 8 for item in mcq_items)
    zsre = sum(n(r.prompt) + n(r.rephrase) + n(r.loc) + 2 * n(" " + r.target) + n(" " + r.loc_ans) for r in suite.edits)
    s = suite.settings
    windows = s.perplexity_windows or 64
    perplexity = windows * s.perplexity_seq_len
    return EvaluationTokens(
        {"mcq": mcq, "zsre": zsre, "perplexity": perplexity}, evaluation_items(s, n_mcq=len(mcq_items))
    )


def history_path() -> Path:
    """Beside the evaluation and state caches (``$COMPOSE_BENCH_RESULTS_CACHE``): what this machine measured."""
    from benchmark.caches.store import results_cache_dir

    return results_cache_dir() / "costs" / HISTORY_FILE


def step_cost_key(
    name: str, submission_sha: str, level: Any, items: int, settings_json: str = "", n_params: int = 0
) -> str:
    """One step's identity in the history: the same code, level, item count, resolved hyperparameters and model size
    (a step's work grows with the model's parameters: a cost measured on one model does not stand for another's)."""
    return json.dumps([name, submission_sha, level, items, settings_json, n_params], default=str)


def parameter_count(model: Any) -> int:
    """The parameters a token's forward pass multiplies by: every weight once, less the input embedding table
    (a lookup), which still counts where the LM head is tied to it. ``2 x this x tokens`` is a pass's FLOPs.

    The same count sizes evaluations and scales the shipped step costs (``measured_on_params``), so a
    tied model (SmolLM2) and an untied one (Llama) are compared on the work they really do.
    """
    n = sum(p.numel() for p in model.parameters())  # tied tensors once
    table, head = model.get_input_embeddings(), model.get_output_embeddings()
    if table is not None and (head is None or head.weight is not table.weight):
        n -= table.weight.numel()
    return n


def record_step_cost(key: str, seconds: float, gflops: float, capability: str, dtype: str) -> None:
    """Append one applied step's cost to this machine's history (best effort: a full disk must not fail a run)."""
    path = history_path()
    line = (
        json.dumps(
            {
                "key": key,
                "work_gflop": seconds * gflops,
                "seconds": seconds,
                "gflops": gflops,
                "capability": capability,
                "dtype": dtype,
            }
        )
        + "\n"
    )
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a", encoding="utf-8") as fh:  # one short append: atomic on local file systems
            fh.write(line)
    except OSError as exc:
        log.debug("step cost not recorded: %s", exc)


def read_history(dtype: str) -> dict[str, list[float]]:
    """Recorded work (GFLOP-equivalents) per step key, of steps computed in ``dtype``; unreadable lines are skipped."""
    out: dict[str, list[float]] = {}
    path = history_path()
    if not path.exists():
        return out
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            try:
                entry = json.loads(line)
                if entry["dtype"] == dtype:
                    out.setdefault(entry["key"], []).append(float(entry["work_gflop"]))
            except (ValueError, KeyError, TypeError):
                continue
    return out


@dataclass
class StepPlan:
    """One application the grid will make (the inputs of its estimate)."""

    name: str
    category: str
    key: str
    items: int
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    cached: bool = False  # its output goes to the state cache (a trusted step, caching on)
    n_params: int = 0  # parameters of the model it is applied to (0: the model the shipped costs were measured on)


@dataclass
class GridEstimate:
    """Seconds per evaluated model and per step; the grid's total."""

    gflops: float
    cost_gflops: float  # the rate the shipped costs were divided by: ``gflops`` capped (CostModel.cost_rate)
    n_params: int
    evaluation_s: float
    evaluation_parts_s: dict[str, float]
    steps_s: list[tuple[str, float, str]] = field(default_factory=list)  # (label, seconds, where the cost came from)
    n_evaluations: int = 0

    @property
    def total_s(self) -> float:
        return self.n_evaluations * self.evaluation_s + sum(s for _, s, _ in self.steps_s)


def evaluation_seconds(tokens: EvaluationTokens, n_params: int, gflops: float, model: CostModel) -> dict[str, float]:
    rate = model.cost_rate(gflops)
    return {k: 2.0 * n_params * tokens.tokens[k] / (rate * 1e9 * model.efficiency[k]) for k in SCORERS}


def work_scale(step: StepPlan, measured_at: dict[str, float]) -> float:
    """How much more (or less) work than the measured step: the ratio of each work-setting hyperparameter
    (e.g. GA's ``steps``) to its value when the shipped cost was measured; 1 for what the step does not set."""
    scale = 1.0
    for name, measured in measured_at.items():
        value = step.hyperparameters.get(name)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and measured > 0:
            scale *= float(value) / measured
    return scale


def step_seconds(
    step: StepPlan, gflops: float, model: CostModel, history: dict[str, list[float]], overhead_s: float
) -> tuple[float, str]:
    """Seconds for one application, and where the cost came from.

    A shipped cost was measured on one model (``measured_on_params``); on another it is scaled by the
    ratio of parameters, the first-order size of every matmul a step does (training, calibration,
    rounding). Without it a 1B-parameter model's steps were estimated at the 135M model's seconds.
    A shipped cost is divided by the table's capped rate (:meth:`CostModel.cost_rate`), a recorded one by
    this machine's own rate, at which it was measured.
    """
    if step.key in history:
        return statistics.median(history[step.key]) / gflops + overhead_s, "this machine's history"
    size = model.size_ratio(step.n_params)
    for source, entry in (
        (step.name, model.steps.get(step.name)),
        (f"category:{step.category}", model.steps.get(f"category:{step.category}")),
    ):
        if entry is not None:
            work = entry["setup"] + (entry["fixed"] + entry["per_item"] * step.items) * work_scale(
                step, model.measured_at.get(source, {})
            )
            where = "tasks/cost_model.yaml" + ("" if source == step.name else f" ({source})")
            return work * size / model.cost_rate(gflops) + overhead_s, where
    return 60.0 + overhead_s, "no recorded cost (assumed 60 s)"


def estimate(
    tokens: EvaluationTokens,
    n_params: int,
    gflops: float,
    n_evaluations: int,
    steps: Iterable[tuple[str, StepPlan]],
    sandboxed: bool,
    dtype: str,
    weights_gb: float = 0.0,
    device_type: str = "cpu",
) -> GridEstimate:
    """The grid's cost in ``dtype``: ``n_evaluations`` evaluated models and the ``(label, step)`` applications
    (``weights_gb``: the model's weights in that dtype, what a cached step writes)."""
    model = CostModel.load(dtype, device_type=device_type)
    parts = evaluation_seconds(tokens, n_params, gflops, model)
    history = read_history(dtype)
    overhead = model.step_overhead_s["sandboxed" if sandboxed else "in_process"]
    # an evaluation's fixed part (compression statistics, weight hashes, copies) reads every weight once or twice
    fixed = model.evaluation_overhead_s * model.size_ratio(n_params)
    out = GridEstimate(
        gflops, model.cost_rate(gflops), n_params, sum(parts.values()) + fixed, parts, n_evaluations=n_evaluations
    )
    for label, step in steps:
        seconds, source = step_seconds(step, gflops, model, history, overhead)
        if step.cached:
            seconds += model.state_cache_s_per_gb * weights_gb
        out.steps_s.append((label, seconds, source))
    return out


def human(seconds: float) -> str:
    """``1 h 02 min``, ``12 min 5 s``, ``40 s``."""
    if not math.isfinite(seconds):
        return "unknown"
    s = int(round(seconds))
    if s >= 3600:
        return f"{s // 3600} h {s % 3600 // 60:02d} min"
    if s >= 60:
        return f"{s // 60} min {s % 60} s"
    return f"{s} s"
