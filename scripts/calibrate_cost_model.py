"""Measure the constants of tasks/cost_model.yaml on this machine and print them as YAML.

Evaluation: evaluates the base model once at a profile's sizes, in this process, and
reports each scorer's efficiency (2 x parameters x counted tokens / seconds / the matmul
rate measured in the same process). Steps: reads the records of finished runs and fits
each intervention's work (seconds x the run's measured matmul rate) as fixed + per item.
Rates are capped at the dtype's ``rate_cap_gflops`` in tasks/cost_model.yaml, as the
estimate caps them (benchmark.cost.CostModel.cost_rate), so the output is in the table's units.

    python scripts/calibrate_cost_model.py --profile default [--runs runs/smoke runs/default]
"""

from __future__ import annotations

import argparse
import functools
import json
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch


@functools.lru_cache(maxsize=None)
def _cost_model(dtype: str, device_type: str):
    from benchmark.cost import CostModel

    return CostModel.load(dtype, device_type=device_type)


def _recorded_rate(prov) -> tuple[str | None, float | None]:
    """A record's dtype and its matmul rate in the cost table's units (capped as the estimate caps it; None without one)."""
    numerics = prov.numerics or {}
    dtype = numerics.get("dtype")
    rate = (numerics.get("gflops") or {}).get(dtype)
    if not rate:
        return dtype, None
    return dtype, _cost_model(dtype, torch.device(prov.device or "cpu").type).cost_rate(rate)


def calibrate_evaluation(profile_name: str, data_dir: str | None) -> dict:
    from benchmark.cost import SCORERS, count_tokens, parameter_count
    from benchmark.data.corpora import STANDIN_NAME
    from benchmark.hardware import matmul_gflops
    from benchmark.models import load_model, pick_device, resolve_model, weights_sha256
    from benchmark.numerics import choose_dtype
    from benchmark.profiles import load_profile
    from benchmark.suite import EvaluationSuite

    p = load_profile(profile_name)
    device = pick_device(p.device)
    choice = choose_dtype(p.dtype, str(device))
    model, tok = load_model(resolve_model(p.model), choice.dtype, device)
    suite = EvaluationSuite.build(p.evaluation, p.seed, data_dir, STANDIN_NAME)
    suite.prepare_reference(model, tok, Path("/tmp/compose-bench-calibration-reference.json"), weights_sha256(model))
    tokens = count_tokens(suite, tok)
    n_params = parameter_count(model)
    t = time.perf_counter()
    _, _, parts, _ = suite.evaluate(model, tok, None)
    total = time.perf_counter() - t
    rate = _cost_model(choice.name, device.type).cost_rate(matmul_gflops(choice.dtype, device, seconds=1.0))
    eff = {k: 2 * n_params * tokens.tokens[k] / (parts[k] * rate * 1e9) for k in SCORERS}
    return {
        "profile": p.name,
        "capability": choice.capability,
        "dtype": choice.name,
        "matmul_gflops": round(rate, 1),
        "tokens": tokens.tokens,
        "seconds": {k: round(v, 2) for k, v in parts.items()},
        "overhead_s": round(total - sum(parts.values()), 2),
        "efficiency": {k: round(v, 3) for k, v in eff.items()},
    }


