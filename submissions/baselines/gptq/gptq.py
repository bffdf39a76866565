"""GPTQ: weight-only quantization with second-order error compensation (baseline, compression).

The method is Frantar, Ashkboos, Hoefler and Alistarh, "GPTQ: Accurate Post-Training
Quantization for Generative Pre-trained Transformers" (ICLR 2023,
https://arxiv.org/abs/2210.17323): column by column, each weight is rounded to the integer
grid of its group and the rounding error is spread over the not yet quantized columns
through the inverse Hessian of the layer's reconstruction loss on calibration
activations. The implementation is llm-compressor's ``GPTQModifier`` (vLLM project,
Apache-2.0); the paper used AutoGPTQ, which no longer runs with this stack (see
``docs/COMPRESSION.md``).

Ours (MIT): the wrapper, the calibration sampling, the group-size check, and returning a
vanilla model whose plain weights hold the de-quantized grid values (the paper's
pseudo-quantization; see ``benchmark.toolkit.llmcompressor``).
"""

from __future__ import annotations

import math

import torch

from benchmark.api import Category, Intervention, InterventionContext, InterventionError
from benchmark.toolkit import bits_level, calibration_options, flag, run_calibrated, group_size_for, weight_quantization_groups

BITS = (2, 3, 4, 5, 6, 7, 8)


class GPTQ(Intervention):
    """Group-wise integer weight quantization with GPTQ through ``llmcompressor.oneshot``.

    Hyperparameters: ``bits`` (the grid level), ``group_size`` (input columns per scale;
    must divide every layer's input width), ``symmetric`` (symmetric grid without zero
    point, AutoGPTQ's default), ``actorder`` (``static``: llm-compressor's default column
    order by Hessian diagonal; ``none``: natural order, as AutoGPTQ's ``desc_act=False``),
    ``dampening_frac``, ``block_size``, ``calibration_samples``, ``calibration_seq_len``.
    """

    name = "gptq"
    category = Category.COMPRESSION

    def apply(self, model: torch.nn.Module, tokenizer, context: InterventionContext) -> torch.nn.Module:
        bits = bits_level("gptq", context, BITS)
        group = group_size_for("gptq", model, context)
        calibration = calibration_options("gptq", context)
        symmetric = flag("gptq", context, "symmetric", True)
        actorder = context.hp("actorder", "static")
        if actorder not in ("static", "none", "group", "weight"):
            raise InterventionError(f"gptq: hyperparameter 'actorder' must be static, group, weight or none, got {actorder!r}")
        damp = context.hp("dampening_frac", 0.01)
        if isinstance(damp, bool) or not isinstance(damp, (int, float)) or not math.isfinite(damp) or not 0 < damp < 1:
            raise InterventionError(f"gptq: hyperparameter 'dampening_frac' must be a number in (0, 1), got {damp!r}")

        from llmcompressor.modifiers.quantization import GPTQModifier

        modifier = GPTQModifier(
            config_groups=weight_quantization_groups(bits, group, symmetric),
            ignore=["re:.*lm_head"],
            actorder=None if actorder == "none" else actorder,
            dampening_frac=float(damp),
        )
        return run_calibrated(model, tokenizer, modifier, calibration, context.seed)

    def weight_bits(self, context: InterventionContext) -> float | None:
        return float(context.hp("bits"))
