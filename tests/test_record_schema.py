"""The typed record: old records.jsonl files load without loss, docs/FORMATS.md states the same fields.

No model here (fast lane): the records are the committed fixtures (written by the runner
of earlier harness versions) and the paper's table imported by benchmark/reported.py.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from benchmark.paths import PROJECT_ROOT, baselines_dir
from benchmark.record_schema import Provenance, Record, SequenceStep, Timings
from benchmark.records import RecordsError, group_key, read_records, read_typed_records
from benchmark.reported import PAPER_CSV, records_from_csv
from benchmark.stores.metadata import metadata_from_folders

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.mark.parametrize("name", ["smoke", "micro"])
def test_old_records_load_typed_and_write_back_unchanged(name):
    path = FIXTURES / name / "records.jsonl"
    raw = read_records(path)
    typed = read_typed_records(path)
    assert len(typed) == len(raw) > 0
    for record, original in zip(typed, raw):
        assert json.loads(json.dumps(record.to_json())) == original  # nothing lost, nothing added
        assert record.group == group_key(original)
        assert (
            " -> ".join(record.labels) == (original["label"] if original["sequence"] else "")
            or record.recompressed_with
        )
        assert record.status == "ok" and record.scores["mmlu"] is not None


def test_the_papers_imported_records_are_records(data_dir):
    records = records_from_csv(data_dir / PAPER_CSV, metadata_from_folders([baselines_dir()]))
    typed = [Record.model_validate(r) for r in records]
    assert {r.provenance.dtype for r in typed} == {"reported"} and all(r.reported for r in typed)


def test_a_record_of_the_wrong_shape_names_the_file_cell_and_field(tmp_path):
    record = read_records(FIXTURES / "micro" / "records.jsonl")[0]
    record["status"] = "done"
    (tmp_path / "records.jsonl").write_text(json.dumps(record) + "\n")
    with pytest.raises(RecordsError) as info:
        read_typed_records(tmp_path / "records.jsonl")
    message = str(info.value)
    assert "\n" not in message and f"cell {record['cell_id']!r}" in message and "field 'status'" in message


def _documented_keys(block: str, indent: int) -> set[str]:
    return set(re.findall(rf'^ {{{indent}}}"([a-z_0-9]+)":', block, flags=re.M))


def test_formats_md_states_the_record_schema():
    text = (PROJECT_ROOT / "docs" / "FORMATS.md").read_text(encoding="utf-8")
    section = text.split("## `records.jsonl`", 1)[1]
    block = section.split("```jsonc", 1)[1].split("```", 1)[0]
    top = _documented_keys(block, 2)
    # every documented top-level key is a field, and every field but the paper-import block is documented
    assert top <= set(Record.model_fields), top - set(Record.model_fields)
    assert set(Record.model_fields) - top == {"reported"}, set(Record.model_fields) - top
    sequence = block.split('"sequence": [', 1)[1].split("],", 1)[0]
    sequence = re.sub(r"\{[^{}]*\}", "{}", sequence.replace("{...}", "{}"))  # a step's level: its own keys
    steps = set(re.findall(r'"([a-z_0-9]+)":', sequence))
    assert steps <= set(SequenceStep.model_fields), steps - set(SequenceStep.model_fields)
    provenance = block.split('"provenance": {', 1)[1].split("\n  },", 1)[0]
    while re.search(r"\{[^{}]*\}", provenance):  # drop the nested blocks (numerics, tasks, corpora): their own keys
        provenance = re.sub(r"\{[^{}]*\}", "()", provenance)
    documented = set(re.findall(r'"([a-z_0-9]+)":', provenance))
    assert documented <= set(Provenance.model_fields), documented - set(Provenance.model_fields)
    timings = block.split('"timings": {', 1)[1].split("\n  },", 1)[0]
    assert _documented_keys(timings, 4) <= set(Timings.model_fields)
