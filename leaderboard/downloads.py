"""Downloads of what a view shows: the same table as CSV and as JSON.

Each call writes both files into this process's temporary folder (Gradio copies a returned file
into its own cache before serving it), named after the view and the selection, so a visitor's
download holds exactly the rows and columns of the table on screen.
"""

from __future__ import annotations

import json
import math
import re
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd

from benchmark.records import atomic_write_text

_UNSAFE = re.compile(r"[^A-Za-z0-9._=-]+")


def _value(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is pd.NA or value is None:
        return None
    if hasattr(value, "item"):  # numpy scalars
        return _value(value.item())
    return value


def file_stem(*parts: Any) -> str:
    """A safe file name from the view and its selection (model, profile, level, ...)."""
    text = "_".join(str(p) for p in parts if p not in (None, ""))
    return _UNSAFE.sub("-", text.replace("/", "--")).strip("-")[:150] or "selection"


_FOLDER: Path | None = None


def _folder() -> Path:
    """One folder per process: a selection's files are rewritten in place (atomically), not piled up."""
    global _FOLDER
    if _FOLDER is None or not _FOLDER.is_dir():
        _FOLDER = Path(tempfile.mkdtemp(prefix="compose-bench-download-"))
    return _FOLDER


def write_table(df: pd.DataFrame, stem: str, selection: dict[str, Any]) -> tuple[str, str]:
    """``<stem>.csv`` and ``<stem>.json`` of ``df`` (JSON: ``{"selection": ..., "rows": [...]}``).

    The stem names the selection, so the same selection always maps to the same two files.
    """
    folder = _folder()
    csv_path, json_path = folder / f"{stem}.csv", folder / f"{stem}.json"
    atomic_write_text(csv_path, df.to_csv(index=False, lineterminator="\n"))
    rows = [{str(k): _value(v) for k, v in row.items()} for row in df.to_dict(orient="records")]
    payload = {
        "selection": {k: _value(v) for k, v in selection.items()},
        "columns": [str(c) for c in df.columns],
        "rows": rows,
    }
    atomic_write_text(json_path, json.dumps(payload, indent=2, allow_nan=False) + "\n")
    return str(csv_path), str(json_path)
