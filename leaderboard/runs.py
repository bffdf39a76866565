"""The Runs view: every run of the store, its success and failure counts, and each failure's reason.

The frames come from :mod:`benchmark.results` (the Python API reads the same); this module only
orders the columns so that the counts are visible first and shortens the times.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

import pandas as pd

from benchmark.results import runs_frame

COLUMNS = ["source", "model_id", "profile", "dtype", "harness_version", "cells", "ok", "failed", "when", "reproduce"]


def _when(first: Any, last: Any) -> str:
    """``2026-11-22 08:35 → 08:45`` (the day once when both ends share it); ``-`` without times."""
    if first is None or pd.isna(first):
        return "-"
    a, b = str(first)[:16].replace("T", " "), str(last)[:16].replace("T", " ")
    if a == b:
        return a
    return f"{a} → {b[11:] if a[:10] == b[:10] else b}"


def runs_table(records: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """One row per run, counts before times and the reproduce command last."""
    frame = runs_frame(records)
    if frame.empty:
        return pd.DataFrame(columns=COLUMNS)
    when = [
        ("with the paper (not run here)" if source.startswith("reported") else _when(a, b))
        for source, a, b in zip(frame["source"], frame["first_finished"], frame["last_finished"])
    ]
    frame = frame.assign(when=when)
    return frame[COLUMNS]
