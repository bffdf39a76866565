"""What every application of a step checks, on either side of the sandbox: one module both sides import.

Why a module of its own: the harness (:mod:`benchmark.step_executor`) and the code that runs
inside the box (:mod:`benchmark.isolation`'s child side) apply the same checks and the same
seeding; keeping them here, below both, means neither imports the other's internals.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch


class StepFailed(RuntimeError):
    """An intervention failed; ``str()`` is the one-line reason that goes into the record."""


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch the same way before every application (both orders of a pair)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def one_line(exc: BaseException, limit: int = 500) -> str:
    """``Type: message`` on one line, at most ``limit`` characters (the record's reason)."""
    text = f"{type(exc).__name__}: {exc}".strip().replace("\n", " ")
    return text[:limit]


def signature(model: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    """The architecture as the checks compare it: parameter and buffer names with their shapes."""
    return {name: tuple(p.shape) for name, p in model.state_dict().items()}


def check_architecture(step_label: str, model: Any, base_signature: dict[str, tuple[int, ...]]) -> None:
    """The intervention returned a torch model of the same architecture (names and shapes)."""
    if not isinstance(model, torch.nn.Module):
        raise StepFailed(f"{step_label}: apply returned {type(model).__name__}, not a torch model")
    found = signature(model)
    if found != base_signature:
        missing = sorted(set(base_signature) - set(found))[:3]
        added = sorted(set(found) - set(base_signature))[:3]
        reshaped = sorted(k for k in set(found) & set(base_signature) if found[k] != base_signature[k])[:3]
        raise StepFailed(f"{step_label}: architecture changed (missing {missing}, added {added}, reshaped {reshaped})")


def check_model_after(step_label: str, model: Any, base_signature: dict[str, tuple[int, ...]]) -> None:
    """The intervention returned a model of the same architecture with finite weights."""
    check_architecture(step_label, model, base_signature)
    for name, tensor in model.state_dict().items():
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise StepFailed(f"{step_label}: weights are not finite (NaN or inf in {name})")
