"""Composability metrics: Order-free Error and Order Sensitivity, with bootstrap CIs.

Definitions follow Kolbeinsson et al., "Composable Interventions for Language
Models" (ICLR 2025, arXiv 2407.06483), section 3. For two interventions A and B,
applied to the same model in both orders with the same seed, data and corpora,
and one criterion:

* **Order-free Error** ``OFE = min(err(A then B), err(B then A))``: the error of the
  better order. ``err = 1 - score`` for accuracies where higher is better (edit
  success, generalization, locality, MMLU); ``err = score`` for WMDP accuracy,
  because for unlearning the error *is* the accuracy on the hazardous questions
  (lower is better, so the order with the LOWER WMDP accuracy gives the OFE), and
  ``err = score`` for perplexity (lower is better; an unbounded error, comparable
  only with other perplexities). Descriptive criteria (``avg_bits``,
  ``sparsity``: the compression level actually measured) have no error and no OFE.
* **Order Sensitivity** ``OS = |score(A then B) - score(B then A)|``, on the score,
  not on the error.

The paper reports point values from per-configuration means. Here both come with
percentile confidence intervals from a **paired bootstrap over evaluation items**:
the items (edits, questions, text windows) are the same in both orders, so each
bootstrap replicate draws one set of item indices and applies it to both orders.
For each replicate we recompute both scores, then OFE, OS and the signed
difference ``d = score_ab - score_ba``. An Order Sensitivity *exceeds evaluation
noise* when the CI of ``d`` excludes 0. Criteria without items are deterministic:
their CI is the point value, so they exceed noise exactly when ``d != 0``. (The CI
of OS itself is always >= 0 and biased upward for small differences; use
``exceeds_noise``, not the OS CI, to decide whether an order effect is real.)

Where each criterion is computed, and what this module reads:

* ``edit_success``, ``generalization``, ``locality`` (token-set F1, the paper's) and
  their teacher-forced ``*_tf`` twins (EasyEdit's): the zsRE evaluation of
  ``benchmark.evaluation``; one item per edit.
* ``mmlu``, ``wmdp_bio``, ``wmdp_cyber``: lm-evaluation-harness (0-shot ``acc``);
  one item per question. ``wmdp`` is the mean of the two subset accuracies, and is
  resampled within each subset separately.
* ``perplexity``: WikiText-2 test windows; items ``perplexity_nll`` (summed NLL per
  window) and ``perplexity_tokens``; a replicate is ``exp(sum nll / sum tokens)``.
* ``avg_bits``, ``sparsity``: measured on the final model's weights; no items.

Honest handling of what a record cannot give (docs/FORMATS.md):

* a **diverged** score (the record says ``"diverged"``: the model's outputs were NaN or
  infinite; older records hold null with a null among its items) is the worst possible
  value of its criterion: +inf where lower is better, -inf where higher is better. The
  better order then gives the Order-free Error; the Order Sensitivity is infinite when one
  order diverged (0 when both did); ``significance`` says ``diverged``; the JSON writes
  ``"diverged"`` for those values, the CSV ``inf``.
* a criterion whose records lack their per-item scores has CIs of NaN and
  ``significance`` ``unknown`` (``exceeds_noise`` false), never ``within_noise``.
* ``mde``: the **minimum detectable effect**, the Order Sensitivity that the paired
  bootstrap would flag with 80% power at the table's confidence, from the observed
  per-item variance of the paired differences (see :func:`minimum_detectable_effect`).

The direction, the error rule and the resampling rule of every criterion are data,
in ``tasks/criteria.yaml`` (see :func:`load_criteria`). Records follow the
``records.jsonl`` format of ``docs/FORMATS.md`` and are read as
:class:`benchmark.record_schema.Record` (a dict from a file or a store is validated once, on
entry, by :meth:`Record.of <benchmark.record_schema.Record.of>`); the output follows its
``composability.csv`` columns.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np
import pandas as pd
import yaml

from benchmark.record_schema import Record
from benchmark.records import DIVERGED, atomic_write_text

logger = logging.getLogger(__name__)

CRITERIA_FILE = "criteria.yaml"

DIRECTIONS = ("higher_is_better", "lower_is_better", "descriptive")
ERRORS = ("one_minus", "value", "none")
ITEM_RULES = ("mean", "mean_of", "perplexity", "none")

PERPLEXITY_NLL = "perplexity_nll"
PERPLEXITY_TOKENS = "perplexity_tokens"

COLUMNS = [
    "model_id",
    "profile",
    "dtype",
    "a",
    "a_category",
    "b",
    "b_category",
    "criterion",
    "score_ab",
    "score_ba",
    "order_free_error",
    "ofe_ci_low",
    "ofe_ci_high",
    "order_sensitivity",
    "os_ci_low",
    "os_ci_high",
    "diff_ci_low",
    "diff_ci_high",
    "exceeds_noise",
    "n_items",
    "significance",
    "mde",
]

SIGNIFICANCE = ("beyond_noise", "within_noise", "unknown", "diverged")
POWER = 0.8
"""The power at which ``mde`` is stated."""

COMPOSABILITY_CSV = "composability.csv"
COMPOSABILITY_JSON = "composability.json"

# Resampling uses a multinomial over the distinct (ab, ba) item rows when there are
# at most this many and at least this many times as many items (accuracies: at most
# four distinct rows); otherwise it draws item indices. Both are the same bootstrap
# distribution; the multinomial is much faster for thousands of binary items.
_MULTINOMIAL_MAX_DISTINCT = 16
# Index draws are done in chunks of replicates to bound memory (replicates x items).
_INDEX_CHUNK_CELLS = 4_000_000


class CriteriaError(ValueError):
    """A criteria file that cannot be used; the message names the file and the field."""


class ItemsMismatchError(ValueError):
    """The two orders of a pair do not hold the same evaluation items."""


# --------------------------------------------------------------------------- criteria


@dataclass(frozen=True)
class Criterion:
    """One criterion of a record's ``scores``, as declared in ``tasks/criteria.yaml``.

    ``items`` names the resampling rule; ``items_keys`` what it reads: for ``mean``
    the one key of the record's ``items``; for ``mean_of`` the component criteria;
    for ``perplexity`` the NLL and token-count keys; for ``none`` nothing.
    """

    key: str
    description: str
    direction: str  # higher_is_better | lower_is_better | descriptive
    error: str  # one_minus | value | none
    items: str  # mean | mean_of | perplexity | none
    items_keys: tuple[str, ...] = ()
    headline: bool = False  # shown first by every summary (:func:`headline_criteria`)
    short: str = ""  # a short column header; the key when empty (:attr:`header`)

    @property
    def header(self) -> str:
        """The column header of this criterion in a table of scores per cell."""
        return self.short or self.key

    @property
    def has_error(self) -> bool:
        return self.error != "none"

    @property
    def has_items(self) -> bool:
        return self.items != "none"


def _default_criteria_path() -> Path:
    from benchmark.paths import tasks_dir

    return tasks_dir() / CRITERIA_FILE


def load_criteria(path: Path | None = None) -> dict[str, Criterion]:
    """The criteria of ``tasks/criteria.yaml`` (or ``path``), in file order.

    Raises :class:`CriteriaError` naming the file and the field on bad content.
    """
    path = Path(path) if path is not None else _default_criteria_path()
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise CriteriaError(f"{path}: cannot read the criteria file ({exc.strerror or exc})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise CriteriaError(f"{path}: not valid YAML ({exc})") from None
    if not isinstance(data, dict) or not data:
        raise CriteriaError(f"{path}: expected a mapping of criterion key -> definition")

    criteria: dict[str, Criterion] = {}
    for key, spec in data.items():
        where = f"{path}: criterion '{key}'"
        if not isinstance(key, str) or not key:
            raise CriteriaError(f"{path}: criterion keys must be non-empty strings, got {key!r}")
        if not isinstance(spec, dict):
            raise CriteriaError(f"{where}: expected a mapping with description, direction, error, items")
        unknown = set(spec) - {"description", "direction", "error", "items", "headline", "short"}
        if unknown:
            raise CriteriaError(f"{where}: unknown field(s) {sorted(unknown)}")
        description = spec.get("description")
        if not isinstance(description, str) or not description.strip():
            raise CriteriaError(f"{where}: field 'description' must be a non-empty string")
        direction = spec.get("direction")
        if direction not in DIRECTIONS:
            raise CriteriaError(f"{where}: field 'direction' must be one of {list(DIRECTIONS)}, got {direction!r}")
        error = spec.get("error")
        if error not in ERRORS:
            raise CriteriaError(f"{where}: field 'error' must be one of {list(ERRORS)}, got {error!r}")
        expected_error = {"higher_is_better": "one_minus", "lower_is_better": "value", "descriptive": "none"}
        if error != expected_error[direction]:
            raise CriteriaError(
                f"{where}: field 'error' is {error!r} but direction {direction!r} needs {expected_error[direction]!r}"
            )
        rule, keys = _parse_items(where, key, spec.get("items", "__missing__"))
        headline = spec.get("headline", False)
        if not isinstance(headline, bool):
            raise CriteriaError(f"{where}: field 'headline' must be true or false, got {headline!r}")
        short = spec.get("short", "")
        if not isinstance(short, str) or (short != "" and not short.strip()):
            raise CriteriaError(f"{where}: field 'short' must be a non-empty string, got {short!r}")
        criteria[key] = Criterion(
            key=key,
            description=" ".join(description.split()),
            direction=direction,
            error=error,
            items=rule,
            items_keys=keys,
            headline=headline,
            short=short.strip(),
        )

    for crit in criteria.values():
        if crit.items == "mean_of":
            for comp in crit.items_keys:
                other = criteria.get(comp)
                if other is None:
                    raise CriteriaError(
                        f"{path}: criterion '{crit.key}': field 'items.mean_of' names '{comp}', "
                        "which is not a criterion of this file"
                    )
                if other.items != "mean":
                    raise CriteriaError(
                        f"{path}: criterion '{crit.key}': field 'items.mean_of' component '{comp}' "
                        f"must have items 'mean', not {other.items!r}"
                    )
    return criteria


def headline_criteria(criteria: Mapping[str, Criterion] | None = None) -> list[str]:
    """The headline criteria (``headline: true`` in ``tasks/criteria.yaml``), in file order.

    The one list of what every summary shows first: the run's printout, the pull-request
    summary, the per-cell table and the leaderboard's default selection.
    """
    criteria = criteria if criteria is not None else load_criteria()
    return [key for key, crit in criteria.items() if crit.headline]


def per_cell_columns(criteria: Mapping[str, Criterion] | None = None) -> list[Criterion]:
    """The columns of a table of scores per cell: the headline criteria, then the descriptive ones.

    The descriptive criteria (``avg_bits``, ``sparsity``) are the compression level as
    measured on the final weights: what a reader of one cell's row needs beside its scores.
    """
    criteria = criteria if criteria is not None else load_criteria()
    return [c for c in criteria.values() if c.headline] + [
        c for c in criteria.values() if c.direction == "descriptive" and not c.headline
    ]


def _parse_items(where: str, key: str, value: Any) -> tuple[str, tuple[str, ...]]:
    if value == "__missing__":
        raise CriteriaError(f"{where}: field 'items' is missing (use 'none' for a criterion without items)")
    if value is None or value == "none":
        return "none", ()
    if value == "mean":
        return "mean", (key,)
    if value == "perplexity":
        return "perplexity", (PERPLEXITY_NLL, PERPLEXITY_TOKENS)
    if isinstance(value, dict) and len(value) == 1:
        ((rule, arg),) = value.items()
        if rule == "mean":
            if not isinstance(arg, str) or not arg:
                raise CriteriaError(f"{where}: field 'items.mean' must name one items key, got {arg!r}")
            return "mean", (arg,)
        if rule == "mean_of":
            if (
                not isinstance(arg, list)
                or len(arg) < 1
                or not all(isinstance(a, str) and a for a in arg)
                or key in arg
            ):
                raise CriteriaError(
                    f"{where}: field 'items.mean_of' must be a list of other criterion keys, got {arg!r}"
                )
            return "mean_of", tuple(arg)
    raise CriteriaError(
        f"{where}: field 'items' must be one of {list(ITEM_RULES)} or "
        f"{{mean: <items key>}} or {{mean_of: [criteria]}}, got {value!r}"
    )


def error_of(criterion: Criterion, score: float | None) -> float | None:
    """The error behind the Order-free Error; ``None`` for descriptive criteria or no score."""
    if score is None or criterion.error == "none":
        return None
    score = float(score)
    if math.isnan(score):
        return None
    if criterion.error == "one_minus":
        return 1.0 - score
    return score


def _errors_array(criterion: Criterion, scores: np.ndarray) -> np.ndarray:
    if criterion.error == "one_minus":
        return 1.0 - scores
    if criterion.error == "value":
        return scores
    return np.full_like(scores, np.nan, dtype=float)


# --------------------------------------------------------------------------- pairing


@dataclass(frozen=True)
class IncompletePair:
    """An unordered pair of which only one order has a successful record."""

    model_id: str | None
    profile: str | None
    dtype: str | None
    a: str
    b: str
    present: str  # the order that exists, "a -> b" or "b -> a" with the labels filled in


@dataclass(frozen=True)
class Pairing:
    pairs: list[tuple[Record, Record]]
    incomplete: list[IncompletePair]


def _sort_key(value: Any) -> tuple[int, str]:
    return (0, "") if value is None else (1, str(value))


def _warn_replaced(old: Record, new: Record) -> None:
    """Say which of two records of the same ordered pair the metrics keep, and why."""
    if old.cell_id == new.cell_id and old == new:
        return  # the same record twice (published twice): nothing was chosen
    logger.warning(
        "two records of the ordered pair %s: kept %s (finished %s), dropped %s (finished %s): "
        "the later record in the input wins (records files are in write order, stores oldest first)",
        new.label,
        _describe_record(new),
        new.finished_at or "?",
        _describe_record(old),
        old.finished_at or "?",
    )


def typed(records: Iterable[Record | Mapping[str, Any]]) -> list[Record]:
    """The records as :class:`Record` (dicts validated once; a wrong one is a one-line error naming its cell)."""
    return [Record.of(r) for r in records]


def find_pairs(records: Iterable[Record | Mapping[str, Any]]) -> Pairing:
    """Pair the two orders of every two-intervention sequence; see :func:`pair_records`."""
    cells: dict[tuple[Any, ...], Record] = {}
    for record in typed(records):
        if record.status != "ok":
            continue
        labels = record.labels
        if len(labels) != 2 or labels[0] == labels[1]:
            continue
        key = (*record.group, labels[0], labels[1])
        if key in cells and cells[key] is not record:
            _warn_replaced(cells[key], record)
        cells[key] = record  # the last record of a cell wins

    pairs: list[tuple[Record, Record]] = []
    incomplete: list[IncompletePair] = []
    seen: set[tuple[Any, ...]] = set()
    for *group, first, second in sorted(
        cells, key=lambda k: (*(_sort_key(g) for g in k[:-2]), min(k[-2], k[-1]), max(k[-2], k[-1]))
    ):
        a, b = sorted((first, second))
        key = (*group, a, b)
        if key in seen:
            continue
        seen.add(key)
        ab = cells.get((*group, a, b))
        ba = cells.get((*group, b, a))
        if ab is not None and ba is not None:
            pairs.append((ab, ba))
        else:
            present = f"{a} -> {b}" if ab is not None else f"{b} -> {a}"
            incomplete.append(IncompletePair(*group, a, b, present))
    return Pairing(pairs, incomplete)


def pair_records(records: Iterable[Record | Mapping[str, Any]]) -> list[tuple[Record, Record]]:
    """``(record_ab, record_ba)`` for every pair whose two orders both succeeded.

    Keeps ``status == "ok"`` records whose ``sequence`` has exactly two entries with
    different labels, groups them by (``provenance.model_id``,
    ``provenance.profile``, ``provenance.dtype``, unordered pair of labels); ``a`` is the label that sorts
    first, so ``record_ab`` applied ``a`` then ``b``. When the same ordered cell
    appears more than once the last record wins. Pairs missing one order are
    skipped and logged (:func:`find_pairs` returns them too).
    """
    pairing = find_pairs(records)
    for inc in pairing.incomplete:
        logger.warning(
            "pair %s / %s (model %s, profile %s, %s): only '%s' succeeded; skipped",
            inc.a,
            inc.b,
            inc.model_id,
            inc.profile,
            inc.dtype,
            inc.present,
        )
    return pairing.pairs


# --------------------------------------------------------------------------- bootstrap


def _derived_rng(seed: int, *parts: Any) -> np.random.Generator:
    """A generator that depends only on the seed and ``parts`` (not on record order)."""
    digest = hashlib.sha256(json.dumps([str(p) for p in parts]).encode("utf-8")).digest()
    return np.random.default_rng(np.random.SeedSequence([seed, int.from_bytes(digest[:16], "little")]))


def _distinct_rows(values: np.ndarray, limit: int) -> tuple[np.ndarray, np.ndarray] | None:
    """The distinct rows of ``values`` and their counts, or None when there are more than ``limit``."""
    codes = np.zeros(len(values), dtype=np.int64)
    radix = 1
    for column in values.T:
        uniq, inverse = np.unique(column, return_inverse=True)
        if len(uniq) > limit:
            return None
        codes += inverse.reshape(-1) * radix
        radix *= len(uniq)
    _, first, counts = np.unique(codes, return_index=True, return_counts=True)
    if len(first) > limit:
        return None
    return values[first], counts


def _resampled_sums(values: np.ndarray, n_bootstrap: int, rng: np.random.Generator) -> np.ndarray:
    """Column sums of ``values`` (items x columns) over ``n_bootstrap`` resamples of its rows.

    Every replicate resamples whole rows, so the columns (the two orders) share the
    same item draw. With few distinct rows (binary accuracies: at most four) the
    replicate's row counts are drawn as one multinomial over the distinct rows, the
    same distribution as drawing item indices, at a fraction of the cost.
    """
    n, m = values.shape
    if np.all(np.isfinite(values)) and n >= 2 * _MULTINOMIAL_MAX_DISTINCT:
        distinct = _distinct_rows(values, _MULTINOMIAL_MAX_DISTINCT)
        if distinct is not None and len(distinct[1]) * _MULTINOMIAL_MAX_DISTINCT <= n:
            rows, counts = distinct
            draws = rng.multinomial(n, counts / n, size=n_bootstrap)  # replicates x distinct rows
            return draws.astype(float) @ rows
    out = np.empty((n_bootstrap, m))
    chunk = max(1, _INDEX_CHUNK_CELLS // n)
    for start in range(0, n_bootstrap, chunk):
        stop = min(n_bootstrap, start + chunk)
        idx = rng.integers(0, n, size=(stop - start, n))  # item indices, one row per replicate
        flat = (idx + np.arange(stop - start)[:, None] * n).ravel()
        counts = np.bincount(flat, minlength=(stop - start) * n).reshape(stop - start, n)
        if np.all(np.isfinite(values)):
            out[start:stop] = counts.astype(float) @ values
        else:  # 0 * inf would be NaN: sum the drawn items themselves
            out[start:stop] = values[idx].sum(axis=1)
    return out


def _item_list(record: Record, key: str) -> np.ndarray | None:
    value = record.items.get(key)
    if value is None:
        return None
    return np.asarray(value, dtype=float)  # None (a non-finite value in JSON) becomes NaN


class _PairBootstrap:
    """Replicate scores of both orders of one pair, with one item draw per items key."""

    def __init__(self, rec_ab: Record, rec_ba: Record, pair_id: tuple, n_bootstrap: int, seed: int):
        self.rec_ab, self.rec_ba = rec_ab, rec_ba
        self.pair_id = pair_id
        self.n_bootstrap = n_bootstrap
        self.seed = seed
        self._cache: dict[str, tuple[np.ndarray, np.ndarray, int] | None] = {}

    def _describe(self) -> str:
        model_id, profile, dtype, a, b = self.pair_id
        return f"pair '{a}' / '{b}' (model {model_id}, profile {profile}, {dtype})"

    def _unit(self, criterion_key: str, keys: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray, int] | None:
        """Point column sums, replicate column sums and n for the lists ``keys``.

        Columns: ``keys`` of the ab record, then ``keys`` of the ba record.
        """
        cache_key = "|".join(keys)
        if cache_key in self._cache:
            return self._cache[cache_key]
        cols_ab = [_item_list(self.rec_ab, k) for k in keys]
        cols_ba = [_item_list(self.rec_ba, k) for k in keys]
        columns = cols_ab + cols_ba
        if all(c is None for c in columns):
            self._cache[cache_key] = None
            return None
        lengths = {
            f"{order}.items[{k!r}]": (None if c is None else len(c))
            for order, cols in (("ab", cols_ab), ("ba", cols_ba))
            for k, c in zip(keys, cols)
        }
        if any(c is None for c in columns) or len(set(lengths.values())) != 1:
            shown = ", ".join(f"{name}: {'missing' if n is None else n}" for name, n in lengths.items())
            raise ItemsMismatchError(
                f"{self._describe()}, criterion '{criterion_key}': the two orders must hold the same "
                f"evaluation items, but the item lists differ in length ({shown})"
            )
        n = len(columns[0])
        if n == 0:
            self._cache[cache_key] = None
            return None
        values = np.column_stack(columns)
        model_id, profile, _dtype, a, b = self.pair_id  # dtype separates groups; leaving it out of the
        rng = _derived_rng(self.seed, model_id, profile, a, b, cache_key)  # draws keeps CIs as before it joined
        sums = _resampled_sums(values, self.n_bootstrap, rng)
        result = (values.sum(axis=0), sums, n)
        self._cache[cache_key] = result
        return result

    def order_scores(self, criterion: Criterion, criteria: Mapping[str, Criterion], order: int) -> np.ndarray | None:
        """The replicate scores of one order (0: ab, 1: ba), or None where they cannot be computed."""
        try:
            result = self.scores(criterion, criteria)
        except ItemsMismatchError:
            return None
        if result is None:
            return None
        reps = result[1][:, order]
        return reps if np.all(np.isfinite(reps)) else None

    def difference_se(self, criterion: Criterion, criteria: Mapping[str, Criterion], d_reps: np.ndarray) -> float:
        """The standard error of ``score_ab - score_ba`` from the per-item values (the MDE's input).

        ``mean``: ``std(d) / sqrt(n)`` of the paired per-item differences (ddof 0: the
        bootstrap's own variance); ``mean_of``: the components' errors combined,
        ``sqrt(sum se_k^2) / K`` (independent draws per subset); ``perplexity`` (a ratio,
        no closed form here): the standard deviation of the bootstrap replicates ``d_reps``.
        """
        if criterion.items == "mean":
            (key,) = criterion.items_keys
            ab, ba = _item_list(self.rec_ab, key), _item_list(self.rec_ba, key)
            d = ab - ba
            if not np.all(np.isfinite(d)):
                return math.nan
            return float(np.std(d) / math.sqrt(len(d)))
        if criterion.items == "mean_of":
            parts = [self.difference_se(criteria[c], criteria, d_reps) for c in criterion.items_keys]
            return float(math.sqrt(sum(p * p for p in parts)) / len(parts))
        finite = d_reps[np.isfinite(d_reps)]
        return float(np.std(finite)) if len(finite) == len(d_reps) else math.nan

    def scores(
        self, criterion: Criterion, criteria: Mapping[str, Criterion]
    ) -> tuple[np.ndarray, np.ndarray, int] | None:
        """(point scores from items [ab, ba], replicate scores (B x 2), n_items), or None without items."""
        if criterion.items == "mean":
            unit = self._unit(criterion.key, criterion.items_keys)
            if unit is None:
                return None
            point, sums, n = unit
            return point / n, sums / n, n
        if criterion.items == "perplexity":
            unit = self._unit(criterion.key, criterion.items_keys)
            if unit is None:
                return None
            point, sums, n = unit
            with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
                pt = np.exp(np.array([point[0] / point[1], point[2] / point[3]]))
                reps = np.exp(np.column_stack([sums[:, 0] / sums[:, 1], sums[:, 2] / sums[:, 3]]))
            return pt, reps, n
        if criterion.items == "mean_of":
            parts = [self.scores(criteria[c], criteria) for c in criterion.items_keys]
            if any(p is None for p in parts):
                return None
            point = np.mean([p[0] for p in parts], axis=0)
            reps = np.mean([p[1] for p in parts], axis=0)
            return point, reps, int(sum(p[2] for p in parts))
        return None


def _cis(samples: np.ndarray, confidence: float) -> list[tuple[float, float]]:
    """Percentile intervals of each column of ``samples`` (replicates x statistics)."""
    alpha = (1.0 - confidence) / 2.0
    with np.errstate(invalid="ignore"):
        low, high = np.quantile(samples, [alpha, 1.0 - alpha], axis=0)
    return [(float(lo), float(hi)) for lo, hi in zip(low, high)]


def _describe_record(record: Record) -> str:
    return f"record {record.cell_id!r} ({record.label})"


def _has_null_item(record: Record, criterion: Criterion, criteria: Mapping[str, Criterion]) -> bool:
    """Whether the per-item lists behind ``criterion`` hold a null (a non-finite value written as JSON null)."""
    if criterion.items == "mean_of":
        return any(_has_null_item(record, criteria[c], criteria) for c in criterion.items_keys if c in criteria)
    return any(any(v is None for v in record.items.get(k, ())) for k in criterion.items_keys)


def worst_value(criterion: Criterion) -> float:
    """The worst possible score of a criterion: +inf where lower is better, -inf where higher is; NaN if descriptive."""
    if criterion.direction == "lower_is_better":
        return math.inf
    if criterion.direction == "higher_is_better":
        return -math.inf
    return math.nan


def _score(record: Record, criterion: Criterion, criteria: Mapping[str, Criterion]) -> float | None:
    """The record's score as a float; a diverged score as :func:`worst_value`; None when absent.

    A record written before ``"diverged"`` existed stored a diverged score as null: a null
    whose per-item values hold a null too (a non-finite window NLL) is read as diverged.
    A value of any other type never gets here: :meth:`Record.of` refuses it, naming the cell
    and the field (files are checked with line numbers when read,
    :func:`benchmark.records.read_records`).
    """
    value = record.score(criterion.key)
    if value == DIVERGED or (value is None and _has_null_item(record, criterion, criteria)):
        worst = worst_value(criterion)
        return None if math.isnan(worst) else worst
    if value is None or isinstance(value, str):
        return None
    value = float(value)
    if math.isnan(value):
        return None
    if math.isinf(value):
        worst = worst_value(criterion)
        return None if math.isnan(worst) else worst
    return value


def _category(record: Record, position: int) -> str | None:
    return record.sequence[position].category if len(record.sequence) > position else None


def _z(probability: float) -> float:
    return statistics.NormalDist().inv_cdf(probability)


def mde_from_se(se: float, confidence: float = 0.95, power: float = POWER) -> float:
    """The smallest true difference a two-sided test at ``confidence`` detects with ``power``: ``(z_{1-a/2} + z_power) * se``.

    The normal approximation of the paired bootstrap: its percentile interval of the mean
    difference is about ``d +- z_{1-a/2} * se``, so a true difference ``delta`` is flagged
    when ``d`` falls beyond ``z_{1-a/2} * se``, which happens with probability ``power``
    when ``delta = (z_{1-a/2} + z_power) * se`` (2.80 se at 95% and 80%). Written by hand:
    two lines of the textbook formula, no library states it for a paired bootstrap.
    """
    return (_z(1.0 - (1.0 - confidence) / 2.0) + _z(power)) * se


def minimum_detectable_effect(ab: Any, ba: Any, confidence: float = 0.95, power: float = POWER) -> float:
    """The MDE of a mean criterion from its per-item values in both orders (same items, same order).

    ``se`` is the bootstrap standard error of the mean paired difference,
    ``std(d) / sqrt(n)`` with ``d = ab - ba`` and the population standard deviation
    (ddof 0, the resampling distribution's own); see :func:`mde_from_se`.
    """
    d = np.asarray(ab, dtype=float) - np.asarray(ba, dtype=float)
    if len(d) == 0 or not np.all(np.isfinite(d)):
        return math.nan
    return _mde_or_nan(float(np.std(d) / math.sqrt(len(d))), confidence, power)


def _mde_or_nan(se: float, confidence: float, power: float = POWER) -> float:
    """:func:`mde_from_se`, but NaN where the orders agree on every item (se 0).

    With no observed variance the normal approximation would claim that any difference is
    detectable, which the bootstrap does not bear out (one flipped item among 12 is drawn in
    none of about a third of the replicates): the MDE is then not estimable from these pairs.
    """
    if not math.isfinite(se) or se <= 0.0:
        return math.nan
    return mde_from_se(se, confidence, power)


def _pair_statistics(
    boot: "_PairBootstrap",
    crit: Criterion,
    criteria: Mapping[str, Criterion],
    s_ab: float,
    s_ba: float,
    confidence: float,
) -> dict[str, Any]:
    """OFE, OS, their CIs, the difference's CI, the significance and the MDE of one pair and criterion."""
    diverged = math.isinf(s_ab) or math.isinf(s_ba)
    with np.errstate(invalid="ignore"):
        diff = s_ab - s_ba if not (math.isinf(s_ab) and math.isinf(s_ba)) else 0.0
    e_ab, e_ba = error_of(crit, s_ab), error_of(crit, s_ba)
    ofe = min(e_ab, e_ba) if e_ab is not None and e_ba is not None else math.nan
    out: dict[str, Any] = {"order_free_error": ofe, "order_sensitivity": abs(diff)}
    result = boot.scores(crit, criteria) if crit.has_items and not diverged else None
    if diverged:
        # the finite order's replicates give the OFE's CI where it is the better one; the rest is the point
        ofe_ci = (ofe, ofe)
        if crit.has_items and math.isfinite(ofe):
            finite = boot.order_scores(crit, criteria, 0 if math.isfinite(s_ab) else 1)
            if finite is not None:
                (ofe_ci,) = _cis(_errors_array(crit, finite)[:, None], confidence)
            else:  # no per-item scores (e.g. reported results): the finite order's interval is unknown
                ofe_ci = (math.nan, math.nan)
        os_ci = (abs(diff), abs(diff))
        d_ci = (diff, diff)
        exceeds, significance, n_items, mde = diff != 0, "diverged", 0, math.nan
    elif result is not None:
        point, reps, n_items = result
        for rec_score, item_score, order in ((s_ab, point[0], "ab"), (s_ba, point[1], "ba")):
            if np.isfinite(item_score) and not math.isclose(rec_score, item_score, rel_tol=1e-6, abs_tol=1e-9):
                logger.warning(
                    "%s, criterion '%s', order %s: score %.6g differs from its items' %.6g",
                    boot._describe(),
                    crit.key,
                    order,
                    rec_score,
                    float(item_score),
                )
        d = reps[:, 0] - reps[:, 1]
        errs = _errors_array(crit, reps)
        ofe_reps = np.minimum(errs[:, 0], errs[:, 1])
        ofe_ci, os_ci, d_ci = _cis(np.column_stack([ofe_reps, np.abs(d), d]), confidence)
        exceeds = bool(d_ci[0] > 0 or d_ci[1] < 0)
        significance = "beyond_noise" if exceeds else "within_noise"
        mde = _mde_or_nan(boot.difference_se(crit, criteria, d), confidence)
    elif not crit.has_items:
        n_items = 0
        ofe_ci = (ofe, ofe)
        os_ci = (abs(diff), abs(diff))
        d_ci = (diff, diff)
        exceeds = diff != 0
        significance = "beyond_noise" if exceeds else "within_noise"
        mde = 0.0  # deterministic: any difference is a real one
    else:
        logger.debug(
            "%s, criterion '%s': no per-item scores in the records; significance unknown", boot._describe(), crit.key
        )
        n_items = 0
        ofe_ci = os_ci = d_ci = (math.nan, math.nan)
        exceeds, significance, mde = False, "unknown", math.nan
    out.update(
        ofe_ci_low=ofe_ci[0],
        ofe_ci_high=ofe_ci[1],
        os_ci_low=os_ci[0],
        os_ci_high=os_ci[1],
        diff_ci_low=d_ci[0],
        diff_ci_high=d_ci[1],
        exceeds_noise=bool(exceeds),
        n_items=int(n_items),
        significance=significance,
        mde=float(mde),
    )
    return out


def _warn_unknown_significance(rows: list[dict[str, Any]]) -> None:
    """One warning line per (model, profile, dtype) whose records lack per-item scores, not one per pair.

    A reported run (310 records, no items) would otherwise print a line for each of its ~1,000 rows.
    """
    unknown: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for row in rows:
        if row["significance"] == "unknown":
            unknown.setdefault((row["model_id"], row["profile"], row["dtype"]), []).append(row)
    for (model_id, profile, dtype), group in unknown.items():
        pairs = {(r["a"], r["b"]) for r in group}
        crits = sorted({r["criterion"] for r in group})
        logger.warning(
            "model %s, profile %s, dtype %s: %d row(s) of %d pair(s) (%s) have no per-item scores in the "
            "records; their significance is unknown",
            model_id,
            profile,
            dtype,
            len(group),
            len(pairs),
            ", ".join(crits),
        )


def compute_composability(
    records: Iterable[Record | Mapping[str, Any]],
    n_bootstrap: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
    criteria: Mapping[str, Criterion] | None = None,
) -> pd.DataFrame:
    """Order-free Error and Order Sensitivity per pair and criterion, with paired bootstrap CIs.

    One row per pair (see :func:`pair_records`) and criterion whose score is present
    (not null) in both records, with the columns of ``COLUMNS`` (docs/FORMATS.md).
    Point values come from the records' ``scores``; CIs from ``n_bootstrap`` paired
    resamples of the records' ``items`` (one draw of item indices per replicate,
    applied to both orders; WMDP bio and cyber drawn separately). Percentile CIs at
    ``confidence``. ``exceeds_noise`` is true when the CI of ``score_ab - score_ba``
    excludes 0; for criteria without items the CI is the point, so it is ``d != 0``;
    for a criterion whose records lack its items the CIs are NaN and it is false.
    Deterministic for a given ``seed``: each pair and items list has its own
    generator derived from the seed, the pair and the list's name.
    """
    if n_bootstrap < 1:
        raise ValueError(f"n_bootstrap must be >= 1, got {n_bootstrap}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be strictly between 0 and 1, got {confidence}")
    if seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed}")
    criteria = dict(criteria) if criteria is not None else load_criteria()

    rows: list[dict[str, Any]] = []
    unknown: set[str] = set()
    for rec_ab, rec_ba in pair_records(records):
        model_id, profile, dtype = rec_ab.group
        a, b = rec_ab.labels
        boot = _PairBootstrap(rec_ab, rec_ba, (model_id, profile, dtype, a, b), n_bootstrap, seed)
        unknown |= (set(rec_ab.scores) | set(rec_ba.scores)) - set(criteria)
        for crit in criteria.values():
            s_ab, s_ba = _score(rec_ab, crit, criteria), _score(rec_ba, crit, criteria)
            if s_ab is None or s_ba is None:
                continue
            row: dict[str, Any] = {
                "model_id": model_id,
                "profile": profile,
                "dtype": dtype,
                "a": a,
                "a_category": _category(rec_ab, 0),
                "b": b,
                "b_category": _category(rec_ab, 1),
                "criterion": crit.key,
                "score_ab": s_ab,
                "score_ba": s_ba,
            }
            row.update(_pair_statistics(boot, crit, criteria, s_ab, s_ba, confidence))
            rows.append(row)
    if unknown:
        logger.warning("scores without a criterion in criteria.yaml (ignored): %s", ", ".join(sorted(unknown)))
    _warn_unknown_significance(rows)

    df = pd.DataFrame(rows, columns=COLUMNS)
    float_cols = COLUMNS[COLUMNS.index("score_ab") : COLUMNS.index("exceeds_noise")] + ["mde"]
    df[float_cols] = df[float_cols].astype(float)
    df["exceeds_noise"] = df["exceeds_noise"].astype(bool)
    df["n_items"] = df["n_items"].astype(int)
    df["significance"] = df["significance"].astype(object)
    return df


def effects_against_base(
    records: Iterable[Record | Mapping[str, Any]],
    criteria_keys: list[str],
    n_bootstrap: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
    criteria: Mapping[str, Criterion] | None = None,
) -> pd.DataFrame:
    """Each evaluated model's paired difference from the base model of its group, per criterion.

    What an intervention alone did (e.g. whether an unlearner moved WMDP beyond noise): the
    same paired bootstrap as the Order Sensitivity, with the cell as the first order and the
    base model (the record with an empty sequence) as the second. Columns: ``label``,
    ``criterion``, ``score``, ``base``, ``diff`` (score - base), ``diff_ci_low``,
    ``diff_ci_high``, ``significance``, ``mde``, ``n_items``.
    """
    criteria = dict(criteria) if criteria is not None else load_criteria()
    ok = [r for r in typed(records) if r.status == "ok"]
    bases = {r.group: r for r in ok if not r.sequence}
    rows = []
    for rec in ok:
        base = bases.get(rec.group)
        if base is None or rec is base:
            continue
        model_id, profile, dtype = rec.group
        boot = _PairBootstrap(rec, base, (model_id, profile, dtype, rec.label, "base"), n_bootstrap, seed)
        for key in criteria_keys:
            crit = criteria[key]
            s_cell, s_base = _score(rec, crit, criteria), _score(base, crit, criteria)
            if s_cell is None or s_base is None:
                continue
            stats = _pair_statistics(boot, crit, criteria, s_cell, s_base, confidence)
            rows.append(
                {
                    "label": rec.label,
                    "criterion": key,
                    "score": s_cell,
                    "base": s_base,
                    "diff": s_cell - s_base if not (math.isinf(s_cell) and math.isinf(s_base)) else 0.0,
                    "diff_ci_low": stats["diff_ci_low"],
                    "diff_ci_high": stats["diff_ci_high"],
                    "significance": stats["significance"],
                    "mde": stats["mde"],
                    "n_items": stats["n_items"],
                }
            )
    return pd.DataFrame(
        rows,
        columns=[
            "label",
            "criterion",
            "score",
            "base",
            "diff",
            "diff_ci_low",
            "diff_ci_high",
            "significance",
            "mde",
            "n_items",
        ],
    )


# --------------------------------------------------------------------------- output


def power_summary(df: pd.DataFrame, criteria: list[str] | None = None) -> str:
    """One line per criterion: the minimum detectable effect pooled over the table's pairs.

    What a reader needs beside "within noise": how large an order effect these sizes could
    have shown (80% power, the table's confidence). A pair's own ``mde`` is 0 when its two
    orders agree on every item (no observed variance), so the line pools the pairs' variances:
    the root mean square of their ``mde`` (the MDE of the mean per-item variance at the same
    number of items), over the pairs where it is estimable (see :func:`_mde_or_nan`). A criterion whose pairs all lack per-item scores says so; deterministic
    criteria (no items) detect any difference and are left out.
    """
    lines = [f"Minimum detectable Order Sensitivity ({POWER:.0%} power, pooled over pairs from the per-item variance):"]
    keys = criteria if criteria is not None else list(dict.fromkeys(df["criterion"]))
    for key in keys:
        rows = df[df["criterion"] == key]
        if rows.empty or (rows["n_items"] == 0).all() and (rows["significance"] != "unknown").all():
            continue
        finite = rows["mde"][np.isfinite(rows["mde"].astype(float))]
        if finite.empty:
            why = (
                "no per-item scores"
                if (rows["significance"] == "unknown").all()
                else "the two orders agree on every item, or a model diverged"
            )
            lines.append(f"  {key:<18} not estimable ({why})")
            continue
        flagged = int((rows["significance"] == "beyond_noise").sum())
        pooled = math.sqrt(float((finite.astype(float) ** 2).mean()))
        lines.append(
            f"  {key:<18} {pooled:.3f}  (pairs {float(finite.min()):.3f}-{float(finite.max()):.3f},"
            f" {len(finite)} of {len(rows)} pair(s) estimable, {int(rows['n_items'].max())} items;"
            f" {flagged} beyond noise)"
        )
    return "\n".join(lines)


def _json_value(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _json_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_value(v) for v in value]
    if isinstance(value, (np.bool_, bool)):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, (np.floating, float)):
        value = float(value)
        if math.isinf(value):
            return DIVERGED  # only a diverged model's score, OFE or OS is infinite
        return value if math.isfinite(value) else None
    if value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, Path):
        return str(value)
    return value


def write_composability(df: pd.DataFrame, out_dir: Path, settings: dict) -> tuple[Path, Path]:
    """Write ``composability.csv`` and ``composability.json`` into ``out_dir``, each atomically.

    The JSON is ``{"settings": settings, "rows": [...]}`` with NaN written as null.
    Returns (csv path, json path).
    """
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"composability table lacks column(s) {missing}")
    df = df[COLUMNS]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path = out_dir / COMPOSABILITY_CSV
    json_path = out_dir / COMPOSABILITY_JSON
    atomic_write_text(csv_path, df.to_csv(index=False, lineterminator="\n"))
    rows = [_json_value(r) for r in df.to_dict(orient="records")]
    payload = {"settings": _json_value(dict(settings)), "rows": rows}
    atomic_write_text(json_path, json.dumps(payload, indent=2, allow_nan=False) + "\n")
    return csv_path, json_path
