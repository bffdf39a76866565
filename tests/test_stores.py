"""Results stores: the local folder and the Hugging Face dataset store against a fake Hub.

The Hub store runs the real huggingface_hub client (HfApi.create_commit, list_repo_tree,
repo_info, hf_hub_download) over real HTTP against tests/fake_hub.py, which refuses a
commit whose parent is not the branch head, as the Hub does.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from benchmark.metrics import compute_composability
from benchmark.stores import HubStore, LocalStore, StoreError, open_store, parse_hub_spec
from benchmark.stores.layout import group_of, metrics_paths, record_path, slug
from benchmark.stores.merge import read_metrics_csv, replaces, select_latest
from fake_hub import FakeHub
from leaderboard_helpers import ESCAPING_PROFILE, FIXTURES, SCRIPT_NAME, fixture_records, script_named_record

N_BOOT = 50  # bootstrap replicates for publishes in these tests (the CLI default is 1000)
MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"


@pytest.fixture(scope="module")
def all_records() -> list[dict]:
    return fixture_records("smoke") + fixture_records("micro")


@pytest.fixture()
def fake_hub(monkeypatch, tmp_path):
    """A running fake Hub, with huggingface_hub pointed at it (HF_ENDPOINT) and online."""
    import huggingface_hub.constants

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    with FakeHub() as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        yield hub


def hub_store(tmp_path: Path, name: str = "cache", **kwargs) -> HubStore:
    return HubStore("org/results", cache_dir=tmp_path / name, create=True, **kwargs)


def stored_records(files: dict[str, bytes]) -> dict[str, dict]:
    return {p: json.loads(d) for p, d in files.items() if p.startswith("records/")}


# ------------------------------------------------------------------ local store


def test_local_store_reads_run_folders_with_their_metrics(all_records):
    snap = LocalStore(FIXTURES).read()
    assert len(snap.records) == len(all_records) == 15
    assert set(snap.metrics_origin) == {(MODEL, "smoke", "bfloat16"), (MODEL, "micro", "bfloat16")}
    assert all(origin.startswith("stored in run folder") for origin in snap.metrics_origin.values())
    smoke = snap.metrics[snap.metrics["profile"] == "smoke"].reset_index(drop=True)
    expected = read_metrics_csv((FIXTURES / "smoke" / "composability.csv").read_bytes())[(MODEL, "smoke", "bfloat16")]
    assert smoke.equals(expected)


def test_local_publish_is_idempotent_and_recomputes_metrics(tmp_path, all_records):
    store = LocalStore(tmp_path / "store")
    first = store.publish(all_records, {"ft": {"name": "ft", "authors": ["x"]}}, n_bootstrap=N_BOOT)
    assert (first.added, first.unchanged, first.metrics_files) == (15, 0, 4)
    files = sorted(
        p.relative_to(store.root).as_posix()
        for p in store.root.rglob("*")
        if p.is_file() and not p.name.startswith(".")
    )
    assert sum(f.startswith("records/") for f in files) == 15
    assert "interventions/ft.json" in files
    mtimes = {p: p.stat().st_mtime_ns for p in store.root.rglob("*") if p.is_file()}

    again = store.publish(all_records, {"ft": {"name": "ft", "authors": ["x"]}}, n_bootstrap=N_BOOT)
    assert (again.added, again.replaced, again.unchanged, again.metrics_files, again.other_files) == (0, 0, 15, 0, 0)
    assert "nothing new" in again.summary()
    assert {p: p.stat().st_mtime_ns for p in store.root.rglob("*") if p.is_file()} == mtimes

    smoke = [r for r in all_records if r["provenance"]["profile"] == "smoke"]
    stored = read_metrics_csv((store.root / metrics_paths((MODEL, "smoke", "bfloat16"))[0]).read_bytes())[
        (MODEL, "smoke", "bfloat16")
    ]
    recomputed = compute_composability(select_latest(smoke), n_bootstrap=N_BOOT, seed=0)
    assert stored[["a", "b", "criterion"]].equals(recomputed[["a", "b", "criterion"]].astype(object))
    assert stored["order_free_error"].tolist() == pytest.approx(recomputed["order_free_error"].tolist(), nan_ok=True)
    snap = store.read()
    assert len(snap.records) == 15 and snap.interventions["ft"]["authors"] == ["x"]


def test_a_failed_record_never_replaces_a_successful_one(tmp_path):
    ok = next(r for r in fixture_records("smoke") if r["label"] == "ga")
    failed = json.loads(json.dumps(ok)) | {"status": "failed", "error": "later crash", "finished_at": "2099-01-01"}
    assert not replaces(ok, failed) and replaces(failed, ok)
    store = LocalStore(tmp_path)
    store.publish([ok], n_bootstrap=N_BOOT)
    report = store.publish([failed], n_bootstrap=N_BOOT)
    assert (report.added, report.replaced, report.kept) == (0, 0, 1)
    assert json.loads((tmp_path / record_path(ok)).read_text())["status"] == "ok"


def test_store_specs_and_safe_paths():
    assert parse_hub_spec("hf://datasets/org/res@dev") == ("org/res", "dev")
    assert parse_hub_spec("hf:org/res") == ("org/res", "main")
    assert parse_hub_spec("runs") is None
    assert isinstance(open_store("runs"), LocalStore) and isinstance(open_store("hf:org/res"), HubStore)
    assert slug(MODEL) == "HuggingFaceTB--SmolLM2-135M-Instruct"
    assert "/" not in slug("../../etc") and not slug("../x").startswith(".")
    assert slug("a b") != slug("a_b")
    with pytest.raises(StoreError, match="owner/name"):
        HubStore("no-slash")
    with pytest.raises(StoreError, match="no such folder"):
        LocalStore(Path("/nonexistent/store")).read()


# ------------------------------------------------------------------ Hub store, fake Hub


def test_hub_publish_read_and_idempotence(fake_hub, tmp_path, all_records):
    store = hub_store(tmp_path)
    report = store.publish(all_records, n_bootstrap=N_BOOT)
    assert report.added == 15 and report.commit and report.attempts == 1
    commits = len(fake_hub.repos["org/results"].history)

    again = hub_store(tmp_path, "other-cache").publish(all_records, n_bootstrap=N_BOOT)
    assert again.commit is None and again.unchanged == 15
    assert len(fake_hub.repos["org/results"].history) == commits, "an idempotent publish must not commit"

    snap = store.read()
    assert len(snap.records) == 15
    assert snap.description.startswith("Hugging Face dataset org/results@main (commit ")
    assert all(o.startswith("stored in Hugging Face dataset") for o in snap.metrics_origin.values())
    # the same records published to a local store give byte-identical files
    local = LocalStore(tmp_path / "local")
    local.publish(all_records, n_bootstrap=N_BOOT)
    files = fake_hub.files("org/results")
    for group in {group_of(r) for r in all_records}:
        for path in metrics_paths(group):
            assert files[path] == (local.root / path).read_bytes()
    assert fake_hub.requests["POST commit"] == 1 and fake_hub.requests["HEAD resolve"] > 0


def test_hub_conflict_rereads_and_retries(fake_hub, tmp_path, monkeypatch):
    smoke, micro = fixture_records("smoke"), fixture_records("micro")
    store = hub_store(tmp_path)
    store.publish(smoke[:2], n_bootstrap=N_BOOT)
    real_commit = HubStore._commit
    calls = []

    def commit_after_someone_else(self, api, plan, parent):
        if self is store and not calls:  # another publisher commits between our read and our commit
            calls.append("intruder")
            hub_store(tmp_path, "intruder").publish(micro, n_bootstrap=N_BOOT)
        return real_commit(self, api, plan, parent)

    monkeypatch.setattr(HubStore, "_commit", commit_after_someone_else)
    report = store.publish(smoke, n_bootstrap=N_BOOT)
    assert fake_hub.conflicts == 1 and report.attempts == 2
    assert (report.added, report.unchanged) == (8, 2)
    records = stored_records(fake_hub.files("org/results"))
    assert len(records) == 15, "the intruder's records and ours must all be there"


def test_eight_concurrent_publishers_lose_nothing(fake_hub, tmp_path, all_records):
    hub_store(tmp_path, "setup").publish([], n_bootstrap=N_BOOT)  # create the repository
    shared = all_records[0]  # every publisher also sends this one: overlapping, idempotent
    parts = [[shared] + all_records[i::8] for i in range(8)]
    barrier = threading.Barrier(8)
    reports, errors = [None] * 8, []

    def publisher(i: int) -> None:
        try:
            store = hub_store(tmp_path, f"cache{i}")
            barrier.wait()
            reports[i] = store.publish(parts[i], n_bootstrap=N_BOOT)
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(repr(exc))

    threads = [threading.Thread(target=publisher, args=(i,)) for i in range(8)]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    assert time.monotonic() - started < 120

    files = fake_hub.files("org/results")
    records = stored_records(files)
    assert sorted(r["cell_id"] for r in records.values()) == sorted(r["cell_id"] for r in all_records)
    assert sum(r.added for r in reports) == 15
    assert fake_hub.conflicts >= 1, "the publishers should have raced"
    assert all(r.attempts >= 1 for r in reports)
    # the final metrics are those of all records, as one publisher would have written them
    local = LocalStore(tmp_path / "local")
    local.publish(all_records, n_bootstrap=N_BOOT)
    for group in {group_of(r) for r in all_records}:
        for path in metrics_paths(group):
            assert files[path] == (local.root / path).read_bytes(), path


def test_hub_store_fails_fast_and_clearly_offline(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    started = time.monotonic()
    with pytest.raises(StoreError, match="HF_HUB_OFFLINE is set"):
        hub_store(tmp_path).read()
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens on the discard port
    with pytest.raises(StoreError, match="cannot reach the Hugging Face Hub at http://127.0.0.1:9"):
        hub_store(tmp_path).publish(fixture_records("micro"))
    assert time.monotonic() - started < 10


def test_hub_missing_repository_is_a_clear_error(fake_hub, tmp_path):
    with pytest.raises(StoreError, match="repository not found.*--create"):
        HubStore("org/absent", cache_dir=tmp_path).read()


def test_script_name_published_to_the_hub_is_shown_as_text(fake_hub, tmp_path):
    from leaderboard.data import build_board
    from leaderboard.detail import header_markdown, orders_table
    from leaderboard.matrices import heatmap_figure
    from leaderboard.ranking import category_ranking

    store = hub_store(tmp_path)
    store.publish(
        [script_named_record()],
        {SCRIPT_NAME: {"name": SCRIPT_NAME, "authors": [SCRIPT_NAME], "link": "javascript:alert(1)"}},
        n_bootstrap=N_BOOT,
    )
    board = build_board(store.read()).select(MODEL, ESCAPING_PROFILE)
    assert board.names() == [SCRIPT_NAME]
    ranking = category_ranking(board, "editing", ["edit_success"])
    assert ranking["intervention"].tolist() == [SCRIPT_NAME]  # a str cell: Gradio renders it as text
    header = header_markdown(board, SCRIPT_NAME)
    assert "<script" not in header and "&lt;script&gt;" in header
    assert "not an http link" in header.replace("\\", "") and "](" not in header
    assert SCRIPT_NAME in orders_table(board, SCRIPT_NAME, ["edit_success"])["order"].tolist()
    figure = heatmap_figure(board, "edit_success", "order_free_error")
    assert figure.data[0].y == ("&lt;script&gt;window.__xss=1&lt;/script&gt;ft",)
    assert "<script" not in figure.to_json()
