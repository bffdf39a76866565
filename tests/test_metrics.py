"""Composability metrics (benchmark.metrics) on hand-computed cases."""

from __future__ import annotations

import json
import logging
import math
import random
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from benchmark import metrics
from benchmark.metrics import (
    COLUMNS,
    CriteriaError,
    ItemsMismatchError,
    compute_composability,
    error_of,
    find_pairs,
    load_criteria,
    pair_records,
    write_composability,
)

CATEGORIES = {"ft": "editing", "rmu": "unlearning", "wanda": "compression", "gptq": "compression"}

ALL_KEYS = [
    "edit_success",
    "generalization",
    "locality",
    "edit_success_tf",
    "generalization_tf",
    "locality_tf",
    "wmdp_bio",
    "wmdp_cyber",
    "wmdp",
    "mmlu",
    "mmlu_prob",
    "mmlu_acc_norm",
    "wmdp_bio_prob",
    "wmdp_cyber_prob",
    "wmdp_prob",
    "wmdp_bio_acc_norm",
    "wmdp_cyber_acc_norm",
    "wmdp_acc_norm",
    "perplexity",
    "avg_bits",
    "sparsity",
    # the robustness probes (benchmark/probes.py): per probe, accuracy / probability / acc_norm, bio, cyber, mean
    *(
        key
        for probe in ("rtn4", "rtn8", "relearn")
        for measure in ("", "_prob", "_acc_norm")
        for key in (f"wmdp_bio{measure}_{probe}", f"wmdp_cyber{measure}_{probe}", f"wmdp{measure}_{probe}")
    ),
]


def _scores_from_items(items: dict) -> dict:
    scores = {}
    for key, values in items.items():
        if key.startswith("perplexity_"):
            continue
        scores[key] = float(np.mean(values))
    if "wmdp_bio" in scores and "wmdp_cyber" in scores:
        scores["wmdp"] = (scores["wmdp_bio"] + scores["wmdp_cyber"]) / 2
    if "perplexity_nll" in items:
        scores["perplexity"] = math.exp(sum(items["perplexity_nll"]) / sum(items["perplexity_tokens"]))
    return scores


def record(
    sequence: list[str],
    items: dict | None = None,
    scores: dict | None = None,
    *,
    status: str = "ok",
    model_id: str = "HuggingFaceTB/SmolLM2-135M-Instruct",
    profile: str = "smoke",
    cell_id: str | None = None,
) -> dict:
    """A records.jsonl record (docs/FORMATS.md); scores default to what the items give."""
    items = items or {}
    all_scores = _scores_from_items(items)
    all_scores.update(scores or {})
    return {
        "schema_version": 1,
        "cell_id": cell_id or "-".join(sequence) + f"-{random.random()}",
        "status": status,
        "error": None if status == "ok" else "boom",
        "label": " -> ".join(sequence),
        "sequence": [
            {
                "name": s.split("(")[0],
                "category": CATEGORIES.get(s.split("(")[0], "editing"),
                "level": None,
                "label": s,
                "submission_sha256": "0" * 64,
                "hyperparameters": {},
            }
            for s in sequence
        ],
        "recompressed_with": None,
        "scores": all_scores if status == "ok" else {},
        "items": items if status == "ok" else {},
        "provenance": {"model_id": model_id, "profile": profile, "seed": 0},
        "timings": {},
        "peak_memory_mb": 1.0,
        "finished_at": "2026-01-01T00:00:00Z",
    }


def pair(
    a: str,
    b: str,
    items_ab: dict,
    items_ba: dict,
    *,
    scores_ab: dict | None = None,
    scores_ba: dict | None = None,
    **kw,
) -> list[dict]:
    """Both orders of a pair: ``a`` then ``b`` with ``items_ab``, ``b`` then ``a`` with ``items_ba``."""
    return [record([a, b], items_ab, scores_ab, **kw), record([b, a], items_ba, scores_ba, **kw)]


def row_of(df: pd.DataFrame, criterion: str, a: str | None = None) -> pd.Series:
    sel = df[df.criterion == criterion]
    if a is not None:
        sel = sel[sel.a == a]
    assert len(sel) == 1, sel
    return sel.iloc[0]


