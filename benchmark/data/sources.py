"""Where a dataset is read from, decided once per load and recorded with every result.

The benchmark's numbers are only comparable when the data behind them is the same, so
every loader returns a :class:`DataSource` next to the data. The rule is the same for
every dataset: the Hugging Face Hub when it is reachable and no local data directory
was given, otherwise the local directory (``--data-dir`` or ``$COMPOSE_BENCH_DATA``, in
the layout of ``shared/data``). A local file is pinned by the SHA-256 of its bytes, a
Hub dataset by the commit it resolved to, so a record says exactly what was scored.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmark.hub import hub_reachable
from benchmark.paths import ENV_DATA_DIR, data_dir

log = logging.getLogger(__name__)

__all__ = ["DataSource", "DataUnavailableError", "choose_source", "file_sha256", "hub_commit"]


class DataUnavailableError(RuntimeError):
    """Neither the Hub nor a local data directory can provide a dataset."""


@dataclass(frozen=True)
class DataSource:
    """One dataset's origin.

    Attributes:
        kind: ``"hub"`` or ``"local"``.
        name: the Hub dataset id, or the local file (or folder) path.
        revision: the Hub commit (or the requested revision when it could not be
            resolved); for local data ``"sha256:<hex>"`` of the file contents.
        config: the Hub configuration (``"all"``, ``"wmdp-bio"``, ...), if any.
    """

    kind: str
    name: str
    revision: str | None
    config: str | None = None

    def describe(self) -> dict[str, Any]:
        """A JSON-serialisable summary for result provenance."""
        out: dict[str, Any] = {"source": self.kind, "name": self.name, "revision": self.revision}
        if self.config is not None:
            out["config"] = self.config
        return out


def file_sha256(path: Path) -> str:
    """SHA-256 of a file, or of every file below a folder (relative name and bytes, sorted)."""
    h = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for f in files:
        if path.is_dir():
            h.update(str(f.relative_to(path)).encode() + b"\0")
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def hub_commit(repo_id: str, revision: str | None) -> str | None:
    """The commit a Hub dataset revision resolves to; the requested revision if that fails.

    Recording the commit rather than ``main`` keeps a result reproducible after the
    dataset changes upstream.
    """
    try:
        from huggingface_hub import HfApi

        return HfApi().dataset_info(repo_id, revision=revision).sha or revision
    except Exception as exc:  # network hiccup or an API change must not stop the run
        log.warning("could not resolve the commit of %s@%s: %s", repo_id, revision or "main", exc)
        return revision


def choose_source(
    what: str,
    *,
    local_relpath: str,
    hub_name: str,
    hub_config: str | None = None,
    revision: str | None = None,
    data_dir_arg: str | os.PathLike | None = None,
) -> tuple[DataSource, Path | None]:
    """Decide between the Hub and the local data directory for one dataset.

    Returns the source and, for local data, the path to read. The Hub revision is
    resolved lazily by the caller (after a successful download), the local one here.

    Raises:
        DataUnavailableError: offline and no data directory was given, or the data
            directory lacks the file.
    """
    local_root = data_dir(data_dir_arg)
    if local_root is None and hub_reachable():
        return DataSource("hub", hub_name, revision, hub_config), None
    if local_root is None:
        raise DataUnavailableError(
            f"{what}: the Hugging Face Hub is not reachable and no local data directory was given; "
            f"pass --data-dir or set ${ENV_DATA_DIR} to a folder laid out like shared/data "
            f"(it needs {local_relpath})"
        )
    path = local_root / local_relpath
    if not path.exists():
        raise DataUnavailableError(
            f"{what}: {path} is missing from the data directory {local_root} (from --data-dir or ${ENV_DATA_DIR})"
        )
    return DataSource("local", str(path), f"sha256:{file_sha256(path)}"), path


def log_source(what: str, source: DataSource, n: int | None = None) -> None:
    """The one line that says plainly which copy of a dataset a run used."""
    count = f", {n} records" if n is not None else ""
    where = f"Hub dataset {source.name}" + (f" ({source.config})" if source.config else "")
    if source.kind == "local":
        where = f"local file {source.name}"
    log.info("%s: using %s @ %s%s", what, where, source.revision or "latest", count)