def calibrate_from_records(run_dirs: list[str], data_dir: str | None) -> dict:
    """Each scorer's efficiency and the per-model overhead, per dtype, from finished runs' own timings."""
    import statistics

    from benchmark.cost import SCORERS, count_tokens, parameter_count
    from benchmark.models import load_model, resolve_model
    from benchmark.profiles import Profile
    from benchmark.records import read_typed_records
    from benchmark.suite import EvaluationSuite

    samples: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for folder in run_dirs:
        records = [
            r for r in read_typed_records(folder) if r.status == "ok" and not (r.cache or {}).get("evaluation") == "hit"
        ]
        if not records:
            continue
        prov = records[0].provenance
        dtype, rate = _recorded_rate(prov)
        if not rate or not prov.model_id:
            continue
        profile = Profile.model_validate(prov.profile_settings)
        model, tok = load_model(resolve_model(prov.model_id), torch.float32, torch.device("cpu"))
        n_params = parameter_count(model)
        suite = EvaluationSuite.build(profile.evaluation, profile.seed, data_dir, (prov.forget_corpus or {})["name"])
        tokens = count_tokens(suite, tok)
        for record in records:
            parts = record.timings.evaluation_parts_s
            for k in SCORERS:
                if parts.get(k):
                    samples[dtype][k].append(2 * n_params * tokens.tokens[k] / (parts[k] * rate * 1e9))
            if parts and record.timings.evaluation_s:
                samples[dtype]["overhead_s"].append(record.timings.evaluation_s - sum(parts.values()))
        # the harness's own work per cell (copies, hashes, checks, state files): the wall time between two
        # finished cells less what their timings account for
        import datetime as dt

        ordered = sorted(records, key=lambda r: str(r.finished_at))
        for before, after in zip(ordered, ordered[1:]):
            gap = (
                dt.datetime.fromisoformat(str(after.finished_at)) - dt.datetime.fromisoformat(str(before.finished_at))
            ).total_seconds()
            t = after.timings
            entries = [e for e in t.interventions if not e.get("reused_from_disk") and not e.get("cached")]
            accounted = (t.evaluation_s or 0) + sum(
                (e.get("seconds") or 0) + (e.get("isolation_overhead_s") or 0) for e in entries
            )
            samples[dtype]["cell_overhead_s"].append(gap - accounted)
            samples[dtype]["isolation_overhead_s"] += [
                e["isolation_overhead_s"] for e in entries if e.get("isolation_overhead_s")
            ]
    return {dtype: {k: round(statistics.median(v), 3) for k, v in by.items() if v} for dtype, by in samples.items()}


def calibrate_steps(run_dirs: list[str]) -> dict:
    from benchmark.records import read_typed_records

    points: dict[tuple[str, str], list[tuple[int, float]]] = defaultdict(list)
    for folder in run_dirs:
        for record in read_typed_records(folder):
            prov = record.provenance
            dtype, rate = _recorded_rate(prov)
            if not rate:
                continue
            settings = prov.profile_settings or {}
            ev, corpora = settings.get("evaluation") or {}, settings.get("corpora") or {}
            items = {
                "editing": ev.get("n_edits"),
                "unlearning": (corpora.get("forget_n") or 0) + (corpora.get("retain_n") or 0),
                "compression": corpora.get("calibration_n"),
            }
            by_label = {s.label: s for s in record.sequence}
            for entry in record.timings.interventions:  # a step's timing entry: open, as the executor wrote it
                step = by_label.get(entry.get("label"))
                if not step or not entry.get("seconds") or entry.get("reused_from_disk") or entry.get("cached"):
                    continue
                points[(dtype, step.name)].append((items.get(step.category) or 1, entry["seconds"] * rate))
    out = {}
    for (dtype, name), pts in sorted(points.items()):
        x = np.array([p[0] for p in pts], dtype=float)
        y = np.array([p[1] for p in pts], dtype=float)
        if len(set(x)) >= 2:
            per_item, fixed = np.polyfit(x, y, 1)
            if fixed < 0 or per_item < 0:
                per_item, fixed = float(np.sum(x * y) / np.sum(x * x)), 0.0
        else:
            per_item, fixed = float(np.median(y / x)), 0.0
        out.setdefault(dtype, {})[name] = {
            "fixed": round(float(fixed)),
            "per_item": round(float(per_item), 1),
            "n": len(pts),
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="default")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--runs", nargs="*", default=[])
    parser.add_argument("--skip-evaluation", action="store_true")
    args = parser.parse_args()
    torch.manual_seed(0)
    result = {}
    if not args.skip_evaluation:
        result["evaluation"] = calibrate_evaluation(args.profile, args.data_dir)
    if args.runs:
        result["evaluation_from_records"] = calibrate_from_records(args.runs, args.data_dir)
        result["steps"] = calibrate_steps(args.runs)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
