"""The grid: which models a run evaluates.

A plan holds the base model, each intervention alone at each configured level, and every
cross-category pair in both orders. Cells are ordered so that all cells sharing a first
intervention are adjacent: the runner computes the state after that first intervention
once and reuses it for every second intervention that follows it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from benchmark.api import Category
from benchmark.profiles import Profile
from benchmark.submissions import Submission


def _level_text(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


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
        levels = self.submission.spec.levels
        if levels is None or self.level is None:
            return self.submission.name
        return f"{self.submission.name}({levels.parameter}={_level_text(self.level)})"

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
        if not self.steps:
            return "base"
        text = " -> ".join(s.label for s in self.steps)
        return text + (f" -> {self.recompress.label} (re-applied)" if self.recompress else "")

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


def build_plan(steps: list[Step], recompress_rule: str) -> list[Cell]:
    """Base, each step alone, then every cross-category pair in both orders, grouped by first step."""
    cells = [Cell(())]
    for first in steps:
        cells.append(Cell((first,)))
        for second in steps:
            if cross_category(first, second):
                again = first if reapplies(first, recompress_rule) else None
                cells.append(Cell((first, second), recompress=again))
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
