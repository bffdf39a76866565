"""SparseGPT: one-shot pruning with a second-order weight update (baseline, compression).

The method is Frantar and Alistarh, "SparseGPT: Massive Language Models Can Be Accurately
Pruned in One-Shot" (ICML 2023, https://arxiv.org/abs/2301.00774): layer by layer, the
weights to drop are chosen from the inverse Hessian of the layer's reconstruction loss on
calibration activations, and the kept weights are updated to compensate. The
implementation is llm-compressor's ``SparseGPTModifier`` (vLLM project, Apache-2.0).

Ours (MIT): the wrapper, the calibration sampling (seeded windows of the harness's
calibration texts), keeping the tied LM head/embedding dense, and returning a vanilla
model with the pruned and updated weights baked into plain weights (see
``benchmark.toolkit.llmcompressor``). As in the paper every ``nn.Linear`` of the
transformer blocks is pruned to the same unstructured sparsity.
"""

from __future__ import annotations

import torch
from pydantic import Field

from benchmark.api import Category, Intervention, InterventionContext
from benchmark.toolkit import PruningHyperparameters, calibration_options, run_calibrated


class SparseGPTHyperparameters(PruningHyperparameters):
    """SparseGPT's own knobs beside the level, the mask and the calibration windows."""

    block_size: int = Field(128, ge=1, description="Columns pruned and updated together.")
    dampening_frac: float = Field(0.01, gt=0.0, lt=1.0, description="Hessian damping, a fraction of its mean diagonal.")


class SparseGPT(Intervention):
    """Unstructured SparseGPT pruning through ``llmcompressor.oneshot``.

    Hyperparameters: :class:`SparseGPTHyperparameters` (``compose-bench list interventions``).
    """

    name = "sparsegpt"
    category = Category.COMPRESSION
    Hyperparameters = SparseGPTHyperparameters

    def apply(self, model: torch.nn.Module, tokenizer, context: InterventionContext) -> torch.nn.Module:
        hp = SparseGPTHyperparameters.from_context(context)
        calibration = calibration_options("sparsegpt", hp, context)

        from llmcompressor.modifiers.pruning import SparseGPTModifier

        modifier = SparseGPTModifier(
            sparsity=hp.sparsity,
            mask_structure=hp.mask_structure,
            block_size=hp.block_size,
            dampening_frac=hp.dampening_frac,
            targets=["Linear"],
            ignore=["re:.*lm_head"],
        )
        return run_calibrated(model, tokenizer, modifier, calibration, context.seed)
