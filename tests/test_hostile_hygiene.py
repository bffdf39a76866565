"""Hostile submissions against the data hygiene, the schema limits and the measured figures.

One small submission per attack in ``tests/hostile/``: each ends as a rejected validation or
a failed (or honestly scored) cell with a one-line reason, and nothing else is harmed.
"""

from __future__ import annotations

import copy
import json
import resource
import shutil
import time
from pathlib import Path

import pytest
import torch
import yaml
from leaderboard_helpers import fixture_records

from benchmark.data.corpora import load_retain_corpus
from benchmark.paths import cache_dir
from benchmark.profiles import load_profile
from benchmark.runner import Runner
from benchmark.step_cache import open_step_cache
from benchmark.submissions import SubmissionError, load_submission
from benchmark.toolkit import key_second_moments
from benchmark.validate import validate_folder
from tests.test_hostile_submissions import MICRO as HOSTILE_MICRO

HOSTILE = Path(__file__).parent / "hostile"

# refused by `validate` before any code runs, each with one line naming the file and field
REJECTED = {
    "alias_bomb": "expands to over 20000 values through aliases",
    "huge_author": "field 'authors.0': String should have at most 200 characters",
    "bad_link": "field 'link': must be an http:// or https:// URL, got scheme 'javascript'",
    "baseline_name": "field 'name': name 'ft' is reserved for the baseline",
    "symlink_out": "a symlink pointing out of the submission folder",
    "binary_yaml": "not UTF-8 text (byte",
}


def _one_problem(report, expected: str) -> str:
    assert len(report.problems) == 1, report.problems
    problem = report.problems[0]
    assert expected in problem and "\n" not in problem and len(problem) < 1000, problem
    return problem


@pytest.mark.parametrize("name", sorted(REJECTED))
def test_validate_rejects_each_schema_attack_with_one_line(name):
    validate_folder(HOSTILE / "baseline_name", smoke=False)  # the harness's own imports, before measuring
    started = time.perf_counter()
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    problem = _one_problem(validate_folder(HOSTILE / name, smoke=False), REJECTED[name])
    assert str(HOSTILE / name) in problem  # names the folder or file
    # rejected cheaply: no import of its code, no expansion (the alias bomb is 9**9 strings once expanded)
    assert time.perf_counter() - started < 5
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_before < 20 * 1024  # KiB: under 20 MB more


def test_a_one_mebibyte_author_is_rejected_before_parsing(tmp_path):
    folder = tmp_path / "huge_author"
    shutil.copytree(HOSTILE / "huge_author", folder)
    spec = folder / "submission.yaml"
    spec.write_text(spec.read_text().replace("x" * 4096, "x" * 2**20))
    _one_problem(validate_folder(folder, smoke=False), "over the limit of 65536 bytes")


def test_hashing_never_follows_a_symlink_and_inner_links_are_allowed(tmp_path):
    folder = tmp_path / "sub"
    shutil.copytree(HOSTILE / "missing_data", folder)
    (folder / "alias.py").symlink_to("h.py")  # inside the folder: allowed, hashed as its target's name
    sub = load_submission(folder)
    (folder / "h.py").write_text((folder / "h.py").read_text() + "\n# changed\n")
    assert load_submission(folder).sha256 != sub.sha256  # the file's bytes count once, through h.py itself
    (folder / "outside").symlink_to(tmp_path)  # a folder link out of it
    with pytest.raises(SubmissionError, match="a symlink pointing out of the submission folder"):
        load_submission(folder)


def test_a_published_name_is_reserved_for_the_submission_that_published_it(tmp_path):
    record = copy.deepcopy(fixture_records("micro")[0])
    record["sequence"] = (
        [{**record["sequence"][0], "name": "published-method", "submission_sha256": "f" * 64}]
        if record["sequence"]
        else [
            {
                "name": "published-method",
                "label": "published-method",
                "submission_sha256": "f" * 64,
                "category": "editing",
            }
        ]
    )
    run = tmp_path / "store" / "run"
    run.mkdir(parents=True)
    (run / "records.jsonl").write_text(json.dumps(record) + "\n")
    store = str(tmp_path / "store")
    _one_problem(
        validate_folder(HOSTILE / "published_name", smoke=False, store=store),
        "field 'name': name 'published-method' is already published in",
    )
    # without that store the name is free; an unreadable store is one line too
    assert validate_folder(HOSTILE / "published_name", smoke=False).ok
    _one_problem(
        validate_folder(HOSTILE / "published_name", smoke=False, store=str(tmp_path / "nowhere")),
        "cannot read the published names of",
    )


def test_validate_with_a_missing_data_folder_gives_one_line(tmp_path):
    missing = tmp_path / "no-such-data"
    _one_problem(validate_folder(HOSTILE / "missing_data", smoke=True, data_dir=missing), f"{missing}")


