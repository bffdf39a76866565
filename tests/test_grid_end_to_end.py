"""The suite's grid (the smoke plan with fewer items) on the short default model and real data, through the real CLI."""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
from collections import defaultdict

import pytest

from benchmark.records import read_records

CLI = [sys.executable, "-m", "benchmark.cli"]
CRITERIA = {
    "edit_success",
    "generalization",
    "locality",
    "edit_success_tf",
    "generalization_tf",
    "locality_tf",
    "wmdp_bio",
    "wmdp_cyber",
    "wmdp",
    "mmlu",
    "perplexity",
    "avg_bits",
    "sparsity",
    "mmlu_prob",
    "mmlu_acc_norm",
    "wmdp_bio_prob",
    "wmdp_cyber_prob",
    "wmdp_prob",
    "wmdp_bio_acc_norm",
    "wmdp_cyber_acc_norm",
    "wmdp_acc_norm",
}


def run_cli(args: list[str], env_extra: dict | None = None, timeout: int = 2700) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", **(env_extra or {})}
    return subprocess.run(CLI + args, capture_output=True, text=True, timeout=timeout, env=env)


# suite_grid (once per session) lives in conftest.py: the Ray executor's test compares with it


def test_grid_records_every_cell(suite_grid):
    out, proc = suite_grid
    records = read_records(out / "records.jsonl")
    assert len(records) == 5  # base, FT, Wanda, FT -> Wanda, Wanda -> FT -> Wanda (re-applied)
    failed = [(r["label"], r["error"]) for r in records if r["status"] != "ok"]
    assert not failed, failed
    for r in records:
        assert CRITERIA <= set(r["scores"]), r["label"]
        prov = r["provenance"]
        assert prov["model_source"] == "local"  # the short model's folder (the default model's GGUF source: main job)
        assert len(prov["weights_sha256"]) == 64 and len(prov["base_weights_sha256"]) == 64
        assert prov["forget_corpus"]["name"].startswith("standin:")
        assert prov["tasks"]["wmdp"]["scored_questions"].startswith("held-out half")
        assert r["timings"]["evaluation_s"] > 0 and r["peak_memory_mb"] > 0
        assert len(r["items"]["edit_success"]) == 6 and len(r["items"]["mmlu"]) == 4
        assert all(s["submission_sha256"] for s in r["sequence"])
    # the same evaluation items in every cell
    assert len({json.dumps(r["provenance"]["tasks"], sort_keys=True) for r in records}) == 1
    assert "Evaluated models" in proc.stdout and "Composability" in proc.stdout


def test_grid_scores_are_sane(suite_grid):
    out, _ = suite_grid
    by_label = {r["label"]: r for r in read_records(out / "records.jsonl")}
    base, ft = by_label["base"]["scores"], by_label["ft"]["scores"]
    assert base["locality"] == pytest.approx(1.0) and base["locality_tf"] == pytest.approx(1.0)
    assert ft["edit_success_tf"] > base["edit_success_tf"] + 0.3
    assert base["sparsity"] < 0.01 and base["avg_bits"] == pytest.approx(16.0, abs=0.05)
    wanda = by_label["wanda(sparsity=0.25)"]["scores"]
    assert wanda["sparsity"] == pytest.approx(0.25, abs=0.005) and wanda["avg_bits"] == pytest.approx(12.25, abs=0.02)
    # compression first is re-applied at the end: the final model is still pruned
    for label, rec in by_label.items():
        if label.startswith("wanda") and len(rec["sequence"]) == 2:
            assert rec["recompressed_with"] == "wanda(sparsity=0.25)"
            assert rec["scores"]["sparsity"] >= 0.245, label
    # the short model's 12 blocks feed a final norm trained after 30, so its perplexity is huge (~1e9) but a
    # number, and each cell's own (the full model's plausible value: tests/test_evaluation.py)
    for rec in by_label.values():
        assert 1.0 < rec["scores"]["perplexity"] < float("inf"), rec["label"]
    assert len({rec["scores"]["perplexity"] for rec in by_label.values()}) == len(by_label)


def test_grid_composability_file(suite_grid):
    out, _ = suite_grid
    with open(out / "composability.csv") as fh:
        rows = list(csv.DictReader(fh))
    pairs = defaultdict(set)
    for row in rows:
        pairs[(row["a"], row["b"])].add(row["criterion"])
    assert list(pairs) == [("ft", "wanda(sparsity=0.25)")]  # the one cross-category pair, its criteria below
    assert all({"edit_success", "wmdp", "mmlu"} <= crits for crits in pairs.values())
    twin = json.loads((out / "composability.json").read_text())
    assert len(twin["rows"]) == len(rows)


def test_rerun_skips_finished_cells(suite_grid, suite_profile, data_dir):
    out, _ = suite_grid
    before = (out / "records.jsonl").read_text()
    proc = run_cli(
        ["run", "--profile", str(suite_profile), "--out", str(out), "--data-dir", str(data_dir), "--bootstrap", "50"]
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "5 already recorded, 0 to run" in proc.stdout
    assert (out / "records.jsonl").read_text() == before


def test_metrics_command_recomputes(suite_grid, tmp_path):
    out, _ = suite_grid
    proc = run_cli(["metrics", str(out / "records.jsonl"), "--out", str(tmp_path), "--bootstrap", "100"])
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (tmp_path / "composability.csv").exists() and (tmp_path / "composability.json").exists()


def test_cli_help_and_list():
    for cmd in (["--help"], ["run", "--help"], ["validate", "--help"], ["metrics", "--help"], ["list", "--help"]):
        proc = run_cli(cmd, timeout=120)
        assert proc.returncode == 0 and "Usage" in proc.stdout, cmd
    proc = run_cli(["list"], timeout=120)
    assert proc.returncode == 0
    for name in ("ft", "ga", "wanda", "smoke", "default", "paper", "mmlu", "wmdp", "zsre"):
        assert name in proc.stdout


def test_bad_profile_and_records_are_clear(tmp_path):
    proc = run_cli(["run", "--profile", "no-such-profile", "--out", str(tmp_path)], timeout=120)
    assert proc.returncode == 2 and "profile 'no-such-profile' not found" in proc.stderr
    bad = tmp_path / "records.jsonl"
    bad.write_text("{broken\n")
    proc = run_cli(["metrics", str(bad)], timeout=120)
    assert proc.returncode == 2 and "records.jsonl:1: not valid JSON" in proc.stderr


def test_the_estimate_printed_before_the_grid_is_within_a_factor_of_1_5(suite_grid):
    """The cost model (benchmark/cost.py) against the grid it estimated, on this machine and its dtype."""
    _, proc = suite_grid
    estimate = re.search(
        r"^estimate: .* on this machine \((cpu:\w+), (\w+) matmul (\d+) GFLOP/s[^)]*\)", proc.stdout, re.M
    )
    spent = re.search(r"^grid time: .*\((\d+) s; estimated (\d+) s\)", proc.stdout, re.M)
    assert estimate and spent, proc.stdout[-3000:]
    measured, estimated = int(spent.group(1)), int(spent.group(2))
    assert measured / 1.5 <= estimated <= measured * 1.5, (
        f"estimated {estimated} s, measured {measured} s on {estimate.group(1)} in {estimate.group(2)}: "
        + next(line for line in proc.stdout.splitlines() if line.startswith("estimate: "))
    )
