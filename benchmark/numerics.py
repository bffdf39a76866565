"""Which floating-point dtype a run computes in, chosen by measuring the hardware.

Why measured and not looked up: machines of the same kind differ. A CPU with AVX-512
bf16/AMX runs torch's bf16 matmul two to four times faster than float32; a CPU with
AVX2 only runs it 30 to 200 times *slower* (torch falls back to scalar code). The CPU's
name says neither, and ``torch.backends.cpu.get_cpu_capability()`` says only what torch
dispatches to, not how fast its bf16 path is. So a profile may ask for ``dtype: auto``
and the harness times one dense matmul of the default model's shape in each candidate
dtype, once per process (a fraction of a second), and takes bf16 only where it beats
float32. Where a profile pins a dtype that the probe finds slow here, one warning line
gives the measured ratio.

The choice, the capability string and the measured rates go into every record
(``provenance.numerics``): scores differ slightly by dtype, so metrics and the
leaderboard group cells by dtype (see :func:`benchmark.records.group_key`).
"""

from __future__ import annotations

import functools
import logging
from dataclasses import asdict, dataclass
from typing import Any

import torch

from benchmark.hardware import cpu_capability, matmul_gflops

log = logging.getLogger(__name__)

AUTO = "auto"
DTYPES: dict[str, torch.dtype] = {
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float32": torch.float32,
    "fp32": torch.float32,
    "float16": torch.float16,
    "fp16": torch.float16,
}
# bf16 must beat float32 by this factor to be chosen: the two kinds of CPU are 2-4x
# apart one way or 30-200x the other, so a margin only keeps timing noise from
# flipping a near-tie (where float32 is the safer, more precise choice).
BF16_MARGIN = 1.2
# a pinned dtype this many times slower than the best candidate gets a warning line
SLOW_FACTOR = 2.0
PROBE_SECONDS = 0.15  # per dtype: enough for a stable rate (best of three slices, benchmark.hardware)


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def parse_dtype(name: str) -> torch.dtype:
    """A concrete dtype by name (``auto`` is resolved by :func:`choose_dtype`, not here)."""
    try:
        return DTYPES[name.lower()]
    except KeyError:
        raise ValueError(f"unknown dtype {name!r}; use one of {sorted(set(DTYPES))} or 'auto'") from None


def device_capability(device: torch.device) -> str:
    """What the device offers, as torch sees it: ``cpu:AVX512``, ``cpu:AVX2``, ``cuda:NVIDIA H100 (sm_90)``."""
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        major, minor = torch.cuda.get_device_capability(index)
        return f"cuda:{torch.cuda.get_device_name(index)} (sm_{major}{minor})"
    if device.type == "cpu":
        return f"cpu:{cpu_capability()}"
    return device.type


@dataclass(frozen=True)
class DtypeChoice:
    """The dtype a run computes in, and the evidence for it (recorded as ``provenance.numerics``)."""

    requested: str  # what the profile asked for: "auto" or a dtype name
    dtype: torch.dtype
    capability: str  # device_capability()
    gflops: dict[str, float]  # measured matmul rate per candidate dtype name (empty when not measured)
    reason: str

    @property
    def name(self) -> str:
        return dtype_name(self.dtype)

    def describe(self) -> dict[str, Any]:
        out = asdict(self)
        out["dtype"] = self.name
        out["gflops"] = {k: round(v, 1) for k, v in self.gflops.items()}
        return out

    def slow_warning(self) -> str | None:
        """One line when a pinned dtype runs much slower here than the best measured one, else None."""
        if self.requested == AUTO or not self.gflops:
            return None
        mine = self.gflops.get(self.name)
        best_name, best = max(self.gflops.items(), key=lambda kv: kv[1])
        if mine is None or best_name == self.name or best < SLOW_FACTOR * mine:
            return None
        return (
            f"warning: dtype {self.name} is pinned but runs {best / mine:.0f}x slower than {best_name} on this "
            f"{self.capability} ({mine:.1f} vs {best:.1f} GFLOP/s measured); set dtype: auto in the profile "
            f"to compute in {best_name}"
        )


def decide(requested: str, capability: str, gflops: dict[str, float], cuda_bf16: bool | None = None) -> DtypeChoice:
    """The choice for measured rates (pure: the probe is :func:`choose_dtype`'s job).

    ``auto`` on CUDA: bf16 where the GPU supports it (``cuda_bf16``), float32 otherwise.
    ``auto`` elsewhere: bf16 when its measured rate beats float32's by :data:`BF16_MARGIN`.
    A pinned name is kept as it is.
    """
    if requested.lower() != AUTO:
        dtype = parse_dtype(requested)
        return DtypeChoice(requested, dtype, capability, gflops, f"pinned by the profile ({dtype_name(dtype)})")
    if cuda_bf16 is not None:
        if cuda_bf16:
            return DtypeChoice(AUTO, torch.bfloat16, capability, gflops, "auto: the GPU supports bfloat16")
        return DtypeChoice(AUTO, torch.float32, capability, gflops, "auto: the GPU lacks bfloat16")
    bf16, fp32 = gflops.get("bfloat16", 0.0), gflops.get("float32", 0.0)
    ratio = bf16 / fp32 if fp32 > 0 else float("inf")
    if ratio > BF16_MARGIN:
        return DtypeChoice(
            AUTO, torch.bfloat16, capability, gflops, f"auto: bfloat16 matmul {ratio:.1f}x faster than float32 here"
        )
    return DtypeChoice(
        AUTO,
        torch.float32,
        capability,
        gflops,
        f"auto: bfloat16 matmul {ratio:.2f}x the speed of float32 here, so float32",
    )


@functools.lru_cache(maxsize=None)
def _measured(device_key: str) -> dict[str, float]:
    device = torch.device(device_key)
    return {dtype_name(dt): matmul_gflops(dt, device, seconds=PROBE_SECONDS) for dt in (torch.float32, torch.bfloat16)}


@functools.lru_cache(maxsize=None)
def choose_dtype(requested: str, device_key: str) -> DtypeChoice:
    """The dtype for ``requested`` (``auto`` or a name) on ``device_key`` (``cpu``, ``cuda``, ``cuda:1``).

    Decided once per process and device: the probe result is cached. On CPU both
    candidates are measured even for a pinned dtype, so a slow pin can be reported.
    """
    device = torch.device(device_key)
    capability = device_capability(device)
    if device.type == "cuda":
        gflops = _measured(device_key)
        return decide(requested, capability, gflops, cuda_bf16=torch.cuda.is_bf16_supported())
    if device.type != "cpu":
        if requested.lower() == AUTO:
            return DtypeChoice(AUTO, torch.float32, capability, {}, f"auto: no probe for {device.type}, so float32")
        return decide(requested, capability, {})
    return decide(requested, capability, _measured(device_key))
