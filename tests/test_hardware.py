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


def test_a_kind_slower_than_the_budget_is_timed_on_one_product(monkeypatch):
    """One product longer than the whole budget (bf16 on an AVX2-only CPU): a small warm-up, then one timed product."""
    calls: list[int] = []
    real = torch.matmul

    def counted(a, b):
        calls.append(a.shape[0])
        return real(a, b)

    monkeypatch.setattr(torch, "matmul", counted)
    slow = matmul_gflops(torch.float32, "cpu", seconds=1e-6)  # every product takes longer than this budget
    assert calls == [64, 512] and slow > 0
    calls.clear()
    matmul_gflops(torch.float32, "cpu", seconds=0.3)  # a fast kind: full-size warm-up, three slices of products
    assert calls[:2] == [64, 512] and len(calls) >= 5 and set(calls[1:]) == {512}, calls
