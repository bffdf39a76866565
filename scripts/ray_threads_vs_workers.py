"""1 Ray worker x N threads vs N workers x 1 thread on the same grid: which uses N cores better.

Issue 16 asks for this ratio on the smoke grid (docs/SCALING.md). Ray is started once, in this
process (``ray.init(num_cpus=N)``), so its start-up is in neither timing; each configuration then
runs the whole grid from an empty folder through the Ray executor, without the caches:

* ``1xN``: the profile with ``threads: N`` and ``resources.num_cpus: N``: one task at a time,
  each with N torch threads;
* ``Nx1``: ``threads: 1`` and ``resources.num_cpus: 1``: N tasks at a time, one thread each.

Each configuration's wall time includes what it really costs: every worker process that takes a
task loads the run's inputs once (N of them for ``Nx1``). With ``--repeats R`` the pair runs R
times, alternating which goes first (1xN, Nx1, then Nx1, 1xN, ...), so that a warm file cache or
a drifting load favours neither, and each configuration's median is compared. The two runs'
scores are not compared cell by cell: the thread count can change float reductions. The load
average before and after is printed beside each timing: on a shared machine the ratio measures
the neighbours too (two spinning threads per process suffer most from them).

    python scripts/ray_threads_vs_workers.py --profile smoke [--cpus 2] [--repeats 2] [--data-dir DIR] [--sandbox]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from benchmark.paths import baselines_dir
from benchmark.profiles import Profile, TaskResources, load_profile
from benchmark.record_schema import Record
from benchmark.submissions import discover


def configurations(profile: Profile, cpus: int) -> dict[str, Profile]:
    """The two ways of spending ``cpus`` cores on ``profile``'s grid, by name."""
    return {
        f"1x{cpus}": profile.model_copy(update={"threads": cpus, "resources": TaskResources(num_cpus=cpus)}),
        f"{cpus}x1": profile.model_copy(update={"threads": 1, "resources": TaskResources(num_cpus=1)}),
    }


def time_grid(profile: Profile, out: Path, data_dir: str | None, sandbox: bool) -> tuple[float, list[dict]]:
    """Wall seconds of the whole grid under the Ray executor, from an empty folder; and its records."""
    from benchmark.ray_executor import RayRunner

    shutil.rmtree(out, ignore_errors=True)
    subs = [s for s in discover(baselines_dir()) if s.name in profile.interventions]
    started = time.perf_counter()
    records = RayRunner(
        profile, subs, out, data_dir=data_dir, isolate=sandbox, use_cache=False, echo=print, state_dir=out / "states"
    ).run()
    return time.perf_counter() - started, records


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", default="smoke", help="profile name or YAML path (default smoke)")
    ap.add_argument("--cpus", type=int, default=2, help="cores given to Ray (default 2)")
    ap.add_argument("--data-dir", default=os.environ.get("COMPOSE_BENCH_DATA"))
    ap.add_argument("--sandbox", action="store_true", help="apply steps in the sandbox (default: in the worker)")
    ap.add_argument("--repeats", type=int, default=1, help="runs of the pair, alternating their order (default 1)")
    ap.add_argument("--out", type=Path, default=None, help="folder for the two runs (default: a temporary one)")
    args = ap.parse_args()
    if args.repeats < 1 or args.cpus < 1:
        ap.error(f"--repeats and --cpus must be at least 1, got {args.repeats} and {args.cpus}")

    import ray

    from benchmark.hardware import cpu_capability

    out = args.out or Path(tempfile.mkdtemp(prefix="ray-threads-vs-workers-"))
    configs = configurations(load_profile(args.profile), args.cpus)
    ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
    seconds: dict[str, list[float]] = {name: [] for name in configs}
    lines: list[str] = []
    try:
        for round_ in range(args.repeats):
            for name in list(configs) if round_ % 2 == 0 else list(configs)[::-1]:
                before = os.getloadavg()[0]
                wall, records = time_grid(configs[name], out / f"{name}-{round_}", args.data_dir, args.sandbox)
                failed = [r.label for r in map(Record.of, records) if r.status != "ok"]
                if failed:
                    raise SystemExit(f"{name}: cells failed {failed}; the timing would not be comparable")
                seconds[name].append(wall)
                lines.append(
                    f"  round {round_ + 1}, {name}: {len(records)} cells in {wall:7.1f} s "
                    f"(load average {before:.1f} before, {os.getloadavg()[0]:.1f} after)"
                )
    finally:
        ray.shutdown()
    one, many = (statistics.median(seconds[name]) for name in configs)
    print(
        f"\nprofile {args.profile}, {args.cpus} cores ({cpu_capability()}), steps "
        f"{'sandboxed' if args.sandbox else 'in the worker'}:"
    )
    print("\n".join(lines))
    print(
        f"  median 1x{args.cpus} {one:.1f} s / {args.cpus}x1 {many:.1f} s = {one / many:.2f} "
        f"({'workers' if many < one else 'threads'} faster by {max(one, many) / min(one, many):.2f}x)"
    )


if __name__ == "__main__":
    main()
