"""A compressor's seconds at two calibration-window counts: its set-up (what does not scale) and per-window cost.

Applies each named baseline compressor in this process to a fresh copy of the default model, in
this machine's ``auto`` dtype, at ``--windows`` calibration windows (default 2 and 16; after one
untimed application, which pays the one-time imports and tracing), and prints
seconds and GFLOP-equivalents (seconds x the dtype probe's matmul rate), the units of
``tasks/cost_model.yaml``: ``setup`` = the cost at the small count less the per-window part,
``fixed`` = the per-window part at the count the shipped cost was measured at.

    python scripts/measure_step_setup.py wanda gptq awq sparsegpt [--windows 2 16]
"""

from __future__ import annotations

import argparse
import copy
import time

import torch

import benchmark.transformers_setup  # noqa: F401  (before transformers: no scikit-learn import)
from benchmark.api import InterventionContext
from benchmark.data.corpora import load_calibration_corpus
from benchmark.models import DEFAULT_MODEL_ID, load_model, resolve_model
from benchmark.numerics import choose_dtype
from benchmark.paths import baselines_dir
from benchmark.submissions import load_submission

LEVELS = {"wanda": {"sparsity": 0.25}, "sparsegpt": {"sparsity": 0.25}, "gptq": {"bits": 4}, "awq": {"bits": 4}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="+", choices=sorted(LEVELS))
    parser.add_argument("--windows", nargs=2, type=int, default=[2, 16])
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args()
    choice = choose_dtype("auto", "cpu")
    rate = choice.gflops[choice.name]
    model, tok = load_model(resolve_model(DEFAULT_MODEL_ID), choice.dtype, torch.device("cpu"))
    texts = load_calibration_corpus(max(args.windows), 0, args.data_dir).texts
    print(f"{choice.capability} {choice.name}, matmul {rate:.0f} GFLOP/s")
    for name in args.names:
        sub = load_submission(baselines_dir() / name)
        seconds = {}
        for n in [min(args.windows), *args.windows]:  # the first, untimed: one-time imports and tracing
            hp = {**sub.spec.hyperparameters["smollm2"], "calibration_samples": n, **LEVELS[name]}
            context = InterventionContext(
                hyperparameters=hp,
                seed=0,
                device=torch.device("cpu"),
                dtype=choice.dtype,
                model_family="smollm2",
                calibration_texts=texts,
            )
            copy_ = copy.deepcopy(model)
            t = time.perf_counter()
            sub.instantiate().apply(copy_, tok, context)
            seconds[n] = time.perf_counter() - t
            del copy_
        (small, large), (s_small, s_large) = args.windows, (seconds[w] for w in args.windows)
        per_window = (s_large - s_small) / (large - small)
        setup = s_small - per_window * small
        print(
            f"{name}: {small} windows {s_small:.2f} s, {large} windows {s_large:.2f} s -> "
            f"setup {setup:.2f} s ({setup * rate:.0f} GFLOP-eq), {per_window:.3f} s per window "
            f"({per_window * large * rate:.0f} GFLOP-eq at {large})"
        )


if __name__ == "__main__":
    main()
