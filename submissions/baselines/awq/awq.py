"""AWQ: activation-aware weight quantization (baseline, compression).

The method is Lin et al., "AWQ: Activation-aware Weight Quantization for LLM Compression
and Acceleration" (MLSys 2024, https://arxiv.org/abs/2306.00978): before rounding, the
input channels that carry large activations are scaled up (and the preceding operation
scaled down, so the function is unchanged), with per-layer scales found by a grid search
that minimises the block's output error on calibration activations; then every weight is
rounded to its group's integer grid. The implementation is llm-compressor's AWQ transform
followed by its ``QuantizationModifier`` (vLLM project, Apache-2.0).

Ours (MIT): the wrapper, the calibration sampling, the group-size check, and returning a
vanilla model whose plain weights hold the de-quantized grid values with the scales
folded in (see ``benchmark.toolkit.llmcompressor``). The paper did not re-apply AWQ after
a later intervention when AWQ came first; ``submission.yaml`` records that setting.
"""

from __future__ import annotations

import torch
from pydantic import Field

from benchmark.api import Category, Intervention, InterventionContext
from benchmark.toolkit import (
    QuantizationHyperparameters,
    calibration_options,
    group_size_for,
    run_calibrated,
    weight_quantization_groups,
)


class AWQHyperparameters(QuantizationHyperparameters):
    """AWQ's own knobs beside the bits, the groups and the calibration windows."""

    symmetric: bool = Field(
        False, description="Symmetric grid without zero point (AWQ's reference: false, zero point)."
    )
    n_grid: int = Field(20, ge=1, description="Scale candidates searched per layer; cost grows linearly.")
    duo_scaling: bool = Field(True, description="Use weight magnitudes beside activations in the scale search.")


class AWQ(Intervention):
    """Group-wise integer weight quantization with AWQ scaling through ``llmcompressor.oneshot``.

    Hyperparameters: :class:`AWQHyperparameters` (``compose-bench list interventions``).
    """

    name = "awq"
    category = Category.COMPRESSION
    Hyperparameters = AWQHyperparameters

    def apply(self, model: torch.nn.Module, tokenizer, context: InterventionContext) -> torch.nn.Module:
        hp = AWQHyperparameters.from_context(context)
        group = group_size_for("awq", model, hp.group_size)
        calibration = calibration_options("awq", hp, context)

        from llmcompressor.modifiers.quantization import QuantizationModifier
        from llmcompressor.modifiers.transform import AWQModifier

        # llm-compressor 0.14 splits AWQ into the scale search (a transform) and the rounding
        modifiers = [
            AWQModifier(n_grid=hp.n_grid, duo_scaling=hp.duo_scaling),
            QuantizationModifier(
                config_groups=weight_quantization_groups(hp.bits, group, hp.symmetric), ignore=["re:.*lm_head"]
            ),
        ]
        return run_calibrated(model, tokenizer, modifiers, calibration, context.seed)

    def weight_bits(self, context: InterventionContext) -> float | None:
        return float(AWQHyperparameters.from_context(context).bits)
