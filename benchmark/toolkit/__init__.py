"""Helpers for writing interventions: public to submitters, beside :mod:`benchmark.api`.

A submission imports only :mod:`benchmark.api` and this package. Everything listed in
``__all__`` is part of the contract and kept stable; the modules are:

* :mod:`benchmark.toolkit.training`: tokenization with pad-free labels, parameter
  selection by layer and module name, a seeded training loop with float32 master
  weights and a progress bar, likelihood helpers.
* :mod:`benchmark.toolkit.llmcompressor`: ``run_oneshot`` over ``llmcompressor.oneshot``
  that returns a vanilla model (imported lazily: llmcompressor is slow to import).
* :mod:`benchmark.toolkit.compression_options`: the hyperparameters every compressor
  shares (level, calibration windows, quantization group size), declared once as
  :class:`~benchmark.api.Hyperparameters` models to extend.
* :mod:`benchmark.toolkit.hyperparameters`: checks of declared values against the model
  (block indices that exist) and the context (texts present), with one-line errors.
* :mod:`benchmark.toolkit.key_statistics`: cached second moments of a module's inputs
  over reference text (MEMIT's ``C``), with provenance.
* :mod:`benchmark.toolkit.activations`: one block's output without running the blocks above.
* compression statistics as the harness measures them (``measure_sparsity``,
  ``average_bits``), re-exported from :mod:`benchmark.evaluation.compression_stats`.
"""

from __future__ import annotations

from typing import Any

from benchmark.evaluation.compression_stats import average_bits, measure_sparsity
from benchmark.toolkit.activations import block_output, module_input
from benchmark.toolkit.compression_options import (
    CalibratedHyperparameters,
    CalibrationOptions,
    PruningHyperparameters,
    QuantizationHyperparameters,
    calibration_options,
    group_size_for,
    run_calibrated,
    weight_quantization_groups,
)
from benchmark.toolkit.hyperparameters import ModuleName, block_indices, required_texts
from benchmark.toolkit.key_statistics import KeyStatistics, key_second_moments, prefix_weights_sha256, reference_texts
from benchmark.toolkit.training import (
    IGNORE_INDEX,
    TrainResult,
    collate,
    decoder_layers,
    lm_loss,
    mean_log_likelihood,
    num_layers,
    pad_token_id,
    preserve_grad_state,
    seed_everything,
    select_parameters,
    sequence_log_likelihood,
    tokenize_prompt_target,
    tokenize_texts_for_lm,
    train,
)

_LAZY = {
    "run_oneshot": "benchmark.toolkit.llmcompressor",
    "build_calibration_dataset": "benchmark.toolkit.llmcompressor",
    "largest_group_size": "benchmark.toolkit.llmcompressor",
    "model_group_size": "benchmark.toolkit.llmcompressor",
    "fold_quantization": "benchmark.toolkit.llmcompressor",
    "protect_lm_head": "benchmark.toolkit.llmcompressor",
}

__all__ = [
    "CalibratedHyperparameters",
    "CalibrationOptions",
    "IGNORE_INDEX",
    "ModuleName",
    "PruningHyperparameters",
    "QuantizationHyperparameters",
    "TrainResult",
    "KeyStatistics",
    "average_bits",
    "key_second_moments",
    "module_input",
    "pad_token_id",
    "prefix_weights_sha256",
    "reference_texts",
    "required_texts",
    "block_output",
    "collate",
    "block_indices",
    "calibration_options",
    "group_size_for",
    "run_calibrated",
    "weight_quantization_groups",
    "decoder_layers",
    "lm_loss",
    "mean_log_likelihood",
    "measure_sparsity",
    "num_layers",
    "preserve_grad_state",
    "seed_everything",
    "select_parameters",
    "sequence_log_likelihood",
    "tokenize_prompt_target",
    "tokenize_texts_for_lm",
    "train",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'benchmark.toolkit' has no attribute {name!r}")
