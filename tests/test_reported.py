"""The paper's reported Llama-3-8B results as records: import, metrics, the views and the Python API.

Reads the real table in ``shared/data/paper/llama3_8b_compositions.csv`` (as the paper's authors
published it) and the real smoke fixture; the expected composability figures are recomputed here
from the CSV with plain pandas, independently of :mod:`benchmark.metrics`.
"""

from __future__ import annotations

import copy
import json
import math
import shutil

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from benchmark.cli import app as cli
from benchmark.paths import baselines_dir
from benchmark.reported import PAPER_CSV, PAPER_NAMES, ReportedError, records_from_csv
from benchmark.results import load, reproduce_command
from benchmark.stores.metadata import metadata_from_folders
from leaderboard.data import build_board
from leaderboard.matrices import pair_matrix, pair_rows
from leaderboard.ranking import SCORE_COLUMN, category_ranking
from leaderboard_helpers import FIXTURES

PAPER = ("meta-llama/Meta-Llama-3-8B", "paper", "reported")
HEADLINE = {"bits": 4, "sparsity": 0.25}
CRITERIA = {
    "edit_success": "edit_success",
    "generalization": "generalization",
    "locality": "locality",
    "avg_wmdp": "wmdp",
    "mmlu": "mmlu",
    "wikitext_ppl": "perplexity",
}
HIGHER_IS_BETTER = {"edit_success", "generalization", "locality", "mmlu"}
CATEGORY = {
    "FT": "editing",
    "LoRA": "editing",
    "MEMIT": "editing",
    "GA": "unlearning",
    "GD": "unlearning",
    "RMU": "unlearning",
    "GPTQ": "compression",
    "AWQ": "compression",
    "SparseGPT": "compression",
    "Wanda": "compression",
}


@pytest.fixture(scope="module")
def csv_path(data_dir):
    return data_dir / PAPER_CSV


def label_of(method: str, level: float) -> str:
    name = PAPER_NAMES[method]
    if isinstance(level, float) and math.isnan(level):
        return name
    return f"{name}(bits={int(level)})" if method in ("GPTQ", "AWQ") else f"{name}(sparsity={level:g})"


def expected_metrics(csv_path) -> pd.DataFrame:
    """OFE and OS of every pair with both orders in the CSV, straight from the paper's definitions."""
    df = pd.read_csv(csv_path)
    df = df[df["second"] != "None"].dropna(subset=["second"])
    df = df.assign(
        x=[label_of(m, l) for m, l in zip(df["first"], df["first_level"])],
        y=[label_of(m, l) for m, l in zip(df["second"], df["second_level"])],
    )
    by_order = {(r.x, r.y): r for r in df.itertuples(index=False)}
    rows = []
    for (x, y), ab in by_order.items():
        if x > y or (y, x) not in by_order:
            continue
        ba = by_order[(y, x)]
        for column, criterion in CRITERIA.items():
            s_ab, s_ba = getattr(ab, column), getattr(ba, column)
            # a diverged model (inf perplexity) is worst: the other order gives the OFE, the OS is infinite
            # (zero where both orders diverged)
            err = (lambda s: 1 - s) if criterion in HIGHER_IS_BETTER else (lambda s: s)
            both = np.isinf(s_ab) and np.isinf(s_ba)
            rows.append(
                {
                    "a": x,
                    "b": y,
                    "criterion": criterion,
                    "ofe": min(err(s_ab), err(s_ba)),
                    "os": 0.0 if both else abs(s_ab - s_ba),
                    "diverged": bool(np.isinf(s_ab) or np.isinf(s_ba)),
                }
            )
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def store(tmp_path_factory, csv_path):
    """A local store holding the imported paper results and the real smoke run."""
    root = tmp_path_factory.mktemp("paper-store")
    result = CliRunner().invoke(cli, ["import-reported", "--store", str(root), "--csv", str(csv_path)])
    assert result.exit_code == 0, result.output
    assert "310 reported records" in result.output and "310 record(s) added" in result.output
    shutil.copytree(FIXTURES / "smoke", root / "smoke")
    return root


@pytest.fixture(scope="module")
def results(store):
    return load(store)


