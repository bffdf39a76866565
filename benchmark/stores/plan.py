"""What a publish must write so that a store holds the union of its records and the new ones.

Both stores call :func:`plan_publish` with what they hold (file ids, and a loader for
the few files whose content is needed); the plan is the same whether the store is a
folder or a Hub repository, so the rules of idempotency and of "never lose a record"
are written once. An empty plan means there is nothing to publish.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping

from benchmark.stores.layout import (
    Group,
    content_matches,
    encode_json,
    group_of,
    group_prefix,
    intervention_path,
    is_record_path,
    metrics_paths,
    record_path,
)
from benchmark.stores.merge import (
    DEFAULT_BOOTSTRAP,
    DEFAULT_CONFIDENCE,
    best_by_cell,
    group_metrics,
    metrics_bytes,
    replaces,
)

Loader = Callable[[list[str]], dict[str, bytes]]
"""Returns the stored bytes of the given paths (all of them)."""


@dataclass
class PublishPlan:
    files: dict[str, bytes] = field(default_factory=dict)
    added: list[str] = field(default_factory=list)
    replaced: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)  # stored record preferred over the incoming one
    unchanged: int = 0
    groups: list[Group] = field(default_factory=list)  # groups whose metrics were recomputed

    @property
    def empty(self) -> bool:
        return not self.files


@dataclass(frozen=True)
class PublishReport:
    """What one publish did; ``commit`` is None when nothing had to be written."""

    store: str
    added: int
    replaced: int
    unchanged: int
    kept: int
    metrics_files: int
    other_files: int
    commit: str | None
    attempts: int = 1

    @classmethod
    def from_plan(cls, store: str, plan: PublishPlan, commit: str | None, attempts: int = 1) -> "PublishReport":
        metrics = sum(1 for p in plan.files if p.startswith("metrics/"))
        records = len(plan.added) + len(plan.replaced)
        return cls(
            store=store,
            added=len(plan.added),
            replaced=len(plan.replaced),
            unchanged=plan.unchanged,
            kept=len(plan.kept),
            metrics_files=metrics,
            other_files=len(plan.files) - metrics - records,
            commit=commit,
            attempts=attempts,
        )

    def summary(self) -> str:
        if self.commit is None and not (self.added or self.replaced or self.metrics_files or self.other_files):
            return f"{self.store}: nothing new ({self.unchanged} record(s) already there, {self.kept} kept)"
        where = f" in commit {self.commit}" if self.commit else ""
        return (
            f"{self.store}: {self.added} record(s) added, {self.replaced} replaced, {self.unchanged} already there, "
            f"{self.kept} kept (the stored one is newer), {self.metrics_files} metrics file(s) and "
            f"{self.other_files} metadata file(s) written{where} after {self.attempts} attempt(s)"
        )


def plan_publish(
    existing: Mapping[str, str],
    load: Loader,
    records: Iterable[Mapping[str, Any]],
    interventions: Mapping[str, Mapping[str, Any]] | None = None,
    n_bootstrap: int = DEFAULT_BOOTSTRAP,
    confidence: float = DEFAULT_CONFIDENCE,
) -> PublishPlan:
    """The files to write so that the store holds its records plus ``records``, and fresh metrics.

    ``existing`` maps every stored path to its id (see :func:`content_matches`).
    A record already stored byte for byte is skipped; a different record of the same
    key replaces the stored one only when it is preferred (:func:`replaces`). The
    metrics of every group that gains a record (or has none yet) are recomputed from
    all of the group's records, stored and new.
    """
    plan = PublishPlan()
    incoming = best_by_cell(records, key=record_path)
    encoded = {path: encode_json(record) for path, record in incoming.items()}
    differing = [p for p, data in encoded.items() if p in existing and not content_matches(existing[p], data)]
    stored_versions = load(differing) if differing else {}
    for path, data in encoded.items():
        if path not in existing:
            plan.files[path] = data
            plan.added.append(path)
        elif content_matches(existing[path], data):
            plan.unchanged += 1
        elif replaces(json.loads(stored_versions[path]), incoming[path]):
            plan.files[path] = data
            plan.replaced.append(path)
        else:
            plan.kept.append(path)

    touched = {group_of(incoming[p]) for p in plan.files}
    touched |= {group_of(r) for r in incoming.values() if metrics_paths(group_of(r))[0] not in existing}
    for group in sorted(touched, key=lambda g: tuple(str(part) for part in g)):
        prefix = group_prefix(group)
        stored = sorted(p for p in existing if p.startswith(prefix) and is_record_path(p) and p not in plan.files)
        contents = load(stored) if stored else {}
        group_records = [json.loads(contents[p]) for p in stored]
        group_records += [
            json.loads(data) for p, data in plan.files.items() if is_record_path(p) and p.startswith(prefix)
        ]
        df, settings = group_metrics(group_records, n_bootstrap=n_bootstrap, confidence=confidence)
        for path, data in zip(metrics_paths(group), metrics_bytes(df, settings)):
            if not content_matches(existing.get(path), data):
                plan.files[path] = data
        plan.groups.append(group)

    for name, meta in (interventions or {}).items():
        path, data = intervention_path(name), encode_json(dict(meta))
        if not content_matches(existing.get(path), data):
            plan.files[path] = data
    return plan
