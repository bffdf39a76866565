"""The results file: one JSON record per evaluated model, in ``records.jsonl``.

What a record holds is :class:`benchmark.record_schema.Record` (re-exported here);
:func:`read_typed_records` reads the file as such records.

Appending replaces the whole file (write to a temporary file in the same folder,
fsync, ``os.replace``), under an exclusive lock, so a reader or a killed run never
sees half a line and two writers never lose each other's records. Files are small
(hundreds of records), so the rewrite costs little and buys real atomicity.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator, Mapping

from benchmark.record_schema import DIVERGED, GroupKey, Record, validation_problem

RECORDS_FILE = "records.jsonl"
SCHEMA_VERSION = 1

__all__ = [
    "RECORDS_FILE",
    "SCHEMA_VERSION",
    "RecordsError",
    "DIVERGED",
    "GroupKey",
    "Record",
    "record_problem",
    "read_records",
    "read_typed_records",
    "append_record",
    "atomic_write_text",
    "json_safe",
    "finished_cells",
    "group_key",
]


class RecordsError(ValueError):
    """A records file that cannot be read; the message names the file and line."""


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def record_problem(record: dict[str, Any]) -> str | None:
    """What is wrong with the types of a record's ``scores`` and ``items``, or None.

    A score is a number, null (not measured) or ``"diverged"``; ``items`` maps a key to a
    list of numbers or nulls (a non-finite per-item value). Anything else would make the
    metrics drop that criterion without a word, so reading the file refuses it.
    """
    scores = record.get("scores")
    if scores is not None:
        if not isinstance(scores, dict):
            return f"'scores' is a {type(scores).__name__}, expected a mapping of criterion -> number"
        for key, value in scores.items():
            if value is not None and value != DIVERGED and not _is_number(value):
                return (
                    f"scores.{key} is {json.dumps(value)[:60]} ({type(value).__name__}); "
                    f"expected a number, null or {DIVERGED!r}"
                )
    items = record.get("items")
    if items is not None:
        if not isinstance(items, dict):
            return f"'items' is a {type(items).__name__}, expected a mapping of key -> list of numbers"
        for key, values in items.items():
            if not isinstance(values, list):
                return f"items.{key} is a {type(values).__name__}, expected a list of numbers"
            for k, value in enumerate(values):
                if value is not None and not _is_number(value):
                    return f"items.{key}[{k}] is {json.dumps(value)[:60]} ({type(value).__name__}); expected a number"
    return None


def read_records(path: str | os.PathLike) -> list[dict[str, Any]]:
    """All records of a records file; a missing file is an empty list.

    Raises :class:`RecordsError` naming the file and line for a line that is not JSON,
    not a record, holds a score or item of the wrong type (:func:`record_problem`), or
    repeats a ``cell_id`` of an earlier line (the harness replaces a cell's record, so a
    repeat means the file was edited or concatenated by hand: which one counts is not ours
    to guess).
    """
    path = Path(path)
    if path.is_dir():
        path = path / RECORDS_FILE
    if not path.exists():
        return []
    records = []
    first_line: dict[str, int] = {}
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise RecordsError(f"{path}:{lineno}: not valid JSON ({exc.msg})") from None
            if not isinstance(record, dict) or "cell_id" not in record:
                raise RecordsError(f"{path}:{lineno}: not a result record (no 'cell_id')")
            problem = record_problem(record)
            if problem:
                raise RecordsError(f"{path}:{lineno}: {problem}")
            cell = str(record["cell_id"])
            if cell in first_line:
                raise RecordsError(
                    f"{path}:{lineno}: duplicate cell {cell!r} ({record.get('label', '?')}), "
                    f"already recorded at line {first_line[cell]}"
                )
            first_line[cell] = lineno
            records.append(record)
    return records


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    lock_path = path.with_name(path.name + ".lock")
    with open(lock_path, "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so that readers see the old or the new file, never a mix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def json_safe(value: Any) -> Any:
    """Replace NaN and infinite floats by None (JSON has neither); recurse into containers."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def append_record(path: str | os.PathLike, record: Record | dict[str, Any]) -> None:
    """Append one record atomically; a record with the same ``cell_id`` is replaced.

    A :class:`Record` is written as :meth:`Record.to_json` gives it (the runner builds one).
    Non-finite floats (a destroyed model's perplexity) are stored as null.
    """
    data: dict[str, Any] = json_safe(record.to_json() if isinstance(record, Record) else record)
    path = Path(path)
    if path.is_dir():
        path = path / RECORDS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps(data, sort_keys=True, allow_nan=False)
    with _locked(path):
        kept = [r for r in read_records(path) if r["cell_id"] != data["cell_id"]]
        body = "".join(json.dumps(r, sort_keys=True) + "\n" for r in kept) + line + "\n"
        atomic_write_text(path, body)


def finished_cells(records: list[Record] | list[dict[str, Any]], retry_failed: bool = False) -> set[str]:
    """Cell ids that need no new run."""
    return {r.cell_id for r in map(Record.of, records) if r.status == "ok" or not retry_failed}


def group_key(record: Record | Mapping[str, Any]) -> GroupKey:
    """The group of a record, typed or a dict (:func:`benchmark.record_schema.group_of`, the one definition)."""
    return Record.of(record).group


def read_typed_records(path: str | os.PathLike) -> list[Record]:
    """:func:`read_records`, each record as a :class:`~benchmark.record_schema.Record`.

    A record that does not match the schema is a :class:`RecordsError` naming the file,
    the record's cell and the field; every record the harness has written loads (the
    schema's later fields are optional).
    """
    from pydantic import ValidationError

    out = []
    for record in read_records(path):
        try:
            out.append(Record.model_validate(record))
        except ValidationError as exc:
            raise RecordsError(f"{path}: cell {record.get('cell_id')!r}: {validation_problem(exc)}") from None
    return out
