"""The compression level actually present in a model: sparsity and average bits per weight.

Both numbers are measured on the weights the harness evaluates, never taken from what a
compressor says it did. The counting follows the paper (Kolbeinsson et al. 2024, "Composable
Interventions for Language Models"):

* **sparsity**: the fraction of exact zeros over the weights of the ``nn.Linear`` modules
  inside the transformer blocks (attention and MLP projections). Embeddings, the LM head
  and norms are excluded: pruners leave them alone and they would dilute the number.
* **average bits**, measured per quantization group from the weights themselves, the same
  rule for every compressor and every cell (:func:`measure_bits`). A group is ``G``
  consecutive weights of one row (``G`` = 128, 64 or 32, the largest dividing every row of
  the model: the paper's 128 on Llama-3, 64 on SmolLM2). Unquantized weights count as the paper counts
  them: 16 bits per kept weight and 1 bit (the mask) per zero, so a dense model is 16 and
  sparsity 0.25 gives 0.75*16 + 0.25*1 = 12.25. A group counts as quantized to ``c`` bits
  (``c + 0.25``, the paper's scale/zero-point overhead) only when a step of the cell claimed
  ``c`` bits, the group differs from the base model's by more than pruning, and it holds at
  most ``2**c`` distinct values. A compressor that claims 2 bits and returns the model
  untouched therefore scores 16; a cell where a later step moved weights off the grid
  reports what is really there. The comparison with the base model matters: the offline
  default model is itself dequantized from a 4/6-bit GGUF file, so its own weights sit on
  grids (measured: 5.50 bits by distinct counts alone), and the protocol counts the base
  model as the 16-bit reference.

  The limit of counting: a group of ``n`` nonzero weights can hold at most ``n`` distinct
  values, so a claim of ``c`` bits with ``2**c >= n`` cannot be refuted by counting (8 bits,
  and 6 bits in groups of 64; 7 bits and up in groups of 128). Such groups are counted at
  the claim and the record says ``unverifiable``; in bfloat16 (8 bits of mantissa) an 8-bit
  grid cannot be told from dense weights by any test on the values.

The claim (``Intervention.weight_bits``, computed in the step) is never the score: it is
kept beside the measured figure (``compression_check`` in the record), with ``refuted``
when some group is not on a grid of that width. Written by hand: no library measures the
bit width of pseudo-quantized (baked) weights.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch

__all__ = [
    "DENSE_BITS",
    "MASK_BITS",
    "SCALE_OVERHEAD_BITS",
    "block_linear_weights",
    "measure_sparsity",
    "average_bits",
    "bits_from_sparsity",
    "measure_bits",
    "BitsMeasurement",
    "measuring_group_size",
]

DENSE_BITS = 16.0
MASK_BITS = 1.0
SCALE_OVERHEAD_BITS = 0.25
UNVERIFIABLE_SHARE = 0.01  # more groups than this that counting cannot check make the check "unverifiable"


def block_linear_weights(model: torch.nn.Module) -> list[tuple[str, torch.Tensor]]:
    """``(name, weight)`` of every ``nn.Linear`` inside the transformer blocks, each tensor once."""
    from benchmark.model_layout import decoder_layers

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


def measuring_group_size(row_lengths: list[int]) -> int:
    """Weights per measured group: 128, 64 or 32, the largest dividing every row length (else 1: no group).

    One size for the whole model, like the protocol's ``group_size`` (a compressor whose groups
    are smaller than this holds more values per measured group and is not credited).
    """
    return next((g for g in (128, 64, 32) if all(n % g == 0 for n in row_lengths)), 1)


@dataclass(frozen=True)
class BitsMeasurement:
    """Average bits measured on the weights, and how it compares with the step's claim.

    ``check``: ``measured`` (no claim), ``verified`` (every group holds at most ``2**claim``
    distinct values and was quantized by the cell), ``unverifiable`` (over 1% of the groups
    could not hold more values than the claim allows, none against it) or ``refuted`` (some group is unchanged from the base
    model or holds more values than the claim allows: it is scored as unquantized).
    """

    avg_bits: float
    claimed_weight_bits: float | None
    check: str
    groups: int
    groups_fitting_the_claim: int
    groups_unverifiable: int
    groups_refuting_the_claim: int
    group_size: int

    def as_record(self) -> dict:
        out = asdict(self)
        out["claimed_avg_bits"] = (
            None if self.claimed_weight_bits is None else self.claimed_weight_bits + SCALE_OVERHEAD_BITS
        )
        return out


@torch.no_grad()
def _tensor_bits(
    weight: torch.Tensor, base: torch.Tensor | None, claimed: float | None, g: int
) -> tuple[float, list[int]]:
    """(sum over groups of their bits, [groups, fitting, unverifiable, refuting]) of one weight."""
    groups = weight.detach().reshape(-1, g)
    zeros = (groups == 0).sum(dim=1)
    nonzero = g - zeros
    unquantized = (nonzero.double() * DENSE_BITS + zeros.double() * MASK_BITS) / g
    n = groups.shape[0]
    if claimed is None:
        return float(unquantized.sum()), [n, 0, 0, 0]
    if base is not None:  # quantized only where values moved other than to zero (pruning)
        before = base.detach().reshape(-1, g).to(groups.dtype)
        moved = ((groups != before) & (groups != 0)).any(dim=1)
    else:
        moved = torch.ones(n, dtype=torch.bool)
    # distinct values of the moved groups, on the bit patterns (-0.0 folded into 0.0): equality is all that counts
    patterns = (groups[moved] + 0.0).contiguous()
    patterns = patterns.view(torch.int16) if patterns.element_size() == 2 else patterns.float()
    ordered = patterns.sort(dim=1).values
    distinct = torch.full((n,), g + 1, dtype=torch.long)
    distinct[moved] = 1 + (ordered[:, 1:] != ordered[:, :-1]).sum(dim=1)
    unverifiable = moved & (2**claimed >= nonzero + (zeros > 0).long())  # cannot hold more values than the claim
    fits = moved & ~unverifiable & (distinct <= 2**claimed)
    refuting = ~(fits | unverifiable)
    bits = torch.where(fits | unverifiable, torch.full_like(unquantized, claimed + SCALE_OVERHEAD_BITS), unquantized)
    return float(bits.sum()), [n, int(fits.sum()), int(unverifiable.sum()), int(refuting.sum())]


def measure_bits(
    model: torch.nn.Module,
    claimed_weight_bits: float | None = None,
    base_model: torch.nn.Module | None = None,
) -> BitsMeasurement:
    """Average bits per weight of the block ``nn.Linear`` weights, measured (see the module docstring).

    Args:
        model: the model the harness evaluates.
        claimed_weight_bits: the smallest bit width a step of the cell claimed, or None.
        base_model: the model before any step (groups it already held are not credited as quantized).
    """
    claimed = None
    invalid = False
    if claimed_weight_bits is not None:  # from untrusted code: a nonsense claim is refuted, never raised
        value = float(claimed_weight_bits)
        invalid = not (math.isfinite(value) and 1 <= value <= 16 and value == math.floor(value))
        claimed = None if invalid else value
    bases = dict(block_linear_weights(base_model)) if base_model is not None else {}
    linears = block_linear_weights(model)
    if not linears:
        raise ValueError("the model has no nn.Linear weights inside its transformer blocks")
    g = measuring_group_size([w.reshape(w.shape[0], -1).shape[1] for _, w in linears])
    total, weights = 0.0, 0
    counts = [0, 0, 0, 0]
    for name, weight in linears:
        base = bases.get(name)
        if base is not None and base.shape != weight.shape:
            raise ValueError(f"{name}: shape {tuple(weight.shape)} differs from the base model's {tuple(base.shape)}")
        bits, n = _tensor_bits(weight, base, claimed, g)
        total += bits * g
        weights += weight.numel()
        counts = [a + b for a, b in zip(counts, n)]
    n_groups, fitting, unverifiable, refuting = counts
    if invalid:
        return BitsMeasurement(
            round(total / weights, 4), float(claimed_weight_bits), "refuted", n_groups, 0, 0, n_groups, g
        )
    if claimed is None:
        check = "measured"
    else:
        # a few groups of almost only zeros cannot refute anything; "unverifiable" is for claims counting cannot check
        check = (
            "refuted" if refuting else "unverifiable" if unverifiable > UNVERIFIABLE_SHARE * n_groups else "verified"
        )
    return BitsMeasurement(round(total / weights, 4), claimed, check, n_groups, fitting, unverifiable, refuting, g)


def average_bits(model: torch.nn.Module, weight_bits: float | None, base_model: torch.nn.Module | None = None) -> float:
    """Average bits per weight, measured (:func:`measure_bits`); ``weight_bits`` is a claim it checks."""
    return measure_bits(model, weight_bits, base_model).avg_bits
