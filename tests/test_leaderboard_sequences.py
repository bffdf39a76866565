"""Sequences of three on the leaderboard and in the stores, on the real triples fixture (tests/fixtures_triples).

The views read a board (leaderboard.sequences); the browser test drives the served app with Debian's
Chromium, as tests/test_leaderboard_browser.py does.
"""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import pandas as pd
import pytest

from benchmark.metrics import compute_composability, load_criteria
from benchmark.records import read_records
from benchmark.sequence_metrics import ORDERS, compute_sequences
from benchmark.stores import LocalStore
from leaderboard import sequences
from leaderboard.data import build_board
from leaderboard.detail import orders_table as detail_orders
from leaderboard_helpers import served_leaderboard

TRIPLES = Path(__file__).parent / "fixtures_triples"
MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"
PROFILE = "tiny-triples"
CHOICE = "ft / ga / wanda(sparsity=0.25)"
CHROMIUM = Path("/usr/bin/chromium")


@pytest.fixture(scope="module")
def board():
    return build_board(LocalStore(TRIPLES).read()).select(MODEL, PROFILE)


def test_the_run_wrote_what_the_metrics_compute_from_its_records():
    """The fixture's sequences.csv (written by `run`, 50 replicates, seed 0) is what compute_sequences gives today,
    and its composability.csv (pairs) is what compute_composability gives with the triples in the records."""
    records = read_records(TRIPLES / "records.jsonl")
    table, swaps = compute_sequences(records, n_bootstrap=50, seed=0)
    written = pd.read_csv(TRIPLES / "sequences.csv")
    assert len(table) == len(written) and len(swaps) == 6 * len(table)
    again = pd.read_csv(io.StringIO(table.to_csv(index=False, lineterminator="\n")))  # the CSV's own round trip
    pd.testing.assert_frame_equal(again, written, check_exact=False, rtol=1e-9)
    pairs = compute_composability(records, n_bootstrap=50, seed=0)
    assert len(pairs) == len(pd.read_csv(TRIPLES / "composability.csv"))
    assert set(zip(pairs["a"], pairs["b"])) == {
        ("ft", "ga"),
        ("ft", "wanda(sparsity=0.25)"),
        ("ga", "wanda(sparsity=0.25)"),
    }


def test_orders_side_by_side(board):
    assert sequences.triple_choices(board) == [CHOICE]
    orders = sequences.orders_table(board, CHOICE, ["wmdp", "perplexity"])
    assert orders["positions"].tolist() == list(ORDERS)
    assert orders["order"].tolist()[0] == "ft → ga → wanda(sparsity=0.25)"
    assert orders["order"].tolist()[4] == "wanda(sparsity=0.25) → ft → ga → wanda(sparsity=0.25) (re-applied)"
    by_label = {r["label"]: r for r in read_records(TRIPLES / "records.jsonl")}
    bca = by_label["ga -> wanda(sparsity=0.25) -> ft -> wanda(sparsity=0.25) (re-applied)"]
    assert orders.set_index("positions").loc["bca", "perplexity"] == pytest.approx(
        bca["scores"]["perplexity"], abs=1e-3
    )


def test_summary_and_swaps_match_the_metrics(board):
    summary = sequences.summary_table(board, CHOICE, board.headline()).set_index("criterion")
    table, _ = compute_sequences(board.ok_records, criteria=load_criteria())
    ppl = table.set_index("criterion").loc["perplexity"]
    assert summary.loc["perplexity", "Order Sensitivity (max - min)"] == pytest.approx(round(ppl.order_sensitivity, 3))
    assert summary.loc["perplexity", "Order-free Error"] == pytest.approx(round(ppl.order_free_error, 3))
    assert summary.loc["perplexity", "best order"] in set(sequences.orders_table(board, CHOICE, [])["order"])
    assert summary.loc["perplexity", "beyond noise"] in {"yes", "no"}
    assert summary.loc["mmlu", "best order"] == "all six equal"  # 0 of 2 questions right in every order
    swaps = sequences.swaps_table(board, CHOICE, ["perplexity", "wmdp"])
    assert len(swaps) == 12 and set(swaps["swapped pair"]) == {
        "ft / ga",
        "ft / wanda(sparsity=0.25)",
        "ga / wanda(sparsity=0.25)",
    }
    assert sequences.orders_table(board, "nope", ["wmdp"]).empty


