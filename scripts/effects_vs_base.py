"""Each evaluated model's effect against the base model, with paired-bootstrap intervals and the MDE.

For a run folder (or records.jsonl): per cell and criterion, the score, the base model's
score, the difference with its 95% paired-bootstrap interval (same items in both),
whether it is beyond noise, and the minimum detectable effect at 80% power. This is how
docs/MCQ_SIGNAL.md reads the `unlearning` profile (did GA, GD, RMU move WMDP beyond noise?).

    python scripts/effects_vs_base.py runs/unlearning --criteria wmdp,wmdp_prob,mmlu,mmlu_prob
"""

from __future__ import annotations

import argparse
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("records", type=Path, help="a run folder or its records.jsonl")
    parser.add_argument("--criteria", default="wmdp,wmdp_prob,wmdp_acc_norm,mmlu,mmlu_prob,mmlu_acc_norm,perplexity")
    parser.add_argument("--bootstrap", type=int, default=2000)
    args = parser.parse_args()

    from benchmark.metrics import effects_against_base
    from benchmark.records import read_records

    df = effects_against_base(read_records(args.records), args.criteria.split(","), n_bootstrap=args.bootstrap)
    if df.empty:
        raise SystemExit(f"{args.records}: no base model and no other successful cell of the same group")
    df["interval"] = [f"[{lo:+.3f}, {hi:+.3f}]" for lo, hi in zip(df.diff_ci_low, df.diff_ci_high)]
    print(
        df[["label", "criterion", "base", "score", "diff", "interval", "significance", "mde", "n_items"]].to_string(
            index=False, float_format=lambda v: f"{v:.3f}"
        )
    )


if __name__ == "__main__":
    main()
