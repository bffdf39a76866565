"""Choose an editor's hyperparameters on zsRE development edits (never on evaluation edits).

Applies one editing baseline with its ``smollm2`` block plus overrides to a fresh copy of
the default model, all development edits at once, and prints one JSON line per run:
edit success, generalization and locality (token-set F1 of the greedy continuation, and
teacher-forced accuracy), and the editor's time.

    python scripts/tune_editor.py memit '{"mom2_update_weight": 5000}' '{"v_steps": 40}' --n 50
"""

from __future__ import annotations

import argparse
import copy
import json
import time

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", help="baseline name under submissions/baselines (ft, lora, memit)")
    parser.add_argument("overrides", nargs="*", default=[], help="JSON objects of hyperparameter overrides; one run each")
    parser.add_argument("--n", type=int, default=50, help="development edits applied at once")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    from benchmark.api import InterventionContext
    from benchmark.data.zsre import load_zsre, sample_edits
    from benchmark.evaluation.zsre import locality_reference, score_edits
    from benchmark.models import DEFAULT_MODEL_ID, load_model, resolve_model
    from benchmark.paths import baselines_dir
    from benchmark.models import parse_dtype
    from benchmark.submissions import load_submission

    base, tok = load_model(resolve_model(DEFAULT_MODEL_ID), torch.bfloat16, torch.device("cpu"))
    records = sample_edits(load_zsre()[0], args.n, args.seed, split="development")
    reference = locality_reference(base, tok, records, batch_size=25)
    sub = load_submission(baselines_dir() / args.name)
    dtype = parse_dtype(sub.spec.resources.dtype) if sub.spec.resources.dtype else torch.bfloat16
    for text in args.overrides or ["{}"]:
        hp = {**sub.hyperparameters_for("smollm2"), **json.loads(text)}
        model = copy.deepcopy(base).to(dtype)
        context = InterventionContext(hyperparameters=hp, seed=args.seed, device=torch.device("cpu"), dtype=dtype,
                                      model_family="smollm2", edits=tuple(r.to_edit_request() for r in records))
        torch.manual_seed(args.seed)
        start = time.perf_counter()
        model = sub.instantiate().apply(model, tok, context).to(torch.bfloat16)
        seconds = time.perf_counter() - start
        scores = score_edits(model, tok, records, reference, batch_size=25)
        mean = {k: round(sum(v) / len(v), 4) for k, v in scores.items()}
        print(json.dumps({"editor": args.name, "overrides": text, "seconds": round(seconds, 1), "n": len(records), **mean}), flush=True)
        del model


if __name__ == "__main__":
    main()
