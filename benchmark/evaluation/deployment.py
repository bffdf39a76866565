"""Deployment check: does the compressed format a serving stack loads compute what we evaluated?

The grid evaluates *pseudo-compressed* models: plain weights in the model's dtype that
hold the de-quantized grid values or the pruning mask (as the paper did). A deployment
loads the packed compressed-tensors checkpoint that llm-compressor writes instead. This
module compresses a model through a compression submission with
:func:`benchmark.toolkit.llmcompressor.export_compressed` active (so the same recipe and
calibration windows are also saved in compressed form), reloads the saved folder with
``transformers`` (compressed-tensors decompresses it on load) and compares next-token
logits of the reloaded model with the in-memory pseudo-compressed one on probe texts.

Tolerance: both run in the same dtype, so a correct round trip differs only where the
packed scales are stored in another precision than the in-memory ones; the default
``atol`` of 0.05 on logits (whose spread is ~10-20) and full agreement of the greedy
next token are the stated bar.
"""

from __future__ import annotations

import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import torch

from benchmark.api import InterventionContext

__all__ = ["DeploymentCheck", "check_deployment", "DEFAULT_PROBES", "DEFAULT_ATOL"]

DEFAULT_ATOL = 0.05
DEFAULT_PROBES = (
    "The capital of France is Paris, and the capital of Italy is",
    "In 1905 Albert Einstein published four papers that changed physics. The first",
    "def fibonacci(n):\n    if n < 2:\n        return n\n    return",
)


@dataclass(frozen=True)
class DeploymentCheck:
    """Result of one round trip through the compressed format."""

    max_abs_logit_diff: float
    mean_abs_logit_diff: float
    next_token_agreement: float
    atol: float
    saved_to: str
    files: tuple[str, ...]
    format: str

    @property
    def ok(self) -> bool:
        return self.max_abs_logit_diff <= self.atol and self.next_token_agreement == 1.0

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}


@torch.no_grad()
def _next_token_logits(model: torch.nn.Module, tokenizer: Any, texts: Sequence[str]) -> torch.Tensor:
    rows = []
    for text in texts:
        ids = tokenizer(text, return_tensors="pt")["input_ids"].to(next(model.parameters()).device)
        rows.append(model(ids).logits[0, -1].float().cpu())
    return torch.stack(rows)


def check_deployment(
    intervention: Any,
    model: torch.nn.Module,
    tokenizer: Any,
    context: InterventionContext,
    *,
    out_dir: str | Path | None = None,
    probes: Sequence[str] = DEFAULT_PROBES,
    atol: float = DEFAULT_ATOL,
) -> tuple[torch.nn.Module, DeploymentCheck]:
    """Compress ``model`` with ``intervention`` and check the saved compressed copy against it.

    Returns the pseudo-compressed model (what the grid would evaluate) and the check.
    ``out_dir`` keeps the compressed checkpoint; by default a temporary folder is used
    and removed.
    """
    import json

    from transformers import AutoModelForCausalLM

    from benchmark.toolkit.llmcompressor import export_compressed

    with tempfile.TemporaryDirectory(prefix="compose-bench-deploy-") as tmp:
        folder = Path(out_dir) if out_dir is not None else Path(tmp) / "compressed"
        with export_compressed(folder):
            model = intervention.apply(model, tokenizer, context)
        if not (folder / "config.json").exists():
            raise RuntimeError(
                f"{type(intervention).__name__} did not go through run_oneshot: nothing was saved to {folder}"
            )
        config = json.loads((folder / "config.json").read_text())
        qconfig = config.get("quantization_config") or {}
        fmt = str(qconfig.get("format") or (qconfig.get("sparsity_config") or {}).get("format") or "dense")
        files = tuple(sorted(p.name for p in folder.iterdir()))
        dtype = next(model.parameters()).dtype
        reloaded = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype)
        reloaded.eval()
        expected = _next_token_logits(model, tokenizer, probes)
        got = _next_token_logits(reloaded, tokenizer, probes)
        del reloaded
    diff = (got - expected).abs()
    check = DeploymentCheck(
        max_abs_logit_diff=float(diff.max()),
        mean_abs_logit_diff=float(diff.mean()),
        next_token_agreement=float((got.argmax(-1) == expected.argmax(-1)).float().mean()),
        atol=atol,
        saved_to=str(folder) if out_dir is not None else "(temporary)",
        files=files,
        format=fmt,
    )
    return model, check
