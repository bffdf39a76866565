"""The data loaders on the real offline data, their error messages, and the seeded sampling."""

from __future__ import annotations

import dataclasses
import json
import shutil
from collections import Counter
from pathlib import Path

import pytest

from benchmark.api import EditRequest
from benchmark.data.mcq import (
    McqFormatError,
    McqItem,
    items_sha256,
    load_mmlu,
    load_wmdp,
    stratified_sample,
)
from benchmark.data.sources import DataSource, DataUnavailableError
from benchmark.data.wikitext import load_wikitext_test
from benchmark.data.zsre import ZsreFormatError, load_zsre, sample_edits
from benchmark.paths import ENV_DATA_DIR


# --- zsRE -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def zsre(data_dir):
    return load_zsre(data_dir)


def test_zsre_loads_all_real_records(zsre, data_dir):
    records, source = zsre
    assert len(records) == 1037
    assert [r.record_id for r in records] == list(range(1037))
    first = records[0]
    assert first.subject == "IAAF Combined Events Challenge"
    assert first.prompt == "When was the inception of IAAF Combined Events Challenge?"
    assert first.target == "2006"
    assert first.loc.startswith("nq question: ")
    assert first.loc_ans == "The String"
    assert all(r.prompt == r.prompt.strip() and r.target == r.target.strip() for r in records)
    assert source.kind == "local"
    assert source.name == str(data_dir / "zsre" / "zsre_mend_edit.json")
    assert source.revision.startswith("sha256:") and len(source.revision) == 7 + 64
    assert source.describe() == {"source": "local", "name": source.name, "revision": source.revision}


def test_zsre_record_becomes_edit_request(zsre):
    record = zsre[0][5]
    request = record.to_edit_request()
    assert isinstance(request, EditRequest)
    assert (request.prompt, request.target, request.subject, request.record_id) == (
        record.prompt,
        record.target,
        record.subject,
        5,
    )
    # the edit only: nothing that scores generalization or locality reaches an editor
    assert {f.name for f in dataclasses.fields(request)} == {"prompt", "target", "subject", "record_id"}
    handed_over = set(dataclasses.astuple(request))
    assert not handed_over & {record.rephrase, record.loc, record.loc_ans}


def _write_zsre(root: Path, records) -> Path:
    (root / "zsre").mkdir(parents=True)
    path = root / "zsre" / "zsre_mend_edit.json"
    path.write_text(json.dumps(records))
    return path


def test_zsre_bad_record_names_file_and_index(tmp_path, data_dir):
    good = json.loads((data_dir / "zsre" / "zsre_mend_edit.json").read_text())[:4]
    del good[2]["alt"]
    path = _write_zsre(tmp_path, good)
    with pytest.raises(ZsreFormatError, match=r"record 2: field 'alt' is missing") as err:
        load_zsre(tmp_path)
    assert str(path) in str(err.value)


def test_zsre_empty_field_and_non_list_are_rejected(tmp_path, data_dir):
    good = json.loads((data_dir / "zsre" / "zsre_mend_edit.json").read_text())[:2]
    good[1]["loc_ans"] = "  "
    _write_zsre(tmp_path / "a", good)
    with pytest.raises(ZsreFormatError, match=r"record 1: field 'loc_ans'"):
        load_zsre(tmp_path / "a")
    _write_zsre(tmp_path / "b", {"src": "not a list"})
    with pytest.raises(ZsreFormatError, match="expected a JSON list"):
        load_zsre(tmp_path / "b")


def test_sample_edits_is_seeded_distinct_and_respects_exclusions(zsre):
    records = zsre[0]
    a = sample_edits(records, 50, seed=0)
    assert a == sample_edits(records, 50, seed=0)
    assert a != sample_edits(records, 50, seed=1)
    assert len({r.record_id for r in a}) == 50
    excluded = frozenset(r.record_id for r in a)
    b = sample_edits(records, 50, seed=0, exclude_ids=excluded)
    assert not excluded & {r.record_id for r in b}


def test_sample_edits_too_many_is_a_clear_error(zsre):
    records = zsre[0]
    with pytest.raises(ValueError, match=r"asked for 1038 zsRE edits but only 910 evaluation records"):
        sample_edits(records, 1038, seed=0)
    with pytest.raises(
        ValueError,
        match=r"only \d+ evaluation records are available \(1037 loaded, 37 excluded, 127 in the other split\)",
    ):
        sample_edits(records, 1001, seed=0, exclude_ids=frozenset(range(37)))
    with pytest.raises(ValueError, match="unknown zsRE split 'test'"):
        sample_edits(records, 1, seed=0, split="test")