@pytest.fixture(scope="module")
def paper_board(results):
    return build_board(results.snapshot).select(*PAPER)


def test_import_writes_310_marked_records_once(store, csv_path, results):
    paper = results.records[results.records["profile"] == "paper"]
    assert len(paper) == 310 and paper["reported"].all() and (paper["status"] == "ok").all()
    assert set(paper["model_id"]) == {PAPER[0]} and set(paper["dtype"]) == {"reported"}
    assert paper["finished_at"].isna().all() and paper["harness_version"].isna().all()
    record = next(r for r in results.snapshot.records if r.get("label") == "ft -> gptq(bits=4)")
    assert record["items"] == {} and record["reported"]["re_run"] is False
    assert record["reported"]["per_item_scores"] is False and "2407.06483" in record["reported"]["source"]
    assert record["scores"]["edit_success"] == 0.79 and record["sequence"][1]["level"] == {"bits": 4}
    again = next(r for r in results.snapshot.records if r["cell_id"] == _cell("gptq(bits=4)", "ft", results))
    assert again["recompressed_with"] == "gptq(bits=4)" and again["label"].endswith("-> gptq(bits=4) (re-applied)")
    assert (
        next(r for r in results.snapshot.records if r["cell_id"] == _cell("awq(bits=4)", "ft", results))[
            "recompressed_with"
        ]
        is None
    )  # the paper did not re-apply AWQ
    diverged = next(r for r in results.snapshot.records if r.get("label") == "ga")
    assert diverged["scores"]["perplexity"] == "diverged" and diverged["reported"]["diverged"] == ["perplexity"]
    again = CliRunner().invoke(cli, ["import-reported", "--store", str(store), "--csv", str(csv_path)])
    assert again.exit_code == 0 and "nothing new (310 record(s) already there" in again.output


def _cell(first: str, second: str, results) -> str:
    rows = results.records[(results.records["first"] == first) & (results.records["second"] == second)]
    assert len(rows) == 1, (first, second)
    return rows["cell_id"].item()


def test_metrics_match_the_paper_definitions_computed_from_the_csv(csv_path, results):
    got = results.metrics[results.metrics["reported"]]
    assert set(zip(got["model_id"], got["profile"], got["dtype"])) == {PAPER}
    expected = expected_metrics(csv_path)
    assert len(expected) == 846 and expected["diverged"].sum() == 30  # 141 pairs x 6 criteria; 30 perplexities diverged
    merged = expected.merge(got, on=["a", "b", "criterion"], how="left", validate="one_to_one")
    assert merged["order_free_error"].notna().all()
    assert (merged["significance"] == np.where(merged["diverged"], "diverged", "unknown")).all()
    np.testing.assert_allclose(merged["order_free_error"], merged["ofe"], atol=1e-9)
    np.testing.assert_allclose(merged["order_sensitivity"], merged["os"], atol=1e-9)
    item_criteria = got[got["criterion"] != "avg_bits"]
    # no items, no CI; except where both orders diverged, whose OFE is infinite for certain
    certain = np.isinf(item_criteria["order_free_error"])
    assert certain.sum() == 23 and np.isinf(item_criteria["ofe_ci_low"][certain]).all()
    assert item_criteria["ofe_ci_low"][~certain].isna().all() and (item_criteria["n_items"] == 0).all()
    ft_gptq = got[(got["a"] == "ft") & (got["b"] == "gptq(bits=4)") & (got["criterion"] == "edit_success")]
    assert ft_gptq["order_free_error"].item() == pytest.approx(0.21)  # 1 - max(0.79, 0.44): FT first is better
    assert ft_gptq["order_sensitivity"].item() == pytest.approx(0.35)