@pytest.fixture(scope="module")
def criteria():
    return load_criteria()


# ----------------------------------------------------------------------------- criteria


def test_criteria_file_declares_every_score_key(criteria):
    assert list(criteria) == ALL_KEYS
    assert criteria["edit_success"].direction == "higher_is_better"
    assert criteria["edit_success"].error == "one_minus"
    assert criteria["wmdp"].direction == "lower_is_better"
    assert criteria["wmdp"].error == "value"
    assert criteria["wmdp"].items == "mean_of"
    assert criteria["wmdp"].items_keys == ("wmdp_bio", "wmdp_cyber")
    assert criteria["perplexity"].error == "value"
    assert criteria["perplexity"].items == "perplexity"
    for key in ("avg_bits", "sparsity"):
        assert criteria[key].direction == "descriptive"
        assert criteria[key].error == "none"
        assert criteria[key].items == "none"


def test_headline_criteria_are_data_in_criteria_yaml(criteria):
    """The one list every summary shows first (run printout, pr-summary, per-cell table, leaderboard default)."""
    from benchmark.metrics import headline_criteria, per_cell_columns

    assert headline_criteria(criteria) == [
        "edit_success",
        "generalization",
        "locality",
        "wmdp",
        "mmlu",
        "mmlu_prob",
        "wmdp_prob",
        "perplexity",
    ]
    headers = [c.header for c in per_cell_columns(criteria)]
    assert headers == ["edit", "gen", "loc", "WMDP", "MMLU", "MMLU p", "WMDP p", "ppl", "bits", "sparsity"]


def test_error_of(criteria):
    assert error_of(criteria["edit_success"], 0.8) == pytest.approx(0.2)
    assert error_of(criteria["mmlu"], 0.3) == pytest.approx(0.7)
    assert error_of(criteria["wmdp"], 0.3) == pytest.approx(0.3)  # unlearning: error IS the accuracy
    assert error_of(criteria["perplexity"], 21.5) == 21.5
    assert error_of(criteria["avg_bits"], 4.0) is None
    assert error_of(criteria["mmlu"], None) is None


@pytest.mark.parametrize(
    "text, field",
    [
        ("mmlu: [1, 2", "not valid YAML"),
        ("mmlu:\n  description: x\n  direction: up\n  error: one_minus\n  items: mean\n", "'direction'"),
        ("mmlu:\n  description: x\n  direction: higher_is_better\n  error: value\n  items: mean\n", "'error'"),
        ("mmlu:\n  description: x\n  direction: higher_is_better\n  error: one_minus\n", "'items'"),
        ("mmlu:\n  direction: higher_is_better\n  error: one_minus\n  items: mean\n", "'description'"),
        (
            "wmdp:\n  description: x\n  direction: lower_is_better\n  error: value\n  items: {mean_of: [wmdp_bio]}\n",
            "'items.mean_of'",
        ),
        ("mmlu:\n  description: x\n  direction: higher_is_better\n  error: one_minus\n  items: median\n", "'items'"),
        (
            "mmlu:\n  description: x\n  direction: higher_is_better\n  headline: 'yes'\n  error: one_minus\n  items: mean\n",
            "'headline'",
        ),
        (
            "mmlu:\n  description: x\n  direction: higher_is_better\n  short: 3\n  error: one_minus\n  items: mean\n",
            "'short'",
        ),
    ],
)
def test_bad_criteria_file_names_file_and_field(tmp_path, text, field):
    path = tmp_path / "criteria.yaml"
    path.write_text(text)
    with pytest.raises(CriteriaError) as exc:
        load_criteria(path)
    assert str(path) in str(exc.value)
    assert field in str(exc.value)


# ----------------------------------------------------------------------------- hand-computed