def test_development_edits_never_meet_evaluation_edits(zsre):
    """Editors are tuned on the development part; no seed's evaluation draw ever contains one of its records."""
    from benchmark.data.zsre import is_development_record

    records = zsre[0]
    dev = sample_edits(records, 50, seed=0, split="development")
    assert all(is_development_record(r.prompt) for r in dev)
    dev_ids = {r.record_id for r in records if is_development_record(r.prompt)}
    assert 100 < len(dev_ids) < 160  # about 1/8 of 1,037
    for seed in range(5):
        assert not dev_ids & {r.record_id for r in sample_edits(records, 400, seed=seed)}


# --- where data comes from -----------------------------------------------------------------


def test_offline_without_data_dir_names_env_var_and_option(monkeypatch):
    monkeypatch.delenv(ENV_DATA_DIR, raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DataUnavailableError) as err:
        load_zsre()
    assert ENV_DATA_DIR in str(err.value) and "--data-dir" in str(err.value)
    with pytest.raises(DataUnavailableError, match=ENV_DATA_DIR):
        load_mmlu()


def test_data_dir_lacking_a_file_says_which(tmp_path):
    (tmp_path / "wmdp").mkdir()
    with pytest.raises(DataUnavailableError, match=r"wmdp/cyber_questions\.json is missing"):
        load_wmdp("cyber", tmp_path)


def test_env_var_is_used_when_no_argument(monkeypatch, data_dir):
    monkeypatch.setenv(ENV_DATA_DIR, str(data_dir))
    items, source = load_wmdp("chem")
    assert len(items) == 408 and source.kind == "local"


def test_source_logs_one_line(caplog, data_dir):
    with caplog.at_level("INFO", logger="benchmark.data.sources"):
        load_wmdp("chem", data_dir)
    lines = [r.getMessage() for r in caplog.records if r.name == "benchmark.data.sources"]
    assert len(lines) == 1 and "WMDP chem: using local file" in lines[0] and "408 records" in lines[0]


def test_describe_of_hub_source_carries_config():
    src = DataSource("hub", "cais/wmdp", "abc123", "wmdp-bio")
    assert src.describe() == {"source": "hub", "name": "cais/wmdp", "revision": "abc123", "config": "wmdp-bio"}


# --- MMLU and WMDP -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mmlu(data_dir):
    return load_mmlu(data_dir)


def test_mmlu_loads_all_real_questions(mmlu):
    items, source = mmlu
    assert len(items) == 14042
    subjects = Counter(i.subject for i in items)
    assert len(subjects) == 57 and subjects["abstract_algebra"] == 100
    assert len({i.item_id for i in items}) == len(items)
    first = items[0]
    assert first.item_id == "mmlu/abstract_algebra/0"
    assert first.question.startswith("Find the degree for the given field extension")
    assert first.choices == ("0", "4", "2", "6") and first.answer == 1
    assert all(len(i.choices) == 4 and 0 <= i.answer < 4 for i in items)
    assert source.kind == "local" and source.name.endswith("mmlu/test")


@pytest.mark.parametrize(("subset", "count"), [("bio", 1273), ("cyber", 1987), ("chem", 408)])
def test_wmdp_loads_real_questions(subset, count, data_dir):
    items, source = load_wmdp(subset, data_dir)
    assert len(items) == count
    assert {i.subject for i in items} == {f"wmdp_{subset}"}
    assert items[3].item_id == f"wmdp_{subset}/3"
    assert all(len(i.choices) == 4 and 0 <= i.answer < 4 for i in items)
    assert source.name.endswith(f"wmdp/{subset}_questions.json")


def test_wmdp_unknown_subset(data_dir):
    with pytest.raises(ValueError, match="unknown WMDP subset 'physics'"):
        load_wmdp("physics", data_dir)