def test_metrics_agree_with_the_authors_published_composability_figures(results):
    """The authors' OFE / OS (4 decimals, from unrounded means) vs ours from the 2-decimal table.

    Each score in the CSV is rounded to 0.005, so an OFE (one score) can differ by 0.005 and an
    OS (a difference of two) by 0.01; nothing else may differ.
    """
    published = pd.read_csv(FIXTURES / "paper" / "published_composability_4bit_0.25.csv")
    assert len(published) == 165
    got = results.metrics[results.metrics["reported"]]
    merged = published.merge(got, on=["a", "b", "criterion"], suffixes=("_published", ""), validate="one_to_one")
    assert len(merged) == 165
    ofe_gap = (merged["order_free_error"] - merged["order_free_error_published"]).abs()
    os_gap = (merged["order_sensitivity"] - merged["order_sensitivity_published"]).abs()
    assert ofe_gap.max() <= 0.005 + 1e-9, merged.loc[ofe_gap.idxmax()].to_dict()
    assert os_gap.max() <= 0.01 + 1e-9, merged.loc[os_gap.idxmax()].to_dict()


def test_reported_and_rerun_results_are_never_in_one_board(results):
    board = build_board(results.snapshot)
    smoke = board.select("HuggingFaceTB/SmolLM2-135M-Instruct", "smoke")
    paper = board.select(*PAPER)
    assert paper.reported and not smoke.reported
    assert len(paper.records) == 310 and len(smoke.records) == 10
    assert set(paper.metrics["dtype"]) == {"reported"} and "reported" not in set(smoke.metrics["dtype"])


def test_detail_says_significance_is_unknown_for_reported_pairs(paper_board):
    from leaderboard.detail import pairs_table

    table = pairs_table(paper_board, "ft", ["edit_success"])
    assert len(table) == 25  # 3 unlearners and 22 compressor levels
    assert set(table["beyond noise"]) == {"unknown (reported: no per-item scores)"}
    assert set(table["OFE 95% CI"]) == {""}


def test_headline_levels_give_ten_by_ten_matrices(paper_board):
    assert paper_board.level_values("bits") == [2, 3, 4, 5, 6, 8]
    assert paper_board.level_default("bits") == 4 and paper_board.level_default("sparsity") == 0.25
    labels, values, hover = pair_matrix(paper_board, "edit_success", "order_free_error", HEADLINE)
    assert labels == [
        "ft",
        "lora",
        "memit",
        "ga",
        "gd",
        "rmu",
        "awq(bits=4)",
        "gptq(bits=4)",
        "sparsegpt(sparsity=0.25)",
        "wanda(sparsity=0.25)",
    ]
    i, j = labels.index("ft"), labels.index("gptq(bits=4)")
    assert values[i][j] == pytest.approx(0.21)
    assert "score ft first: 0.790" in hover[i][j] and "score gptq(bits=4) first: 0.440" in hover[i][j]
    assert "unknown (reported" in hover[i][j] and "compose-bench run --profile paper" in hover[i][j]
    assert len(pair_matrix(paper_board, "edit_success", "order_free_error", {"bits": 2, "sparsity": 0.75})[0]) == 10
    assert len(pair_matrix(paper_board, "edit_success", "order_free_error")[0]) == 28  # every level: unreadable


@pytest.mark.parametrize("category", ["editing", "unlearning", "compression"])
def test_each_category_ranking_matches_the_csv(csv_path, paper_board, category):
    expected = expected_metrics(csv_path)
    kept = set(paper_board.labels_at(HEADLINE))
    expected = expected[expected["a"].isin(kept) & expected["b"].isin(kept)]
    table = category_ranking(paper_board, category, ["edit_success", "wmdp", "mmlu"], HEADLINE)
    members = {
        label_of(m, float(l))
        for m, c in CATEGORY.items()
        if c == category
        for l in ([4.0] if m in ("GPTQ", "AWQ") else [0.25] if m in ("SparseGPT", "Wanda") else [math.nan])
    }
    assert set(table["intervention"]) == members
    own = {"editing": ["edit_success", "generalization", "locality"], "unlearning": ["wmdp"], "compression": ["mmlu"]}[
        category
    ]
    for row in table.to_dict("records"):
        mine = expected[(expected["a"] == row["intervention"]) | (expected["b"] == row["intervention"])]
        for criterion in ["edit_success", "wmdp", "mmlu", *own]:
            sel = mine[mine["criterion"] == criterion]
            assert row[f"{criterion} OFE"] == pytest.approx(round(sel["ofe"].mean(), 3), abs=1e-9)
            assert row[f"{criterion} OS"] == pytest.approx(round(sel["os"].mean(), 3), abs=1e-9)
        score = mine[mine["criterion"].isin(own)]["ofe"].mean()
        assert row[SCORE_COLUMN] == pytest.approx(round(score, 3), abs=1e-9)
        assert row["source"] == "reported in the paper, not re-run" and row["order effects beyond noise"].startswith(
            "unknown"
        )
    assert table[SCORE_COLUMN].is_monotonic_increasing and table["rank"].tolist() == list(range(1, len(table) + 1))


