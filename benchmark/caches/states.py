"""The state cache: (input weights, trusted step, its settings) -> output weights.

Only steps of trusted code (the baselines in ``submissions/baselines``) are cached: a
submitted intervention is always run again, since its code is the thing under test and
nothing stops it from reading the clock or the network in its own way. An entry is one
safetensors file whose header carries the step's timing entry and a SHA-256 of its tensors
(names, dtypes, shapes, bytes), checked on every hit: a hit hands back the exact bytes the
step produced, and a damaged file is discarded.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchmark.caches.keys import FORMAT_VERSION, canonical_sha256
from benchmark.caches.store import EntryStore

if TYPE_CHECKING:  # torch and safetensors load when a state is read or written, not to show or clear the cache
    import torch

log = logging.getLogger(__name__)

ENV_LIMIT = "COMPOSE_BENCH_CACHE_STATES_GB"
DEFAULT_LIMIT_GB = 5.0  # about 15 states of the 135M default model in bf16 (325 MB each)


def _sorted_sha(state: dict[str, torch.Tensor]) -> str:
    from benchmark.models import tensors_sha256

    return tensors_sha256((name, state[name]) for name in sorted(state))


class StateCache:
    """Step outputs in ``folder`` (one ``<key>.safetensors`` per step application)."""

    def __init__(self, folder: Path, limit_bytes: int) -> None:
        self.store = EntryStore(folder, ".safetensors", limit_bytes)

    @staticmethod
    def key(material: dict[str, Any]) -> str:
        return canonical_sha256({"kind": "state", "format": FORMAT_VERSION, **material})

    def get(self, key: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]] | None:
        """(output weights, the step's timing entry) under ``key``, or None (a miss; damage is discarded)."""
        from safetensors import safe_open
        from safetensors.torch import load_file

        path = self.store.path(key)
        if not path.exists():
            self.store.bump(misses=1)
            return None
        try:
            with safe_open(str(path), "pt") as fh:
                meta = fh.metadata() or {}
            if meta.get("key") != key:
                raise ValueError(f"header names key {str(meta.get('key'))[:16]}")
            state = load_file(str(path))
            if _sorted_sha(state) != meta.get("tensors_sha256"):
                raise ValueError("tensor checksum mismatch")
            entry = json.loads(meta["entry"])
        except FileNotFoundError:  # evicted by another run between the check and the read
            self.store.bump(misses=1)
            return None
        except Exception as exc:  # a damaged header or body raises safetensors' own errors
            self.store.discard(key, f"{type(exc).__name__}: {exc}")
            self.store.bump(misses=1)
            return None
        self.store.touch(key)
        self.store.bump(hits=1, saved_s=float(entry.get("seconds") or 0.0))
        return state, entry

    def put(self, key: str, material: dict[str, Any], state: dict[str, torch.Tensor], entry: dict[str, Any]) -> bool:
        """Store a step's output weights and timing entry under ``key``."""
        if self.store.limit_bytes <= 0:
            return False
        from benchmark.models import own_storage

        tensors = own_storage(state)
        size = sum(t.numel() * t.element_size() for t in tensors.values())
        if size > self.store.limit_bytes:
            log.info(
                "cache %s: a %.2f GB state exceeds the %.2f GB limit (%s); not stored",
                self.store.folder,
                size / 1e9,
                self.store.limit_bytes / 1e9,
                ENV_LIMIT,
            )
            return False
        metadata = {
            "format": str(FORMAT_VERSION),
            "key": key,
            "entry": json.dumps(entry, sort_keys=True, default=str),
            "material": json.dumps(material, sort_keys=True, default=str),
            "tensors_sha256": _sorted_sha(tensors),
            "stored_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        }

        def write(tmp: Path) -> None:
            from safetensors.torch import save_file

            save_file(tensors, str(tmp), metadata=metadata)

        return self.store.write(key, write)
