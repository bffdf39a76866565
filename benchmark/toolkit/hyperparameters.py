"""Checked reading of hyperparameters that training-based interventions share.

Public to submitters, beside :mod:`benchmark.api`. Each reader raises
:class:`~benchmark.api.InterventionError` with one line naming the intervention, the key
and the bad value, so a typo in ``submission.yaml`` fails its cell with a readable reason.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import torch

from benchmark.api import InterventionContext, InterventionError
from benchmark.toolkit.training import num_layers

__all__ = ["number", "layer_list", "name_list", "flag", "required_texts"]

_MISSING = object()


def number(name: str, context: InterventionContext, key: str, default: Any = _MISSING, *, kind: type = float,
           minimum: float = 0.0, allow_minimum: bool = False) -> Any:
    """A finite number above ``minimum`` (or equal to it with ``allow_minimum``); ``kind`` int or float."""
    value = context.hp(key) if default is _MISSING else context.hp(key, default)
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if kind is int:
        ok = ok and isinstance(value, int)
    if not ok or value < minimum or (value == minimum and not allow_minimum):
        relation = ">=" if allow_minimum else ">"
        what = "an integer" if kind is int else "a number"
        raise InterventionError(f"{name}: hyperparameter {key!r} must be {what} {relation} {minimum:g}, got {value!r}")
    return kind(value)


def layer_list(name: str, model: torch.nn.Module, context: InterventionContext, key: str, default: Any = _MISSING) -> list[int]:
    """A non-empty list of block indices that exist in ``model``."""
    value = context.hp(key) if default is _MISSING else context.hp(key, default)
    n = num_layers(model)
    if not isinstance(value, list) or not value or not all(isinstance(i, int) and not isinstance(i, bool) and -n <= i < n for i in value):
        raise InterventionError(f"{name}: hyperparameter {key!r} must list block indices of this {n}-layer model, got {value!r}")
    return [i % n for i in value]


def name_list(name: str, context: InterventionContext, key: str, default: Any = _MISSING) -> list[str]:
    """A non-empty list of non-empty strings (module names)."""
    value = context.hp(key) if default is _MISSING else context.hp(key, default)
    if not isinstance(value, list) or not value or not all(isinstance(m, str) and m for m in value):
        raise InterventionError(f"{name}: hyperparameter {key!r} must be a list of module names, got {value!r}")
    return value


def flag(name: str, context: InterventionContext, key: str, default: bool) -> bool:
    """A true/false setting."""
    value = context.hp(key, default)
    if not isinstance(value, bool):
        raise InterventionError(f"{name}: hyperparameter {key!r} must be true or false, got {value!r}")
    return value


def required_texts(name: str, texts: Sequence[str], what: str) -> list[str]:
    """The non-blank ``texts`` of the context (e.g. its forget texts); none at all is an error."""
    kept = [t for t in texts if t.strip()]
    if not kept:
        raise InterventionError(f"{name}: the context holds no {what}")
    return kept
