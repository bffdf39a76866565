"""Names an outside submission may not take: the baselines' and those already published.

A submission named like a baseline or like a published submission would overwrite that
row's metadata (authors, link, licence) on the leaderboard and mix its records with the
other method's. The baselines are the folders under ``submissions/baselines``; the
published names are read from a results store (the records' ``sequence[].name`` with the
``submission_sha256`` each was run with, and the stored intervention metadata). A folder
may keep a reserved name only when it *is* that submission: the baseline folder itself (or
a byte-identical copy), or the exact content (same folder hash) that the store published
under that name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from benchmark.paths import baselines_dir
from benchmark.record_schema import Record

__all__ = ["ReservedNames", "reserved_names", "baseline_names", "published_names"]


@dataclass(frozen=True)
class ReservedNames:
    """``baselines``: name -> folder; ``published``: name -> submission hashes it was published with."""

    baselines: dict[str, Path] = field(default_factory=dict)
    published: dict[str, frozenset[str]] = field(default_factory=dict)
    store: str = ""

    def problem(self, name: str, folder: Path, sha256: str) -> str | None:
        """Why ``folder`` (hash ``sha256``) may not be called ``name``, or None."""
        baseline = self.baselines.get(name)
        if (
            baseline is not None
            and Path(baseline).resolve() != Path(folder).resolve()
            and not _same_content(baseline, sha256)
        ):
            return f"name {name!r} is reserved for the baseline in {baseline}; choose another name"
        if baseline is None and name in self.published and sha256 not in self.published[name]:
            return f"name {name!r} is already published in {self.store} by another submission; choose another name"
        return None


def _same_content(baseline: Path, sha256: str) -> bool:
    """The folder is a byte-identical copy of the baseline (e.g. another checkout of it)."""
    from benchmark.submission_files import FolderProblem, folder_sha256

    try:
        return folder_sha256(Path(baseline)) == sha256
    except (FolderProblem, OSError):
        return False


def baseline_names() -> dict[str, Path]:
    """Name -> folder of every baseline (read from the YAML only, nothing imported)."""
    from benchmark.stores.metadata import SUBMISSION_FILE, metadata_from_folder

    out: dict[str, Path] = {}
    for yaml_file in sorted(baselines_dir().glob(f"*/{SUBMISSION_FILE}")):
        meta = metadata_from_folder(yaml_file.parent)
        if meta is not None:
            out[meta["name"]] = yaml_file.parent
    return out


def published_names(store_spec: str) -> dict[str, frozenset[str]]:
    """Name -> submission hashes of everything ``store_spec`` has published (``StoreError`` if unreadable)."""
    from benchmark.stores import open_store

    snapshot = open_store(store_spec).read(n_bootstrap=10)
    hashes: dict[str, set[str]] = {name: set() for name in snapshot.interventions}
    for record in map(Record.of, snapshot.records):
        for step in record.sequence:
            sha = step.submission_sha256
            hashes.setdefault(step.name, set()).update({sha} if sha is not None else set())
    return {name: frozenset(values) for name, values in hashes.items()}


def reserved_names(store_spec: str | None = None) -> ReservedNames:
    """The baselines' names, and the published ones when a store is named."""
    published = published_names(store_spec) if store_spec else {}
    return ReservedNames(baseline_names(), published, store_spec or "")
