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

import math

import torch

from benchmark.api import Category, Intervention, InterventionContext, InterventionError
from benchmark.toolkit import calibration_options, run_calibrated, mask_structure, sparsity_level


class SparseGPT(Intervention):
    """Unstructured SparseGPT pruning through ``llmcompressor.oneshot``.

    Hyperparameters: ``sparsity`` (the grid level, 0 < s < 1), ``calibration_samples``,
    ``calibration_seq_len``, ``mask_structure`` (``"0:0"`` or ``"N:M"``), ``block_size``
    (columns updated together), ``dampening_frac`` (Hessian damping, fraction of its mean
    diagonal).
    """

    name = "sparsegpt"
    category = Category.COMPRESSION

    def apply(self, model: torch.nn.Module, tokenizer, context: InterventionContext) -> torch.nn.Module:
        sparsity = sparsity_level("sparsegpt", context)
        calibration = calibration_options("sparsegpt", context)
        mask = mask_structure("sparsegpt", context)
        block_size = context.hp("block_size", 128)
        if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1:
            raise InterventionError(f"sparsegpt: hyperparameter 'block_size' must be a positive integer, got {block_size!r}")
        damp = context.hp("dampening_frac", 0.01)
        if isinstance(damp, bool) or not isinstance(damp, (int, float)) or not math.isfinite(damp) or not 0 < damp < 1:
            raise InterventionError(f"sparsegpt: hyperparameter 'dampening_frac' must be a number in (0, 1), got {damp!r}")

        from llmcompressor.modifiers.pruning import SparseGPTModifier

        modifier = SparseGPTModifier(
            sparsity=sparsity,
            mask_structure=mask,
            block_size=block_size,
            dampening_frac=float(damp),
            targets=["Linear"],
            ignore=["re:.*lm_head"],
        )
        return run_calibrated(model, tokenizer, modifier, calibration, context.seed)
