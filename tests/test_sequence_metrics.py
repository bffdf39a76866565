"""Sequences of three (benchmark.sequence_metrics) on hand-computed triples."""

from __future__ import annotations

import json
import logging
import math

import numpy as np
import pandas as pd
import pytest

from benchmark.metrics import compute_composability, load_criteria
from benchmark.sequence_metrics import (
    ORDERS,
    SEQUENCE_COLUMNS,
    SWAP_COLUMNS,
    compute_sequences,
    find_triples,
    spread_statistics,
    swaps,
    write_sequences,
)

CATEGORIES = {"ft": "editing", "ga": "unlearning", "wanda(sparsity=0.25)": "compression"}
LABELS = ("ft", "ga", "wanda(sparsity=0.25)")  # already sorted: a = ft, b = ga, c = wanda


def rec(labels: tuple[str, ...], items: dict[str, list], scores: dict | None = None) -> dict:
    """A records.jsonl record (docs/FORMATS.md) whose scores are the means of its items unless given."""
    all_scores = {k: float(np.mean(v)) for k, v in items.items() if not k.startswith("perplexity_")}
    if "wmdp_bio" in all_scores:
        all_scores["wmdp"] = (all_scores["wmdp_bio"] + all_scores["wmdp_cyber"]) / 2
    if "perplexity_nll" in items:
        all_scores["perplexity"] = math.exp(sum(items["perplexity_nll"]) / sum(items["perplexity_tokens"]))
    all_scores.update(scores or {})
    return {
        "schema_version": 1,
        "cell_id": "-".join(labels),
        "status": "ok",
        "error": None,
        "label": " -> ".join(labels),
        "sequence": [{"name": s.split("(")[0], "category": CATEGORIES[s], "label": s} for s in labels],
        "scores": all_scores,
        "items": items,
        "provenance": {"model_id": "m", "profile": "triples", "dtype": "float32"},
    }


def ones(k: int, n: int = 40) -> list[int]:
    """k correct answers then n - k wrong ones: orders with more correct items contain the others' correct ones."""
    return [1] * k + [0] * (n - k)


def triple_records(correct: dict[str, int], n: int = 40) -> list[dict]:
    """The six orders of ft / ga / wanda with ``correct[order]`` of ``n`` MMLU items right."""
    out = []
    for order in ORDERS:
        labels = tuple(LABELS["abc".index(ch)] for ch in order)
        out.append(rec(labels, {"mmlu": ones(correct[order], n)}))
    return out


CLEAR = {"abc": 30, "acb": 28, "bac": 20, "bca": 29, "cab": 30, "cba": 30}


def test_six_orders_are_named_by_positions_and_the_swaps_are_the_hexagon_edges():
    assert ORDERS == ("abc", "acb", "bac", "bca", "cab", "cba")
    edges = {frozenset((o, s)) for _, _, _, o, s in swaps()}
    assert len(edges) == 6
    for a, b in map(tuple, edges):  # each edge swaps two adjacent positions
        assert sum(x != y for x, y in zip(a, b)) == 2 and any(a[i : i + 2] == b[i : i + 2][::-1] for i in (0, 1))
    degree = {o: sum(o in e for e in edges) for o in ORDERS}
    assert set(degree.values()) == {2}  # a cycle through all six orders


