"""pytest-benchmark entry point for :mod:`evaluation_rate` (run on demand, not by the test suite).

``python -m pytest benchmarks/ -s -k float32`` (or ``bfloat16``): one round per dtype, since
one round is minutes of work; the markdown table goes to stdout and each scorer's rate is
kept in pytest-benchmark's ``extra_info`` (``--benchmark-json=FILE`` saves it).
"""

from __future__ import annotations

import pytest
import torch

from evaluation_rate import markdown_table, run


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["float32", "bfloat16"])
def test_evaluation_rate(benchmark, dtype):
    rows, scores = benchmark.pedantic(run, args=(dtype,), rounds=1, iterations=1)
    print("\n" + markdown_table(rows, dtype))
    for row in rows:
        benchmark.extra_info[row.scorer] = {
            "tokens": row.tokens,
            "padded": row.padded,
            "seconds": row.seconds,
            "achieved_gflops": row.achieved_gflops,
            "matmul_gflops": row.matmul_gflops,
            "ratio": row.ratio,
        }
    assert {"zsre", "mcq", "perplexity"} <= set(scores)
    assert all(row.tokens > 0 and row.seconds > 0 for row in rows)
