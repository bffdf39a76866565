"""What a cached result depends on, as digests: code, libraries, device, tokenizer.

A cache key is the SHA-256 of a canonical JSON document (sorted keys) of everything that
can change the cached numbers. The harness code enters as a digest of its source files,
not as the git hash: a commit that touches only the README keeps the caches, and a dirty
checkout whose scorer changed gets new keys (``harness_version()`` would only say
``.dirty``, the same string before and after the edit).
"""

from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

from benchmark import __version__
from benchmark.paths import PROJECT_ROOT

if TYPE_CHECKING:  # torch loads only where a key is computed: `compose-bench cache` stays quick
    import torch

FORMAT_VERSION = 2  # bump when what an entry holds, or how a key is built, changes

PACKAGE_DIR = PROJECT_ROOT / "benchmark"

# Modules that orchestrate, display or store results but compute none of the numbers.
# Everything else in benchmark/ is part of the code digest: a new module counts by default,
# which fails safe (a needless miss, never a stale hit).
_NOT_NUMERIC = (
    "caches/",
    "stores/",
    "cli.py",
    "summary.py",
    "metrics.py",
    "records.py",
    "validate.py",
    "hub.py",
    "plan.py",
    "provenance.py",
    "__init__.py",
)
# A model's evaluation: the scorers, the suite, the data loaders, the toolkit they import.
EVALUATION_CODE_EXCLUDES = _NOT_NUMERIC + (
    "runner.py",
    "isolation.py",
    "submissions.py",
    "resources.py",
    "step_executor.py",
    "step_checks.py",
    "ray_executor.py",
)
# A step's output: the runner's and the sandbox's step execution, the API, the toolkit.
STEP_CODE_EXCLUDES = _NOT_NUMERIC + ("suite.py", "probes.py")  # probes attack copies at evaluation only


def canonical_sha256(obj: Any) -> str:
    """SHA-256 of ``obj`` as canonical JSON (sorted keys, no whitespace; unknown types by ``str``)."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str, allow_nan=True)
    return hashlib.sha256(text.encode()).hexdigest()


def _source_files(excludes: Iterable[str]) -> list[Path]:
    excludes = tuple(excludes)
    files = []
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        rel = path.relative_to(PACKAGE_DIR).as_posix()
        if "__pycache__" in rel or any(rel == e or (e.endswith("/") and rel.startswith(e)) for e in excludes):
            continue
        files.append(path)
    return files


@functools.lru_cache(maxsize=8)
def code_digest(excludes: tuple[str, ...]) -> str:
    """SHA-256 over (relative path, bytes) of the harness's source files, minus ``excludes``."""
    h = hashlib.sha256(f"compose-bench {__version__}\0".encode())
    for path in _source_files(excludes):
        h.update(path.relative_to(PACKAGE_DIR).as_posix().encode() + b"\0")
        h.update(path.read_bytes() + b"\0")
    return h.hexdigest()


@functools.lru_cache(maxsize=1)
def library_versions() -> dict[str, str | None]:
    """Versions of every library whose kernels or code compute the cached numbers."""
    from importlib.metadata import PackageNotFoundError, version

    import torch

    out: dict[str, str | None] = {"torch": torch.__version__}
    for name in (
        "transformers",
        "lm-eval",
        "llmcompressor",
        "compressed-tensors",
        "datasets",
        "peft",
        "accelerate",
        "numpy",
        "safetensors",
        "tokenizers",
    ):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def device_kind(device: torch.device) -> dict[str, Any]:
    """What decides the kernels on ``device``: the CPU's instruction set or the GPU's name, and the threads.

    The thread count is in because a different split of a reduction can change the last
    bits of a bf16 result.
    """
    import torch

    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return {"type": "cuda", "name": torch.cuda.get_device_name(index), "cuda": torch.version.cuda}
    return {
        "type": device.type,
        "capability": torch.backends.cpu.get_cpu_capability(),
        "threads": torch.get_num_threads(),
    }


def tokenizer_digest(tokenizer: Any) -> str:
    """SHA-256 of a tokenizer's vocabulary, merges, special tokens and padding side."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    body = backend.to_str() if backend is not None else json.dumps(sorted(tokenizer.get_vocab().items()))
    extra = {
        "special": {k: str(v) for k, v in (tokenizer.special_tokens_map or {}).items()},
        "pad_token_id": tokenizer.pad_token_id,
        "padding_side": getattr(tokenizer, "padding_side", None),
        "class": type(tokenizer).__name__,
    }
    return canonical_sha256({"body": hashlib.sha256(body.encode()).hexdigest(), "extra": extra})


def config_digest(model: torch.nn.Module) -> str:
    """SHA-256 of the model's configuration (architecture, rope, norms: what the weights alone do not say)."""
    config = getattr(model, "config", None)
    return canonical_sha256(config.to_dict() if config is not None else None)
