"""Model the wall time of a profile's grid on N GPUs from its task DAG and per-step costs.

The DAG is the one the Ray executor runs (benchmark/ray_executor.py): one task per first
intervention (its state, written once), then one task per cell (the remaining steps and the
evaluation) that depends on its first state; the base model's cell depends on nothing. The
schedule is greedy list scheduling, longest remaining path first, one task per GPU at a
time (Ray's behaviour with ``num_gpus: 1`` per task); the critical path is the lower bound
no number of GPUs beats. Hand-written: it is a 40-line simulation, no scheduling library
is needed for it.

    python scripts/scaling_model.py --profile paper --gpus 8 32 128 [--costs costs.yaml]

``--costs`` is a YAML mapping of step name (and ``evaluation``) to minutes; the defaults
below are assumptions for Llama-3-8B on one A100/H100 (docs/SCALING.md says where they come
from); replace them with the measured history ($COMPOSE_BENCH_CACHE/step-costs) when one exists.
"""

from __future__ import annotations

import argparse
import heapq

import yaml

# minutes on one A100/H100, Llama-3-8B bf16 (assumptions: see docs/SCALING.md)
DEFAULT_MINUTES = {
    "evaluation": 30.0,  # full MMLU + WMDP (lettered), 50 zsRE edits, perplexity: the paper's 1-3 h per configuration minus steps
    "ft": 5.0,
    "lora": 10.0,
    "memit": 30.0,
    "ga": 10.0,
    "gd": 30.0,
    "rmu": 15.0,
    "gptq": 20.0,
    "awq": 15.0,
    "sparsegpt": 10.0,
    "wanda": 3.0,
}


def build_dag(profile_name: str, minutes: dict[str, float]):
    """Tasks ``{id: (minutes, [dependencies])}`` of the profile's plan, as the Ray executor submits them."""
    from benchmark.paths import baselines_dir
    from benchmark.plan import build_plan, steps_for
    from benchmark.profiles import load_profile
    from benchmark.submissions import discover

    prof = load_profile(profile_name)
    subs = [s for s in discover(baselines_dir()) if s.name in prof.interventions]
    steps = steps_for(subs, prof, "llama3")
    cells = build_plan(steps, prof.protocol.recompress_when_first)
    tasks: dict[str, tuple[float, list[str]]] = {}
    for cell in cells:
        if cell.first is not None and f"first:{cell.first.label}" not in tasks:
            tasks[f"first:{cell.first.label}"] = (minutes[cell.first.submission.name], [])
        rest = list(cell.steps[1:]) + ([cell.recompress] if cell.recompress else [])
        cost = minutes["evaluation"] + sum(minutes[s.submission.name] for s in rest)
        tasks[f"cell:{cell.label}"] = (cost, [f"first:{cell.first.label}"] if cell.first else [])
    return tasks, len(cells)


def critical_path(tasks) -> float:
    memo: dict[str, float] = {}

    def finish(t: str) -> float:
        if t not in memo:
            cost, deps = tasks[t]
            memo[t] = cost + max((finish(d) for d in deps), default=0.0)
        return memo[t]

    return max(finish(t) for t in tasks)


def schedule(tasks, gpus: int) -> float:
    """Makespan of greedy list scheduling (longest tail first) on ``gpus`` identical GPUs."""
    children: dict[str, list[str]] = {t: [] for t in tasks}
    for t, (_, deps) in tasks.items():
        for d in deps:
            children[d].append(t)
    tail: dict[str, float] = {}

    def longest(t: str) -> float:
        if t not in tail:
            tail[t] = tasks[t][0] + max((longest(c) for c in children[t]), default=0.0)
        return tail[t]

    waiting = {t: len(deps) for t, (_, deps) in tasks.items()}
    ready = [(-longest(t), t) for t, n in waiting.items() if n == 0]
    heapq.heapify(ready)
    running: list[tuple[float, str]] = []
    now, free = 0.0, gpus
    while ready or running:
        while ready and free:
            _, t = heapq.heappop(ready)
            heapq.heappush(running, (now + tasks[t][0], t))
            free -= 1
        now, done = heapq.heappop(running)
        free += 1
        for c in children[done]:
            waiting[c] -= 1
            if waiting[c] == 0:
                heapq.heappush(ready, (-longest(c), c))
    return now


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="paper")
    parser.add_argument("--gpus", type=int, nargs="+", default=[1, 8, 32, 128])
    parser.add_argument("--costs", help="YAML: minutes per step name and for 'evaluation'")
    args = parser.parse_args()
    minutes = dict(DEFAULT_MINUTES)
    if args.costs:
        with open(args.costs, encoding="utf-8") as fh:
            minutes.update(yaml.safe_load(fh) or {})
    tasks, n_cells = build_dag(args.profile, minutes)
    total = sum(cost for cost, _ in tasks.values())
    path = critical_path(tasks)
    print(
        f"{args.profile}: {n_cells} cells, {len(tasks)} tasks, {total / 60:.0f} GPU-hours, critical path {path / 60:.1f} h"
    )
    print("| GPUs | wall time (h) | speed-up | efficiency |\n| ---: | ---: | ---: | ---: |")
    for n in args.gpus:
        wall = schedule(tasks, n)
        print(f"| {n} | {wall / 60:.1f} | {total / wall:.1f} | {total / wall / n:.0%} |")


if __name__ == "__main__":
    main()