def test_four_item_pair_by_hand(criteria):
    # ft then wanda keeps more of the edits than wanda then ft.
    ab = {"edit_success": [1.0, 0.5, 1.0, 0.5]}  # mean 0.75 -> err 0.25
    ba = {"edit_success": [1.0, 0.0, 0.5, 0.5]}  # mean 0.50 -> err 0.50
    df = compute_composability(pair("ft", "wanda", ab, ba), n_bootstrap=2000, criteria=criteria)
    assert list(df.columns) == COLUMNS
    r = row_of(df, "edit_success")
    assert (r.a, r.a_category, r.b, r.b_category) == ("ft", "editing", "wanda", "compression")
    assert r.score_ab == pytest.approx(0.75)
    assert r.score_ba == pytest.approx(0.5)
    assert r.order_free_error == pytest.approx(0.25)  # min(0.25, 0.5)
    assert r.order_sensitivity == pytest.approx(0.25)  # |0.75 - 0.5|
    assert r.n_items == 4
    # Per-item differences are [0, .5, .5, 0]: every replicate's d lies in [0, 0.5], and
    # with probability (1/2)^4 = 1/16 > 2.5% a replicate draws only zero-difference items,
    # so the lower 2.5% quantile of d is exactly 0: not distinguishable from noise.
    assert r.diff_ci_low == 0.0
    assert 0.25 <= r.diff_ci_high <= 0.5
    assert not r.exceeds_noise
    assert r.ofe_ci_low <= r.order_free_error <= r.ofe_ci_high
    assert 0.0 <= r.ofe_ci_low and r.ofe_ci_high <= 0.75
    assert r.os_ci_low == 0.0 and r.os_ci_high == r.diff_ci_high


def test_pair_labels_sorted_regardless_of_record_order(criteria):
    # Records given as (wanda -> ft, ft -> wanda): a is still "ft".
    ab = {"mmlu": [1, 1, 0, 0]}
    ba = {"mmlu": [1, 0, 0, 0]}
    recs = pair("ft", "wanda", ab, ba)[::-1]
    r = row_of(compute_composability(recs, criteria=criteria), "mmlu")
    assert (r.a, r.b) == ("ft", "wanda")
    assert (r.score_ab, r.score_ba) == (0.5, 0.25)
    assert r.order_free_error == pytest.approx(0.5)


def test_wmdp_direction_lower_accuracy_gives_the_ofe(criteria):
    ab = {"wmdp_bio": [1, 1, 1, 0]}  # 0.75: rmu's unlearning was undone
    ba = {"wmdp_bio": [0, 0, 1, 0]}  # 0.25: unlearning survived
    r = row_of(compute_composability(pair("rmu", "wanda", ab, ba), criteria=criteria), "wmdp_bio")
    assert r.order_free_error == pytest.approx(0.25)  # the accuracy itself, of the better (lower) order
    assert r.order_sensitivity == pytest.approx(0.5)
    assert r.ofe_ci_low <= 0.25 <= r.ofe_ci_high


def test_wmdp_is_mean_of_subsets_not_pooled(criteria):
    ab = {"wmdp_bio": [1, 1, 0, 0], "wmdp_cyber": [1, 0, 0, 0, 0, 0]}  # 1/2, 1/6
    ba = {"wmdp_bio": [1, 1, 1, 0], "wmdp_cyber": [1, 1, 0, 0, 0, 0]}  # 3/4, 1/3
    df = compute_composability(pair("rmu", "wanda", ab, ba), criteria=criteria)
    r = row_of(df, "wmdp")
    assert r.score_ab == pytest.approx((1 / 2 + 1 / 6) / 2)  # 1/3, not the pooled 3/10
    assert r.score_ba == pytest.approx((3 / 4 + 1 / 3) / 2)
    assert r.order_free_error == pytest.approx(1 / 3)
    assert r.n_items == 10
    assert row_of(df, "wmdp_bio").n_items == 4
    assert row_of(df, "wmdp_cyber").n_items == 6


def test_wmdp_subsets_are_resampled_separately(criteria):
    # Bio all correct, cyber all wrong, in both orders. Resampled within each subset the
    # replicate is always (1 + 0) / 2 = 0.5; pooled resampling would vary.
    ab = {"wmdp_bio": [1] * 5, "wmdp_cyber": [0] * 15}
    ba = {"wmdp_bio": [1] * 5, "wmdp_cyber": [0] * 15}
    r = row_of(compute_composability(pair("rmu", "wanda", ab, ba), criteria=criteria), "wmdp")
    assert (r.ofe_ci_low, r.ofe_ci_high) == (0.5, 0.5)


