"""How close each scorer comes to the dense matmul rate of this machine, at default sizes.

For each scorer of a grid cell (zsRE, MMLU/WMDP multiple choice, WikiText-2 perplexity,
plus the zsRE locality reference computed once per grid) we time one call on the default
model with profile ``default``'s evaluation settings and count, with a forward pre-hook on
the model's decoder, the tokens that went through it: ``tokens`` are real tokens (attention
mask 1), ``padded`` every position fed, padding included. Work is ``2 x N x tokens`` with
``N`` all parameters counted once (the embedding is tied to the LM head here, so it is
counted once, as the LM head's matmul; the lookup itself is free). Attention's own
products (QK^T, AV) are not counted. Where a scorer skips the LM head at positions whose
log-probabilities nothing needs, the achieved rate is an *effective* rate: the speed of a
plain forward pass over those tokens that would take as long (at most 21% above the
matmul work really done, the head's share of ``N``).

The matmul rate is measured in the same process right before each scorer
(:func:`benchmark.hardware.matmul_gflops`) at the model's two shapes, 512 tokens through
the MLP (576 x 1536) and through the LM head (576 x 49152), and combined with the
parameter shares into the rate a forward pass would have if it were nothing but those
matmuls. On a contended machine the absolute figures move; their ratio within one process
holds better.

Run: ``python benchmarks/evaluation_rate.py --dtype float32`` (prints a markdown table),
or through pytest-benchmark, see ``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from anywhere
from benchmark.hardware import cpu_capability, matmul_gflops

__all__ = ["Row", "TokenCounter", "run", "markdown_table", "main"]


@dataclass
class Row:
    scorer: str
    tokens: int
    padded: int
    seconds: float
    achieved_gflops: float
    matmul_gflops: float

    @property
    def ratio(self) -> float:
        return self.achieved_gflops / self.matmul_gflops


class TokenCounter:
    """Counts the tokens fed to a decoder (real and padded) via a forward pre-hook."""

    def __init__(self, decoder: torch.nn.Module) -> None:
        self.tokens = self.padded = 0
        self._handle = decoder.register_forward_pre_hook(self._hook, with_kwargs=True)

    def _hook(self, module, args, kwargs) -> None:
        ids = kwargs.get("input_ids", args[0] if args else None)
        if ids is None:
            ids = kwargs["inputs_embeds"][..., 0]
        fed = ids.shape[-1]
        self.padded += ids.numel()
        mask = kwargs.get("attention_mask")
        if mask is None or mask.dim() != 2:
            self.tokens += ids.numel()
        else:  # a 2-D mask covers the cached positions too; the last ``fed`` columns are the new tokens
            self.tokens += int(mask[:, -fed:].sum())

    def reset(self) -> None:
        self.tokens = self.padded = 0

    def close(self) -> None:
        self._handle.remove()


def model_matmul_gflops(dtype: torch.dtype, n_params: int, n_head: int, seconds: float = 1.0) -> float:
    """The rate of a forward pass made only of the model's matmuls at measured shape rates."""
    body = matmul_gflops(dtype, "cpu", seconds / 2, (512, 576, 1536))
    head = matmul_gflops(dtype, "cpu", seconds / 2, (512, 576, 49152))
    return n_params / ((n_params - n_head) / body + n_head / head)


def _timed(name: str, fn: Callable[[], Any], counter: TokenCounter, dtype, n_params, n_head) -> tuple[Row, Any]:
    rate = model_matmul_gflops(dtype, n_params, n_head)
    counter.reset()
    start = time.perf_counter()
    result = fn()
    seconds = time.perf_counter() - start
    achieved = 2.0 * n_params * counter.tokens / seconds / 1e9
    return Row(name, counter.tokens, counter.padded, seconds, achieved, rate), result