def test_ofe_spread_and_orders_on_a_hand_computed_triple():
    table, swap_table = compute_sequences(triple_records(CLEAR), n_bootstrap=500, criteria=load_criteria())
    row = table[table["criterion"] == "mmlu"].iloc[0]
    assert (row.a, row.b, row.c) == LABELS
    assert (row.a_category, row.b_category, row.c_category) == ("editing", "unlearning", "compression")
    assert [row[f"score_{o}"] for o in ORDERS] == [0.75, 0.7, 0.5, 0.725, 0.75, 0.75]
    assert row.order_free_error == pytest.approx(0.25) and row.best_order == "abc"  # 1 - 30/40, first of the ties
    assert row.order_sensitivity == pytest.approx(0.25) and (row.max_order, row.min_order) == ("abc", "bac")
    assert row.n_items == 40
    assert row.ofe_ci_low <= 0.25 <= row.ofe_ci_high and row.os_ci_low <= 0.25 <= row.os_ci_high
    # 10 paired items differ between abc and bac (se of the difference 0.068): well beyond the noise spread
    assert row.noise_spread < 0.25 and row.exceeds_noise and row.significance == "beyond_noise"
    terms = swap_table[swap_table["criterion"] == "mmlu"].set_index(["order", "swapped_order"])["diff"]
    assert terms.to_dict() == pytest.approx(
        {
            ("abc", "bac"): 0.25,
            ("cab", "cba"): 0.0,  # ft / ga, with wanda after, then before
            ("acb", "cab"): -0.05,
            ("bac", "bca"): -0.225,  # ft / wanda, ga after, then before
            ("bca", "cba"): -0.025,
            ("abc", "acb"): 0.05,  # ga / wanda, ft after, then before
        }
    )
    by_edge = swap_table.set_index(["order", "swapped_order"])
    assert by_edge.loc[("abc", "bac"), "significance"] == "beyond_noise"
    assert by_edge.loc[("cab", "cba"), "significance"] == "within_noise"
    assert by_edge.loc[("abc", "bac"), "pair"] == "ft / ga" and by_edge.loc[("abc", "bac"), "other_position"] == "after"
    # the spread is a sum of swap terms along a path of the hexagon: abc -> bac is one edge
    assert row.score_abc - row.score_bac == pytest.approx(terms[("abc", "bac")])


def test_a_spread_of_one_item_is_within_noise():
    close = {"abc": 20, "acb": 21, "bac": 20, "bca": 21, "cab": 20, "cba": 21}
    table, _ = compute_sequences(triple_records(close), n_bootstrap=500, criteria=load_criteria())
    row = table[table["criterion"] == "mmlu"].iloc[0]
    assert row.order_sensitivity == pytest.approx(1 / 40)
    assert row.noise_spread >= 1 / 40 and not row.exceeds_noise and row.significance == "within_noise"


def test_two_orders_flag_as_the_pairs_test_does():
    """The max-type test on two orders is the pair's two-sided test: same verdict on a clear and a null case."""
    criteria = load_criteria()
    rng = np.random.default_rng(3)
    for shift, expected in ((12, True), (0, False)):
        ab = rng.integers(0, 2, 200)
        ba = ab.copy()
        ba[np.flatnonzero(ab == 1)[:shift]] = 0
        pair = [rec(("ft", "ga"), {"mmlu": ab.tolist()}), rec(("ga", "ft"), {"mmlu": ba.tolist()})]
        row = compute_composability(pair, n_bootstrap=2000, criteria=criteria).set_index("criterion").loc["mmlu"]
        reps = rng.integers(0, 200, size=(2000, 200))
        values = np.column_stack([ab, ba])[reps].mean(axis=1)
        stats = spread_statistics(np.array([ab.mean(), ba.mean()]), values, criteria["mmlu"], 0.95)
        assert stats["order_sensitivity"] == pytest.approx(row.order_sensitivity)
        assert bool(row.exceeds_noise) is expected and stats["exceeds_noise"] is expected


def test_lower_is_better_and_mean_of_criteria():
    """WMDP: the error is the accuracy, bio and cyber resampled separately."""
    bio = {"abc": 5, "acb": 6, "bac": 7, "bca": 8, "cab": 9, "cba": 4}
    records = []
    for order in ORDERS:
        labels = tuple(LABELS["abc".index(ch)] for ch in order)
        records.append(rec(labels, {"wmdp_bio": ones(bio[order], 20), "wmdp_cyber": ones(10, 20)}))
    table, _ = compute_sequences(records, n_bootstrap=300, criteria=load_criteria())
    row = table.set_index("criterion").loc["wmdp"]
    assert row.order_free_error == pytest.approx((4 / 20 + 10 / 20) / 2) and row.best_order == "cba"
    assert row.order_sensitivity == pytest.approx((9 - 4) / 20 / 2)
    assert row.n_items == 40


