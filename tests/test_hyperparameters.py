"""Declared hyperparameters: a wrong type or an out-of-range value is one line from `validate`, before any model loads.

Every baseline and the template declare their knobs as a `benchmark.api.Hyperparameters`
model; these tests copy each folder, write one bad value into its `submission.yaml`, and
check that `validate` (smoke application on) names the file, the field and the value in
one line while the model loader, made to fail loudly, is never reached. No test here loads
the model: they are in the fast lane.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import yaml

import benchmark.models
from benchmark.hyperparameter_checks import check_submissions
from benchmark.paths import baselines_dir
from benchmark.profiles import load_profile
from benchmark.runner import Runner
from benchmark.submissions import SubmissionError, load_submission
from benchmark.validate import validate_folder

TEMPLATE = Path(__file__).resolve().parents[1] / "submissions" / "template"

# folder -> (field, a value of the wrong type, a value out of range)
CASES = {
    "awq": ("n_grid", True, 0),
    "ft": ("lr", "fast", -1.0),
    "ga": ("steps", 2.5, 0),
    "gd": ("retain_weight", "heavy", -1.0),
    "gptq": ("dampening_frac", "tiny", 1.5),
    "lora": ("rank", "eight", 0),
    "memit": ("v_steps", 25.0, 0),
    "rmu": ("steering_coeff", "strong", 0.0),
    "sparsegpt": ("block_size", "big", 0),
    "wanda": ("calibration_samples", 16.0, 0),
    "template": ("steps", "five", 100_000),
}


def _copy(name: str, root: Path) -> tuple[Path, str]:
    """A copy of the submission under a new name (a baseline's own name is reserved) and the block to spoil."""
    source = TEMPLATE if name == "template" else baselines_dir() / name
    new = f"{name}-copy"
    folder = root / new
    shutil.copytree(source, folder)
    for code in folder.glob("*.py"):
        text = code.read_text()
        code.write_text(re.sub(r'^(\s+)name = "[^"]+"', rf'\1name = "{new}"', text, count=1, flags=re.M))
    spec = yaml.safe_load((folder / "submission.yaml").read_text())
    spec["name"] = new
    (folder / "submission.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    return folder, "smollm2" if "smollm2" in spec["hyperparameters"] else "default"


@pytest.fixture
def no_model(monkeypatch):
    """Loading the model fails the test: proves the check comes first."""

    def refuse(*_args, **_kwargs):
        raise AssertionError("a model was loaded before the hyperparameters were checked")

    monkeypatch.setattr(benchmark.models, "load_model", refuse)


@pytest.mark.parametrize("kind", ["wrong_type", "out_of_range"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_validate_rejects_a_bad_hyperparameter_before_any_model_loads(name, kind, tmp_path, data_dir, no_model):
    folder, block = _copy(name, tmp_path)
    assert validate_folder(folder, smoke=False).ok  # the copy itself is sound
    field, wrong_type, out_of_range = CASES[name]
    value = wrong_type if kind == "wrong_type" else out_of_range
    spec = yaml.safe_load((folder / "submission.yaml").read_text())
    spec["hyperparameters"][block][field] = value
    (folder / "submission.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    report = validate_folder(folder, smoke=True, data_dir=data_dir)
    assert len(report.problems) == 1, report.problems
    line = report.problems[0]
    assert "\n" not in line
    assert f"{folder / 'submission.yaml'}: field 'hyperparameters.{block}.{field}'" in line, line
    assert f"got {value!r}" in line, line
    assert ("valid" in line) if kind == "wrong_type" else re.search(r"greater|less", line), line


def test_unknown_name_and_missing_level_are_named(tmp_path):
    folder, block = _copy("ft", tmp_path)
    spec = yaml.safe_load((folder / "submission.yaml").read_text())
    spec["hyperparameters"][block]["learning_rate"] = 0.1  # a typo of lr
    (folder / "submission.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    line = validate_folder(folder, smoke=False).problems[0]
    assert "field 'hyperparameters.smollm2.learning_rate': unknown hyperparameter" in line, line
    assert "FT.Hyperparameters does not declare 'learning_rate'" in line

    folder, _ = _copy("wanda", tmp_path)
    spec = yaml.safe_load((folder / "submission.yaml").read_text())
    spec["levels"]["values"] = [0.25, 1.5]  # a sparsity of 150%
    spec["levels"]["default"] = 0.25
    (folder / "submission.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    line = validate_folder(folder, smoke=False).problems[0]
    assert "field 'levels.values' (sparsity=1.5)" in line and "less than 1" in line, line


def test_a_profile_override_is_checked_before_the_run_loads_its_model(tmp_path, no_model):
    profile_file = tmp_path / "bad.yaml"
    profile_file.write_text("extends: smoke\nname: bad\ninterventions:\n  ft: {hyperparameters: {steps: 0}}\n")
    profile = load_profile(str(profile_file))
    ft = load_submission(baselines_dir() / "ft")
    with pytest.raises(
        SubmissionError, match=re.escape(f"{profile_file}: field 'interventions.ft.hyperparameters.steps'")
    ):
        check_submissions([ft], profile, isolate=True)
    with pytest.raises(SubmissionError, match="greater than or equal to 1, got 0"):
        check_submissions([ft], profile, isolate=False)  # --in-process: the same check, without the box
    runner = Runner(profile, [ft], tmp_path / "out", echo=lambda _line: None)
    with pytest.raises(SubmissionError, match="interventions.ft.hyperparameters.steps"):
        runner.run()  # fails on the plan's settings: the refusing loader above is never called
    assert not (tmp_path / "out" / "records.jsonl").exists()
    check_submissions([ft], load_profile("smoke"), isolate=True)  # the shipped profile passes


def test_a_submission_that_does_not_import_is_left_to_fail_its_own_cells():
    """Only hyperparameters stop a run before it starts: a broken class fails its cells, the grid goes on."""
    broken = load_submission(Path(__file__).parent / "hostile" / "import_error")
    smoke = load_profile("smoke")
    check_submissions([broken], smoke, isolate=True)
    check_submissions([broken], smoke, isolate=False)
