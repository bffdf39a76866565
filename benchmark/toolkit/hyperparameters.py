"""Checks of declared hyperparameters against the model and context they meet, and shared field types.

Public to submitters, beside :mod:`benchmark.api`. Types and ranges are the job of each
intervention's :class:`~benchmark.api.Hyperparameters` model (checked by ``validate``
before anything runs); what only the model can tell (does block 31 exist?) or only the
context (are there forget texts?) is checked here at ``apply`` time, with one line naming
the intervention, the key and the value.
"""

from __future__ import annotations

from typing import Annotated, Sequence

import torch
from pydantic import Field

from benchmark.api import InterventionError
from benchmark.toolkit.training import num_layers

__all__ = ["ModuleName", "block_indices", "required_texts"]

# A module name inside a block (``mlp.down_proj``), or ``*`` for the whole block.
ModuleName = Annotated[str, Field(min_length=1, max_length=200)]


def block_indices(name: str, model: torch.nn.Module, layers: Sequence[int], key: str = "layers") -> list[int]:
    """``layers`` as indices of ``model``'s blocks (negative ones count from the top); a missing block is an error."""
    n = num_layers(model)
    if not layers or not all(-n <= i < n for i in layers):
        raise InterventionError(
            f"{name}: hyperparameter {key!r} must list block indices of this {n}-layer model, got {list(layers)!r}"
        )
    return [i % n for i in layers]


def required_texts(name: str, texts: Sequence[str], what: str) -> list[str]:
    """The non-blank ``texts`` of the context (e.g. its forget texts); none at all is an error."""
    kept = [t for t in texts if t.strip()]
    if not kept:
        raise InterventionError(f"{name}: the context holds no {what}")
    return kept