def test_perplexity_from_windows(criteria):
    ab = {"perplexity_nll": [10.0, 20.0], "perplexity_tokens": [5, 5]}  # exp(30/10) = e^3
    ba = {"perplexity_nll": [10.0, 10.0], "perplexity_tokens": [5, 5]}  # exp(20/10) = e^2
    r = row_of(compute_composability(pair("gptq", "rmu", ab, ba), criteria=criteria), "perplexity")
    assert r.score_ab == pytest.approx(math.exp(3))
    assert r.score_ba == pytest.approx(math.exp(2))
    assert r.order_free_error == pytest.approx(math.exp(2))  # the lower perplexity
    assert r.order_sensitivity == pytest.approx(math.exp(3) - math.exp(2))
    assert r.n_items == 2
    # ba is e^2 whatever windows are drawn, and ab >= e^2: OFE is e^2 in every replicate.
    assert r.ofe_ci_low == pytest.approx(math.exp(2)) and r.ofe_ci_high == pytest.approx(math.exp(2))
    # ab is e^2 (both draws window 0, p = 1/4), e^3 or e^4: d's CI is [0, e^4 - e^2].
    assert r.diff_ci_low == 0.0
    assert r.diff_ci_high == pytest.approx(math.exp(4) - math.exp(2))
    assert not r.exceeds_noise


def test_perplexity_uses_token_weights(criteria):
    ab = {"perplexity_nll": [2.0, 18.0], "perplexity_tokens": [2, 8]}  # exp(20/10), not exp(mean(1, 2.25))
    ba = {"perplexity_nll": [2.0, 18.0], "perplexity_tokens": [2, 8]}
    r = row_of(compute_composability(pair("gptq", "rmu", ab, ba), criteria=criteria), "perplexity")
    assert r.score_ab == pytest.approx(math.exp(2))


def test_tie_both_orders_equal(criteria):
    items = {"mmlu": [1, 0, 1, 1, 0, 1, 0, 0, 1, 1], "edit_success": [0.2, 0.9, 0.5, 1.0]}
    r = row_of(compute_composability(pair("ft", "rmu", items, dict(items)), criteria=criteria), "mmlu")
    assert r.order_sensitivity == 0.0
    assert (r.diff_ci_low, r.diff_ci_high) == (0.0, 0.0)
    assert (r.os_ci_low, r.os_ci_high) == (0.0, 0.0)
    assert not r.exceeds_noise
    assert r.order_free_error == pytest.approx(1 - 0.6)
    assert r.ofe_ci_low < r.order_free_error < r.ofe_ci_high  # item noise still widens the OFE CI


def test_clearly_order_sensitive(criteria):
    rng = np.random.default_rng(1)
    base = rng.uniform(0.3, 0.8, size=30)
    ab = {"edit_success": list(base + 0.2)}  # every item 0.2 higher in ab
    ba = {"edit_success": list(base)}
    r = row_of(compute_composability(pair("ft", "wanda", ab, ba), criteria=criteria), "edit_success")
    assert r.order_sensitivity == pytest.approx(0.2)
    assert r.diff_ci_low == pytest.approx(0.2) and r.diff_ci_high == pytest.approx(0.2)
    assert r.exceeds_noise
    # Binary items: ab right on all 20, ba wrong on all 20.
    r = row_of(
        compute_composability(pair("ft", "wanda", {"mmlu": [1] * 20}, {"mmlu": [0] * 20}), criteria=criteria),
        "mmlu",
    )
    assert (r.diff_ci_low, r.diff_ci_high) == (1.0, 1.0) and r.exceeds_noise
    assert r.order_free_error == 0.0


def test_noisy_small_difference_does_not_exceed_noise(criteria):
    # 40 questions, the two orders differ on 3 of them (2 one way, 1 the other): d = 1/40.
    ab = [1] * 20 + [0] * 20
    ba = list(ab)
    ba[0], ba[1] = 0, 0
    ba[25] = 1
    r = row_of(compute_composability(pair("ft", "wanda", {"mmlu": ab}, {"mmlu": ba}), criteria=criteria), "mmlu")
    assert r.order_sensitivity == pytest.approx(1 / 40)
    assert r.diff_ci_low < 0 < r.diff_ci_high
    assert not r.exceeds_noise