def test_a_diverged_order_and_a_deterministic_criterion():
    criteria = load_criteria()
    records = triple_records(CLEAR)
    for r in records:
        r["items"]["perplexity_nll"] = [10.0, 12.0]
        r["items"]["perplexity_tokens"] = [5, 5]
        r["scores"]["perplexity"] = math.exp(22 / 10)
        r["scores"]["sparsity"] = 0.25 if "wanda" in r["label"].split(" -> ")[-1] else 0.2
    records[3]["scores"]["perplexity"] = "diverged"  # bca
    table, swap_table = compute_sequences(records, n_bootstrap=200, criteria=criteria)
    ppl = table.set_index("criterion").loc["perplexity"]
    assert ppl.score_bca == math.inf and ppl.order_sensitivity == math.inf and ppl.significance == "diverged"
    assert ppl.order_free_error == pytest.approx(math.exp(2.2)) and ppl.best_order != "bca"
    assert set(
        swap_table[
            (swap_table.criterion == "perplexity") & ((swap_table.order == "bca") | (swap_table.swapped_order == "bca"))
        ].significance
    ) == {"diverged"}
    sparsity = table.set_index("criterion").loc["sparsity"]  # descriptive: no OFE, any spread is real
    assert math.isnan(sparsity.order_free_error) and sparsity.order_sensitivity == pytest.approx(0.05)
    assert sparsity.significance == "beyond_noise" and sparsity.n_items == 0


def test_records_without_items_give_unknown_significance():
    records = triple_records(CLEAR)
    for r in records:
        r["items"] = {}
    table, swap_table = compute_sequences(records, criteria=load_criteria())
    row = table.set_index("criterion").loc["mmlu"]
    assert row.significance == "unknown" and not row.exceeds_noise and math.isnan(row.os_ci_low)
    assert row.order_sensitivity == pytest.approx(0.25)
    assert set(swap_table.significance) == {"unknown"}


def test_incomplete_triples_are_skipped_with_a_line(caplog):
    records = triple_records(CLEAR)[:-1]
    with caplog.at_level(logging.WARNING):
        table, swap_table = compute_sequences(records, criteria=load_criteria())
    assert table.empty and swap_table.empty and list(table.columns) == SEQUENCE_COLUMNS
    assert "orders cba missing" in caplog.text
    complete, incomplete = find_triples(records)
    assert complete == [] and len(incomplete) == 1


def test_pair_results_do_not_change_when_triples_are_present():
    criteria = load_criteria()
    rng = np.random.default_rng(0)
    pairs = [
        rec(("ft", "ga"), {"mmlu": rng.integers(0, 2, 40).tolist()}),
        rec(("ga", "ft"), {"mmlu": rng.integers(0, 2, 40).tolist()}),
    ]
    alone = compute_composability(pairs, n_bootstrap=200, criteria=criteria)
    both = compute_composability(pairs + triple_records(CLEAR), n_bootstrap=200, criteria=criteria)
    pd.testing.assert_frame_equal(alone, both)
    table, _ = compute_sequences(pairs, criteria=criteria)
    assert table.empty


def test_seeded_and_written_atomically(tmp_path):
    criteria = load_criteria()
    records = triple_records(CLEAR)
    first = compute_sequences(records, n_bootstrap=300, seed=1, criteria=criteria)
    again = compute_sequences(list(reversed(records)), n_bootstrap=300, seed=1, criteria=criteria)
    pd.testing.assert_frame_equal(first[0], again[0])
    records[2]["scores"]["mmlu"] = "diverged"
    table, swap_table = compute_sequences(records, n_bootstrap=50, criteria=criteria)
    paths = write_sequences(table, swap_table, tmp_path, {"n_bootstrap": 50})
    assert [p.name for p in paths] == ["sequences.csv", "sequence_swaps.csv", "sequences.json"]
    assert list(pd.read_csv(paths[0]).columns) == SEQUENCE_COLUMNS
    assert list(pd.read_csv(paths[1]).columns) == SWAP_COLUMNS
    data = json.loads(paths[2].read_text())
    mmlu = next(r for r in data["sequences"] if r["criterion"] == "mmlu")
    assert mmlu["score_bac"] == "diverged" and mmlu["significance"] == "diverged"
    assert not list(tmp_path.glob("*.tmp*"))


def test_cli_metrics_writes_and_prints_the_triples(tmp_path):
    """``compose-bench metrics`` on a records file with a triple: composability files as before, plus sequences."""
    import subprocess
    import sys

    records = triple_records(CLEAR)
    path = tmp_path / "records.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    proc = subprocess.run(
        [sys.executable, "-m", "benchmark.cli", "metrics", str(path), "--bootstrap", "100"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "Sequences of three" in proc.stdout and "OS 0.250*" in proc.stdout
    table = pd.read_csv(tmp_path / "sequences.csv")
    assert table.set_index("criterion").loc["mmlu", "order_sensitivity"] == pytest.approx(0.25)
    assert len(pd.read_csv(tmp_path / "sequence_swaps.csv")) == 6
    assert pd.read_csv(tmp_path / "composability.csv").empty  # no pair in these records
