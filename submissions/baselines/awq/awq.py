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

from benchmark.api import Category, Intervention, InterventionContext
from benchmark.toolkit import bits_level, calibration_options, flag, number, run_calibrated, group_size_for, weight_quantization_groups

BITS = (2, 3, 4, 5, 6, 7, 8)


class AWQ(Intervention):
    """Group-wise integer weight quantization with AWQ scaling through ``llmcompressor.oneshot``.

    Hyperparameters: ``bits`` (the grid level), ``group_size`` (must divide every layer's
    input width), ``symmetric`` (AWQ's reference uses an asymmetric grid with zero point:
    false), ``n_grid`` (scale candidates searched per layer; cost grows linearly),
    ``duo_scaling`` (use weight magnitudes beside activations), ``calibration_samples``,
    ``calibration_seq_len``.
    """

    name = "awq"
    category = Category.COMPRESSION

    def apply(self, model: torch.nn.Module, tokenizer, context: InterventionContext) -> torch.nn.Module:
        bits = bits_level("awq", context, BITS)
        group = group_size_for("awq", model, context)
        calibration = calibration_options("awq", context)
        symmetric = flag("awq", context, "symmetric", False)
        n_grid = number("awq", context, "n_grid", 20, kind=int)
        duo = flag("awq", context, "duo_scaling", True)

        from llmcompressor.modifiers.quantization import QuantizationModifier
        from llmcompressor.modifiers.transform import AWQModifier

        # llm-compressor 0.14 splits AWQ into the scale search (a transform) and the rounding
        modifiers = [
            AWQModifier(n_grid=n_grid, duo_scaling=duo),
            QuantizationModifier(config_groups=weight_quantization_groups(bits, group, symmetric), ignore=["re:.*lm_head"]),
        ]
        return run_calibrated(model, tokenizer, modifiers, calibration, context.seed)

    def weight_bits(self, context: InterventionContext) -> float | None:
        return float(context.hp("bits"))
