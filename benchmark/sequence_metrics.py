"""Composability of sequences of three: Order-free Error over six orders, Order Sensitivity as their spread.

A pair has two orders; three interventions ``a, b, c`` (labels sorted) have six, named by the
positions of the sorted labels: ``abc, acb, bac, bca, cab, cba``. Per triple and criterion:

* **Order-free Error** ``OFE = min over the six orders of err(order)`` (the error of the best
  order; ``err`` as for pairs, :func:`benchmark.metrics.error_of`).
* **Order Sensitivity** ``OS = max - min`` of the six scores: the spread of the orders. For two
  orders this is ``|score_ab - score_ba|``, the pair's definition.
* A **paired bootstrap** over the evaluation items (the same items in every order, so one draw
  of item indices per replicate applies to all six) gives percentile intervals of OFE and OS.
* **Noise flag.** The spread of six noisy scores is positive even when order does not matter,
  and picking the largest and smallest of six makes it more so, so the pair's test (the CI of
  the difference excludes 0) does not carry over. Instead each order's replicates are centred
  on its own score, which leaves only the evaluation noise; the spread of the centred
  replicates is the spread that noise alone produces. The OS *exceeds evaluation noise* when
  the observed spread is above that null spread's ``confidence`` quantile (``noise_spread``).
  It is a max-type bootstrap test over all 15 pairs of orders at once, so no multiple-testing
  correction is needed; for two orders it is the pair's two-sided test. Written by hand: no
  maintained library offers this test for paired resamples of several conditions.
* **Swap terms** (what explains the spread). Orders that differ by swapping two adjacent
  interventions are the six edges of a hexagon (``abc - bac - bca - cba - cab - acb - abc``);
  any two orders are joined by a path of such swaps, so the spread is a sum of swap terms
  along a path. For each pair ``{x, y}`` of the triple (``z`` the third), two terms:
  ``score(x y z) - score(y x z)`` (the pair's order when ``z`` comes after it) and
  ``score(z x y) - score(z y x)`` (when ``z`` came before). Each has a paired bootstrap CI and
  is ``beyond_noise`` when that CI excludes 0, as a pair's difference is. Compared with the
  pair's own ``score_ab - score_ba`` (composability.csv) they say whether a pair's order
  effect survives a third intervention.

Diverged scores (``"diverged"`` in a record) are the criterion's worst value, as for pairs: the
OFE is the best finite order's, the OS is infinite, ``significance`` is ``diverged``. Records
without per-item scores give NaN intervals and ``unknown``. Pair rows are computed by
:mod:`benchmark.metrics` and do not change; this module writes its own files,
``sequences.csv`` and ``sequence_swaps.csv`` (+ ``sequences.json``), described in
docs/FORMATS.md.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, cast

import numpy as np
import pandas as pd

from benchmark.metrics import (
    Criterion,
    ItemsMismatchError,
    _cis,
    _derived_rng,
    _errors_array,
    _item_list,
    _json_value,
    _resampled_sums,
    _score,
    _sort_key,
    error_of,
    load_criteria,
    typed,
)
from benchmark.record_schema import Record
from benchmark.records import atomic_write_text

log = logging.getLogger(__name__)

LENGTH = 3
ORDERS = tuple("".join(p) for p in itertools.permutations("abc"))  # abc acb bac bca cab cba
SEQUENCES_CSV = "sequences.csv"
SWAPS_CSV = "sequence_swaps.csv"
SEQUENCES_JSON = "sequences.json"

SEQUENCE_COLUMNS = [
    "model_id",
    "profile",
    "dtype",
    "a",
    "a_category",
    "b",
    "b_category",
    "c",
    "c_category",
    "criterion",
    *(f"score_{o}" for o in ORDERS),
    "order_free_error",
    "ofe_ci_low",
    "ofe_ci_high",
    "best_order",
    "order_sensitivity",
    "os_ci_low",
    "os_ci_high",
    "max_order",
    "min_order",
    "noise_spread",
    "exceeds_noise",
    "n_items",
    "significance",
]
SWAP_COLUMNS = [
    "model_id",
    "profile",
    "dtype",
    "a",
    "b",
    "c",
    "criterion",
    "pair",
    "other",
    "other_position",
    "order",
    "swapped_order",
    "diff",
    "diff_ci_low",
    "diff_ci_high",
    "significance",
]


def swaps() -> list[tuple[str, str, str, str, str]]:
    """The six adjacent swaps: (pair, other, other_position, order, swapped_order), orders as in :data:`ORDERS`."""
    out = []
    for x, y in itertools.combinations("abc", 2):
        (z,) = set("abc") - {x, y}
        out.append((x + y, z, "after", x + y + z, y + x + z))
        out.append((x + y, z, "before", z + x + y, z + y + x))
    return out


@dataclass(frozen=True)
class Triple:
    """The six records of one triple (same model, profile and dtype), by order name."""

    group: tuple[Any, ...]
    labels: tuple[str, str, str]  # a < b < c
    records: dict[str, Record]


def find_triples(records: Iterable[Record | Mapping[str, Any]]) -> tuple[list[Triple], list[str]]:
    """Triples whose six orders all have an ``ok`` record, and a line for each that lacks some.

    A record of three distinct labels is one order; the last record of an ordered cell wins,
    as for pairs.
    """
    cells: dict[tuple[Any, ...], Record] = {}
    for record in typed(records):
        if record.status != "ok":
            continue
        labels = record.labels
        if len(labels) != LENGTH or len(set(labels)) != LENGTH:
            continue
        cells[(*record.group, *labels)] = record
    grouped: dict[tuple[Any, ...], dict[str, Record]] = {}
    for key, record in cells.items():
        group, labels = key[:-LENGTH], key[-LENGTH:]
        names = tuple(sorted(labels))
        order = "".join("abc"[names.index(label)] for label in labels)
        grouped.setdefault((*group, *names), {})[order] = record
    complete, incomplete = [], []
    for key in sorted(grouped, key=lambda k: tuple(_sort_key(v) for v in k)):
        found = grouped[key]
        group, names = key[:-LENGTH], key[-LENGTH:]
        if len(found) == len(ORDERS):
            complete.append(Triple(tuple(group), cast("tuple[str, str, str]", tuple(names)), found))
        else:
            missing = [o for o in ORDERS if o not in found]
            incomplete.append(
                f"triple {' / '.join(names)} (model {group[0]}, profile {group[1]}, {group[2]}): "
                f"orders {', '.join(missing)} missing; skipped"
            )
    return complete, incomplete


class _OrdersBootstrap:
    """Replicate scores of all six orders of one triple, one draw of item indices per items key for all six."""

    def __init__(self, triple: Triple, n_bootstrap: int, seed: int):
        self.triple = triple
        self.records = [triple.records[o] for o in ORDERS]
        self.n_bootstrap = n_bootstrap
        self.seed = seed
        self._cache: dict[str, tuple[np.ndarray, np.ndarray, int] | None] = {}

    def _unit(self, criterion_key: str, keys: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray, int] | None:
        """Point sums, replicate sums (B x orders*keys) and n; columns: the keys of each order in turn."""
        cache_key = "|".join(keys)
        if cache_key not in self._cache:
            columns = [_item_list(rec, k) for rec in self.records for k in keys]
            if all(c is None for c in columns):
                self._cache[cache_key] = None
            else:
                lengths = {None if c is None else len(c) for c in columns}
                if None in lengths or len(lengths) != 1:
                    raise ItemsMismatchError(
                        f"triple {' / '.join(self.triple.labels)}, criterion '{criterion_key}': the six orders "
                        f"must hold the same evaluation items, but the item lists differ ({sorted(map(str, lengths))})"
                    )
                values = np.column_stack([c for c in columns if c is not None])
                model_id, profile, _dtype = self.triple.group
                rng = _derived_rng(self.seed, model_id, profile, *self.triple.labels, cache_key)
                n = values.shape[0]
                self._cache[cache_key] = (
                    None if n == 0 else (values.sum(axis=0), _resampled_sums(values, self.n_bootstrap, rng), n)
                )
        return self._cache[cache_key]

    def scores(self, crit: Criterion, criteria: Mapping[str, Criterion]) -> tuple[np.ndarray, np.ndarray, int] | None:
        """(point scores per order, replicate scores B x 6, n_items), or None without items."""
        k = len(crit.items_keys)
        if crit.items == "mean":
            unit = self._unit(crit.key, crit.items_keys)
            return None if unit is None else (unit[0] / unit[2], unit[1] / unit[2], unit[2])
        if crit.items == "perplexity":
            unit = self._unit(crit.key, crit.items_keys)
            if unit is None:
                return None
            point, sums, n = unit
            with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
                return np.exp(point[0::k] / point[1::k]), np.exp(sums[:, 0::k] / sums[:, 1::k]), n
        if crit.items == "mean_of":
            maybe = [self.scores(criteria[c], criteria) for c in crit.items_keys]
            parts = [p for p in maybe if p is not None]
            if len(parts) != len(maybe):
                return None
            return (
                np.mean([p[0] for p in parts], axis=0),
                np.mean([p[1] for p in parts], axis=0),
                int(sum(p[2] for p in parts)),
            )
        return None


def spread_statistics(
    point: np.ndarray,
    reps: np.ndarray | None,
    crit: Criterion,
    confidence: float,
) -> dict[str, Any]:
    """OFE, OS (spread) and their intervals, the noise spread and the flag, from scores per order.

    ``point``: the scores of the orders (any number of them); ``reps``: their bootstrap
    replicates (B x orders), or None for a deterministic criterion. Diverged scores are
    infinite (the criterion's worst value).
    """
    point = np.asarray(point, dtype=float)
    names = ORDERS if len(point) == len(ORDERS) else tuple(str(i) for i in range(len(point)))
    ofe, best = math.nan, ""
    if crit.has_error:  # a diverged order's error is +inf: the best order is a finite one where there is one
        errs = np.array([error_of(crit, s) for s in point], dtype=float)
        ofe, best = float(errs.min()), names[int(np.argmin(errs))]
    diverged = bool(np.isinf(point).any())
    spread = 0.0 if np.isinf(point).all() else float(point.max() - point.min())  # one order diverged: inf
    out: dict[str, Any] = {
        "order_free_error": ofe,
        "best_order": best,
        "order_sensitivity": spread,
        "max_order": names[int(np.argmax(point))],
        "min_order": names[int(np.argmin(point))],
    }
    if diverged:
        out.update(
            ofe_ci_low=ofe,
            ofe_ci_high=ofe,
            os_ci_low=spread,
            os_ci_high=spread,
            noise_spread=math.nan,
            exceeds_noise=spread != 0,
            significance="diverged",
        )
    elif reps is None:  # deterministic: any spread is real
        out.update(
            ofe_ci_low=ofe,
            ofe_ci_high=ofe,
            os_ci_low=spread,
            os_ci_high=spread,
            noise_spread=0.0,
            exceeds_noise=spread != 0,
            significance="beyond_noise" if spread != 0 else "within_noise",
        )
    else:
        rep_errs = _errors_array(crit, reps)
        ofe_reps = rep_errs.min(axis=1) if crit.has_error else np.full(len(reps), np.nan)
        (ofe_ci, os_ci) = _cis(np.column_stack([ofe_reps, reps.max(axis=1) - reps.min(axis=1)]), confidence)
        centred = reps - point
        noise = float(np.quantile(centred.max(axis=1) - centred.min(axis=1), confidence))
        exceeds = spread > noise
        out.update(
            ofe_ci_low=ofe_ci[0],
            ofe_ci_high=ofe_ci[1],
            os_ci_low=os_ci[0],
            os_ci_high=os_ci[1],
            noise_spread=noise,
            exceeds_noise=bool(exceeds),
            significance="beyond_noise" if exceeds else "within_noise",
        )
    return out


def _unknown() -> dict[str, Any]:
    nan = math.nan
    return dict(
        ofe_ci_low=nan,
        ofe_ci_high=nan,
        os_ci_low=nan,
        os_ci_high=nan,
        noise_spread=nan,
        exceeds_noise=False,
        significance="unknown",
    )


def compute_sequences(
    records: Iterable[Record | Mapping[str, Any]],
    n_bootstrap: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
    criteria: Mapping[str, Criterion] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The triples' table (``SEQUENCE_COLUMNS``) and their swap terms (``SWAP_COLUMNS``); empty without triples.

    Deterministic for a given ``seed`` (each triple and items list has its own derived generator).
    """
    if n_bootstrap < 1:
        raise ValueError(f"n_bootstrap must be >= 1, got {n_bootstrap}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be strictly between 0 and 1, got {confidence}")
    criteria = dict(criteria) if criteria is not None else load_criteria()
    triples, incomplete = find_triples(records)
    for line in incomplete:
        log.warning(line)
    rows, swap_rows = [], []
    for triple in triples:
        boot = _OrdersBootstrap(triple, n_bootstrap, seed)
        cats = {step.label: step.category for step in triple.records["abc"].sequence}
        for crit in criteria.values():
            point = [_score(triple.records[o], crit, criteria) for o in ORDERS]
            if any(p is None for p in point):
                continue
            point_arr = np.asarray(point, dtype=float)
            result = boot.scores(crit, criteria) if crit.has_items and not np.isinf(point_arr).any() else None
            if crit.has_items and result is None and not np.isinf(point_arr).any():
                stats = spread_statistics(point_arr, None, crit, confidence) | _unknown()
                n_items, reps = 0, None
            else:
                reps = None if result is None else result[1]
                n_items = 0 if result is None else result[2]
                stats = spread_statistics(point_arr, reps, crit, confidence)
            base = {
                "model_id": triple.group[0],
                "profile": triple.group[1],
                "dtype": triple.group[2],
                "a": triple.labels[0],
                "b": triple.labels[1],
                "c": triple.labels[2],
            }
            row = dict(
                base, **{f"{x}_category": cats.get(triple.labels[i]) for i, x in enumerate("abc")}, criterion=crit.key
            )
            row.update({f"score_{o}": p for o, p in zip(ORDERS, point)}, n_items=n_items, **stats)
            rows.append(row)
            swap_rows += _swap_rows(base, crit.key, point_arr, reps, stats["significance"], confidence)
    return pd.DataFrame(rows, columns=SEQUENCE_COLUMNS), pd.DataFrame(swap_rows, columns=SWAP_COLUMNS)


def _swap_rows(
    base: dict, criterion: str, point: np.ndarray, reps: np.ndarray | None, significance: str, confidence: float
) -> list[dict[str, Any]]:
    """The six adjacent-swap terms of one triple and criterion."""
    index = {o: i for i, o in enumerate(ORDERS)}
    out = []
    for pair, other, position, order, swapped in swaps():
        i, j = index[order], index[swapped]
        s_i, s_j = point[i], point[j]
        diff = 0.0 if math.isinf(s_i) and math.isinf(s_j) else float(s_i - s_j)
        if math.isinf(s_i) or math.isinf(s_j):
            ci, sig = (diff, diff), "diverged"
        elif reps is not None:
            (ci,) = _cis((reps[:, i] - reps[:, j])[:, None], confidence)
            sig = "beyond_noise" if ci[0] > 0 or ci[1] < 0 else "within_noise"
        elif significance == "unknown":
            ci, sig = (math.nan, math.nan), "unknown"
        else:
            ci, sig = (diff, diff), "beyond_noise" if diff != 0 else "within_noise"
        names = {k: base[k] for k in "abc"}
        out.append(
            dict(
                base,
                criterion=criterion,
                pair=" / ".join(names[x] for x in pair),
                other=names[other],
                other_position=position,
                order=order,
                swapped_order=swapped,
                diff=diff,
                diff_ci_low=ci[0],
                diff_ci_high=ci[1],
                significance=sig,
            )
        )
    return out


def write_sequences(table: pd.DataFrame, swap_table: pd.DataFrame, out_dir: Path, settings: dict) -> list[Path]:
    """Write ``sequences.csv``, ``sequence_swaps.csv`` and ``sequences.json`` into ``out_dir``, each atomically."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / SEQUENCES_CSV, out_dir / SWAPS_CSV, out_dir / SEQUENCES_JSON]
    atomic_write_text(paths[0], table[SEQUENCE_COLUMNS].to_csv(index=False, lineterminator="\n"))
    atomic_write_text(paths[1], swap_table[SWAP_COLUMNS].to_csv(index=False, lineterminator="\n"))
    payload = {
        "settings": _json_value(dict(settings)),
        "sequences": [_json_value(r) for r in table[SEQUENCE_COLUMNS].to_dict(orient="records")],
        "swaps": [_json_value(r) for r in swap_table[SWAP_COLUMNS].to_dict(orient="records")],
    }
    atomic_write_text(paths[2], json.dumps(payload, indent=2, allow_nan=False) + "\n")
    return paths
