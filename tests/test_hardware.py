"""The matmul-rate probe: a real measurement, short, and refusing nonsense."""

from __future__ import annotations

import time

import pytest
import torch

from benchmark.hardware import cpu_capability, matmul_gflops


def test_probe_measures_a_plausible_rate_within_its_budget():
    start = time.perf_counter()
    rate = matmul_gflops(torch.float32, "cpu", seconds=0.3)
    elapsed = time.perf_counter() - start
    # any CPU that runs torch does more than 0.5 GFLOP/s in float32 and less than 100 TFLOP/s
    assert 0.5 < rate < 1e5
    assert elapsed < 0.3 + 3.0  # the budget plus a warm-up and one product per slice, even when contended
    small = matmul_gflops(torch.float32, "cpu", seconds=0.05, shape=(8, 8, 8))
    assert small > 0 and small != rate


def test_probe_rejects_bad_arguments():
    with pytest.raises(ValueError, match="shape=.0, 576, 1536."):
        matmul_gflops(torch.float32, shape=(0, 576, 1536))
    with pytest.raises(ValueError, match="seconds=0"):
        matmul_gflops(torch.float32, seconds=0)


def test_cpu_capability_is_torchs():
    assert cpu_capability() == torch.backends.cpu.get_cpu_capability()
