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

from typing import Literal

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


class GPTQHyperparameters(QuantizationHyperparameters):
    """GPTQ's own knobs beside the bits, the groups and the calibration windows."""

    symmetric: bool = Field(True, description="Symmetric grid without zero point (AutoGPTQ's default).")
    actorder: Literal["static", "group", "weight", "none"] = Field(
        "static", description="Column order: static (by Hessian diagonal) or none (natural, AutoGPTQ's desc_act=False)."
    )
    dampening_frac: float = Field(0.01, gt=0.0, lt=1.0, description="Hessian damping, a fraction of its mean diagonal.")


class GPTQ(Intervention):
    """Group-wise integer weight quantization with GPTQ through ``llmcompressor.oneshot``.

    Hyperparameters: :class:`GPTQHyperparameters` (``compose-bench list interventions``).
    """

    name = "gptq"
    category = Category.COMPRESSION
    Hyperparameters = GPTQHyperparameters

    def apply(self, model: torch.nn.Module, tokenizer, context: InterventionContext) -> torch.nn.Module:
        hp = GPTQHyperparameters.from_context(context)
        group = group_size_for("gptq", model, hp.group_size)
        calibration = calibration_options("gptq", hp, context)

        from llmcompressor.modifiers.quantization import GPTQModifier

        modifier = GPTQModifier(
            config_groups=weight_quantization_groups(hp.bits, group, hp.symmetric),
            ignore=["re:.*lm_head"],
            actorder=None if hp.actorder == "none" else hp.actorder,
            dampening_frac=hp.dampening_frac,
        )
        return run_calibrated(model, tokenizer, modifier, calibration, context.seed)

    def weight_bits(self, context: InterventionContext) -> float | None:
        return float(GPTQHyperparameters.from_context(context).bits)
