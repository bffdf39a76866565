"""Why MMLU sits at chance on the default model: the scoring rules and prompt formats side by side.

Scores the base model (the default model, as the harness loads it) on stratified MMLU and
WMDP samples (WMDP: the held-out half, questions of at most 1,000 characters, as in the
grids) in both prompt formats, and prints, per task and format, the mean of every per-item
measure of :func:`benchmark.evaluation.multiple_choice.evaluate_mcq_measures` (``acc``,
``acc_norm``, ``prob``) with a 95% percentile bootstrap interval over the questions, plus the
same measures with the question text removed ("Question: \\nAnswer:"): what the model
gets from the answer texts alone (their length, their wording), not from the question.
The paired difference (with minus without the question) is what the model knows.

    python scripts/mcq_formulations.py --mmlu-n 171 --wmdp-n 100 --out docs/figures/mcq_formulations.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np


def _ci(values: np.ndarray, rng: np.random.Generator, reps: int = 4000) -> tuple[float, float, float]:
    """(mean, low, high): a 95% percentile bootstrap interval over the items."""
    idx = rng.integers(0, len(values), size=(reps, len(values)))
    means = values[idx].mean(axis=1)
    low, high = np.quantile(means, [0.025, 0.975])
    return float(values.mean()), float(low), float(high)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mmlu-n", type=int, default=171)
    parser.add_argument("--wmdp-n", type=int, default=100, help="questions per WMDP subset")
    parser.add_argument("--formats", default="cloze,lettered")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="write the figures here as JSON too")
    args = parser.parse_args()

    import torch

    from benchmark.data.mcq import load_mmlu, load_wmdp, stratified_sample, within_length
    from benchmark.data.wmdp_split import is_standin_forget
    from benchmark.evaluation.multiple_choice import MEASURES, evaluate_mcq_measures
    from benchmark.models import DEFAULT_MODEL_ID, load_model, resolve_model
    from benchmark.numerics import choose_dtype

    numerics = choose_dtype("auto", "cpu")
    resolved = resolve_model(DEFAULT_MODEL_ID)
    model, tok = load_model(resolved, numerics.dtype, torch.device("cpu"))
    tasks = {"mmlu": stratified_sample(within_length(load_mmlu()[0], 1000), args.mmlu_n, args.seed)}
    for subset in ("bio", "cyber"):
        items = [it for it in load_wmdp(subset)[0] if not is_standin_forget(it.question)]
        tasks[f"wmdp_{subset}"] = stratified_sample(within_length(items, 1000), args.wmdp_n, args.seed)
    blind = {name: [dataclasses.replace(it, question="") for it in items] for name, items in tasks.items()}

    rng = np.random.default_rng(args.seed)
    figures: dict = {
        "model": f"{resolved.model_id} ({resolved.source})",
        "dtype": str(numerics.dtype),
        "n": {k: len(v) for k, v in tasks.items()},
        "rows": [],
    }
    for fmt in args.formats.split(","):
        start = time.perf_counter()
        with_q = evaluate_mcq_measures(model, tok, tasks, fmt, 32, 2048)
        seconds = time.perf_counter() - start
        without_q = evaluate_mcq_measures(model, tok, blind, fmt, 32, 2048)
        for name in tasks:
            for measure in MEASURES:
                a = np.asarray(with_q[name][measure])
                b = np.asarray(without_q[name][measure])
                row = {
                    "format": fmt,
                    "task": name,
                    "measure": measure,
                    "n": len(a),
                    "with_question": _ci(a, rng),
                    "without_question": _ci(b, rng),
                    "question_effect": _ci(a - b, rng),
                    "seconds_with_question_all_tasks": round(seconds, 1),
                }
                figures["rows"].append(row)
                print(
                    f"{fmt:9s} {name:11s} {measure:9s} n={len(a):4d} "
                    "with q {0:.3f} [{1:.3f}, {2:.3f}]  without q {3:.3f} [{4:.3f}, {5:.3f}]  "
                    "effect {6:+.3f} [{7:+.3f}, {8:+.3f}]".format(
                        *row["with_question"], *row["without_question"], *row["question_effect"]
                    ),
                    flush=True,
                )
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(figures, indent=1) + "\n")


if __name__ == "__main__":
    main()
