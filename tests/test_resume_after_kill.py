"""A run killed with SIGKILL and started again ends with the same records as an uninterrupted one."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

from benchmark.records import read_records

MICRO_PROFILE = {
    "name": "micro",
    "description": "tiny grid for the resume test",
    "seed": 3,
    "interventions": {"ft": {"hyperparameters": {"steps": 4}},
                      "ga": {"hyperparameters": {"steps": 3, "batch_size": 2, "max_len": 64}}},
    "evaluation": {
        "n_edits": 2, "zsre_batch_size": 2, "mmlu_n": 8, "wmdp_n_per_subset": 2,
        "perplexity_seq_len": 128, "perplexity_windows": 2, "batch_size": 16, "mcq_batch_tokens": 1024,
    },
    "corpora": {"forget_n": 16, "retain_n": 16, "calibration_n": 4},
}


def _cmd(profile: Path, out: Path, data_dir: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "benchmark.cli", "run", "--profile", str(profile), "--out", str(out),
            "--data-dir", str(data_dir), "--bootstrap", "20", *extra]


def _env() -> dict:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}


def _essence(records: list[dict]) -> dict:
    return {r["cell_id"]: (r["status"], r["label"], r["scores"], r["items"], r["provenance"]["weights_sha256"]) for r in records}


def test_killed_run_resumes_to_the_same_records(tmp_path, data_dir):
    profile = tmp_path / "micro.yaml"
    profile.write_text(yaml.safe_dump(MICRO_PROFILE))

    reference = tmp_path / "uninterrupted"
    # the reference bypasses the caches: the killed run computes afresh (and may die while writing an
    # entry), and the resumed run may take from the cache what the killed run stored; all must agree
    done = subprocess.run(_cmd(profile, reference, data_dir, "--no-cache"), env=_env(), capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    expected = read_records(reference / "records.jsonl")
    assert len(expected) == 5 and all(r["status"] == "ok" for r in expected)

    killed = tmp_path / "killed"
    proc = subprocess.Popen(_cmd(profile, killed, data_dir), env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 600
    records_file = killed / "records.jsonl"
    # kill once two cells are recorded and the third is under way (its first intervention state on disk or not)
    while time.time() < deadline and proc.poll() is None:
        if records_file.exists() and len(read_records(records_file)) >= 2:
            break
        time.sleep(0.2)
    assert proc.poll() is None, "the run ended before it could be killed"
    time.sleep(1.5)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    partial = read_records(records_file)  # readable: no half-written line
    assert 2 <= len(partial) < 5

    resumed = subprocess.run(_cmd(profile, killed, data_dir), env=_env(), capture_output=True, text=True, timeout=900)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"{len(partial)} already recorded" in resumed.stdout
    assert _essence(read_records(records_file)) == _essence(expected)
    assert not (killed / "states").exists(), "state files of finished groups must be removed"
