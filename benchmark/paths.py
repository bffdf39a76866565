"""Where the harness finds its task definitions, baselines, caches and local data.

Every location can be overridden by an environment variable so that an installed
harness, a CI runner and a developer checkout all agree on one rule.
"""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent

ENV_DATA_DIR = "COMPOSE_BENCH_DATA"
ENV_CACHE_DIR = "COMPOSE_BENCH_CACHE"
ENV_TASKS_DIR = "COMPOSE_BENCH_TASKS"


def tasks_dir() -> Path:
    """Folder of task and profile YAML (``tasks/`` of the checkout)."""
    return Path(os.environ.get(ENV_TASKS_DIR, PROJECT_ROOT / "tasks"))


def baselines_dir() -> Path:
    """Folder holding one sub-folder per baseline submission."""
    return PROJECT_ROOT / "submissions" / "baselines"


def is_trusted(folder: str | os.PathLike) -> bool:
    """One of this checkout's own baselines (its folder is under ``submissions/baselines``): trusted code.

    Trusted steps may run in-process without the sandbox and have their outputs cached;
    every other folder is a submission from outside.
    """
    try:
        return Path(folder).resolve().is_relative_to(baselines_dir().resolve())
    except OSError:
        return False


def cache_dir() -> Path:
    """Converted models, covariance and data caches (safe to delete)."""
    path = Path(os.environ.get(ENV_CACHE_DIR, Path.home() / ".cache" / "compose-bench"))
    if not path.is_dir():  # no mkdir call when it exists: the step sandbox reports writes outside its folders
        path.mkdir(parents=True, exist_ok=True)
    return path


def data_dir(explicit: str | os.PathLike | None = None) -> Path | None:
    """The local data directory (layout of ``shared/data``), if one was given."""
    value = explicit or os.environ.get(ENV_DATA_DIR)
    if not value:
        return None
    path = Path(value).expanduser().resolve()
    if not path.is_dir():
        raise FileNotFoundError(f"data directory {path} (from --data-dir or ${ENV_DATA_DIR}) does not exist")
    return path