def test_deterministic_criteria_ci_equals_point(criteria):
    ab = {"mmlu": [1, 0, 1, 0]}
    df = compute_composability(
        pair(
            "ft",
            "gptq",
            ab,
            ab,
            scores_ab={"avg_bits": 4.0, "sparsity": 0.0},
            scores_ba={"avg_bits": 4.25, "sparsity": 0.0},
        ),
        criteria=criteria,
    )
    r = row_of(df, "avg_bits")
    assert r.order_sensitivity == pytest.approx(0.25)
    assert (r.os_ci_low, r.os_ci_high) == (0.25, 0.25)
    assert (r.diff_ci_low, r.diff_ci_high) == (-0.25, -0.25)
    assert r.exceeds_noise  # deterministic: any difference is real
    assert r.n_items == 0
    assert math.isnan(r.order_free_error) and math.isnan(r.ofe_ci_low) and math.isnan(r.ofe_ci_high)
    s = row_of(df, "sparsity")
    assert s.order_sensitivity == 0.0 and not s.exceeds_noise


def test_rows_only_for_criteria_in_both_records(criteria):
    recs = pair(
        "ft",
        "wanda",
        {"mmlu": [1, 0]},
        {"mmlu": [1, 1]},
        scores_ab={"sparsity": 0.25, "edit_success": None},
        scores_ba={"edit_success": 0.5},
    )
    df = compute_composability(recs, criteria=criteria)
    assert list(df.criterion) == ["mmlu"]


def test_score_items_disagreement_is_logged(criteria, caplog):
    recs = pair("ft", "wanda", {"mmlu": [1, 0]}, {"mmlu": [1, 1]}, scores_ab={"mmlu": 0.9})
    with caplog.at_level(logging.WARNING, logger="benchmark.metrics"):
        r = row_of(compute_composability(recs, criteria=criteria), "mmlu")
    assert r.score_ab == 0.9  # the record's score is the point value
    assert "differs from its items" in caplog.text


def test_missing_items_give_nan_ci(criteria):
    recs = pair("ft", "wanda", {}, {}, scores_ab={"mmlu": 0.5}, scores_ba={"mmlu": 0.25})
    r = row_of(compute_composability(recs, criteria=criteria), "mmlu")
    assert r.order_free_error == pytest.approx(0.5)
    assert math.isnan(r.diff_ci_low) and math.isnan(r.ofe_ci_high)
    assert not r.exceeds_noise and r.n_items == 0
    assert r.significance == "unknown" and math.isnan(r.mde)  # not "within noise"


# ----------------------------------------------------------------------------- errors


def test_mismatched_item_lengths_raise(criteria):
    recs = pair("ft", "wanda", {"mmlu": [1, 0, 1]}, {"mmlu": [1, 0]})
    with pytest.raises(ItemsMismatchError, match=r"'ft' / 'wanda'.*'mmlu'.*ab.items\['mmlu'\]: 3.*: 2"):
        compute_composability(recs, criteria=criteria)


def test_items_missing_in_one_order_raise(criteria):
    recs = pair("ft", "wanda", {"mmlu": [1, 0]}, {}, scores_ba={"mmlu": 0.5})
    with pytest.raises(ItemsMismatchError, match="missing"):
        compute_composability(recs, criteria=criteria)


def test_bad_settings_raise(criteria):
    with pytest.raises(ValueError, match="confidence"):
        compute_composability([], confidence=95, criteria=criteria)
    with pytest.raises(ValueError, match="n_bootstrap"):
        compute_composability([], n_bootstrap=0, criteria=criteria)


# ----------------------------------------------------------------------------- pairing


