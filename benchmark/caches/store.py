"""A folder of content-addressed cache entries: atomic writes, LRU eviction, hit statistics.

Each entry is ONE file named ``<key><suffix>`` (key: 64 hex digits) that carries its own
checksum, so an entry is either complete and verifiable or absent: writers write a
temporary file in the same folder and ``os.replace`` it into place (two runs writing the
same key both leave a complete file), readers verify the checksum and discard a damaged
entry with a warning. The last use of an entry is its file's modification time (set on
every hit), which is what least-recently-used eviction sorts by; access times are not
used because most file systems are mounted ``relatime``/``noatime``.

One ``filelock`` lock per folder guards what must not interleave: the statistics file and
the eviction scan. Lookups take no lock; an entry evicted while a reader opens it is a
miss, and one evicted while it is being read stays readable (POSIX unlink semantics).

Written by hand on top of ``filelock`` rather than with ``diskcache``: the state cache's
entries must be safetensors files that load as they are, with a per-entry integrity
check, which diskcache's SQLite-indexed values do not give.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterator

from filelock import FileLock, Timeout

log = logging.getLogger(__name__)

ENV_RESULTS_CACHE = "COMPOSE_BENCH_RESULTS_CACHE"
LOCK_FILE = ".lock"
STATS_FILE = ".stats.json"
TMP_PREFIX = ".tmp-"
LOCK_TIMEOUT_S = 120.0
STALE_TMP_S = 6 * 3600.0  # a temporary file this old belongs to a killed writer
_KEY = re.compile(r"^[0-9a-f]{64}$")


class CacheConfigError(ValueError):
    """A cache setting that cannot be used; the message names the variable and value."""


def results_cache_dir() -> Path:
    """Root of the evaluation and state caches: ``$COMPOSE_BENCH_RESULTS_CACHE`` or ``<cache_dir>/results``.

    Separate from the model conversion cache (``<cache_dir>/models``) so that tests can
    point these caches at a private folder without re-converting the model.
    """
    explicit = os.environ.get(ENV_RESULTS_CACHE)
    if explicit:
        return Path(explicit).expanduser()
    from benchmark.paths import cache_dir

    return cache_dir() / "results"


def size_limit_bytes(env_var: str, default_gb: float) -> int:
    """The size limit in ``$env_var`` (GB, decimal; 0 stores nothing), or ``default_gb``."""
    raw = os.environ.get(env_var)
    if raw is None or raw.strip() == "":
        return int(default_gb * 1e9)
    try:
        value = float(raw)
    except ValueError:
        raise CacheConfigError(f"${env_var}={raw!r}: not a number of GB") from None
    if not value >= 0 or value == float("inf"):
        raise CacheConfigError(f"${env_var}={raw!r}: must be a finite number of GB >= 0")
    return int(value * 1e9)


@dataclass
class Stats:
    """Counters kept in the folder's statistics file, summed over every run that used it."""

    hits: int = 0
    misses: int = 0
    stores: int = 0
    evictions: int = 0
    discarded: int = 0  # damaged entries found and removed
    saved_s: float = 0.0  # compute seconds the hits did not spend

    @classmethod
    def from_dict(cls, data: dict) -> "Stats":
        known = {k: data[k] for k in asdict(cls()) if isinstance(data.get(k), (int, float))}
        return cls(**known)