def test_python_api_frames_and_runs(results, store):
    runs = results.runs.set_index("profile")
    assert runs.loc["paper", "ok"] == 310 and runs.loc["paper", "failed"] == 0
    assert runs.loc["paper", "source"] == "reported in the paper, not re-run"
    assert runs.loc["smoke", "ok"] == 10 and runs.loc["smoke", "harness_version"] == "0.1.0+g2d83e08c608d"
    assert runs.loc["smoke", "reproduce"].startswith(
        "git checkout 2d83e08c608d && compose-bench run --profile smoke --model HuggingFaceTB/SmolLM2-135M-Instruct"
    )
    assert "ft sha256:ff0ca5532a9e" in runs.loc["smoke", "reproduce"]
    assert results.failures.empty
    smoke = results.records[results.records["profile"] == "smoke"]
    assert not smoke["reported"].any() and "score:mmlu" in results.records.columns
    assert results.metrics.loc[~results.metrics["reported"], "profile"].eq("smoke").all()


def test_failed_cells_are_listed_with_a_one_line_reason(tmp_path):
    """A test-only copy of a real smoke record, marked failed with a multi-line reason (profile `failure-test`)."""
    from benchmark.records import read_records

    record = copy.deepcopy(next(r for r in read_records(FIXTURES / "smoke") if r["label"] == "ga"))
    record.update(
        status="failed",
        scores={},
        items={},
        error="ga: returned non-finite weights in model.layers.3.mlp.down_proj\nTraceback (most recent call)",
    )
    record["provenance"]["profile"] = "failure-test"
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "records.jsonl").write_text(json.dumps(record) + "\n")
    results = load(tmp_path)
    assert results.runs[["cells", "ok", "failed"]].values.tolist() == [[1, 0, 1]]
    assert results.failures["reason"].tolist() == ["ga: returned non-finite weights in model.layers.3.mlp.down_proj"]
    assert results.failures["label"].tolist() == ["ga"]


def test_reproduce_command_of_a_pair_names_both_submissions(results):
    board = build_board(results.snapshot).select("HuggingFaceTB/SmolLM2-135M-Instruct", "smoke")
    rows = pair_rows(board, "mmlu", {"sparsity": 0.25})
    command = rows.set_index(["a", "b"]).loc[("ft", "ga"), "reproduce"]
    assert "--profile smoke" in command and "ft sha256:ff0ca5532a9e" in command and "ga sha256:c1a469d553d0" in command
    assert "wanda" not in command
    assert reproduce_command([]) == ""


@pytest.mark.parametrize(
    "column, value, message",
    [
        ("first", "ROME", "field 'first' names an unknown method 'ROME'"),
        ("mmlu", "n/a", "field 'mmlu' is not a number: 'n/a'"),
        ("first_level", "", "field 'first_level' is empty but SparseGPT has levels (sparsity)"),
    ],
)
def test_bad_rows_get_a_one_line_error_naming_line_and_field(tmp_path, csv_path, column, value, message):
    df = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    row = int(df.index[df["first"] == "SparseGPT"][0])
    df.loc[row, column] = value
    bad = tmp_path / "bad.csv"
    df.to_csv(bad, index=False)
    with pytest.raises(ReportedError) as info:
        records_from_csv(bad, metadata_from_folders([baselines_dir()]))
    text = str(info.value)
    assert text.startswith(f"{bad}:{row + 2}: ") and message in text and "\n" not in text
    result = CliRunner().invoke(cli, ["import-reported", "--store", str(tmp_path / "s"), "--csv", str(bad)])
    assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output
