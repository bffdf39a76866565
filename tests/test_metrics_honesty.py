"""Honest metrics: diverged models, unknown significance, the minimum detectable effect,
duplicate and wrong-typed records, one-line CLI errors. Hand-computed cases, no model."""

from __future__ import annotations

import json
import logging
import math
import os
import subprocess
import sys

import pytest

from benchmark.evaluation.multiple_choice import answer_probability
from benchmark.metrics import (
    compute_composability,
    load_criteria,
    mde_from_se,
    minimum_detectable_effect,
    power_summary,
    write_composability,
)
from benchmark.records import RecordsError, read_records
from tests.test_metrics import pair, record, row_of

Z_SUM = 1.959963984540054 + 0.8416212335729143  # z_{0.975} + z_{0.80}


@pytest.fixture(scope="module")
def criteria():
    return load_criteria()


# ----------------------------------------------------------------------------- power


def test_mde_by_hand():
    # d = [1, 0, 0, -1]: mean 0, population variance 2/4, se = sqrt(0.5)/sqrt(4) = 0.353553
    assert minimum_detectable_effect([1, 1, 0, 0], [0, 1, 0, 1]) == pytest.approx(Z_SUM * math.sqrt(0.5) / 2, rel=1e-9)
    assert Z_SUM * math.sqrt(0.5) / 2 == pytest.approx(0.990509, abs=1e-6)
    assert mde_from_se(0.1) == pytest.approx(0.280159, abs=1e-6)
    assert mde_from_se(0.1, confidence=0.9, power=0.5) == pytest.approx(0.1 * 1.644854, abs=1e-6)  # power 0.5: z = 0
    assert math.isnan(minimum_detectable_effect([1, 0, 1], [1, 0, 1]))  # orders agree on every item: not estimable


def test_mde_in_the_table_and_the_summary(criteria):
    recs = pair(
        "ft",
        "wanda",
        {"mmlu": [1, 1, 0, 0], "wmdp_bio": [1, 0], "wmdp_cyber": [1, 1, 1, 1]},
        {"mmlu": [0, 1, 0, 1], "wmdp_bio": [0, 1], "wmdp_cyber": [1, 1, 1, 0]},
    )
    df = compute_composability(recs, n_bootstrap=200, criteria=criteria)
    assert row_of(df, "mmlu").mde == pytest.approx(0.990509, abs=1e-6)
    # wmdp = (bio + cyber) / 2, subsets independent: se = sqrt(se_bio^2 + se_cyber^2) / 2
    se_bio = 1.0 / math.sqrt(2)  # d = [1, -1]: std 1
    se_cyber = math.sqrt(3 / 16) / 2  # d = [0, 0, 0, 1]: variance 3/16
    assert row_of(df, "wmdp").mde == pytest.approx(Z_SUM * math.sqrt(se_bio**2 + se_cyber**2) / 2, rel=1e-9)
    text = power_summary(df, ["mmlu", "wmdp"])
    assert "80% power" in text and "mmlu" in text and "0.991" in text


# ----------------------------------------------------------------------------- diverged


def _diverged_ab(recs: list[dict], scores: dict, items: dict) -> list[dict]:
    """The first record of a pair as the harness writes a diverged model: "diverged" scores, null items."""
    recs[0]["scores"].update(scores)
    recs[0]["items"].update(items)
    return recs


def test_a_diverged_order_is_worst_and_keeps_its_pair(criteria, tmp_path):
    items = {"perplexity_nll": [30.0, 40.0], "perplexity_tokens": [10, 10], "mmlu": [1, 0, 0, 0]}
    recs = _diverged_ab(
        pair("ft", "wanda", items, items),
        {"perplexity": "diverged", "mmlu": "diverged"},
        {"perplexity_nll": [None, 40.0], "mmlu": [None, None, None, None]},
    )
    df = compute_composability(recs, n_bootstrap=100, criteria=criteria)
    ppl = row_of(df, "perplexity")
    assert ppl.score_ab == math.inf and ppl.score_ba == pytest.approx(math.exp(3.5))
    assert ppl.order_free_error == pytest.approx(math.exp(3.5))  # the order that did not diverge
    assert ppl.order_sensitivity == math.inf and ppl.significance == "diverged" and ppl.exceeds_noise
    mmlu = row_of(df, "mmlu")  # higher is better: diverged is -inf, its error +inf
    assert mmlu.score_ab == -math.inf and mmlu.order_free_error == pytest.approx(0.75)
    assert mmlu.significance == "diverged"
    _, json_path = write_composability(df, tmp_path, {})
    rows = json.loads(json_path.read_text())["rows"]
    ppl_json = next(r for r in rows if r["criterion"] == "perplexity")
    assert ppl_json["score_ab"] == "diverged" and ppl_json["order_sensitivity"] == "diverged"


def test_an_old_null_score_with_a_null_item_reads_as_diverged(criteria):
    ok = {"perplexity_nll": [30.0, 40.0], "perplexity_tokens": [10, 10]}
    recs = _diverged_ab(pair("ft", "wanda", ok, ok), {"perplexity": None}, {"perplexity_nll": [None, 40.0]})
    assert row_of(compute_composability(recs, n_bootstrap=50, criteria=criteria), "perplexity").score_ab == math.inf


def test_both_orders_diverged(criteria):
    recs = pair("ft", "wanda", {}, {}, scores_ab={"perplexity": "diverged"}, scores_ba={"perplexity": "diverged"})
    r = row_of(compute_composability(recs, criteria=criteria), "perplexity")
    assert r.order_free_error == math.inf and r.order_sensitivity == 0.0
    assert r.significance == "diverged" and not r.exceeds_noise


