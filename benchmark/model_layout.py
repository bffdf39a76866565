"""Where things are in a causal LM: its transformer blocks, its device, the id to pad with.

A lower layer shared by the harness's scorers (:mod:`benchmark.evaluation`) and the
submitters' toolkit (:mod:`benchmark.toolkit`), so that neither imports the other for
these helpers; :mod:`benchmark.toolkit.training` re-exports them under its public names.
"""

from __future__ import annotations

from typing import Any

import torch

_LAYER_PATHS = (
    "model.layers",  # Llama, Mistral, Qwen, Gemma, SmolLM
    "model.decoder.layers",  # OPT
    "transformer.h",  # GPT-2, GPT-J, Falcon
    "gpt_neox.layers",  # Pythia
    "transformer.blocks",  # MPT
)


def decoder_layers(model: torch.nn.Module) -> torch.nn.ModuleList:
    """The ``nn.ModuleList`` of transformer blocks of a causal LM.

    Tries the usual attribute paths first, then the longest ``ModuleList`` whose length
    equals ``config.num_hidden_layers``. Raises ``ValueError`` when none is found.
    """
    for path in _LAYER_PATHS:
        obj: Any = model
        for part in path.split("."):
            obj = getattr(obj, part, None)
            if obj is None:
                break
        if isinstance(obj, torch.nn.ModuleList) and len(obj) > 0:
            return obj
    expected = getattr(getattr(model, "config", None), "num_hidden_layers", None)
    candidates = [
        m for m in model.modules() if isinstance(m, torch.nn.ModuleList) and (expected is None or len(m) == expected)
    ]
    if candidates:
        return max(candidates, key=len)
    raise ValueError(f"cannot find the transformer blocks of {type(model).__name__} (no ModuleList of layers)")


def num_layers(model: torch.nn.Module) -> int:
    """Number of transformer blocks."""
    return len(decoder_layers(model))


def pad_token_id(tokenizer: Any) -> int:
    """The id to pad with: the tokenizer's pad token, else its EOS (padding is always masked)."""
    pad = getattr(tokenizer, "pad_token_id", None)
    if pad is None:
        pad = getattr(tokenizer, "eos_token_id", None)
    if pad is None:
        raise ValueError("the tokenizer has neither a pad token nor an EOS token to pad with")
    return int(pad)


def model_device(model: torch.nn.Module) -> torch.device:
    """The device of the model's first parameter (CPU for a model without parameters)."""
    try:
        return next(model.parameters()).device
    except StopIteration:  # pragma: no cover
        return torch.device("cpu")
