"""The evaluation cache: (weights, evaluation settings, scorer code) -> scores, per-item values, timings.

Keyed by content, not by cell: a second profile with the same evaluation settings finds
the base model's evaluation, and a cell whose model is bit-identical to any model
evaluated before (a no-op intervention, the same step reached by another run) is not
evaluated again. The entry is a JSON file holding its payload and the payload's SHA-256;
JSON round-trips Python floats exactly (``repr``), so a hit returns the very numbers a
fresh evaluation produced.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmark.caches.keys import FORMAT_VERSION, canonical_sha256
from benchmark.caches.store import EntryStore

log = logging.getLogger(__name__)

ENV_LIMIT = "COMPOSE_BENCH_CACHE_EVALUATIONS_GB"
DEFAULT_LIMIT_GB = 1.0  # an entry is 10-500 kB (the per-item values): thousands of models


@dataclass
class CachedEvaluation:
    """What an evaluation produced, and what it cost when it was computed."""

    scores: dict[str, Any]
    items: dict[str, list]
    parts_s: dict[str, float]
    seconds: float
    peak_rss_mb: float
    origin: dict[str, Any] = field(default_factory=dict)  # when and in which run/cell it was computed
    compression: dict[str, Any] = field(default_factory=dict)  # the measured bits beside the steps' claim


class EvaluationCache:
    """Evaluations in ``folder`` (one ``<key>.json`` per evaluated model)."""

    def __init__(self, folder: Path, limit_bytes: int) -> None:
        self.store = EntryStore(folder, ".json", limit_bytes)

    @staticmethod
    def key(material: dict[str, Any]) -> str:
        return canonical_sha256({"kind": "evaluation", "format": FORMAT_VERSION, **material})

    def get(self, key: str) -> CachedEvaluation | None:
        """The cached evaluation under ``key``, or None (a miss; a damaged entry is discarded)."""
        path = self.store.path(key)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            self.store.bump(misses=1)
            return None
        except OSError as exc:
            log.warning("cache %s: cannot read entry %s: %s", self.store.folder, key[:16], exc)
            self.store.bump(misses=1)
            return None
        try:
            entry = json.loads(text)
            payload = entry["payload"]
            if entry.get("key") != key:
                raise ValueError(f"entry names key {str(entry.get('key'))[:16]}")
            if canonical_sha256(payload) != entry["payload_sha256"]:
                raise ValueError("checksum mismatch")
            found = CachedEvaluation(**payload)
        except (ValueError, KeyError, TypeError) as exc:
            self.store.discard(key, f"{type(exc).__name__}: {exc}")
            self.store.bump(misses=1)
            return None
        self.store.touch(key)
        self.store.bump(hits=1, saved_s=found.seconds)
        return found

    def put(self, key: str, material: dict[str, Any], result: CachedEvaluation) -> bool:
        """Store ``result`` under ``key``; ``material`` (what the key was built from) is kept for inspection."""
        if self.store.limit_bytes <= 0:
            return False
        payload = {**result.__dict__}
        payload["origin"] = {
            **result.origin,
            "stored_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        }
        entry = {
            "format": FORMAT_VERSION,
            "key": key,
            "material": material,
            "payload": payload,
            "payload_sha256": canonical_sha256(payload),
        }
        text = json.dumps(entry, sort_keys=True, default=str)

        def write(tmp: Path) -> None:
            tmp.write_text(text, encoding="utf-8")

        return self.store.write(key, write)
