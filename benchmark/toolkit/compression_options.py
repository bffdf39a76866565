"""The hyperparameters every compressor shares, declared once, and the calls they feed.

Public to submitters, beside :mod:`benchmark.api`. The four compression baselines (GPTQ,
AWQ, SparseGPT, Wanda) read the same few settings (the grid level, calibration windows,
a quantization group size): their :class:`~benchmark.api.Hyperparameters` models extend
the ones here, so each setting has one type, one range and one description.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
from pydantic import Field, field_validator

from benchmark.api import Hyperparameters, InterventionContext, InterventionError
from benchmark.toolkit.training import decoder_layers

__all__ = [
    "CalibrationOptions",
    "CalibratedHyperparameters",
    "QuantizationHyperparameters",
    "PruningHyperparameters",
    "calibration_options",
    "group_size_for",
    "weight_quantization_groups",
    "run_calibrated",
]


@dataclass(frozen=True)
class CalibrationOptions:
    """Calibration texts and the windows to cut from them (see ``build_calibration_dataset``)."""

    texts: tuple[str, ...]
    samples: int
    seq_len: int


class CalibratedHyperparameters(Hyperparameters):
    """The calibration windows every calibrated compressor reads."""

    calibration_samples: int = Field(128, ge=1, description="Calibration windows cut from the calibration texts.")
    calibration_seq_len: int = Field(2048, ge=2, description="Tokens per calibration window.")


class QuantizationHyperparameters(CalibratedHyperparameters):
    """Group-wise integer weight quantization: the grid level and the groups."""

    bits: Literal[2, 3, 4, 5, 6, 7, 8] = Field(description="Bits per weight (the grid level).")
    group_size: int = Field(128, ge=1, description="Input columns per scale; must divide every layer's input width.")


class PruningHyperparameters(CalibratedHyperparameters):
    """Unstructured or N:M pruning: the grid level and the mask."""

    sparsity: float = Field(
        gt=0.0, lt=1.0, description="Fraction of each block Linear's weights set to zero (the grid level)."
    )
    mask_structure: str = Field(
        "0:0", pattern=r"^\d+:\d+$", description="'0:0' (unstructured, the paper's) or 'N:M' with N < M."
    )

    @field_validator("mask_structure")
    @classmethod
    def _n_below_m(cls, value: str) -> str:
        n, m = (int(x) for x in value.split(":"))
        if n != 0 and n >= m:
            raise ValueError("N:M needs N < M")
        return value


def calibration_options(name: str, hp: CalibratedHyperparameters, context: InterventionContext) -> CalibrationOptions:
    """``calibration_samples`` x ``calibration_seq_len`` windows of the context's calibration texts."""
    texts = tuple(t for t in context.calibration_texts if isinstance(t, str) and t.strip())
    if not texts:
        raise InterventionError(f"{name}: no calibration texts in the context")
    return CalibrationOptions(texts, hp.calibration_samples, hp.calibration_seq_len)


def group_size_for(name: str, model: torch.nn.Module, group: int) -> int:
    """The ``group_size`` hyperparameter, checked against every block ``nn.Linear`` of ``model``.

    The paper quantizes in groups of 128 input columns. A group must divide each layer's
    number of input columns (SmolLM2-135M has 576 = 64 x 9, so 128 does not): a group size
    that does not fit is an error naming the largest one that does, so the value written
    in ``submission.yaml`` (and recorded with every result) is the one actually used.
    """
    from benchmark.toolkit.llmcompressor import model_group_size

    widths = sorted(
        {m.in_features for layer in decoder_layers(model) for m in layer.modules() if isinstance(m, torch.nn.Linear)}
    )
    bad = [w for w in widths if w % group]
    if bad:
        raise InterventionError(
            f"{name}: group_size {group} does not divide the input width {bad[0]} of this model's layers; "
            f"the largest power of two that fits is {model_group_size(model, group)}: set it in submission.yaml"
        )
    return group


def weight_quantization_groups(bits: int, group_size: int, symmetric: bool) -> dict:
    """llm-compressor ``config_groups`` for integer weight-only quantization of every block Linear."""
    from compressed_tensors.quantization import QuantizationArgs, QuantizationScheme

    args = QuantizationArgs(
        num_bits=bits, type="int", symmetric=bool(symmetric), strategy="group", group_size=group_size
    )
    return {"group_0": QuantizationScheme(targets=["Linear"], weights=args)}


def run_calibrated(
    model: torch.nn.Module, tokenizer: Any, modifier: Any, calibration: CalibrationOptions, seed: int
) -> torch.nn.Module:
    """``run_oneshot`` with these calibration windows (seeded): the one call every compressor makes."""
    from benchmark.toolkit.llmcompressor import run_oneshot

    return run_oneshot(
        model,
        tokenizer,
        modifier,
        calibration.texts,
        num_samples=calibration.samples,
        seq_len=calibration.seq_len,
        seed=seed,
    )
