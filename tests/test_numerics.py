"""dtype by hardware: the measured choice (both branches), its record, and dtype as part of the grouping key."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from benchmark.metrics import compute_composability, find_pairs
from benchmark.numerics import BF16_MARGIN, choose_dtype, decide
from benchmark.records import group_key, read_records
from benchmark.stores.layout import metrics_paths, record_path

FIXTURES = Path(__file__).parent / "fixtures"
# torch's generic AVX2 kernels, oneDNN capped at AVX2, MKL on its compatible path: a CPU without
# AVX-512 bf16/AMX, where bf16 matmul falls back to slow code (verified on AVX-512 machines)
AVX2_ONLY = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_CBWR": "COMPATIBLE"}


def test_auto_takes_bf16_only_where_it_is_faster():
    fast = decide("auto", "cpu:AVX512", {"float32": 200.0, "bfloat16": 850.0})
    slow = decide("auto", "cpu:AVX2", {"float32": 82.0, "bfloat16": 1.3})
    tie = decide("auto", "cpu:X", {"float32": 100.0, "bfloat16": 100.0 * BF16_MARGIN * 0.99})
    assert (fast.dtype, slow.dtype, tie.dtype) == (torch.bfloat16, torch.float32, torch.float32)
    assert "4.2x faster" in fast.reason and "0.02x" in slow.reason
    assert decide("auto", "cuda:H100 (sm_90)", {}, cuda_bf16=True).dtype == torch.bfloat16
    assert decide("auto", "cuda:V100 (sm_70)", {}, cuda_bf16=False).dtype == torch.float32


def test_a_pinned_dtype_is_kept_and_warns_only_when_slow():
    slow_pin = decide("bfloat16", "cpu:AVX2", {"float32": 82.0, "bfloat16": 1.3})
    assert slow_pin.dtype == torch.bfloat16
    line = slow_pin.slow_warning()
    assert line is not None and "63x slower than float32" in line and "\n" not in line
    assert decide("bfloat16", "cpu:AVX512", {"float32": 200.0, "bfloat16": 850.0}).slow_warning() is None
    assert decide("auto", "cpu:AVX2", {"float32": 82.0, "bfloat16": 1.3}).slow_warning() is None
    with pytest.raises(ValueError, match="unknown dtype 'float8'"):
        decide("float8", "cpu:AVX2", {})


def test_the_probe_here_matches_its_own_measurement():
    choice = choose_dtype("auto", "cpu")
    assert choice is choose_dtype("auto", "cpu")  # measured once per process
    rates = choice.gflops
    assert set(rates) == {"float32", "bfloat16"} and all(r > 0 for r in rates.values())
    expect_bf16 = rates["bfloat16"] > BF16_MARGIN * rates["float32"]
    assert choice.dtype == (torch.bfloat16 if expect_bf16 else torch.float32)
    assert choice.capability == f"cpu:{torch.backends.cpu.get_cpu_capability()}"
    described = choice.describe()
    assert described["dtype"] == choice.name and json.dumps(described)


def _probe_in_child(requested: str, env: dict[str, str]) -> dict:
    code = (
        "import json; from benchmark.numerics import choose_dtype; c = choose_dtype(%r, 'cpu'); "
        "print(json.dumps({**c.describe(), 'warning': c.slow_warning()}))" % requested
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env={**os.environ, **env}, capture_output=True, text=True, timeout=120, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(
    not sys.platform.startswith("linux") or os.uname().machine != "x86_64",
    reason="the AVX2 emulation variables are x86-64 only",
)
def test_on_an_avx2_only_cpu_auto_computes_in_float32_and_a_bf16_pin_warns():
    auto = _probe_in_child("auto", AVX2_ONLY)
    assert auto["capability"] == "cpu:AVX2"
    assert auto["dtype"] == "float32", auto
    assert auto["gflops"]["bfloat16"] * 2 < auto["gflops"]["float32"], auto
    pinned = _probe_in_child("bfloat16", AVX2_ONLY)
    assert pinned["dtype"] == "bfloat16" and pinned["warning"].startswith("warning: dtype bfloat16 is pinned")


def _with_dtype(record: dict, dtype: str) -> dict:
    out = copy.deepcopy(record)
    out["provenance"]["dtype"] = dtype
    out["cell_id"] = record["cell_id"] + "-" + dtype
    return out


def test_cells_of_different_dtypes_are_never_paired():
    records = read_records(FIXTURES / "smoke" / "records.jsonl")
    assert {group_key(r)[2] for r in records} == {"bfloat16"}
    pairs_before = find_pairs(records).pairs
    two_steps = [r for r in records if len(r["sequence"]) == 2]
    # the same grid again in float32, but one order of one pair is missing there
    fp32 = [_with_dtype(r, "float32") for r in two_steps[1:]]
    pairing = find_pairs(records + fp32)
    assert len(pairing.pairs) == 2 * len(pairs_before) - 1
    for ab, ba in pairing.pairs:
        assert group_key(ab) == group_key(ba)
    assert [inc.dtype for inc in pairing.incomplete] == ["float32"]
    table = compute_composability(records + fp32, n_bootstrap=20)
    assert set(table["dtype"]) == {"bfloat16", "float32"}
    same = table[(table["criterion"] == "mmlu")]
    assert len(same) == 2 * len(pairs_before) - 1


def test_stores_keep_dtypes_apart():
    record = read_records(FIXTURES / "smoke" / "records.jsonl")[0]
    other = _with_dtype(record, "float32")
    assert record_path(record) != record_path(other)
    assert "/bfloat16/" in record_path(record) and "/float32/" in record_path(other)
    assert metrics_paths(group_key(record)) != metrics_paths(group_key(other))


def test_the_leaderboard_offers_dtype_as_a_filter_and_never_mixes_them():
    from benchmark.stores.merge import Source, merge_sources
    from leaderboard.data import build_board

    records = read_records(FIXTURES / "smoke" / "records.jsonl")
    fp32 = [_with_dtype(r, "float32") for r in records[:4]]
    board = build_board(merge_sources("test", [Source("run", records + fp32)], n_bootstrap=20))
    model = records[0]["provenance"]["model_id"]
    assert board.dtypes(model, "smoke") == ["bfloat16", "float32"]  # the larger group first
    bf16, f32 = board.select(model, "smoke", "bfloat16"), board.select(model, "smoke", "float32")
    assert len(bf16.records) == len(records) and len(f32.records) == 4
    assert {group_key(r)[2] for r in f32.records} == {"float32"}
    assert set(bf16.metrics["dtype"]) == {"bfloat16"}
    assert f32.metrics.empty  # base, ft, ft -> ga, ft -> wanda in float32: no pair has both orders there
    assert len(board.select(model, "smoke").records) == len(records)  # no dtype given: the largest group
