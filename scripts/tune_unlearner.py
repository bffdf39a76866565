"""Choose an unlearner's hyperparameters on the WMDP development part (never on the scored half).

Applies one unlearning baseline with its ``smollm2`` block plus overrides to a fresh copy of
the default model, then prints one JSON line: WMDP accuracy on the development questions
(bio, cyber, mean), MMLU accuracy on a stratified sample, and the unlearner's time. The
forget texts are the stand-in's forget part, the retain texts the offline retain corpus,
as in a grid.

    python scripts/tune_unlearner.py rmu '{"steering_coeff": 20, "steps": 20}' --dev-n 80 --mmlu-n 114
"""

from __future__ import annotations

import argparse
import copy
import json
import time

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", help="baseline name under submissions/baselines (ga, gd, rmu)")
    parser.add_argument("overrides", nargs="*", default=[], help="JSON objects of hyperparameter overrides; one run each ('{}' = as in the YAML; 'base' = no unlearning)")
    parser.add_argument("--dev-n", type=int, default=80, help="development questions per subset (stratified, seeded)")
    parser.add_argument("--mmlu-n", type=int, default=114)
    parser.add_argument("--forget-n", type=int, default=128)
    parser.add_argument("--retain-n", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    from benchmark.api import InterventionContext
    from benchmark.data.corpora import load_forget_corpus, load_retain_corpus, load_wmdp_dev_questions
    from benchmark.data.mcq import load_mmlu, stratified_sample
    from benchmark.evaluation.multiple_choice import evaluate_mcq
    from benchmark.models import DEFAULT_MODEL_ID, load_model, resolve_model
    from benchmark.paths import baselines_dir
    from benchmark.submissions import load_submission

    base, tok = load_model(resolve_model(DEFAULT_MODEL_ID), torch.bfloat16, torch.device("cpu"))
    dev = load_wmdp_dev_questions()
    tasks = {f"wmdp_{s}": stratified_sample(items, args.dev_n, args.seed) for s, items in dev.items()}
    tasks["mmlu"] = stratified_sample(load_mmlu()[0], args.mmlu_n, args.seed)
    forget = load_forget_corpus(args.forget_n, args.seed)
    retain = load_retain_corpus(args.retain_n, args.seed)
    sub = load_submission(baselines_dir() / args.name)
    for text in args.overrides or ["{}"]:
        model = copy.deepcopy(base)
        seconds = 0.0
        hp = None
        if text != "base":
            hp = {**sub.hyperparameters_for("smollm2"), **json.loads(text)}
            context = InterventionContext(hyperparameters=hp, seed=args.seed, device=torch.device("cpu"), dtype=torch.bfloat16,
                                          model_family="smollm2", forget_texts=forget.texts, retain_texts=retain.texts,
                                          forget_corpus_name=forget.name)
            torch.manual_seed(args.seed)
            start = time.perf_counter()
            model = sub.instantiate().apply(model, tok, context)
            seconds = time.perf_counter() - start
        acc = evaluate_mcq(model, tok, tasks, "cloze", 32)
        mean = {k: sum(v) / len(v) for k, v in acc.items()}
        print(json.dumps({"unlearner": args.name if hp else "base", "overrides": text, "seconds": round(seconds, 1),
                          "wmdp_dev": round((mean["wmdp_bio"] + mean["wmdp_cyber"]) / 2, 4),
                          "wmdp_dev_bio": round(mean["wmdp_bio"], 4), "wmdp_dev_cyber": round(mean["wmdp_cyber"], 4),
                          "mmlu": round(mean["mmlu"], 4), "n_dev": len(tasks["wmdp_bio"]) + len(tasks["wmdp_cyber"]),
                          "n_mmlu": len(tasks["mmlu"])}), flush=True)
        del model


if __name__ == "__main__":
    main()