def test_planted_statistics_of_one_submission_are_never_read_by_another(default_model, tmp_path, monkeypatch, data_dir):
    """A hostile step plants a poisoned E[kk^T] under exactly the provenance MEMIT looks for."""
    monkeypatch.setenv("COMPOSE_BENCH_CACHE", str(tmp_path / "cache"))
    model, tok = default_model
    texts = load_retain_corpus(16, 0, data_dir).texts
    settings = {"hyperparameters": {"layers": [2]}, "dtype": "bfloat16"}
    args = dict(n_tokens=400, seq_len=64, texts=texts)
    hostile = open_step_cache(tmp_path / "cache" / "steps", "a" * 64, "weights", settings)
    honest = open_step_cache(tmp_path / "cache" / "steps", "b" * 64, "weights", settings)
    with hostile.in_process():
        real = key_second_moments(model, tok, [2], **args)
    from safetensors.torch import save_file

    planted = torch.eye(real.moments[2].shape[0]) * 1e6
    for file in hostile.outbox.glob("*.safetensors"):
        save_file({"moment": planted}, str(file))
    assert len(hostile.keep()) == 2 and not hostile.outbox.exists()
    with hostile.in_process():  # the plant is real: the submission that made it would read it back
        again = key_second_moments(model, tok, [2], **args)
    assert again.from_cache and torch.equal(again.moments[2], planted)
    with honest.in_process():  # another submission's step never sees it
        clean = key_second_moments(model, tok, [2], **args)
    assert not clean.from_cache and torch.allclose(clean.moments[2], real.moments[2])
    assert not (cache_dir() / "key-statistics").exists()  # and nothing went to the shared folder
    honest.discard()


# the hostile-submission test's micro grid (same sizes), under this test's own name
MICRO = {**HOSTILE_MICRO, "name": "micro-hygiene", "description": "tiny grid for the hygiene hostile submissions"}
PLANTED = "planted-by-hostile-submission"


def test_hostile_steps_fail_or_score_what_is_really_there(tmp_path, data_dir, short_model_dir):
    profile_file = tmp_path / "micro.yaml"
    # the short model: what is tested is the box, not the model
    profile_file.write_text(yaml.safe_dump({**MICRO, "model": str(short_model_dir)}))
    subs = [load_submission(HOSTILE / n) for n in ("fake_2bit", "planted_stats", "reads_rephrase")]
    lines: list[str] = []
    records = Runner(
        load_profile(str(profile_file)), subs, tmp_path / "run", data_dir=data_dir, device="cpu", echo=lines.append
    ).run()
    by_label = {r["label"]: r for r in records}
    # base, three alone, and both orders of fake_2bit with each editor
    assert len(records) == 8 and all("\n" not in (r["error"] or "") for r in records)
    rephrase = by_label["reads_rephrase"]
    assert rephrase["status"] == "failed" and "has no attribute 'rephrase'" in rephrase["error"], rephrase["error"]
    planted = by_label["planted_stats"]
    # in the sealed box the host's cache does not exist: the box's own cache folder is private to the
    # call, so the write fails there (or is refused by the audit hook where no box can be built)
    assert planted["status"] == "failed", planted
    assert "tried to write outside its folder" in planted["error"] or (
        "No such file or directory" in planted["error"] and f"key-statistics/{PLANTED}.json" in planted["error"]
    )
    shared = [cache_dir() / "key-statistics", Path.home() / ".cache" / "compose-bench" / "key-statistics"]
    assert not any((folder / f"{PLANTED}.json").exists() for folder in shared)
    assert not list((cache_dir() / "steps").glob(f"*/{PLANTED}*"))  # a failed step keeps nothing, not even for itself
    # the fake compressor is scored on what it returned: the base model's 16 bits, its claim kept beside
    fake, base = by_label["fake_2bit"], by_label["base"]
    assert fake["status"] == "ok" and base["status"] == "ok"
    assert fake["scores"]["avg_bits"] == base["scores"]["avg_bits"] > 15.9
    check = fake["compression_check"]
    assert (check["claimed_weight_bits"], check["claimed_avg_bits"], check["check"]) == (2.0, 2.25, "refuted")
    assert check["groups_refuting_the_claim"] == check["groups"] > 0
    assert base["compression_check"]["check"] == "measured"


@pytest.mark.parametrize(
    "args, expected",
    [
        (
            ["run", "--profile", "smoke", "--submission", str(HOSTILE / "baseline_name")],
            "name 'ft' is reserved for the baseline",
        ),
        (["validate", str(HOSTILE / "binary_yaml"), "--no-smoke"], "not UTF-8 text"),
    ],
)
def test_the_cli_says_one_line_and_runs_nothing(tmp_path, args, expected):
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "benchmark.cli", *args, *(["--out", str(tmp_path / "run")] if args[0] == "run" else [])],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=Path(__file__).parents[1],
    )
    assert done.returncode != 0 and expected in done.stdout + done.stderr
    assert "Traceback" not in done.stdout + done.stderr and not (tmp_path / "run").exists()
