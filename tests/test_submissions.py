"""Every kind of bad submission gets a clear one-line reason; good ones load."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import yaml

from benchmark.submissions import SubmissionError, discover, load_submission
from benchmark.validate import validate_folder

GOOD_YAML = {
    "name": "noop",
    "category": "editing",
    "description": "Changes nothing.",
    "authors": ["Tester"],
    "link": "https://example.org/noop",
    "license": "MIT",
    "entry_point": "noop:Noop",
    "hyperparameters": {"default": {"scale": 1.0}},
    "resources": {"time_budget_s": 60},
}

GOOD_CODE = """
from benchmark.api import Category, Hyperparameters, Intervention

class NoopHyperparameters(Hyperparameters):
    scale: float = 1.0

class Noop(Intervention):
    name = "noop"
    category = Category.EDITING
    Hyperparameters = NoopHyperparameters

    def apply(self, model, tokenizer, context):
        return model
"""


def make_submission(root: Path, spec: dict | str | None = None, code: str = GOOD_CODE, module: str = "noop.py") -> Path:
    folder = root / "sub"
    folder.mkdir(parents=True, exist_ok=True)
    if spec is not None:
        text = spec if isinstance(spec, str) else yaml.safe_dump(spec)
        (folder / "submission.yaml").write_text(text)
    (folder / module).write_text(textwrap.dedent(code))
    return folder


def with_(**changes) -> dict:
    spec = {k: v for k, v in GOOD_YAML.items()}
    for key, value in changes.items():
        if value is None:
            spec.pop(key, None)
        else:
            spec[key] = value
    return spec


def test_good_submission_loads_and_imports(tmp_path):
    sub = load_submission(make_submission(tmp_path, GOOD_YAML))
    cls = sub.load_class()
    assert cls.name == "noop"
    assert sub.hyperparameters_for("smollm2") == {"scale": 1.0}
    assert len(sub.sha256) == 64


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (None, "submission.yaml: file not found"),
        ("name: [unclosed", "not valid YAML"),
        ("- a list\n- not a mapping\n", "must be a mapping"),
        (with_(license=None), "field 'license': required field is missing"),
        (with_(entry_point=None), "field 'entry_point': required field is missing"),
        (with_(license="Do what you want"), "field 'license'"),
        (with_(category="magic"), "field 'category'"),
        (with_(name="Has Spaces"), "field 'name'"),
        (with_(entry_point="noop.Noop"), "field 'entry_point'"),
        (with_(colour="blue"), "field 'colour': unknown field"),
        (with_(link="not a url"), "field 'link'"),
        (with_(protocol={"reapply_when_first": True}), "compression submissions only"),
        (with_(levels={"parameter": "sparsity", "values": [0.1], "default": 0.5}), "is not one of values"),
    ],
)
def test_bad_yaml_is_named(tmp_path, spec, expected):
    folder = make_submission(tmp_path, spec)
    with pytest.raises(SubmissionError) as info:
        load_submission(folder)
    message = str(info.value)
    assert expected in message
    assert "\n" not in message
    assert str(folder) in message


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("import package_that_does_not_exist\n", "import failed: ModuleNotFoundError"),
        ("raise RuntimeError('boom at import')\n", "import failed: RuntimeError: boom at import"),
        ("x = 1\n", "module has no class 'Noop'"),
        ("class Noop:\n    name='noop'\n", "is not a subclass of benchmark.api.Intervention"),
        (GOOD_CODE.replace('name = "noop"', 'name = "other"'), "!= YAML name 'noop'"),
        (GOOD_CODE.replace("Category.EDITING", "Category.UNLEARNING"), "!= YAML category 'editing'"),
        (GOOD_CODE.replace("def apply", "def not_apply"), "does not implement apply"),
    ],
)
def test_bad_entry_point_is_named(tmp_path, code, expected):
    sub = load_submission(make_submission(tmp_path, GOOD_YAML, code))
    with pytest.raises(SubmissionError) as info:
        sub.load_class()
    assert expected in str(info.value)
    assert "entry_point" in str(info.value)


def test_missing_module_file(tmp_path):
    folder = make_submission(tmp_path, with_(entry_point="elsewhere:Noop"))
    with pytest.raises(SubmissionError, match="module file elsewhere.py not found"):
        load_submission(folder).load_class()


def test_family_block_is_merged_over_the_default_block_once_when_the_plan_is_built(tmp_path):
    """The template's promise: a family block names only what differs; the plan's step holds the result."""
    from benchmark.plan import Step

    blocks = {"default": {"lr": 1, "steps": 5, "layers": [4, 5]}, "smollm2": {"lr": 2}}
    sub = load_submission(make_submission(tmp_path, with_(hyperparameters=blocks)))
    assert sub.hyperparameters_for("smollm2") == {"lr": 2, "steps": 5, "layers": [4, 5]}
    assert sub.hyperparameters_for("llama3") == {"lr": 1, "steps": 5, "layers": [4, 5]}
    step = Step(sub, None, (("steps", 9),), "smollm2")
    assert step.hyperparameters == {"lr": 2, "steps": 9, "layers": [4, 5]}
    step.hyperparameters["lr"] = 100  # a caller's change does not reach the step
    assert step.hyperparameters["lr"] == 2


def test_missing_family_block(tmp_path):
    sub = load_submission(make_submission(tmp_path, with_(hyperparameters={"llama3": {"lr": 1}})))
    with pytest.raises(SubmissionError, match="no block for model family 'smollm2' and no 'default'"):
        sub.hyperparameters_for("smollm2")


def test_baselines_are_valid_submissions():
    from benchmark.paths import baselines_dir

    subs = discover(baselines_dir())
    assert {"ft", "ga", "wanda"} <= {s.name for s in subs}
    for sub in subs:
        sub.load_class()


def test_validate_reports_one_line_per_problem_without_smoke(tmp_path):
    report = validate_folder(make_submission(tmp_path, with_(license="nope")), smoke=False)
    assert not report.ok and len(report.problems) == 1 and "field 'license'" in report.problems[0]
    report = validate_folder(make_submission(tmp_path / "b", GOOD_YAML), smoke=False)
    assert report.ok, report.problems
    undeclared = GOOD_CODE.replace("    Hyperparameters = NoopHyperparameters\n", "")
    report = validate_folder(make_submission(tmp_path / "c", GOOD_YAML, undeclared), smoke=False)
    assert report.problems == [
        f"{tmp_path / 'c' / 'sub' / 'submission.yaml'}: field 'hyperparameters': class Noop "
        "declares no Hyperparameters model, so these settings cannot be checked (see CONTRIBUTING.md)"
    ]


# Through validate, one fault of each kind of check: an exception inside apply, and a limit the harness enforces from
# outside. The checks of what comes back (not finite, architecture changed, not a model) run in the same step executor
# for validate and for a grid; tests/test_hostile_submissions.py feeds each of them through the runner.
BAD_RUNTIME = {
    "raises": ("raise ValueError('no edits for me')", "ValueError: no edits for me"),
    # far past the budget + grace (2 + 1.2 s, benchmark.isolation.grace_s): a 3 s sleep finished inside the grace on
    # a fast CPU (Intel Xeon with AMX, 3.2 s in all) and was rightly not killed; the kill comes at ~3.2 s either way
    "slow": ("import time; time.sleep(30); return model", "over its time budget of 2 s"),
}
# the budget counts from the start of the step's process (imports, loading the state), which takes seconds on a
# slow CPU: only the "slow" case gets a budget it must overrun; the others get one no start-up can exhaust
TIME_BUDGET_S = {"slow": 2}


@pytest.mark.parametrize("kind", sorted(BAD_RUNTIME))
def test_validate_smoke_catches_bad_behaviour(tmp_path, data_dir, kind):
    body, expected = BAD_RUNTIME[kind]
    code = GOOD_CODE.replace("        return model", "        " + body)
    spec = with_(resources={"time_budget_s": TIME_BUDGET_S.get(kind, 300)})
    report = validate_folder(make_submission(tmp_path, spec, code), smoke=True, data_dir=data_dir)
    assert not report.ok
    assert any(expected in p for p in report.problems), report.problems