class EntryStore:
    """The entries of one cache kind in one folder (``suffix`` is the file type of an entry)."""

    def __init__(self, folder: Path, suffix: str, limit_bytes: int) -> None:
        self.folder = Path(folder)
        self.suffix = suffix
        self.limit_bytes = limit_bytes

    # ------------------------------------------------------------ paths
    def path(self, key: str) -> Path:
        if not _KEY.match(key):
            raise ValueError(f"cache key {key!r} is not 64 hex digits")
        return self.folder / f"{key}{self.suffix}"

    def _entries(self) -> list[Path]:
        if not self.folder.is_dir():
            return []
        return [
            p for p in self.folder.iterdir() if p.name.endswith(self.suffix) and _KEY.match(p.name[: -len(self.suffix)])
        ]

    @contextlib.contextmanager
    def _locked(self) -> Iterator[bool]:
        """The folder's lock; yields False (and the caller skips its work) when it cannot be had."""
        self.folder.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(self.folder / LOCK_FILE), timeout=LOCK_TIMEOUT_S)
        try:
            lock.acquire()
        except Timeout:
            log.warning("cache %s: lock busy for %.0f s; skipping statistics/eviction", self.folder, LOCK_TIMEOUT_S)
            yield False
            return
        try:
            yield True
        finally:
            lock.release()

    # ------------------------------------------------------------ entries
    def write(self, key: str, writer: Callable[[Path], None]) -> bool:
        """Write an entry atomically: ``writer`` fills a temporary path, which then replaces the entry.

        Returns False (after a warning) when the write failed, e.g. a full disk; a run never
        fails because its cache could not be written.
        """
        target = self.path(key)
        tmp: Path | None = None
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            fd, name = tempfile.mkstemp(prefix=f"{TMP_PREFIX}{key[:16]}-", suffix=self.suffix, dir=self.folder)
            os.close(fd)
            tmp = Path(name)
            writer(tmp)
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
            os.replace(tmp, target)
            tmp = None
        except Exception as exc:  # disk full, permissions, a serialisation error: never fail the run
            log.warning("cache %s: could not store entry %s: %s: %s", self.folder, key[:16], type(exc).__name__, exc)
            return False
        finally:
            if tmp is not None:
                with contextlib.suppress(OSError):
                    tmp.unlink()
        self.bump(stores=1)
        self.evict()
        return True

    def touch(self, key: str) -> None:
        """Mark an entry as used now (its modification time is its last use)."""
        with contextlib.suppress(OSError):
            os.utime(self.path(key))

    def discard(self, key: str, reason: str) -> None:
        """Remove a damaged entry with a warning; the caller treats it as a miss."""
        log.warning("cache %s: discarding damaged entry %s (%s)", self.folder, key[:16], reason)
        with contextlib.suppress(OSError):
            self.path(key).unlink()
        self.bump(discarded=1)

    # ------------------------------------------------------------ size and statistics
    def bump(self, **counts: float) -> None:
        """Add ``counts`` to the folder's statistics (under the lock; failures only warn)."""
        try:
            with self._locked() as ok:
                if not ok:
                    return
                stats = asdict(self.stats())
                for name, value in counts.items():
                    stats[name] = stats.get(name, 0) + value
                _atomic_write_json(self.folder / STATS_FILE, stats)
        except OSError as exc:
            log.warning("cache %s: could not update statistics: %s", self.folder, exc)

    def stats(self) -> Stats:
        try:
            return Stats.from_dict(json.loads((self.folder / STATS_FILE).read_text(encoding="utf-8")))
        except (OSError, ValueError, AttributeError):
            return Stats()

    def usage(self) -> tuple[int, int]:
        """(entries, bytes) currently in the folder."""
        entries = self._entries()
        total = 0
        for p in entries:
            with contextlib.suppress(OSError):
                total += p.stat().st_size
        return len(entries), total

    def evict(self) -> int:
        """Remove least recently used entries until the folder fits its limit; returns how many."""
        removed = 0
        try:
            with self._locked() as ok:
                if not ok:
                    return 0
                now = time.time()
                for p in self.folder.iterdir():
                    if p.name.startswith(TMP_PREFIX):
                        with contextlib.suppress(OSError):
                            if now - p.stat().st_mtime > STALE_TMP_S:
                                p.unlink()
                sized = []
                for p in self._entries():
                    with contextlib.suppress(OSError):
                        st = p.stat()
                        sized.append((st.st_mtime, st.st_size, p))
                total = sum(size for _, size, _ in sized)
                for _, size, p in sorted(sized, key=lambda t: t[0]):
                    if total <= self.limit_bytes:
                        break
                    with contextlib.suppress(FileNotFoundError):
                        p.unlink()
                    total -= size
                    removed += 1
                if removed:
                    stats = asdict(self.stats())
                    stats["evictions"] += removed
                    _atomic_write_json(self.folder / STATS_FILE, stats)
        except OSError as exc:
            log.warning("cache %s: eviction failed: %s", self.folder, exc)
        if removed:
            log.info(
                "cache %s: evicted %d least recently used entr%s", self.folder, removed, "y" if removed == 1 else "ies"
            )
        return removed

    def clear(self) -> int:
        """Remove every entry, temporary file and the statistics; returns the entries removed."""
        if not self.folder.is_dir():
            return 0
        with self._locked():
            entries = self._entries()
            for p in self.folder.iterdir():
                if p.name == LOCK_FILE:
                    continue
                if p.is_dir():
                    shutil.rmtree(p, ignore_errors=True)
                else:
                    with contextlib.suppress(FileNotFoundError):
                        p.unlink()
        return len(entries)


def _atomic_write_json(path: Path, data: dict) -> None:
    fd, name = tempfile.mkstemp(prefix=TMP_PREFIX, suffix=".json", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, sort_keys=True)
        os.replace(name, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name)
        raise
