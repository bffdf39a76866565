"""A run killed with SIGKILL and started again ends with the same records as an uninterrupted one.

The uninterrupted reference is the session's grid (``suite_grid`` in conftest.py, in-process,
computed once for the suite); the killed run is a run of two of its interventions (GA, Wanda: five
of its cells) in a fresh process with an empty private cache. So one run shows two things: a killed
run resumes without losing or repeating a cell, and a fresh process without cached results
recomputes bit-identical weights and per-item scores (seeded GA; determinism).

In-process like the reference: in bfloat16 (a CPU with fast bf16) GA applied in the sandbox gives
weights that differ in the last bits from GA applied in the harness process (float32: identical;
found 2026-12-01, cause not yet known), so a sandboxed run is compared with sandboxed runs only
(tests/test_caches.py, tests/test_hostile_submissions.py).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from benchmark.caches.store import ENV_RESULTS_CACHE
from benchmark.records import read_records

SUBSET = ["--only", "ga", "--only", "wanda"]
SUITE_PROFILE = Path(__file__).parent / "fixtures" / "suite" / "profile.yaml"  # the suite_grid fixture's profile
N_CELLS = 5  # base, GA, Wanda, and the two orders of the pair


def _cmd(out: Path, data_dir: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "benchmark.cli",
        "run",
        "--profile",
        str(SUITE_PROFILE),
        *SUBSET,
        "--out",
        str(out),
        "--data-dir",
        str(data_dir),
        "--bootstrap",
        "20",
        "--in-process",
    ]


def _essence(record: dict) -> tuple:
    return (
        record["status"],
        record["label"],
        record["scores"],
        record["items"],
        record["provenance"]["weights_sha256"],
    )


@pytest.fixture(scope="module")
def killed_and_resumed(suite_grid, data_dir, tmp_path_factory):
    """Kill the subset's run once two cells are recorded and the third is under way, then run it again."""
    root = tmp_path_factory.mktemp("resume")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", ENV_RESULTS_CACHE: str(root / "cache")}
    killed = root / "killed"
    records_file = killed / "records.jsonl"
    proc = subprocess.Popen(
        _cmd(killed, data_dir), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    deadline = time.time() + 900
    while time.time() < deadline and proc.poll() is None:
        if records_file.exists() and len(read_records(records_file)) >= 2:
            break
        time.sleep(0.2)
    assert proc.poll() is None, "the run ended before it could be killed"
    time.sleep(1.5)  # into the third cell: its first state may or may not be on disk, an entry half-written
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    partial = read_records(records_file)  # readable: no half-written line
    resumed = subprocess.run(_cmd(killed, data_dir), env=env, capture_output=True, text=True, timeout=1800)
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-3000:]
    grid = {
        r["cell_id"]: r
        for r in read_records(suite_grid[0] / "records.jsonl")
        if {step["name"] for step in r["sequence"]} <= {"ga", "wanda"}
    }
    assert len(grid) == N_CELLS, sorted(r["label"] for r in grid.values())
    return killed, partial, read_records(records_file), resumed.stdout, grid


def test_killed_run_resumes_to_the_same_records(killed_and_resumed):
    out, partial, final, stdout, grid = killed_and_resumed
    assert 2 <= len(partial) < N_CELLS
    assert f"{len(partial)} already recorded, {N_CELLS - len(partial)} to run" in stdout
    assert sorted(r["cell_id"] for r in final) == sorted(grid)  # the subset's cells, none lost or repeated
    assert [r["cell_id"] for r in final[: len(partial)]] == [r["cell_id"] for r in partial]  # kept as written
    for rec in final:
        assert _essence(rec) == _essence(grid[rec["cell_id"]]), rec["label"]
    assert not (out / "states").exists(), "state files of finished groups must be removed"


def test_same_settings_give_identical_records(killed_and_resumed):
    """Determinism: a fresh process with an empty cache, seeded GA: bit-identical weights and identical
    per-item scores to the suite grid's cells."""
    _, partial, final, _, grid = killed_and_resumed
    for rec in partial:
        assert rec["cache"]["evaluation"] == "miss", rec["label"]  # evaluated afresh, not read from a cache
    for rec in final:
        twin = grid[rec["cell_id"]]
        assert rec["provenance"]["weights_sha256"] == twin["provenance"]["weights_sha256"], rec["label"]
        assert rec["items"] == twin["items"] and rec["scores"] == twin["scores"], rec["label"]
