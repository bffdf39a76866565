"""The default results store: a folder on this machine.

It reads two things: the store layout (what ``compose-bench publish --store FOLDER``
wrote, see :mod:`benchmark.stores.layout`) and every run folder below it (a
``records.jsonl`` with its ``composability.csv``, as ``compose-bench run`` leaves
them), so ``compose-bench leaderboard --store runs`` shows local runs without a
publish step. Publishing writes the layout, under a file lock, each file atomically.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Mapping

from benchmark.metrics import COMPOSABILITY_CSV
from benchmark.records import RECORDS_FILE, RecordsError, _locked, atomic_write_text, read_records
from benchmark.stores.layout import git_blob_oid, is_layout_path
from benchmark.stores.merge import (
    DEFAULT_BOOTSTRAP,
    DEFAULT_CONFIDENCE,
    Snapshot,
    Source,
    StoreError,
    layout_source,
    merge_sources,
    read_metrics_csv,
)
from benchmark.stores.metadata import metadata_from_folders
from benchmark.stores.plan import PublishReport, plan_publish

LOCK_NAME = ".publish"


class LocalStore:
    """A results store in a local folder (created on the first publish)."""

    kind = "local"

    def __init__(self, root: str | Path, metadata_folders: Iterable[str | Path] = ()) -> None:
        self.root = Path(root).expanduser()
        self.metadata_folders = [Path(f) for f in metadata_folders]

    @property
    def description(self) -> str:
        return f"local folder {self.root}"

    def _layout_files(self) -> dict[str, Path]:
        if not self.root.is_dir():
            return {}
        files = {}
        for path in self.root.rglob("*"):
            rel = path.relative_to(self.root).as_posix()
            if path.is_file() and is_layout_path(rel) and not path.name.startswith("."):
                files[rel] = path
        return files

    def _run_sources(self) -> list[Source]:
        sources = []
        for records_file in sorted(self.root.rglob(RECORDS_FILE)):
            run = records_file.parent
            try:
                records = read_records(records_file)
                csv = run / COMPOSABILITY_CSV
                metrics = read_metrics_csv(csv) if csv.exists() else {}
            except (RecordsError, ValueError) as exc:
                raise StoreError(f"{self.description}: {exc}") from None
            sources.append(Source(f"run folder {run}", records, metrics))
        return sources

    def read(self, n_bootstrap: int = DEFAULT_BOOTSTRAP, confidence: float = DEFAULT_CONFIDENCE) -> Snapshot:
        """Records, metrics and metadata of the folder; an error when the folder does not exist."""
        if not self.root.is_dir():
            raise StoreError(f"{self.description}: no such folder")
        files = {rel: path.read_bytes() for rel, path in self._layout_files().items()}
        sources = [layout_source(f"the store layout of {self.root}", files)] + self._run_sources()
        sources.append(Source("submission folders", interventions=metadata_from_folders(self.metadata_folders)))
        return merge_sources(self.description, sources, n_bootstrap=n_bootstrap, confidence=confidence)

    def publish(
        self,
        records: Iterable[Mapping[str, Any]],
        interventions: Mapping[str, Mapping[str, Any]] | None = None,
        n_bootstrap: int = DEFAULT_BOOTSTRAP,
        confidence: float = DEFAULT_CONFIDENCE,
    ) -> PublishReport:
        """Add ``records`` (and recomputed metrics) to the folder; safe against concurrent publishers."""
        self.root.mkdir(parents=True, exist_ok=True)
        with _locked(self.root / LOCK_NAME):
            paths = self._layout_files()
            existing = {rel: git_blob_oid(path.read_bytes()) for rel, path in paths.items()}
            plan = plan_publish(
                existing,
                lambda wanted: {rel: paths[rel].read_bytes() for rel in wanted},
                records,
                interventions,
                n_bootstrap=n_bootstrap,
                confidence=confidence,
            )
            for rel, data in sorted(plan.files.items()):
                atomic_write_text(self.root / rel, data.decode("utf-8"))
        return PublishReport.from_plan(self.description, plan, commit=None)
