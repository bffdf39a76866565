"""Checked reading of the hyperparameters every compressor shares.

Public to submitters, beside :mod:`benchmark.api`. The four compression baselines (GPTQ,
AWQ, SparseGPT, Wanda) read the same few settings (the grid level, calibration windows,
a quantization group size); reading them here gives every compressor the same clear
one-line errors instead of four slightly different copies.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Sequence

import torch

from benchmark.api import InterventionContext, InterventionError
from benchmark.toolkit.training import decoder_layers

__all__ = [
    "CalibrationOptions",
    "calibration_options",
    "sparsity_level",
    "bits_level",
    "mask_structure",
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


def _int_at_least(name: str, key: str, value: Any, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise InterventionError(f"{name}: hyperparameter {key!r} must be an integer >= {low}, got {value!r}")
    return value


def calibration_options(name: str, context: InterventionContext) -> CalibrationOptions:
    """``calibration_samples`` x ``calibration_seq_len`` windows of the context's calibration texts."""
    samples = _int_at_least(name, "calibration_samples", context.hp("calibration_samples", 128), 1)
    seq_len = _int_at_least(name, "calibration_seq_len", context.hp("calibration_seq_len", 2048), 2)
    texts = tuple(t for t in context.calibration_texts if isinstance(t, str) and t.strip())
    if not texts:
        raise InterventionError(f"{name}: no calibration texts in the context")
    return CalibrationOptions(texts, samples, seq_len)


def sparsity_level(name: str, context: InterventionContext) -> float:
    """The ``sparsity`` level of this cell, a number strictly between 0 and 1."""
    value = context.hp("sparsity")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or not 0.0 < value < 1.0:
        raise InterventionError(f"{name}: hyperparameter 'sparsity' must be a number in (0, 1), got {value!r}")
    return float(value)


_MASK = re.compile(r"^(\d+):(\d+)$")


def mask_structure(name: str, context: InterventionContext) -> str:
    """``mask_structure``: ``"0:0"`` (unstructured, the paper's setting) or ``"N:M"`` with N < M."""
    mask = str(context.hp("mask_structure", "0:0"))
    match = _MASK.match(mask)
    if not match or (match.group(1) != "0" and int(match.group(1)) >= int(match.group(2))):
        raise InterventionError(f"{name}: hyperparameter 'mask_structure' must be '0:0' or 'N:M' with N < M, got {mask!r}")
    return mask


def bits_level(name: str, context: InterventionContext, allowed: Sequence[int]) -> int:
    """The ``bits`` level of this cell, one of ``allowed``."""
    value = context.hp("bits")
    if isinstance(value, bool) or not isinstance(value, int) or value not in allowed:
        raise InterventionError(f"{name}: hyperparameter 'bits' must be one of {list(allowed)}, got {value!r}")
    return value


def group_size_for(name: str, model: torch.nn.Module, context: InterventionContext) -> int:
    """The ``group_size`` hyperparameter, checked against every block ``nn.Linear`` of ``model``.

    The paper quantizes in groups of 128 input columns. A group must divide each layer's
    number of input columns (SmolLM2-135M has 576 = 64 x 9, so 128 does not): a group size
    that does not fit is an error naming the largest one that does, so the value written
    in ``submission.yaml`` (and recorded with every result) is the one actually used.
    """
    from benchmark.toolkit.llmcompressor import model_group_size

    group = _int_at_least(name, "group_size", context.hp("group_size", 128), 1)
    widths = sorted({m.in_features for layer in decoder_layers(model) for m in layer.modules() if isinstance(m, torch.nn.Linear)})
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

    args = QuantizationArgs(num_bits=bits, type="int", symmetric=bool(symmetric), strategy="group", group_size=group_size)
    return {"group_0": QuantizationScheme(targets=["Linear"], weights=args)}


def run_calibrated(model: torch.nn.Module, tokenizer: Any, modifier: Any, calibration: CalibrationOptions, seed: int) -> torch.nn.Module:
    """``run_oneshot`` with these calibration windows (seeded): the one call every compressor makes."""
    from benchmark.toolkit.llmcompressor import run_oneshot

    return run_oneshot(model, tokenizer, modifier, calibration.texts, num_samples=calibration.samples,
                       seq_len=calibration.seq_len, seed=seed)
