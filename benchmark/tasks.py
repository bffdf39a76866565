"""The task files ``tasks/{zsre,mmlu,wmdp,wikitext}.yaml``: where each evaluation's data comes from, read by the loaders.

A task file is the task's one source of truth for its data: the Hub dataset, config(s)
and split, and the file under the offline data folder (``benchmark/data/*`` read them
here; they hold no copy). It also names the prompt formats a profile may choose and the
criteria the task scores; how each criterion is scored and its direction live in
``tasks/criteria.yaml`` (a test checks that every criterion named here is defined
there), so no direction is written twice. In the way lm-evaluation-harness task YAML
is the task, but only for what this harness varies per task.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from benchmark.paths import tasks_dir

__all__ = ["TASKS", "HubSource", "TaskSource", "TaskSpec", "TaskError", "load_task", "task_path"]

TASKS = ("zsre", "mmlu", "wmdp", "wikitext")


class TaskError(ValueError):
    """A task file that cannot be used; the message names the file and field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class HubSource(_Strict):
    dataset: str | None = None  # None: no canonical Hub dataset (the loader's own fallback, see note)
    config: str | None = None  # one config, or a pattern with {subset} (WMDP: one config per subset)
    split: str = "test"
    file: str | None = None  # a file inside a Hub dataset repository (zsRE's MEND copy)
    note: str = ""


class TaskSource(_Strict):
    hub: HubSource
    local: str = Field(min_length=1)  # path under the data folder; {subset} for one file per subset


class TaskSpec(_Strict):
    name: str
    description: str
    source: TaskSource
    subsets: list[str] = Field(default_factory=list)  # WMDP's bio / cyber / chem
    prompt_formats: dict[str, str] = Field(default_factory=dict)  # multiple-choice tasks: what a profile may pick
    criteria: list[str] = Field(min_length=1)  # keys of tasks/criteria.yaml that this task scores
    leaderboard_metric: str | None = None

    def local_path(self, subset: str | None = None) -> str:
        return self.source.local.format(subset=subset) if subset else self.source.local

    def hub_config(self, subset: str | None = None) -> str | None:
        config = self.source.hub.config
        return config.format(subset=subset) if config and subset else config


def task_path(name: str) -> Path:
    return tasks_dir() / f"{name}.yaml"


@lru_cache(maxsize=None)
def load_task(name: str) -> TaskSpec:
    """``tasks/<name>.yaml``, checked; a problem is one line naming the file and field."""
    path = task_path(name)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise TaskError(f"{path}: cannot read the task file: {exc}".replace("\n", " ")) from None
    if not isinstance(raw, dict):
        raise TaskError(f"{path}: must be a mapping of fields")
    try:
        spec = TaskSpec.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(f"field '{'.'.join(str(p) for p in e['loc'])}': {e['msg']}" for e in exc.errors())
        raise TaskError(f"{path}: {problems}") from None
    if spec.name != name:
        raise TaskError(f"{path}: field 'name': {spec.name!r} is not the file's name {name!r}")
    return spec
