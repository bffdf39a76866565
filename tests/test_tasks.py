"""The task files are the tasks' data definitions: the loaders read them, and nothing says it twice.

No model and no data loading here: these run in the fast lane.
"""

from __future__ import annotations

import typing

import pytest
import yaml

import benchmark.tasks as tasks_module
from benchmark.data import mcq, wikitext, zsre
from benchmark.metrics import load_criteria
from benchmark.paths import tasks_dir
from benchmark.profiles import EvaluationSettings
from benchmark.tasks import TASKS, TaskError, load_task


def test_every_task_file_loads_and_names_criteria_that_criteria_yaml_defines():
    defined = set(load_criteria())
    assert sorted(
        p.stem for p in tasks_dir().glob("*.yaml") if p.stem not in ("criteria", "cost_model", "model_families")
    ) == sorted(TASKS)
    for name in TASKS:
        task = load_task(name)
        assert set(task.criteria) <= defined, (name, set(task.criteria) - defined)
        assert task.leaderboard_metric in task.criteria
        raw = yaml.safe_load((tasks_dir() / f"{name}.yaml").read_text())
        assert "direction" not in raw and "metric" not in raw  # directions live in tasks/criteria.yaml only


def test_the_loaders_use_the_task_files():
    assert zsre.LOCAL_FILE == load_task("zsre").source.local
    assert (zsre.DEFAULT_HUB_DATASET, zsre.DEFAULT_HUB_FILE) == (
        load_task("zsre").source.hub.dataset,
        load_task("zsre").source.hub.file,
    )
    assert mcq.WMDP_SUBSETS == tuple(load_task("wmdp").subsets)
    assert load_task("wmdp").local_path("bio") == "wmdp/bio_questions.json"
    assert load_task("wmdp").hub_config("cyber") == "wmdp-cyber"
    # no dataset name is written in the loaders' code any more: the task files hold them
    for module in (mcq, wikitext, zsre):
        source = open(module.__file__, encoding="utf-8").read()
        for task in TASKS:
            hub = load_task(task).source.hub
            assert not hub.dataset or f'"{hub.dataset}"' not in source, (module.__name__, hub.dataset)


def test_the_prompt_formats_a_profile_may_choose_are_the_task_files():
    allowed = set(typing.get_args(EvaluationSettings.model_fields["prompt_format"].annotation))
    for name in ("mmlu", "wmdp"):
        assert set(load_task(name).prompt_formats) == allowed


def test_a_bad_task_file_is_one_line_naming_file_and_field(tmp_path, monkeypatch):
    (tmp_path / "mmlu.yaml").write_text(
        "name: mmlu\ndescription: x\nsource: {hub: {split: 3}, local: ''}\ncriteria: []\n"
    )
    monkeypatch.setattr(tasks_module, "tasks_dir", lambda: tmp_path)
    load_task.cache_clear()
    try:
        with pytest.raises(TaskError) as info:
            load_task("mmlu")
    finally:
        load_task.cache_clear()
    message = str(info.value)
    assert "\n" not in message and str(tmp_path / "mmlu.yaml") in message
    assert "field 'source.hub.split'" in message and "field 'source.local'" in message and "field 'criteria'" in message
