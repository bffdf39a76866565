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

from pydantic import ValidationError

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


def _read_lines(path: Path) -> list[tuple[dict[str, Any], Record]]:
    """Every record line of ``path`` as (the dict as stored, the same record typed): one validation per line.

    The dict is what a rewrite of the file writes back (byte for byte what was read, keys a
    newer harness added included); the :class:`Record` is what every reader reads.
    """
    out: list[tuple[dict[str, Any], Record]] = []
    first_line: dict[str, int] = {}
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                raw = json.loads(line)
            except json.JSONDecodeError as exc:
                raise RecordsError(f"{path}:{lineno}: not valid JSON ({exc.msg})") from None
            if not isinstance(raw, dict):
                raise RecordsError(f"{path}:{lineno}: not a result record (a {type(raw).__name__}, not an object)")
            try:
                record = Record.model_validate(raw)
            except ValidationError as exc:
                cell = f"cell {raw['cell_id']!r}: " if "cell_id" in raw else ""  # only to name it in the message
                raise RecordsError(f"{path}:{lineno}: {cell}{validation_problem(exc)}") from None
            if record.cell_id in first_line:
                raise RecordsError(
                    f"{path}:{lineno}: duplicate cell {record.cell_id!r} ({record.label}), "
                    f"already recorded at line {first_line[record.cell_id]}"
                )
            first_line[record.cell_id] = lineno
            out.append((raw, record))
    return out


def _records_path(path: str | os.PathLike) -> Path:
    path = Path(path)
    return path / RECORDS_FILE if path.is_dir() else path


def read_records(path: str | os.PathLike) -> list[dict[str, Any]]:
    """All records of a records file, as stored; a missing file is an empty list.

    Every line is validated as a :class:`~benchmark.record_schema.Record` (read
    :func:`read_typed_records` to get them typed). Raises :class:`RecordsError` naming the
    file and line for a line that is not JSON, not a record, holds a field of the wrong
    type (a score that is a string: never converted, it would move a metric without a word),
    or repeats a ``cell_id`` of an earlier line (the harness replaces a cell's record, so a
    repeat means the file was edited or concatenated by hand: which one counts is not ours
    to guess).
    """
    path = _records_path(path)
    return [raw for raw, _ in _read_lines(path)] if path.exists() else []


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

    A :class:`Record` is written as :meth:`Record.to_json` gives it (the runner builds one);
    a dict is validated as one first, so a wrong record fails here, before anything is written.
    Non-finite floats (a destroyed model's perplexity) are stored as null.
    """
    data: dict[str, Any] = json_safe(record.to_json() if isinstance(record, Record) else record)
    cell = Record.of(data).cell_id
    path = _records_path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps(data, sort_keys=True, allow_nan=False)
    with _locked(path):
        kept = [raw for raw, typed in (_read_lines(path) if path.exists() else []) if typed.cell_id != cell]
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
    the line, the record's cell and the field; every record the harness has written loads
    (the schema's later fields are optional).
    """
    path = _records_path(path)
    return [typed for _, typed in _read_lines(path)] if path.exists() else []
