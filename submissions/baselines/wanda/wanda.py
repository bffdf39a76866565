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

import torch

from benchmark.api import Category, Intervention, InterventionContext
from benchmark.toolkit import PruningHyperparameters, calibration_options, run_calibrated


class WandaHyperparameters(PruningHyperparameters):
    """Wanda has no knob of its own: the level, the mask and the calibration windows."""


class Wanda(Intervention):
    """Unstructured Wanda pruning through ``llmcompressor.oneshot``.

    Hyperparameters: :class:`WandaHyperparameters` (``compose-bench list interventions``).
    """

    name = "wanda"
    category = Category.COMPRESSION
    Hyperparameters = WandaHyperparameters

    def apply(self, model: torch.nn.Module, tokenizer, context: InterventionContext) -> torch.nn.Module:
        hp = WandaHyperparameters.from_context(context)
        calibration = calibration_options("wanda", hp, context)

        from llmcompressor.modifiers.pruning import WandaPruningModifier

        modifier = WandaPruningModifier(
            sparsity=hp.sparsity,
            mask_structure=hp.mask_structure,
            targets=["Linear"],
            ignore=["re:.*lm_head"],
        )
        return run_calibrated(model, tokenizer, modifier, calibration, context.seed)
