"""A whole grid under both executors, compared cell by cell: scores, per-item values, weights hash, dtype.

The test suite compares three cells of its own grid (tests/test_ray_executor.py); this runs a shipped
profile's whole grid once through the local executor and once through Ray (``ray.init(num_cpus=N)`` on
this machine), both in-process and without the caches, and exits 1 unless every cell is identical.

    python scripts/ray_equals_local.py [--profile smoke] [--cpus 2] [--data-dir DIR] [--out /tmp/ray-equals-local]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

from benchmark.paths import baselines_dir
from benchmark.profiles import load_profile
from benchmark.record_schema import Record
from benchmark.runner import Runner
from benchmark.submissions import discover


def _essence(record: Record) -> tuple:
    return (record.scores, record.items, record.provenance.weights_sha256, record.provenance.dtype)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", default="smoke")
    ap.add_argument("--cpus", type=int, default=2)
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--out", type=Path, default=Path("/tmp/ray-equals-local"))
    args = ap.parse_args()

    import ray

    from benchmark.ray_executor import RayRunner

    shutil.rmtree(args.out, ignore_errors=True)
    prof = load_profile(args.profile)
    subs = [s for s in discover(baselines_dir()) if s.name in prof.interventions]
    started = time.perf_counter()
    local = Runner(prof, subs, args.out / "local", data_dir=args.data_dir, isolate=False, use_cache=False).run()
    local_s = time.perf_counter() - started
    ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
    started = time.perf_counter()
    remote = RayRunner(
        prof,
        subs,
        args.out / "ray",
        data_dir=args.data_dir,
        isolate=False,
        use_cache=False,
        state_dir=args.out / "states",
    ).run()
    ray_s = time.perf_counter() - started
    by_id = {r["cell_id"]: Record.of(r) for r in local}
    same = 0
    for raw in remote:
        rec = Record.of(raw)
        twin = by_id.get(rec.cell_id)
        ok = twin is not None and _essence(rec) == _essence(twin)
        same += ok
        print(("same " if ok else "DIFF ") + rec.label, rec.provenance.dtype)
    print(f"{same}/{len(remote)} cells identical ({len(local)} local); local {local_s:.0f} s, Ray {ray_s:.0f} s")
    return 0 if same == len(remote) == len(local) else 1


if __name__ == "__main__":
    sys.exit(main())