def test_failed_records_and_missing_orders_are_skipped(criteria, caplog):
    items = {"mmlu": [1, 0, 1, 1]}
    recs = [
        record([], items),  # base model
        record(["ft"], items),  # single intervention
        record(["ft", "ft"], items),  # same intervention twice: not a pair
        *pair("ft", "wanda", items, items),  # complete
        record(["rmu", "wanda"], items),  # ba order failed
        record(["wanda", "rmu"], items, status="failed"),
        record(["ft", "gptq"], items),  # the other order never ran
    ]
    pairing = find_pairs(recs)
    assert [(ab.label, ba.label) for ab, ba in pairing.pairs] == [("ft -> wanda", "wanda -> ft")]
    assert {(i.a, i.b, i.present) for i in pairing.incomplete} == {
        ("ft", "gptq", "ft -> gptq"),
        ("rmu", "wanda", "rmu -> wanda"),
    }
    with caplog.at_level(logging.WARNING, logger="benchmark.metrics"):
        assert len(pair_records(recs)) == 1
    assert "only 'rmu -> wanda' succeeded" in caplog.text
    df = compute_composability(recs, criteria=criteria)
    assert set(zip(df.a, df.b)) == {("ft", "wanda")}


def test_pairs_grouped_by_model_and_profile():
    items = {"mmlu": [1, 0]}
    recs = [
        *pair("ft", "wanda", items, items, model_id="m1"),
        *pair("ft", "wanda", items, items, model_id="m2"),
        record(["ft", "wanda"], items, profile="default"),  # no ba in this profile
    ]
    pairing = find_pairs(recs)
    assert [ab.provenance.model_id for ab, _ in pairing.pairs] == ["m1", "m2"]
    assert len(pairing.incomplete) == 1 and pairing.incomplete[0].profile == "default"


def test_last_record_of_a_cell_wins(criteria):
    old = record(["ft", "wanda"], {"mmlu": [0, 0, 0, 0]})
    new = record(["ft", "wanda"], {"mmlu": [1, 1, 1, 1]})
    ba = record(["wanda", "ft"], {"mmlu": [1, 1, 0, 0]})
    failed_rerun = record(["ft", "wanda"], {}, status="failed")
    df = compute_composability([old, ba, new, failed_rerun], criteria=criteria)
    assert row_of(df, "mmlu").score_ab == 1.0


# ----------------------------------------------------------------------------- determinism


def _noisy_records() -> list[dict]:
    rng = np.random.default_rng(7)
    recs = []
    for a, b in (("ft", "wanda"), ("rmu", "wanda"), ("ft", "rmu")):
        mk = lambda: {  # noqa: E731
            "mmlu": rng.integers(0, 2, 50).tolist(),
            "edit_success": rng.uniform(0, 1, 10).tolist(),
            "wmdp_bio": rng.integers(0, 2, 30).tolist(),
            "wmdp_cyber": rng.integers(0, 2, 40).tolist(),
            "perplexity_nll": rng.uniform(100, 200, 8).tolist(),
            "perplexity_tokens": [64] * 8,
        }
        recs += pair(a, b, mk(), mk())
    return recs


def test_deterministic_for_a_seed_and_record_order(criteria):
    recs = _noisy_records()
    df1 = compute_composability(recs, n_bootstrap=300, seed=3, criteria=criteria)
    df2 = compute_composability(list(reversed(recs)), n_bootstrap=300, seed=3, criteria=criteria)
    pd.testing.assert_frame_equal(df1, df2)
    df3 = compute_composability(recs, n_bootstrap=300, seed=4, criteria=criteria)
    assert not df1[["diff_ci_low", "diff_ci_high"]].equals(df3[["diff_ci_low", "diff_ci_high"]])
    pd.testing.assert_frame_equal(df1[COLUMNS[:10]], df3[COLUMNS[:10]])  # point values do not depend on the seed
    assert len(df1) == 3 * 6  # edit_success, wmdp_bio, wmdp_cyber, wmdp, mmlu, perplexity per pair
    assert df1.dtypes["exceeds_noise"] == bool and df1.dtypes["n_items"].kind == "i"


def test_default_criteria_used_when_none_given():
    df = compute_composability(_noisy_records(), n_bootstrap=50)
    assert set(df.criterion) == {"mmlu", "edit_success", "wmdp_bio", "wmdp_cyber", "wmdp", "perplexity"}


