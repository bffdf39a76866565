"""How fast this machine multiplies matrices, measured, not guessed from the CPU's name.

Machines of this project's kind differ: on a CPU with AVX-512 bf16/AMX, bfloat16 matmuls
run 2-4x faster than float32; on an AVX2-only CPU they run 60-200x *slower* (82 vs 1.3
GFLOP/s measured on an AMD EPYC, 512x576 @ 576x1536, two threads). A short timed probe is
the only reliable way to know which kind we are on, so one probe serves the benchmark in
``benchmarks/`` (the rate a scorer is compared with), the choice of dtype and the cost model.
"""

from __future__ import annotations

import time

import torch

__all__ = ["DEFAULT_SHAPE", "cpu_capability", "matmul_gflops"]

# (m, k, n): 512 tokens through the default model's widest body layer (576 -> 1536, the MLP)
DEFAULT_SHAPE = (512, 576, 1536)
# rows of the first, untimed product: an eighth of the default shape's, so a slow kind shows itself cheaply
WARM_ROWS = 64


def cpu_capability() -> str:
    """torch's CPU kernel level (``"AVX512"``, ``"AVX2"``, ...); honours ``ATEN_CPU_CAPABILITY``."""
    return str(torch.backends.cpu.get_cpu_capability())


def matmul_gflops(
    dtype: torch.dtype,
    device: torch.device | str = "cpu",
    seconds: float = 0.25,
    shape: tuple[int, int, int] = DEFAULT_SHAPE,
) -> float:
    """Dense matmul rate in GFLOP/s (``2*m*k*n`` per product) for ``dtype`` on ``device``.

    Runs ``(m, k) @ (k, n)`` repeatedly for about ``seconds`` of wall time after an
    untimed warm-up (which pays for kernel selection and first-touch memory), with the
    current torch thread count, and returns the best of three timed slices of the budget
    so that a brief stall from a neighbouring process does not set the rate.

    A slow kind (bf16 on AVX2 at ~1 GFLOP/s) needs longer than the whole budget for one
    product. It is recognised from a warm-up on the first :data:`WARM_ROWS` rows, which
    then stands in for the full one, and timed on a single product: two more products
    and a full-size warm-up would add ~2 s to every process's start on such a CPU
    (measured: the probe was 2.3 s of a tiny run's 50 s under the AVX2 emulation), and
    at 30-200x below float32 no stall can change what the rate decides. The inputs are
    seeded random numbers, so zero-skipping kernels cannot flatter the rate.
    """
    m, k, n = shape
    if min(shape) < 1 or seconds <= 0:
        raise ValueError(f"matmul_gflops needs positive shape and seconds, got shape={shape}, seconds={seconds}")
    device = torch.device(device)
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(m, k, generator=gen).to(device=device, dtype=dtype)
    b = torch.randn(k, n, generator=gen).to(device=device, dtype=dtype)
    flops = 2.0 * m * k * n

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    with torch.inference_mode():
        rows = min(m, WARM_ROWS)
        start = time.perf_counter()
        torch.matmul(a[:rows], b)
        sync()
        if (time.perf_counter() - start) * m / rows < seconds / 3:  # a fast kind: warm up at full size too
            torch.matmul(a, b)
            sync()
        best, spent = 0.0, 0.0
        for _ in range(3):
            count, start = 0, time.perf_counter()
            while True:
                torch.matmul(a, b)
                count += 1
                if device.type != "cuda" or count % 8 == 0:
                    sync()
                    elapsed = time.perf_counter() - start
                    if elapsed >= seconds / 3:
                        break
            sync()
            elapsed = time.perf_counter() - start
            best, spent = max(best, count * flops / elapsed / 1e9), spent + elapsed
            if spent >= seconds:  # a slow kind: one product already took the whole budget
                break
    return best