def run(
    dtype: torch.dtype,
    profile: str = "default",
    scorers: tuple[str, ...] = ("zsre", "mcq", "perplexity"),
    data_dir: str | None = None,
) -> tuple[list[Row], dict[str, Any]]:
    """Evaluate the default model once per scorer; the rows and the scores (to compare runs)."""
    from benchmark.data.corpora import STANDIN_NAME
    from benchmark.evaluation.multiple_choice import evaluate_mcq
    from benchmark.evaluation.perplexity import perplexity_from_windows, perplexity_windows
    from benchmark.evaluation.zsre import locality_reference, score_edits
    from benchmark.models import DEFAULT_MODEL_ID, load_model, resolve_model
    from benchmark.profiles import load_profile
    from benchmark.suite import EvaluationSuite

    prof = load_profile(profile)
    s = prof.evaluation
    suite = EvaluationSuite.build(s, prof.seed, data_dir or os.environ.get("COMPOSE_BENCH_DATA"), STANDIN_NAME)
    model, tokenizer = load_model(resolve_model(DEFAULT_MODEL_ID), dtype, torch.device("cpu"))
    model.eval()
    n_params = sum(p.numel() for p in model.parameters())
    n_head = model.get_output_embeddings().weight.numel()
    counter = TokenCounter(model.get_decoder())
    model_matmul_gflops(dtype, n_params, n_head)  # warm-up: the first probe of a process ran 6x slow in bf16
    rows: list[Row] = []
    scores: dict[str, Any] = {}

    def add(name, fn):
        row, result = _timed(name, fn, counter, dtype, n_params, n_head)
        rows.append(row)
        return result

    try:
        with torch.inference_mode():
            if "zsre" in scorers:
                reference = add(
                    "zsRE locality reference (once per grid)",
                    lambda: locality_reference(model, tokenizer, suite.edits, s.zsre_batch_size),
                )
                scores["zsre"] = add(
                    "zsRE (edit, rephrase, locality)",
                    lambda: score_edits(model, tokenizer, suite.edits, reference, s.zsre_batch_size),
                )
            if "mcq" in scorers:
                scores["mcq"] = add(
                    "MMLU + WMDP multiple choice",
                    lambda: evaluate_mcq(
                        model, tokenizer, suite.mcq, s.prompt_format, s.batch_size, s.mcq_batch_tokens
                    ),
                )
            if "perplexity" in scorers:
                nll, ntok = add(
                    "WikiText-2 perplexity",
                    lambda: perplexity_windows(
                        model,
                        tokenizer,
                        suite.wikitext,
                        s.perplexity_seq_len,
                        s.perplexity_windows,
                        s.perplexity_batch_size,
                    ),
                )
                scores["perplexity_nll"] = nll
                scores["perplexity"] = perplexity_from_windows(nll, ntok)
    finally:
        counter.close()
    return rows, scores


def markdown_table(rows: list[Row], dtype: torch.dtype) -> str:
    head = (
        f"dtype {str(dtype).removeprefix('torch.')}, CPU capability {cpu_capability()}, "
        f"{torch.get_num_threads()} torch threads\n\n"
        "| scorer | tokens | padded tokens | seconds | achieved GFLOP/s | matmul GFLOP/s | ratio |\n"
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |\n"
    )
    body = "".join(
        f"| {r.scorer} | {r.tokens:,} | {r.padded:,} | {r.seconds:.1f} | {r.achieved_gflops:.1f} | "
        f"{r.matmul_gflops:.1f} | {r.ratio:.2f} |\n"
        for r in rows
    )
    return head + body


def _summary(scores: dict[str, Any]) -> str:
    parts = []
    if "zsre" in scores:
        parts += [f"{k} {sum(v) / len(v):.4f}" for k, v in scores["zsre"].items()]
    if "mcq" in scores:
        parts += [f"{k} {sum(v) / len(v):.4f}" for k, v in scores["mcq"].items()]
    if "perplexity" in scores:
        parts.append(f"perplexity {scores['perplexity']:.4f}")
    return "scores: " + ", ".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--dtype", choices=["float32", "bfloat16"], action="append", help="repeat for several (default: both)"
    )
    parser.add_argument(
        "--scorer", choices=["zsre", "mcq", "perplexity"], action="append", help="repeat for several (default: all)"
    )
    parser.add_argument("--profile", default="default")
    args = parser.parse_args(argv)
    for name in args.dtype or ["float32", "bfloat16"]:
        dtype = getattr(torch, name)
        rows, scores = run(dtype, args.profile, tuple(args.scorer or ("zsre", "mcq", "perplexity")))
        print(markdown_table(rows, dtype))
        print(_summary(scores) + "\n", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
