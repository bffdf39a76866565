"""Wanda: pruning by weight magnitude times input activation norm (baseline, compression).

The method is Sun, Liu, Bair and Kolter, "A Simple and Effective Pruning Approach for
Large Language Models" (ICLR 2024, https://arxiv.org/abs/2306.11695): each weight is
scored by ``|W_ij| * ||X_j||_2`` over calibration activations and, in every output row,
the lowest-scoring fraction ``sparsity`` is set to zero (unstructured, no weight update).
The implementation is llm-compressor's ``WandaPruningModifier`` (vLLM project,
Apache-2.0), run layer by layer on calibration text.

Ours (MIT): the wrapper, the calibration sampling (seeded windows of the harness's
calibration texts), keeping the tied LM head/embedding dense, and returning a vanilla
model with the masks baked into plain weights (see ``benchmark.toolkit.llmcompressor``).
As in the paper, every ``nn.Linear`` of the transformer blocks is pruned to the same
sparsity; embeddings and the LM head are not.
"""

from __future__ import annotations

import re

import torch

from benchmark.api import Category, Intervention, InterventionContext, InterventionError
from benchmark.toolkit import run_oneshot

_MASK = re.compile(r"^(\d+):(\d+)$")


class Wanda(Intervention):
    """Unstructured Wanda pruning through ``llmcompressor.oneshot``.

    Hyperparameters: ``sparsity`` (the grid level, 0 < s < 1), ``calibration_samples``,
    ``calibration_seq_len``, ``mask_structure`` (``"0:0"`` unstructured, or ``"N:M"``).
    """

    name = "wanda"
    category = Category.COMPRESSION

    def apply(self, model: torch.nn.Module, tokenizer, context: InterventionContext) -> torch.nn.Module:
        sparsity = context.hp("sparsity")
        if isinstance(sparsity, bool) or not isinstance(sparsity, (int, float)) or not 0.0 < float(sparsity) < 1.0:
            raise InterventionError(f"wanda: hyperparameter 'sparsity' must be a number in (0, 1), got {sparsity!r}")
        samples = context.hp("calibration_samples", 128)
        seq_len = context.hp("calibration_seq_len", 2048)
        for key, value, low in (("calibration_samples", samples, 1), ("calibration_seq_len", seq_len, 2)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise InterventionError(f"wanda: hyperparameter {key!r} must be an integer >= {low}, got {value!r}")
        mask = str(context.hp("mask_structure", "0:0"))
        match = _MASK.match(mask)
        if not match or (match.group(1) != "0" and int(match.group(1)) >= int(match.group(2))):
            raise InterventionError(f"wanda: hyperparameter 'mask_structure' must be '0:0' or 'N:M' with N < M, got {mask!r}")
        texts = [t for t in context.calibration_texts if t.strip()]
        if not texts:
            raise InterventionError("wanda: no calibration texts in the context")

        from llmcompressor.modifiers.pruning import WandaPruningModifier

        modifier = WandaPruningModifier(
            sparsity=float(sparsity),
            mask_structure=mask,
            targets=["Linear"],
            ignore=["re:.*lm_head"],
        )
        return run_oneshot(
            model,
            tokenizer,
            modifier,
            texts,
            num_samples=samples,
            seq_len=seq_len,
            seed=context.seed,
        )
