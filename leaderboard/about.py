"""The About view: what the metrics mean, the protocol, and how to submit.

The criteria table is generated from ``tasks/criteria.yaml`` so that it cannot drift
from what the harness computes; the rest is fixed text that follows DESIGN and
docs/FORMATS.md. The store line says where the numbers on the page came from.
"""

from __future__ import annotations

import html

from benchmark.reported import REPORTED_DTYPE
from leaderboard.data import Board
from leaderboard.safe import md

METRICS_TEXT = """
## The two composability metrics

For interventions **A** and **B** applied to the same model in both orders (same seed, edits,
corpora and calibration texts, so that the order is the only difference) and one criterion:

- **Order-free Error (OFE)** = `min(err(A→B), err(B→A))`, the error of the better order.
  `err = 1 − score` for accuracies where higher is better (edit success, generalization,
  locality, MMLU); `err = accuracy` for WMDP, because unlearning aims to *remove* that
  knowledge; `err = perplexity` for perplexity (an unbounded error: compare it only with other
  perplexities). Lower is better.
- **Order Sensitivity (OS)** = `|score(A→B) − score(B→A)|`, on the score. Zero means the order
  does not matter.

Both come with **95% confidence intervals from a paired bootstrap over the evaluation items**:
the items (edits, questions, text windows) are the same in both orders, so each replicate
draws one set of items and scores both orders on it. An order effect is **beyond evaluation
noise** (`*` in the matrices, "yes" in the detail view) when the interval of
`score(A→B) − score(B→A)` excludes zero. The interval of OS itself is biased upward for
small differences; use the noise flag, not that interval, to decide whether an order matters.

The **Ranking** averages, for each intervention, its OFE and OS per criterion over its
partners of each other category; it is sorted by the mean OFE over the accuracy-like
criteria shown (perplexity is left out of that mean). Source: Kolbeinsson et al.,
*Composable Interventions for Language Models* (ICLR 2025, arXiv 2407.06483).
"""

PROTOCOL_TEXT = """
## The protocol

- A grid evaluates the base model, each intervention alone at each level, and every
  **cross-category pair in both orders** (editing × unlearning × compression).
- When a compressor comes first, the paper compresses again at the end so that the final
  model is compressed (GPTQ, SparseGPT, Wanda; not AWQ). The rule is a recorded protocol
  setting (`recompress_when_first`); such orders are shown as `… → C (re-applied)`.
- Criteria: zsRE edit success, generalization and locality (the paper's token-set F1 of the
  greedy continuation; EasyEdit's teacher-forced accuracy as `*_tf`), WMDP bio/cyber accuracy
  (lower is better), MMLU accuracy (0-shot, lm-evaluation-harness `acc`), WikiText-2
  perplexity, and the compression level actually measured (average bits, sparsity).
- Profiles fix the model, sub-sample sizes and prompt format: `smoke` (CI, minutes on two
  CPU cores: its numbers only prove the pipeline works), `default` (the main CPU job on
  SmolLM2-135M) and `paper` (Llama-3-8B on a GPU). The model, profile and dtype filters at the
  top keep comparisons within one setting.
- Numerics: a profile's `dtype: auto` computes in bfloat16 where the machine runs it fast (a GPU,
  a CPU with AVX-512 bf16/AMX) and in float32 elsewhere (AVX2-only CPUs). Scores differ slightly
  by dtype, so cells evaluated in different dtypes are never paired or ranked together.
- Every record carries its provenance: harness version, model source and weights hash, data
  revisions, submission hash, hyperparameters, seed, protocol, hardware, timings and memory
  (see the Intervention detail view).
"""

SUBMIT_TEXT = """
## How to submit

1. Write one class that subclasses `benchmark.api.Intervention` (a name, a category and an
   `apply(model, tokenizer, context)` method) and a `submission.yaml` (authors, link, licence,
   entry point, hyperparameters per model family); the baselines in `submissions/baselines/`
   are complete examples and `docs/FORMATS.md` is the format.
2. Check it: `compose-bench validate path/to/folder`.
3. Run it against the baselines: `compose-bench run --profile smoke --submission path/to/folder`
   (then `--profile default` for numbers worth comparing).
4. Open a pull request with the folder. Results reach this page with
   `compose-bench publish runs/<profile> --store hf://datasets/<owner>/<name>`, which adds the
   records and recomputed metrics to the results repository.
"""


def criteria_markdown(board: Board) -> str:
    # criteria.yaml is this repository's own text, not a submitter's: HTML is escaped, Markdown kept.
    lines = ["## Criteria", "", "| criterion | direction | what it measures |", "| --- | --- | --- |"]
    for crit in board.criteria.values():
        direction = crit.direction.replace("_", " ")
        lines.append(f"| `{crit.key}` | {md(direction)} | {html.escape(crit.description).replace('|', '&#124;')} |")
    return "\n".join(lines)


def source_markdown(board: Board) -> str:
    lines = ["## Where these numbers come from", "", f"Store: {md(board.description) or 'none'}", ""]
    for (model_id, profile, dtype), origin in sorted(
        board.metrics_origin.items(), key=lambda kv: tuple(map(str, kv[0]))
    ):
        note = " (figures reported in the paper, not re-run: no per-item scores)" if dtype == REPORTED_DTYPE else ""
        lines.append(f"- {md(model_id)}, profile {md(profile)}, {md(dtype)}{note}: metrics {md(origin)}")
    return "\n".join(lines)


def about_markdown(board: Board) -> str:
    """The whole About page."""
    return "\n\n".join(
        [
            METRICS_TEXT.strip(),
            criteria_markdown(board),
            PROTOCOL_TEXT.strip(),
            SUBMIT_TEXT.strip(),
            source_markdown(board),
        ]
    )
