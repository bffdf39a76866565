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
from benchmark.record_schema import Provenance, Record, RecordError, SequenceStep, Timings, sequence_label, step_label
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


# ----------------------------------------------------------------------------- strict numbers, one-line errors


@pytest.mark.parametrize(
    "field, value, where",
    [
        ("scores", {"mmlu": "0.5"}, "scores.mmlu"),
        ("scores", {"mmlu": True}, "scores.mmlu"),
        ("items", {"mmlu": [1, "x"]}, "items.mmlu.1"),
        ("status", "done", "status"),
    ],
)
def test_a_wrong_field_is_one_line_naming_the_cell_and_field_never_coerced(field, value, where):
    record = read_records(FIXTURES / "micro" / "records.jsonl")[0]
    record[field] = value
    with pytest.raises(RecordError) as info:
        Record.of(record)
    message = str(info.value)
    assert "\n" not in message and f"record {record['cell_id']!r}" in message and f"field '{where}" in message


def test_numbers_keep_their_json_type():
    record = read_records(FIXTURES / "micro" / "records.jsonl")[0]
    record["items"] = {"perplexity_tokens": [32, 31], "mmlu": [1.0, 0.0, None]}
    record["scores"] = {"mmlu": 0.5, "perplexity": "diverged", "wmdp": None, "avg_bits": 16}
    stored = Record.of(record).to_json()
    assert json.dumps(stored["items"]) == '{"perplexity_tokens": [32, 31], "mmlu": [1.0, 0.0, null]}'
    assert json.dumps(stored["scores"]) == '{"mmlu": 0.5, "perplexity": "diverged", "wmdp": null, "avg_bits": 16}'


# ----------------------------------------------------------------------------- labels, defined once


def test_labels_of_steps_and_orders():
    assert step_label("ft", None) == "ft" and step_label("wanda", {"sparsity": 0.25}) == "wanda(sparsity=0.25)"
    assert step_label("gptq", {"bits": 4}) == "gptq(bits=4)" and step_label("x", {"lr": 1e-05}) == "x(lr=1e-05)"
    assert sequence_label([]) == "base" and sequence_label(["ft", "ga"]) == "ft -> ga"
    assert sequence_label(["gptq(bits=4)", "ft"], "gptq(bits=4)") == "gptq(bits=4) -> ft -> gptq(bits=4) (re-applied)"
    assert sequence_label(["ft", "ga"], arrow=" → ", empty="base model") == "ft → ga"
    with pytest.raises(ValueError, match="one parameter"):
        step_label("x", {"a": 1, "b": 2})


def test_the_papers_imported_labels_are_the_plans_labels(data_dir):
    """A reported record and a re-run of the paper profile name the same steps and orders alike (both call
    step_label / sequence_label), so a re-run's cells line up with the paper's rows."""
    from benchmark.plan import build_plan, steps_for
    from benchmark.profiles import load_profile
    from benchmark.submissions import discover

    profile = load_profile("paper")
    steps = steps_for([s for s in discover(baselines_dir()) if s.name in profile.interventions], profile, "smollm2")
    planned = {cell.label for cell in build_plan(steps, profile.protocol.recompress_when_first)}
    reported = [Record.of(r) for r in records_from_csv(data_dir / PAPER_CSV, metadata_from_folders([baselines_dir()]))]
    step_labels = {step.label for cell in build_plan(steps, "never") for step in cell.steps}
    assert {label for r in reported for label in r.labels} <= step_labels
    assert {r.label for r in reported} <= planned
    assert all(r.order() == r.label for r in reported)
