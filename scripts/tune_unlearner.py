"""Choose an unlearner's hyperparameters on the WMDP development part (never on the scored half).

Applies one unlearning baseline (its default-model family settings plus overrides) through the
grid's step executor to a fresh copy of
the default model, then prints one JSON line: WMDP accuracy on the development questions
(bio, cyber, mean), MMLU accuracy on a stratified sample, and the unlearner's time. The
forget texts are the stand-in's forget part, the retain texts the offline retain corpus,
as in a grid.

    python scripts/tune_unlearner.py rmu '{"steering_coeff": 20, "steps": 20}' --dev-n 80 --mmlu-n 114
"""

from __future__ import annotations

import argparse
import json

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", help="baseline name under submissions/baselines (ga, gd, rmu)")
    parser.add_argument(
        "overrides",
        nargs="*",
        default=[],
        help="JSON objects of hyperparameter overrides; one run each ('{}' = as in the YAML; 'base' = no unlearning)",
    )
    parser.add_argument("--dev-n", type=int, default=80, help="development questions per subset (stratified, seeded)")
    parser.add_argument("--mmlu-n", type=int, default=114)
    parser.add_argument("--forget-n", type=int, default=128)
    parser.add_argument("--retain-n", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    from benchmark.data.corpora import load_forget_corpus, load_retain_corpus, load_wmdp_dev_questions
    from benchmark.data.mcq import load_mmlu, stratified_sample
    from benchmark.evaluation.multiple_choice import evaluate_mcq
    from benchmark.models import DEFAULT_MODEL_ID, load_model, resolve_model
    from benchmark.paths import baselines_dir, cache_dir
    from benchmark.plan import Step
    from benchmark.step_executor import StepExecutor, copies_of, materials_for
    from benchmark.submissions import load_submission

    resolved = resolve_model(DEFAULT_MODEL_ID)
    base, tok = load_model(resolved, torch.bfloat16, torch.device("cpu"))
    dev = load_wmdp_dev_questions()
    tasks = {f"wmdp_{s}": stratified_sample(items, args.dev_n, args.seed) for s, items in dev.items()}
    tasks["mmlu"] = stratified_sample(load_mmlu()[0], args.mmlu_n, args.seed)
    forget = load_forget_corpus(args.forget_n, args.seed)
    retain = load_retain_corpus(args.retain_n, args.seed)
    sub = load_submission(baselines_dir() / args.name)
    materials = materials_for(
        resolved,
        base,
        tok,
        args.seed,
        forget_texts=forget.texts,
        retain_texts=retain.texts,
        forget_corpus_name=forget.name,
    )
    fresh = copies_of(base)
    # the grid's step executor, in this process (a baseline is trusted code)
    executor = StepExecutor(materials, fresh, isolate=False, cache_root=cache_dir() / "steps")
    for text in args.overrides or ["{}"]:
        model = fresh()
        seconds = 0.0
        hp = None
        if text != "base":
            step = Step(sub, None, tuple(sorted(json.loads(text).items())), materials.family)
            hp = step.hyperparameters
            model, entry = executor.apply(step, model)
            seconds = entry["seconds"]
        acc = evaluate_mcq(model, tok, tasks, "cloze", 32)
        mean = {k: sum(v) / len(v) for k, v in acc.items()}
        print(
            json.dumps(
                {
                    "unlearner": args.name if hp else "base",
                    "overrides": text,
                    "seconds": round(seconds, 1),
                    "wmdp_dev": round((mean["wmdp_bio"] + mean["wmdp_cyber"]) / 2, 4),
                    "wmdp_dev_bio": round(mean["wmdp_bio"], 4),
                    "wmdp_dev_cyber": round(mean["wmdp_cyber"], 4),
                    "mmlu": round(mean["mmlu"], 4),
                    "n_dev": len(tasks["wmdp_bio"]) + len(tasks["wmdp_cyber"]),
                    "n_mmlu": len(tasks["mmlu"]),
                }
            ),
            flush=True,
        )
        del model


if __name__ == "__main__":
    main()
