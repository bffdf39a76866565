"""Per-submission, per-step caches (the toolkit's key statistics): owned by the harness, never shared.

A step may keep what is expensive to recompute (MEMIT's key second moments take minutes)
for its later cells and runs. Shared writable state would let one submission plant a file
that another submission's step trusts, so each step gets:

* a **read-only** folder with what *this* submission kept before, under
  ``<cache>/steps/<key>`` where ``key = sha256(submission hash, base weights hash, step
  settings)`` (:func:`step_cache_key`): a different submission, model or setting never
  sees it; the step reads it through ``$COMPOSE_BENCH_STEP_CACHE``;
* an empty **writable outbox** (``$COMPOSE_BENCH_STEP_CACHE_OUT``), a fresh temporary folder
  of the harness. After a step that *succeeded*, :meth:`StepCache.keep` moves the plain
  files it left there (no links, bounded names and sizes) into the read-only folder; after a
  failed step the outbox is dropped.

How the sandbox binds them: ``folder`` read-only and ``outbox`` read-write, each at its own
path, with the two environment variables of :meth:`StepCache.environment`; nothing else of
``<cache>`` is visible in the box. In-process (trusted baselines) the same variables are set
around ``apply``. Written by hand: a few file moves with the checks an untrusted writer needs.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from benchmark.toolkit.key_statistics import ENV_STEP_CACHE, ENV_STEP_CACHE_OUT

__all__ = ["StepCache", "step_cache_key", "open_step_cache", "MAX_KEPT_BYTES", "MAX_KEPT_FILES"]

MAX_KEPT_FILES = 256
# Llama-3-8B: one E[k k^T] of down_proj inputs is 14336^2 float32 = 822 MB; MEMIT edits 5 layers
MAX_KEPT_BYTES = 8 * 2**30
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def step_cache_key(submission_sha256: str, base_weights_sha256: str, settings: dict[str, Any]) -> str:
    """The content address of one submission's cache on one model with one step's settings."""
    payload = json.dumps(
        {"submission": submission_sha256, "weights": base_weights_sha256, "settings": settings},
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:32]


@dataclass(frozen=True)
class StepCache:
    """``folder``: what this submission kept (read-only in the step); ``outbox``: where the step writes."""

    folder: Path
    outbox: Path

    def environment(self) -> dict[str, str]:
        """The variables a step reads its cache folders from (:mod:`benchmark.toolkit.key_statistics`)."""
        return {ENV_STEP_CACHE: str(self.folder), ENV_STEP_CACHE_OUT: str(self.outbox)}

    @contextlib.contextmanager
    def in_process(self) -> Iterator[None]:
        """Set :meth:`environment` around an in-process ``apply`` (trusted code), restoring it after."""
        saved = {k: os.environ.get(k) for k in self.environment()}
        os.environ.update(self.environment())
        try:
            yield
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value

    def keep(self) -> list[str]:
        """Move the step's new plain files into ``folder`` (after a successful step); returns their names.

        Anything else in the outbox (links, folders, odd names, past the size or count limit)
        is dropped, never followed. The outbox is removed.
        """
        kept: list[str] = []
        total = 0
        try:
            for entry in sorted(os.scandir(self.outbox), key=lambda e: e.name):
                info = entry.stat(follow_symlinks=False)
                if not stat.S_ISREG(info.st_mode) or not _NAME.match(entry.name) or entry.name.endswith(".tmp"):
                    continue
                total += info.st_size
                if len(kept) >= MAX_KEPT_FILES or total > MAX_KEPT_BYTES:
                    break
                self.folder.mkdir(parents=True, exist_ok=True)
                tmp = self.folder / f".{entry.name}.incoming"
                shutil.copyfile(entry.path, tmp, follow_symlinks=False)
                os.replace(tmp, self.folder / entry.name)
                kept.append(entry.name)
        except FileNotFoundError:
            pass
        finally:
            self.discard()
        return kept

    def discard(self) -> None:
        """Drop the outbox (a failed step keeps nothing)."""
        shutil.rmtree(self.outbox, ignore_errors=True)


def open_step_cache(
    root: Path, submission_sha256: str, base_weights_sha256: str, settings: dict[str, Any]
) -> StepCache:
    """The cache of one step under ``root`` (``<cache>/steps``) with a fresh, empty outbox."""
    folder = Path(root) / step_cache_key(submission_sha256, base_weights_sha256, settings)
    folder.mkdir(parents=True, exist_ok=True)
    outbox = Path(tempfile.mkdtemp(prefix="compose-bench-step-cache-"))
    return StepCache(folder, outbox)