def test_pair_views_leave_the_triples_out(board):
    """The intervention detail lists base, alone and pairs only: a triple is no 'partner' of its first step."""
    rows = detail_orders(board, "ft", ["wmdp"])
    assert sorted(rows["order"]) == sorted(
        [  # base, ft alone, both orders with ga and with wanda
            "base model",
            "ft",
            "ft → ga",
            "ga → ft",
            "ft → wanda(sparsity=0.25)",
            "wanda(sparsity=0.25) → ft → wanda(sparsity=0.25) (re-applied)",
        ]
    )


def test_a_board_without_triples_says_how_to_get_them():
    fixtures = Path(__file__).parent / "fixtures"
    smoke = build_board(LocalStore(fixtures).read()).select(MODEL, "smoke")
    assert sequences.triple_choices(smoke) == []
    assert "protocol.sequence_length: 3" in sequences.note_markdown(smoke)
    assert sequences.summary_table(smoke, None, smoke.headline()).empty


def test_browser_shows_the_six_orders(tmp_path, board):
    """The served app's Sequences tab: six orders, the summary and 6 swaps per chosen criterion, in Chromium."""
    if not CHROMIUM.exists():
        pytest.fail(f"Debian's Chromium is missing at {CHROMIUM}: `apt-get install chromium`")
    from playwright.sync_api import sync_playwright

    store = tmp_path / "store"
    shutil.copytree(TRIPLES, store / "triples")
    with served_leaderboard(store, tmp_path) as url, sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=str(CHROMIUM), args=["--headless", "--no-sandbox", "--disable-gpu"], headless=True
        )
        page = browser.new_page(viewport={"width": 1500, "height": 1100})
        page.set_default_timeout(30_000)
        page.goto(url)
        page.get_by_role("tab", name="Sequences of three").click()

        def wait_rows(table: str, n: int) -> None:
            page.wait_for_function(
                "([sel, n]) => { const g = document.querySelector(sel + ' [aria-rowcount]');"
                " return g && Number(g.getAttribute('aria-rowcount')) - 1 === n; }",
                arg=[table, n],
            )

        wait_rows("#sequence-orders", 6)
        headline = len(board.headline())  # the app's default selection: the headline criteria with scores
        wait_rows("#sequence-summary", headline)
        wait_rows("#sequence-swaps", 6 * headline)
        assert "ft → ga → wanda(sparsity=0.25)" in page.inner_text("#sequence-orders")
        assert (
            CHOICE in page.inner_text("#sequence-triple")
            or page.locator("#sequence-triple input").input_value() == CHOICE
        )
        artifacts = Path(__file__).resolve().parent.parent / "test-artifacts" / "leaderboard"
        artifacts.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(artifacts / "sequences.png"), full_page=True)
        browser.close()


def test_the_fixture_grid_reused_each_prefix_from_its_pair():
    """The real run behind the fixture: each triple's first two steps are its pair's (same timings), marked reused."""
    by_label = {r["label"]: r for r in read_records(TRIPLES / "records.jsonl")}
    triples = [r for r in by_label.values() if len(r["sequence"]) == 3]
    assert len(triples) == 6 and all(r["status"] == "ok" for r in by_label.values())
    for record in triples:
        steps = [s["label"] for s in record["sequence"]]
        pair = next(r for r in by_label.values() if [s["label"] for s in r["sequence"]] == steps[:2])
        entries = record["timings"]["interventions"]
        assert [e.get("reused_prefix") for e in entries[:2]] == [True, True]
        assert [e["seconds"] for e in entries[:2]] == [e["seconds"] for e in pair["timings"]["interventions"][:2]]
        assert "reused_prefix" not in entries[2]
        assert (record["recompressed_with"] is not None) == (steps.index("wanda(sparsity=0.25)") < 2)
