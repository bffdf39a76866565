"""Apply one baseline (compression or unlearning) several times, same seed, same inputs, and report whether the weights repeat.

Each repeat starts from a fresh copy of the default model, applies the baseline with its
``smollm2`` hyperparameters (plus overrides) in this process, and prints one JSON line: the
SHA-256 of the returned weights, the largest absolute weight difference from the first
repeat, and WikiText-2 perplexity on a few windows. Identical hashes mean the step is
deterministic here; otherwise the spread is what docs record.

    python scripts/repeatability.py awq '{"bits": 3}' --repeats 2
"""

from __future__ import annotations

import argparse
import copy
import json
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", help="compression baseline under submissions/baselines (awq, gptq, wanda, ...)")
    parser.add_argument("overrides", nargs="?", default="{}", help="JSON object of hyperparameter overrides")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--calibration-n", type=int, default=16)
    parser.add_argument("--corpus-n", type=int, default=64, help="forget and retain texts (unlearning baselines)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import torch

    from benchmark.api import InterventionContext
    from benchmark.data.corpora import load_calibration_corpus, load_forget_corpus, load_retain_corpus
    from benchmark.data.wikitext import load_wikitext_test
    from benchmark.evaluation.perplexity import perplexity_from_windows, perplexity_windows
    from benchmark.models import DEFAULT_MODEL_ID, load_model, resolve_model, weights_sha256
    from benchmark.numerics import choose_dtype
    from benchmark.paths import baselines_dir
    from benchmark.submissions import load_submission

    dtype = choose_dtype("auto", "cpu").dtype
    base, tok = load_model(resolve_model(DEFAULT_MODEL_ID), dtype, torch.device("cpu"))
    calibration = load_calibration_corpus(args.calibration_n, args.seed)
    forget = load_forget_corpus(args.corpus_n, args.seed)
    retain = load_retain_corpus(args.corpus_n, args.seed)
    text, _ = load_wikitext_test()
    sub = load_submission(baselines_dir() / args.name)
    hp = {**sub.hyperparameters_for("smollm2"), **json.loads(args.overrides)}
    first = None
    for repeat in range(args.repeats):
        model = copy.deepcopy(base)
        context = InterventionContext(
            hyperparameters=hp,
            seed=args.seed,
            device=torch.device("cpu"),
            dtype=dtype,
            model_family="smollm2",
            calibration_texts=calibration.texts,
            forget_texts=forget.texts,
            retain_texts=retain.texts,
            forget_corpus_name=forget.name,
        )
        torch.manual_seed(args.seed)
        start = time.perf_counter()
        model = sub.instantiate().apply(model, tok, context)
        seconds = time.perf_counter() - start
        state = {k: v.detach().float().clone() for k, v in model.state_dict().items()}
        diff = 0.0 if first is None else max(float((state[k] - first[k]).abs().max()) for k in first)
        first = first or state
        nll, ntok = perplexity_windows(model, tok, text, 256, 4, 4)
        print(
            json.dumps(
                {
                    "baseline": args.name,
                    "hyperparameters": hp,
                    "repeat": repeat,
                    "dtype": str(dtype),
                    "weights_sha256": weights_sha256(model),
                    "max_abs_diff_from_first": diff,
                    "perplexity": perplexity_from_windows(nll, ntok),
                    "seconds": round(seconds, 1),
                }
            ),
            flush=True,
        )


if __name__ == "__main__":
    main()