def test_bad_mmlu_row_names_file_and_row(tmp_path, data_dir):
    folder = tmp_path / "mmlu" / "test"
    folder.mkdir(parents=True)
    shutil.copy(data_dir / "mmlu" / "test" / "anatomy_test.csv", folder)
    bad = folder / "virology_test.csv"
    bad.write_text("question,choice0,choice1,choice2,choice3,answer\nQ?,a,b,c,d,2\nQ2?,a,b,c,d,7\n")
    with pytest.raises(McqFormatError, match=r"virology_test\.csv: row 1: answer '7'"):
        load_mmlu(tmp_path)
    bad.write_text("q,a,b,c,d,answer\nQ?,a,b,c,d,2\n")
    with pytest.raises(McqFormatError, match=r"virology_test\.csv: header"):
        load_mmlu(tmp_path)


def test_bad_wmdp_record_names_file_and_index(tmp_path):
    (tmp_path / "wmdp").mkdir()
    path = tmp_path / "wmdp" / "bio_questions.json"
    rows = [{"question": "Q?", "choices": ["a", "b", "c", "d"], "answer": 0}, {"question": "Q2?", "choices": "abcd"}]
    path.write_text(json.dumps(rows))
    with pytest.raises(McqFormatError, match=r"bio_questions\.json: record 1: choices must be"):
        load_wmdp("bio", tmp_path)


# --- stratified sampling -------------------------------------------------------------------


def test_stratified_sample_is_deterministic_balanced_and_ordered(mmlu):
    items = mmlu[0]
    sample = stratified_sample(items, 570, seed=0)
    assert sample == stratified_sample(list(items), 570, seed=0)
    assert set(Counter(i.subject for i in sample).values()) == {10}
    position = {i.item_id: k for k, i in enumerate(items)}
    assert [position[i.item_id] for i in sample] == sorted(position[i.item_id] for i in sample)
    other = stratified_sample(items, 570, seed=1)
    assert {i.item_id for i in other} != {i.item_id for i in sample}
    small = Counter(i.subject for i in stratified_sample(items, 100, seed=3))
    assert sum(small.values()) == 100 and set(small.values()) == {1, 2} and len(small) == 57


def test_stratified_sample_fills_up_from_larger_subjects():
    def make(subject, n):
        return [McqItem(f"{subject}/{k}", f"{subject} q{k}", ("x", "y"), 0, subject) for k in range(n)]

    items = make("a", 2) + make("b", 10) + make("c", 11)
    counts = Counter(i.subject for i in stratified_sample(items, 13, seed=0))
    assert counts == {"a": 2, "b": 5, "c": 6} or counts == {"a": 2, "b": 6, "c": 5}
    assert stratified_sample(items, None, seed=0) == items
    assert stratified_sample(items, 0, seed=0) == []
    with pytest.raises(ValueError, match="asked for 24 questions but only 23"):
        stratified_sample(items, 24, seed=0)


def test_items_sha256_tracks_content_and_order(mmlu):
    items = mmlu[0][:5]
    assert items_sha256(items) == items_sha256(list(items))
    assert items_sha256(items) != items_sha256(items[::-1])
    changed = [McqItem(i.item_id, i.question, i.choices, (i.answer + 1) % 4, i.subject) for i in items]
    assert items_sha256(items) != items_sha256(changed)


# --- WikiText ------------------------------------------------------------------------------


def test_wikitext_is_the_test_rows_joined_by_blank_lines(data_dir):
    text, source = load_wikitext_test(data_dir)
    path = data_dir / "wikitext-2-raw" / "wikitext-2-raw-v1_test_rows.jsonl"
    rows = [json.loads(line)["text"] for line in path.read_text(encoding="utf-8").splitlines()]
    assert len(rows) == 4358
    assert text == "\n\n".join(rows)
    assert text.startswith("\n\n = Robert Boulter = \n")
    assert source.kind == "local" and source.revision.startswith("sha256:")


def test_corpora_describe_keeps_the_corpus_name_and_hashes_local_files(data_dir):
    """The record names the corpus (the stand-in), not the folder it was read from."""
    from benchmark.data.corpora import STANDIN_NAME, load_calibration_corpus, load_forget_corpus, load_retain_corpus

    forget = load_forget_corpus(8, 0, data_dir).describe()
    assert forget["name"] == STANDIN_NAME
    assert forget["n_texts"] == 8
    assert forget["source"] == "local" and forget["location"].endswith("wmdp")
    assert forget["revision"].startswith("sha256:") and len(forget["revision"]) == 7 + 64
    for corpus in (load_retain_corpus(4, 0, data_dir), load_calibration_corpus(4, 0, data_dir)):
        d = corpus.describe()
        assert d["name"] == corpus.name and d["location"] != d["name"]
        assert d["revision"].startswith("sha256:")
