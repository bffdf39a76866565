"""Choose an editor's hyperparameters on zsRE development edits (never on evaluation edits).

Applies one editing baseline (its settings for the default model's family plus overrides)
through the grid's step executor to a fresh copy of the default model, all development edits at once, and prints one JSON line per run:
edit success, generalization and locality (token-set F1 of the greedy continuation, and
teacher-forced accuracy), and the editor's time.

    python scripts/tune_editor.py memit '{"mom2_update_weight": 5000}' '{"v_steps": 40}' --n 50
"""

from __future__ import annotations

import argparse
import json

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", help="baseline name under submissions/baselines (ft, lora, memit)")
    parser.add_argument(
        "overrides", nargs="*", default=[], help="JSON objects of hyperparameter overrides; one run each"
    )
    parser.add_argument("--n", type=int, default=50, help="development edits applied at once")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    from benchmark.data.corpora import load_retain_corpus
    from benchmark.data.zsre import load_zsre, sample_edits
    from benchmark.evaluation.zsre import locality_reference, score_edits
    from benchmark.models import DEFAULT_MODEL_ID, load_model, resolve_model
    from benchmark.paths import baselines_dir, cache_dir
    from benchmark.plan import Step
    from benchmark.step_executor import StepExecutor, copies_of, materials_for
    from benchmark.submissions import load_submission

    resolved = resolve_model(DEFAULT_MODEL_ID)
    base, tok = load_model(resolved, torch.bfloat16, torch.device("cpu"))
    records = sample_edits(load_zsre()[0], args.n, args.seed, split="development")
    reference = locality_reference(base, tok, records, batch_size=25)
    sub = load_submission(baselines_dir() / args.name)
    materials = materials_for(
        resolved,
        base,
        tok,
        args.seed,
        edits=tuple(r.to_edit_request() for r in records),
        reference_texts=load_retain_corpus(None, args.seed).texts,
    )
    fresh = copies_of(base)
    # the grid's step executor, in this process (a baseline is trusted code)
    executor = StepExecutor(materials, fresh, isolate=False, cache_root=cache_dir() / "steps")
    for text in args.overrides or ["{}"]:
        step = Step(
            sub,
            sub.spec.levels.default if sub.spec.levels else None,
            tuple(sorted(json.loads(text).items())),
            materials.family,
        )
        model, entry = executor.apply(step, fresh())
        scores = score_edits(model, tok, records, reference, batch_size=25)
        mean = {k: round(sum(v) / len(v), 4) for k, v in scores.items()}
        print(
            json.dumps(
                {
                    "editor": args.name,
                    "overrides": text,
                    "seconds": round(entry["seconds"], 1),
                    "n": len(records),
                    **mean,
                }
            ),
            flush=True,
        )
        del model


if __name__ == "__main__":
    main()
