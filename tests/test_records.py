"""records.jsonl: atomic appends, replacement by cell id, clear errors on a damaged file."""

from __future__ import annotations

import json
import multiprocessing as mp

import pytest

from benchmark.records import RecordsError, append_record, finished_cells, read_records


def _writer(path: str, start: int) -> None:
    for i in range(start, start + 10):
        append_record(path, {"cell_id": f"c{i}", "label": f"c{i}", "status": "ok", "scores": {"x": i}})


def test_append_replace_and_nonfinite(tmp_path):
    path = tmp_path / "records.jsonl"
    append_record(path, {"cell_id": "a", "label": "a", "status": "failed", "scores": {}})
    append_record(path, {"cell_id": "b", "label": "b", "status": "ok", "scores": {"perplexity": float("inf")}})
    append_record(path, {"cell_id": "a", "label": "a", "status": "ok", "scores": {"x": 1.0}})
    recs = read_records(path)
    assert [r["cell_id"] for r in recs] == ["b", "a"]
    assert recs[0]["scores"]["perplexity"] is None
    assert finished_cells(recs) == {"a", "b"}
    assert not list(tmp_path.glob(".records.jsonl.*")), "temporary files left behind"


def test_concurrent_writers_lose_nothing(tmp_path):
    path = str(tmp_path / "records.jsonl")
    procs = [mp.Process(target=_writer, args=(path, 10 * k)) for k in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    assert sorted(r["cell_id"] for r in read_records(path)) == sorted(f"c{i}" for i in range(40))


def test_damaged_file_names_line(tmp_path):
    path = tmp_path / "records.jsonl"
    path.write_text(json.dumps({"cell_id": "a", "label": "a", "status": "ok"}) + "\n{not json\n")
    with pytest.raises(RecordsError, match=r"records.jsonl:2: not valid JSON"):
        read_records(path)
    path.write_text(json.dumps({"no": "id"}) + "\n")
    with pytest.raises(RecordsError, match=r"records.jsonl:1: field 'cell_id' is missing"):
        read_records(path)
    failed = {"cell_id": "x", "status": "failed", "label": "x"}
    assert finished_cells([failed], retry_failed=True) == set() and finished_cells([failed]) == {"x"}
