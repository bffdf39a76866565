"""Where things live inside a results store, and how they are written.

Both stores (a local folder and a Hugging Face dataset repository) use the same
layout, so a folder can be uploaded as is and a repository downloaded as is:

    records/<profile>/<model>/<dtype>/<harness>/<cell_id>.json   one result record per file
    metrics/<profile>/<model>/<dtype>/composability.csv|.json     recomputed from all records of the group
    interventions/<name>.json                             display metadata of a submission

A group is (model, profile, dtype): cells evaluated in different dtypes are never
paired (:func:`benchmark.records.group_key`). One file per record keyed by (profile,
model, dtype, harness version, cell id) means that
publishers of different cells never write the same file, and that publishing a record
again writes byte-identical content (sorted keys, fixed separators), which both stores
detect through its git blob id and skip: publishing is idempotent.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any, Mapping

from benchmark.record_schema import Record
from benchmark.records import GroupKey, json_safe

RECORDS_DIR = "records"
METRICS_DIR = "metrics"
INTERVENTIONS_DIR = "interventions"
METRICS_CSV = "composability.csv"
METRICS_JSON = "composability.json"

_SAFE = re.compile(r"[^A-Za-z0-9._+-]+")

Group = GroupKey
"""(model_id, profile, dtype): the unit composability metrics are computed over."""


def slug(value: Any) -> str:
    """A safe, readable path component for ``value`` (a model id, profile, harness version).

    ``/`` becomes ``--`` (as in the Hub's cache); any other unsafe character makes the
    slug carry a short hash of the original, so two different values never share a path.
    """
    text = "unknown" if value is None or value == "" else str(value)
    readable = text.replace("/", "--")
    cleaned = _SAFE.sub("_", readable).strip("._") or "_"
    if cleaned != readable:
        cleaned = f"{cleaned[:80]}-{hashlib.sha256(text.encode()).hexdigest()[:8]}"
    return cleaned


def group_of(record: Record | Mapping[str, Any]) -> Group:
    return Record.of(record).group


def record_key(record: Record | Mapping[str, Any]) -> tuple[str, str, str, str, str]:
    """What identifies a stored record: profile, model, dtype, harness version and cell id."""
    typed = Record.of(record)
    prov = typed.provenance
    return (str(prov.profile), str(prov.model_id), str(prov.dtype), str(prov.harness_version), typed.cell_id)


def group_prefix(group: Group) -> str:
    model_id, profile, dtype = group
    return f"{RECORDS_DIR}/{slug(profile)}/{slug(model_id)}/{slug(dtype)}/"


def record_path(record: Record | Mapping[str, Any]) -> str:
    typed = Record.of(record)
    return f"{group_prefix(typed.group)}{slug(typed.provenance.harness_version)}/{slug(typed.cell_id)}.json"


def metrics_paths(group: Group) -> tuple[str, str]:
    model_id, profile, dtype = group
    base = f"{METRICS_DIR}/{slug(profile)}/{slug(model_id)}/{slug(dtype)}/"
    return base + METRICS_CSV, base + METRICS_JSON


def intervention_path(name: str) -> str:
    return f"{INTERVENTIONS_DIR}/{slug(name)}.json"


def encode_json(value: Any) -> bytes:
    """Canonical bytes: the same value always gives the same file (and the same blob id)."""
    return (json.dumps(json_safe(value), sort_keys=True, ensure_ascii=False, allow_nan=False) + "\n").encode("utf-8")


def git_blob_oid(data: bytes) -> str:
    """The git blob id of ``data``: what the Hub reports as a regular file's oid."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def is_record_path(path: str) -> bool:
    return path.startswith(RECORDS_DIR + "/") and path.endswith(".json")


def is_metrics_csv(path: str) -> bool:
    return path.startswith(METRICS_DIR + "/") and path.endswith("/" + METRICS_CSV)


def is_intervention_path(path: str) -> bool:
    return path.startswith(INTERVENTIONS_DIR + "/") and path.endswith(".json")


def is_layout_path(path: str) -> bool:
    return is_record_path(path) or is_intervention_path(path) or path.startswith(METRICS_DIR + "/")


def content_matches(stored_id: str | None, data: bytes) -> bool:
    """Whether a stored file with id ``stored_id`` holds exactly ``data``.

    ``stored_id`` is a git blob id (regular files, local files) or ``sha256:<hex>``
    (files the Hub keeps in LFS, whose blob id is that of the pointer).
    """
    if stored_id is None:
        return False
    if stored_id.startswith("sha256:"):
        return stored_id == "sha256:" + hashlib.sha256(data).hexdigest()
    return stored_id == git_blob_oid(data)
