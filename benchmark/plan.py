"""The grid: which models a run evaluates.

A plan holds the base model, each intervention alone at each configured level, and every
cross-category pair in both orders; with ``protocol.sequence_length: 3`` also every sequence
of three pairwise cross-category steps in all six orders (docs/SEQUENCES.md). Cells are
ordered so that all cells sharing a first intervention are adjacent, and within them each
pair is followed by the triples that start with it: the runner computes the state after
the first intervention once for its group, and the state after the first two once for the
triples that share them (benchmark/prefixes.py).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from benchmark.api import Category
from benchmark.profiles import Profile
from benchmark.record_schema import sequence_label, step_label
from benchmark.submissions import Submission


@dataclass(frozen=True)
class Step:
    """One intervention at one level, with its settings resolved once for the run's model family.

    The hyperparameters are resolved when the step is made (the submission's ``default``
    block, its family block over it, the level, then the profile's overrides) and kept as
    canonical JSON: every user of the step (cell ids, the step executor, the caches, the
    records) reads the same values, and a missing block fails when the plan is built.
    """

    submission: Submission
    level: Any  # None when the submission has no levels
    overrides: tuple[tuple[str, Any], ...] = ()  # profile-level hyperparameter overrides
    family: str = "default"  # the model family (tasks/model_families.yaml) the settings are for
    settings_json: str = field(default="", compare=False, repr=False)

    def __post_init__(self) -> None:
        params = self.submission.hyperparameters_for(self.family, self.level)
        params.update(dict(self.overrides))
        object.__setattr__(self, "settings_json", json.dumps(params, sort_keys=True, default=str))

    @property
    def hyperparameters(self) -> dict[str, Any]:
        """The resolved hyperparameters (a fresh dict each time: callers may not change the step's)."""
        return json.loads(self.settings_json)

    @property
    def label(self) -> str:
        """``name`` or ``name(parameter=value)``: :func:`benchmark.record_schema.step_label`, the one definition."""
        return step_label(self.submission.name, self.level_dict())

    @property
    def category(self) -> Category:
        return self.submission.category

    def level_dict(self) -> dict[str, Any] | None:
        levels = self.submission.spec.levels
        return None if levels is None or self.level is None else {levels.parameter: self.level}


@dataclass(frozen=True)
class Cell:
    """One evaluated model: the steps applied to the base model, in order."""

    steps: tuple[Step, ...]
    recompress: Step | None = None  # a compressor re-applied at the end (compression came first)

    @property
    def label(self) -> str:
        """``a -> b`` (``-> c (re-applied)``), ``base`` without steps: :func:`benchmark.record_schema.sequence_label`."""
        return sequence_label([s.label for s in self.steps], self.recompress.label if self.recompress else None)

    @property
    def first(self) -> Step | None:
        return self.steps[0] if self.steps else None


def cross_category(a: Step, b: Step) -> bool:
    """Pairs are formed across categories; a ``multi`` intervention pairs with every other one."""
    if a.submission.name == b.submission.name:
        return False
    return a.category != b.category or a.category == Category.MULTI


def reapplies(step: Step, rule: str) -> bool:
    """Whether the protocol re-applies this compressor at the end when it came first."""
    if step.category != Category.COMPRESSION or rule == "never":
        return False
    return rule == "always" or step.submission.spec.protocol.reapply_when_first


def steps_for(submissions: list[Submission], profile: Profile, family: str) -> list[Step]:
    """Each submission at the levels the profile asks for (its default level otherwise), resolved for ``family``."""
    steps = []
    for sub in submissions:
        choice = profile.interventions.get(sub.name)
        overrides = tuple(sorted((choice.hyperparameters or {}).items())) if choice else ()
        if sub.spec.levels is None:
            steps.append(Step(sub, None, overrides, family))
            continue
        levels = choice.levels if choice and choice.levels else [sub.spec.levels.default]
        unknown = [lv for lv in levels if lv not in sub.spec.levels.values]
        if unknown:
            raise ValueError(
                f"profile {profile.name!r}: levels {unknown} of {sub.name!r} are not among its "
                f"submission.yaml levels {sub.spec.levels.values}"
            )
        steps.extend(Step(sub, lv, overrides, family) for lv in levels)
    return steps


def recompressor(steps: tuple[Step, ...], rule: str) -> Step | None:
    """The compressor re-applied at the end: one that came before the last step and that the rule re-applies.

    For a pair this is the paper's rule (compression first, re-applied so that the final model
    is compressed); a sequence of three generalises it to a compressor in first or second place.
    """
    for step in steps[:-1]:
        if reapplies(step, rule):
            return step
    return None


def build_plan(steps: list[Step], recompress_rule: str, sequence_length: int = 2) -> list[Cell]:
    """Base, each step alone, every cross-category pair in both orders, and (length 3) every triple in all orders.

    Grouped by first step; within a group each pair is followed by the triples that start with
    it, so a two-step prefix is computed once for them. A triple holds three steps that are
    pairwise cross-category (one per category, or a ``multi`` with two others).
    """
    if sequence_length not in (2, 3):
        raise ValueError(f"sequence_length must be 2 or 3, got {sequence_length!r}")
    cells = [Cell(())]
    for first in steps:
        cells.append(Cell((first,)))
        for second in steps:
            if not cross_category(first, second):
                continue
            cells.append(Cell((first, second), recompress=recompressor((first, second), recompress_rule)))
            if sequence_length < 3:
                continue
            for third in steps:
                if cross_category(first, third) and cross_category(second, third):
                    triple = (first, second, third)
                    cells.append(Cell(triple, recompress=recompressor(triple, recompress_rule)))
    return cells


def cell_id(cell: Cell, context: dict[str, Any], hyperparameters: list[dict[str, Any]]) -> str:
    """A stable id of everything that determines a cell's result (not the harness version)."""
    payload = {
        "context": context,
        "steps": [
            {"name": s.submission.name, "sha256": s.submission.sha256, "level": s.level, "hp": hp}
            for s, hp in zip(cell.steps, hyperparameters)
        ],
        "recompress": cell.recompress.label if cell.recompress else None,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:24]
