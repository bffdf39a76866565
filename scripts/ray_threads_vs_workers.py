"""1 Ray worker x N threads vs N workers x 1 thread on the same grid: which uses N cores better.

Issue 16 asks for this ratio on the smoke grid (docs/SCALING.md). Ray is started once, in this
process (``ray.init(num_cpus=N)``), so its start-up is in neither timing; each configuration then
runs the whole grid from an empty folder through the Ray executor, without the caches:

* ``1xN``: the profile with ``threads: N`` and ``resources.num_cpus: N``: one task at a time,
  each with N torch threads;
* ``Nx1``: ``threads: 1`` and ``resources.num_cpus: 1``: N tasks at a time, one thread each.

Each configuration's wall time includes what it really costs: every worker process that takes a
task loads the run's inputs once (N of them for ``Nx1``). The two runs' scores are not compared
cell by cell: the thread count can change float reductions. The load average before and after is
printed beside the timings: on a shared machine the ratio measures the neighbours too.

    python scripts/ray_threads_vs_workers.py --profile smoke [--cpus 2] [--data-dir DIR] [--sandbox]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

from benchmark.paths import baselines_dir
from benchmark.profiles import Profile, TaskResources, load_profile
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
    records = RayRunner(profile, subs, out, data_dir=data_dir, isolate=sandbox, use_cache=False, echo=print,
                        state_dir=out / "states").run()
    return time.perf_counter() - started, records


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", default="smoke", help="profile name or YAML path (default smoke)")
    ap.add_argument("--cpus", type=int, default=2, help="cores given to Ray (default 2)")
    ap.add_argument("--data-dir", default=os.environ.get("COMPOSE_BENCH_DATA"))
    ap.add_argument("--sandbox", action="store_true", help="apply steps in the sandbox (default: in the worker)")
    ap.add_argument("--out", type=Path, default=None, help="folder for the two runs (default: a temporary one)")
    args = ap.parse_args()

    import ray

    from benchmark.hardware import cpu_capability

    out = args.out or Path(tempfile.mkdtemp(prefix="ray-threads-vs-workers-"))
    ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
    seconds: dict[str, float] = {}
    loads: dict[str, tuple[float, float]] = {}
    try:
        for name, prof in configurations(load_profile(args.profile), args.cpus).items():
            before = os.getloadavg()[0]
            seconds[name], records = time_grid(prof, out / name, args.data_dir, args.sandbox)
            loads[name] = (before, os.getloadavg()[0])
            failed = [r["label"] for r in records if r["status"] != "ok"]
            if failed:
                raise SystemExit(f"{name}: cells failed {failed}; the timing would not be comparable")
            print(f"{name}: {len(records)} cells in {seconds[name]:.1f} s")
    finally:
        ray.shutdown()
    one, many = seconds[f"1x{args.cpus}"], seconds[f"{args.cpus}x1"]
    print(f"\nprofile {args.profile}, {args.cpus} cores ({cpu_capability()}), steps "
          f"{'sandboxed' if args.sandbox else 'in the worker'}:")
    for name, value in seconds.items():
        print(f"  {name}: {value:7.1f} s  (load average {loads[name][0]:.1f} before, {loads[name][1]:.1f} after)")
    print(f"  ratio 1x{args.cpus} / {args.cpus}x1 = {one / many:.2f} "
          f"({'workers' if many < one else 'threads'} faster by {max(one, many) / min(one, many):.2f}x)")


if __name__ == "__main__":
    main()
