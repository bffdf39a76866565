"""Display metadata of interventions (authors, link, licence) for the leaderboard.

Read straight from ``submission.yaml`` with PyYAML, without importing
:mod:`benchmark.submissions` (which imports torch): the leaderboard and its Space
must start without the training stack. Nothing here is trusted: the app escapes
every field it shows.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml

from benchmark.record_schema import Record

SUBMISSION_FILE = "submission.yaml"
DISPLAY_FIELDS = ("name", "category", "description", "authors", "link", "license")


def metadata_from_folder(folder: str | Path) -> dict[str, Any] | None:
    """The display fields of one submission folder, or None when it has no readable YAML."""
    path = Path(folder) / SUBMISSION_FILE
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("name"), str):
        return None
    meta: dict[str, Any] = {k: data.get(k) for k in DISPLAY_FIELDS}
    levels = data.get("levels")
    if isinstance(levels, dict):
        meta["level_parameter"] = levels.get("parameter")
    if isinstance(meta["description"], str):
        meta["description"] = " ".join(meta["description"].split())
    return meta


def metadata_from_folders(folders: Iterable[str | Path]) -> dict[str, dict[str, Any]]:
    """Metadata by name for submission folders and folders of submission folders; first name wins."""
    out: dict[str, dict[str, Any]] = {}
    for folder in folders:
        folder = Path(folder)
        candidates = (
            [folder]
            if (folder / SUBMISSION_FILE).exists()
            else sorted(p.parent for p in folder.glob(f"*/{SUBMISSION_FILE}"))
        )
        for candidate in candidates:
            meta = metadata_from_folder(candidate)
            if meta is not None:
                out.setdefault(meta["name"], meta)
    return out


def names_in(records: Iterable[Record | Mapping[str, Any]]) -> set[str]:
    """Names of the interventions applied in ``records``."""
    return {step.name for record in map(Record.of, records) for step in record.sequence}
