"""Shared by the store and leaderboard tests: the real fixture records, and test-only stores.

The fixture records were produced by the harness (see tests/fixtures/README.md). The only
altered copies made here are for the escaping tests: one real record whose intervention
name is replaced by a ``<script>`` payload, under a profile named ``escaping-test`` so it
can never be mistaken for a result.
"""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

from benchmark.records import read_records

FIXTURES = Path(__file__).parent / "fixtures"
SCRIPT_NAME = "<script>window.__xss=1</script>ft"
ESCAPING_PROFILE = "escaping-test"
HOSTILE_METADATA = {
    "name": "ft",
    "category": "editing",
    "description": "<img src=x onerror=\"window.__xss=2\"> described",
    "authors": ["<script>window.__xss=3</script>Mallory"],
    "link": "javascript:window.__xss=4",
    "license": "MIT",
}


def fixture_records(name: str) -> list[dict]:
    """The real records of ``tests/fixtures/<name>/records.jsonl`` (``smoke`` or ``micro``)."""
    return read_records(FIXTURES / name / "records.jsonl")


def script_named_record() -> dict:
    """A copy of the real smoke record of ``ft`` alone, renamed to a ``<script>`` payload (escaping tests only)."""
    record = copy.deepcopy(next(r for r in fixture_records("smoke") if r["label"] == "ft"))
    record["label"] = SCRIPT_NAME
    record["sequence"][0]["name"] = record["sequence"][0]["label"] = SCRIPT_NAME
    record["provenance"]["profile"] = ESCAPING_PROFILE
    return record


def local_store_with_fixtures(root: Path, hostile: bool = False) -> Path:
    """A local store folder holding the smoke and micro run folders (and, if asked, the escaping inputs)."""
    for name in ("smoke", "micro"):
        shutil.copytree(FIXTURES / name, root / name)
    if hostile:
        (root / "escaping").mkdir()
        (root / "escaping" / "records.jsonl").write_text(json.dumps(script_named_record()) + "\n")
        (root / "interventions").mkdir()
        (root / "interventions" / "ft.json").write_text(json.dumps(HOSTILE_METADATA))
    return root