def test_unknown_significance_without_items(criteria):
    recs = pair("ft", "wanda", {}, {}, scores_ab={"wmdp_prob": 0.3}, scores_ba={"wmdp_prob": 0.2})
    r = row_of(compute_composability(recs, criteria=criteria), "wmdp_prob")
    assert r.significance == "unknown" and not r.exceeds_noise and math.isnan(r.mde)
    assert "not estimable (no per-item scores)" in power_summary(
        compute_composability(recs, criteria=criteria), ["wmdp_prob"]
    )


# ----------------------------------------------------------------------------- records


def _write(path, recs):
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    return path


def test_duplicate_cell_is_an_error_naming_file_and_line(tmp_path):
    a = record(["ft", "wanda"], {"mmlu": [1, 0]}, cell_id="c1")
    b = record(["wanda", "ft"], {"mmlu": [1, 1]}, cell_id="c2")
    path = _write(tmp_path / "records.jsonl", [a, b, a])
    with pytest.raises(
        RecordsError, match=r"records.jsonl:3: duplicate cell 'c1' \(ft -> wanda\), already recorded at line 1"
    ):
        read_records(path)


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("scores", {"mmlu": "0.5"}, r"records.jsonl:2: cell '\S+': field 'scores.mmlu': .*number.* \(got '0.5'\)$"),
        ("scores", {"mmlu": True}, r"records.jsonl:2: cell '\S+': field 'scores.mmlu': .*number.* \(got True\)$"),
        ("items", {"mmlu": [1, "x"]}, r"records.jsonl:2: cell '\S+': field 'items.mmlu.1': .*number.* \(got 'x'\)$"),
        ("items", {"mmlu": 3}, r"records.jsonl:2: cell '\S+': field 'items.mmlu': .*list \(got 3\)$"),
    ],
)
def test_wrong_types_are_errors_naming_file_and_line(tmp_path, field, value, message):
    good = record(["ft", "wanda"], {"mmlu": [1, 0]})
    bad = record(["wanda", "ft"], {"mmlu": [1, 1]})
    bad[field] = value
    with pytest.raises(RecordsError, match=message):
        read_records(_write(tmp_path / "records.jsonl", [good, bad]))


def test_diverged_and_null_scores_are_accepted(tmp_path):
    rec = record(
        ["ft", "wanda"],
        {"perplexity_nll": [1.0], "perplexity_tokens": [3]},
        scores={"perplexity": "diverged", "mmlu": None},
    )
    rec["items"]["perplexity_nll"] = [None]
    assert read_records(_write(tmp_path / "records.jsonl", [rec]))[0]["scores"]["perplexity"] == "diverged"


def test_two_records_of_one_ordered_pair_warn_which_is_kept(criteria, caplog):
    old = record(["ft", "wanda"], {"mmlu": [0, 0]}, cell_id="old-cell")
    new = record(["ft", "wanda"], {"mmlu": [1, 1]}, cell_id="new-cell")
    ba = record(["wanda", "ft"], {"mmlu": [1, 0]})
    with caplog.at_level(logging.WARNING, logger="benchmark.metrics"):
        df = compute_composability([old, ba, new], criteria=criteria)
    assert row_of(df, "mmlu").score_ab == 1.0
    assert "kept record 'new-cell'" in caplog.text and "dropped record 'old-cell'" in caplog.text


def test_metrics_cli_errors_are_one_line(tmp_path):
    recs = pair("ft", "wanda", {"mmlu": [1, 0, 1]}, {"mmlu": [1, 0]})
    path = _write(tmp_path / "records.jsonl", recs)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "benchmark.cli", "metrics", str(path), "--bootstrap", "10"],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "must hold the same evaluation items" in lines[0]


# ----------------------------------------------------------------------------- the MCQ probability


def test_answer_probability_by_hand():
    # softmax([-1, -2, -3, -4])[0] = 1 / (1 + e^-1 + e^-2 + e^-3)
    assert answer_probability([-1.0, -2.0, -3.0, -4.0], 0) == pytest.approx(1 / 1.5530017, rel=1e-6)
    assert answer_probability([-1000.0, -1001.0], 0) == pytest.approx(0.7310586, rel=1e-6)  # no underflow
    assert math.isnan(answer_probability([float("nan"), -1.0], 1))


def test_markdown_summary_shows_the_continuous_scores_and_diverged():
    from benchmark.summary import markdown_summary

    rec = record(
        ["ft"], {"mmlu": [1, 0], "mmlu_prob": [0.5, 0.25]}, scores={"perplexity": "diverged", "wmdp_prob": 0.3}
    )
    text = markdown_summary([rec], [], set())
    header = next(line for line in text.splitlines() if line.startswith("| cell"))
    assert "MMLU p" in header and "WMDP p" in header
    row = next(line for line in text.splitlines() if line.startswith("| ft"))
    assert "| 0.375 |" in row and "| 0.300 |" in row and "| diverged |" in row


def test_effects_against_base_by_hand(criteria):
    from benchmark.metrics import effects_against_base

    base = record([], {"mmlu": [1, 1, 0, 0]})
    base["sequence"], base["label"] = [], "base"
    ga = record(["ga"], {"mmlu": [0, 1, 0, 1]})
    df = effects_against_base([base, ga], ["mmlu"], n_bootstrap=200, criteria=criteria)
    (row,) = df.to_dict(orient="records")
    assert row["label"] == "ga" and row["diff"] == 0.0 and row["base"] == 0.5
    assert row["mde"] == pytest.approx(0.990509, abs=1e-6)  # d = [-1, 0, 0, 1], as in test_mde_by_hand
    assert row["significance"] == "within_noise"