def test_multinomial_and_index_resampling_agree():
    # The fast path (multinomial over distinct rows) and the index path are the same bootstrap.
    rng = np.random.default_rng(0)
    values = rng.integers(0, 2, size=(200, 2)).astype(float)
    fast = metrics._resampled_sums(values, 20000, np.random.default_rng(1))
    saved = metrics._MULTINOMIAL_MAX_DISTINCT
    try:
        metrics._MULTINOMIAL_MAX_DISTINCT = 0
        slow = metrics._resampled_sums(values, 20000, np.random.default_rng(2))
    finally:
        metrics._MULTINOMIAL_MAX_DISTINCT = saved
    for col in range(2):
        assert fast[:, col].mean() == pytest.approx(slow[:, col].mean(), rel=0.01)
        assert fast[:, col].std() == pytest.approx(slow[:, col].std(), rel=0.05)
    d_fast, d_slow = fast[:, 0] - fast[:, 1], slow[:, 0] - slow[:, 1]
    assert d_fast.std() == pytest.approx(d_slow.std(), rel=0.05)
    assert np.corrcoef(fast.T)[0, 1] == pytest.approx(np.corrcoef(slow.T)[0, 1], abs=0.03)


def test_fifty_pairs_all_criteria_benchmark(criteria, benchmark):
    """Speed is measured by pytest-benchmark (one round), never asserted on the wall clock."""
    rng = np.random.default_rng(0)

    def items():
        return {
            **{k: rng.uniform(0, 1, 50).round(2).tolist() for k in ALL_KEYS[:3]},
            **{k: rng.uniform(0, 1, 50).tolist() for k in ALL_KEYS[3:6]},
            "mmlu": rng.integers(0, 2, 2000).tolist(),
            "wmdp_bio": rng.integers(0, 2, 1273).tolist(),
            "wmdp_cyber": rng.integers(0, 2, 1987).tolist(),
            "perplexity_nll": rng.uniform(100, 200, 300).tolist(),
            "perplexity_tokens": [512] * 300,
        }

    recs = []
    for i in range(50):
        recs += pair(
            f"x{i:02d}",
            f"y{i:02d}",
            items(),
            items(),
            scores_ab={"avg_bits": 4.0, "sparsity": 0.0},
            scores_ba={"avg_bits": 4.0, "sparsity": 0.0},
        )
    df = benchmark.pedantic(
        compute_composability, args=(recs,), kwargs={"n_bootstrap": 1000, "criteria": criteria}, rounds=1, iterations=1
    )
    assert len(df) == 50 * 13


# ----------------------------------------------------------------------------- output


def test_write_composability(tmp_path, criteria):
    recs = pair(
        "ft",
        "gptq",
        {"mmlu": [1, 0, 1, 1]},
        {"mmlu": [1, 0, 0, 1]},
        scores_ab={"avg_bits": 4.0},
        scores_ba={"avg_bits": 4.0},
    )
    df = compute_composability(recs, n_bootstrap=100, criteria=criteria)
    settings = {"n_bootstrap": 100, "seed": 0, "confidence": 0.95}
    out = tmp_path / "results"
    csv_path, json_path = write_composability(df, out, settings)
    assert (csv_path.name, json_path.name) == ("composability.csv", "composability.json")
    back = pd.read_csv(csv_path)
    assert list(back.columns) == COLUMNS
    assert len(back) == 2
    payload = json.loads(json_path.read_text())
    assert payload["settings"] == settings
    assert len(payload["rows"]) == 2 and list(payload["rows"][0]) == COLUMNS
    bits = next(r for r in payload["rows"] if r["criterion"] == "avg_bits")
    assert bits["order_free_error"] is None  # NaN written as null
    assert bits["exceeds_noise"] is False and bits["n_items"] == 0
    assert sorted(p.name for p in out.iterdir()) == ["composability.csv", "composability.json"]  # no temp files left
    # Rewriting replaces the files.
    write_composability(df.iloc[:1], out, settings)
    assert len(pd.read_csv(csv_path)) == 1


def test_write_composability_rejects_missing_columns(tmp_path):
    with pytest.raises(ValueError, match="order_free_error"):
        write_composability(pd.DataFrame({"a": [1]}), tmp_path, {})


def test_empty_records_give_empty_table(tmp_path, criteria):
    df = compute_composability([], criteria=criteria)
    assert list(df.columns) == COLUMNS and len(df) == 0
    csv_path, _ = write_composability(df, tmp_path, {})
    assert Path(csv_path).read_text().strip() == ",".join(COLUMNS)
