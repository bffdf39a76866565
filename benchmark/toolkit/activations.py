"""The hidden states a transformer block outputs, without running the blocks after it.

Public to submitters, beside :mod:`benchmark.api`. Representation-level unlearners (RMU)
and editors (MEMIT-style key/value reads) need one block's output for a batch; running the
whole model for it wastes the blocks above. :func:`block_output` registers a forward hook
on the block, keeps its output and stops the forward pass right there; gradients flow
normally into the blocks below. Written here because ``transformers`` offers only
``output_hidden_states`` (which runs every block and keeps all of them).
"""

from __future__ import annotations

from typing import Mapping

import torch

from benchmark.toolkit.training import _model_device, decoder_layers

__all__ = ["block_output", "module_input"]


class _Reached(Exception):
    """Raised by the hook to stop the forward pass once the block's output is captured."""


def _forward_until(model: torch.nn.Module, batch: Mapping[str, torch.Tensor], register) -> torch.Tensor:
    """Run ``model`` on ``batch`` until the hook installed by ``register(hook)`` has captured a tensor."""
    captured: list[torch.Tensor] = []

    def keep(value: torch.Tensor) -> None:
        captured.append(value)
        raise _Reached

    handle = register(keep)
    device = _model_device(model)
    try:
        model(
            input_ids=batch["input_ids"].to(device),
            attention_mask=batch["attention_mask"].to(device),
            use_cache=False,
        )
    except _Reached:
        pass
    finally:
        handle.remove()
    if not captured:
        raise RuntimeError("the hooked module was not reached in the forward pass")
    return captured[0]


def block_output(model: torch.nn.Module, batch: Mapping[str, torch.Tensor], layer: int) -> torch.Tensor:
    """Output hidden states ``(batch, seq, hidden)`` of block ``layer`` for ``batch``.

    ``batch`` holds ``input_ids`` and ``attention_mask`` (as from ``tokenize_texts_for_lm``).
    Runs under the caller's grad mode, so it can be used inside a loss.
    """
    blocks = decoder_layers(model)
    if not -len(blocks) <= layer < len(blocks):
        raise ValueError(f"layer {layer} does not exist; the model has {len(blocks)} blocks")
    return _forward_until(
        model,
        batch,
        lambda keep: blocks[layer].register_forward_hook(
            lambda _m, _i, output: keep(output[0] if isinstance(output, (tuple, list)) else output)
        ),
    )


def module_input(model: torch.nn.Module, batch: Mapping[str, torch.Tensor], module: torch.nn.Module) -> torch.Tensor:
    """The first positional input of ``module`` (e.g. an MLP's down projection) for ``batch``; stops the pass there."""
    return _forward_until(
        model, batch, lambda keep: module.register_forward_pre_hook(lambda _m, inputs: keep(inputs[0]))
    )
