"""The compression level actually present in a model: sparsity and average bits per weight.

Both numbers are measured on the weights the harness evaluates, never taken from what a
compressor says it did. The counting follows the paper (Kolbeinsson et al. 2024, "Composable
Interventions for Language Models"):

* **sparsity**: the fraction of exact zeros over the weights of the ``nn.Linear`` modules
  inside the transformer blocks (attention and MLP projections). Embeddings, the LM head
  and norms are excluded: pruners leave them alone and they would dilute the number.
* **average bits**: a quantized model stores ``bits`` per weight plus 0.25 bit of
  scale/zero-point overhead; a pruned (unquantized) model stores 16 bits per kept weight
  and 1 bit (the mask) per pruned weight, so sparsity 0.25 gives 0.75*16 + 0.25*1 = 12.25;
  a dense unquantized model counts 16.

When a model is both quantized and pruned we report the quantization figure
(``bits + 0.25``): quantization grids put many weights on an exact zero, so measured
sparsity on a quantized model does not say what was pruned.
"""

from __future__ import annotations

import torch


__all__ = [
    "DENSE_BITS",
    "MASK_BITS",
    "SCALE_OVERHEAD_BITS",
    "block_linear_weights",
    "measure_sparsity",
    "average_bits",
    "bits_from_sparsity",
]

DENSE_BITS = 16.0
MASK_BITS = 1.0
SCALE_OVERHEAD_BITS = 0.25


def block_linear_weights(model: torch.nn.Module) -> list[tuple[str, torch.Tensor]]:
    """``(name, weight)`` of every ``nn.Linear`` inside the transformer blocks, each tensor once."""
    from benchmark.toolkit.training import decoder_layers  # here: the toolkit re-exports this module

    layers = decoder_layers(model)
    out: list[tuple[str, torch.Tensor]] = []
    seen: set[int] = set()
    for index, layer in enumerate(layers):
        for name, module in layer.named_modules():
            if isinstance(module, torch.nn.Linear) and id(module.weight) not in seen:
                seen.add(id(module.weight))
                out.append((f"layers.{index}.{name}.weight", module.weight))
    return out


@torch.no_grad()
def measure_sparsity(model: torch.nn.Module) -> float:
    """Fraction of exact zeros over the block ``nn.Linear`` weights (embeddings/LM head excluded)."""
    zeros = 0
    total = 0
    for _, weight in block_linear_weights(model):
        zeros += int((weight == 0).sum().item())
        total += weight.numel()
    if total == 0:
        raise ValueError("the model has no nn.Linear weights inside its transformer blocks")
    return zeros / total


def bits_from_sparsity(sparsity: float) -> float:
    """Average bits of an unquantized model with this sparsity (16 per kept, 1 per pruned weight)."""
    if not 0.0 <= sparsity <= 1.0:
        raise ValueError(f"sparsity must lie in [0, 1], got {sparsity}")
    return (1.0 - sparsity) * DENSE_BITS + sparsity * MASK_BITS


def average_bits(model: torch.nn.Module, weight_bits: float | None) -> float:
    """Average bits per weight as the paper counts them.

    Args:
        model: the model to measure (its sparsity is used when ``weight_bits`` is None).
        weight_bits: the bit width a quantizer stored the weights in, or None when no
            quantizer touched the model (then the measured sparsity decides).

    Returns:
        ``weight_bits + 0.25`` for a quantized model; otherwise
        ``16 * (1 - sparsity) + 1 * sparsity`` (16.0 for a dense model).
    """
    if weight_bits is not None:
        bits = float(weight_bits)
        if not 0 < bits <= 32:
            raise ValueError(f"weight_bits must be in (0, 32], got {weight_bits}")
        return bits + SCALE_OVERHEAD_BITS
    return bits_from_sparsity(measure_sparsity(model))
