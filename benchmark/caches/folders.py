"""Where the two caches live and how both are opened with their size limits.

Apart from :mod:`benchmark.caches.run` (the runner's keys, which need torch) so that
``compose-bench cache show|clear`` starts without loading torch.
"""

from __future__ import annotations

from pathlib import Path

from benchmark.caches.evaluations import DEFAULT_LIMIT_GB as EVAL_DEFAULT_GB
from benchmark.caches.evaluations import ENV_LIMIT as EVAL_ENV
from benchmark.caches.evaluations import EvaluationCache
from benchmark.caches.states import DEFAULT_LIMIT_GB as STATE_DEFAULT_GB
from benchmark.caches.states import ENV_LIMIT as STATE_ENV
from benchmark.caches.states import StateCache
from benchmark.caches.store import results_cache_dir, size_limit_bytes

EVALUATIONS_DIR = "evaluations"
STATES_DIR = "states"


def open_caches(root: Path | None = None) -> tuple[EvaluationCache, StateCache]:
    """Both caches under ``root`` (default :func:`results_cache_dir`), with their configured size limits."""
    root = Path(root) if root is not None else results_cache_dir()
    return (
        EvaluationCache(root / EVALUATIONS_DIR, size_limit_bytes(EVAL_ENV, EVAL_DEFAULT_GB)),
        StateCache(root / STATES_DIR, size_limit_bytes(STATE_ENV, STATE_DEFAULT_GB)),
    )
