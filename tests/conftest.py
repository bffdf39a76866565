"""Shared fixtures: the real default model and the real data in ../shared/data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _threads_per_worker() -> int | None:
    """Under pytest-xdist (``-n 2``, the README's command) each worker gets its share of the cores.

    Two workers of two threads each on two cores make torch's thread pools wait on each other
    (a barrier spins while its partner thread is descheduled), far slower than one thread each.
    Set before torch is imported, so the workers and every process they start (the CLI, the
    sandbox) inherit it.
    """
    workers = os.environ.get("PYTEST_XDIST_WORKER_COUNT")
    if not os.environ.get("PYTEST_XDIST_WORKER") or not workers:
        return None
    return max(1, len(os.sched_getaffinity(0)) // int(workers))


_WORKER_THREADS = _threads_per_worker()
if _WORKER_THREADS is not None:
    for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(_var, str(_WORKER_THREADS))

# Tests that share one session-scoped grid or Ray instance run on one xdist worker (``--dist loadgroup``
# in pyproject): otherwise each worker would compute the smoke grid, or start Ray, for itself.
SHARED_SESSION_FIXTURES = {"suite_grid": "grid", "ray_local": "grid", "tiny_reference": "grid"}

from benchmark.paths import ENV_DATA_DIR, PROJECT_ROOT  # noqa: E402

SHARED_DATA = PROJECT_ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The real offline data. Its absence is an error, not a skip."""
    path = Path(os.environ.get(ENV_DATA_DIR, SHARED_DATA)).resolve()
    if not (path / "PROVENANCE.md").exists():
        pytest.fail(f"real data not found at {path}: set ${ENV_DATA_DIR} to the shared data folder")
    os.environ[ENV_DATA_DIR] = str(path)
    return path


@pytest.fixture(scope="session")
def run_dtype():
    """The dtype a profile's ``dtype: auto`` computes in on this machine (bf16 only where it is fast)."""
    from benchmark.numerics import choose_dtype

    return choose_dtype("auto", "cpu").dtype


@pytest.fixture(scope="session")
def default_model(run_dtype):
    """The real default model (CPU, in this machine's ``auto`` dtype), loaded once per test session; do not mutate it."""
    import torch

    from benchmark.models import DEFAULT_MODEL_ID, load_model, resolve_model

    torch.manual_seed(0)
    resolved = resolve_model(DEFAULT_MODEL_ID)
    model, tokenizer = load_model(resolved, run_dtype, torch.device("cpu"))
    return model, tokenizer


SHORT_MODEL_BLOCKS = 12  # the most any baseline's smollm2 layers reach: GA trains blocks 4-11


@pytest.fixture(scope="session")
def short_model_dir(tmp_path_factory) -> Path:
    """The real default model cut to its first 12 of 30 blocks, as a local model folder (``--model`` / ``model:``).

    For the tests whose subject is the harness's plumbing (the caches, the sandbox's containment), not the
    model's behaviour: the same tokenizer, embeddings and block weights, byte for byte, at 283 of 538 MB.
    Every sandboxed step streams the weights into the box and back and every cached step hashes and writes
    them, so those tests' fixed costs halve (under the AVX2 emulation a one-step GA was ~1 s of a ~8 s step).
    The folder is named after the model so that its hyperparameter family stays ``smollm2``.
    """
    import json
    import shutil

    from safetensors.torch import load_file, save_file

    from benchmark.models import DEFAULT_MODEL_ID, resolve_model

    source = Path(resolve_model(DEFAULT_MODEL_ID).path)
    target = tmp_path_factory.mktemp("models") / f"SmolLM2-135M-Instruct-first-{SHORT_MODEL_BLOCKS}-blocks"
    target.mkdir()
    config = json.loads((source / "config.json").read_text())
    assert config["num_hidden_layers"] > SHORT_MODEL_BLOCKS, config["num_hidden_layers"]
    config["num_hidden_layers"] = SHORT_MODEL_BLOCKS
    if config.get("layer_types"):
        config["layer_types"] = config["layer_types"][:SHORT_MODEL_BLOCKS]
    (target / "config.json").write_text(json.dumps(config, indent=2))
    for file in source.iterdir():
        if file.is_file() and not file.name.endswith(".safetensors") and file.name != "config.json":
            shutil.copyfile(file, target / file.name)

    def kept(name: str) -> bool:
        parts = name.split(".")
        return not (parts[:2] == ["model", "layers"] and int(parts[2]) >= SHORT_MODEL_BLOCKS)

    weights = load_file(str(source / "model.safetensors"))
    save_file({k: v for k, v in weights.items() if kept(k)}, str(target / "model.safetensors"), {"format": "pt"})
    return target


@pytest.fixture(scope="session")
def short_model(short_model_dir, run_dtype):
    """The short model (``short_model_dir``) loaded once per session in this machine's ``auto`` dtype; do not mutate it.

    For in-process tests whose subject is the harness's mechanics around a model (the probes' copies and
    seeds), not what the model knows: its forward passes cost half the full model's.
    """
    import torch

    from benchmark.models import load_model, resolve_model

    return load_model(resolve_model(str(short_model_dir)), run_dtype, torch.device("cpu"))


@pytest.fixture()
def fresh_model(default_model):
    """A private deep copy of the default model that a test may change."""
    import copy

    model, tokenizer = default_model
    return copy.deepcopy(model), tokenizer


@pytest.fixture(scope="session", autouse=True)
def private_results_cache(tmp_path_factory):
    """The evaluation and state caches of this test session start empty and are removed at its end.

    Without this, grids in the suite would take their results from the user's cache and
    test nothing; within a session, a grid may reuse what an earlier test computed (the
    models in $COMPOSE_BENCH_CACHE/models stay shared: no re-conversion). The state limit
    keeps the session's disk use small on CI runners.
    """
    import shutil

    from benchmark.caches.states import ENV_LIMIT
    from benchmark.caches.store import ENV_RESULTS_CACHE

    folder = tmp_path_factory.mktemp("results-cache")
    saved = {k: os.environ.get(k) for k in (ENV_RESULTS_CACHE, ENV_LIMIT)}
    os.environ[ENV_RESULTS_CACHE] = str(folder)
    os.environ.setdefault(ENV_LIMIT, "2")
    yield folder
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    shutil.rmtree(folder, ignore_errors=True)


SUITE_PROFILE = Path(__file__).parent / "fixtures" / "suite" / "profile.yaml"
TINY_PROFILE = Path(__file__).parent / "fixtures" / "tiny" / "profile.yaml"


def _on_short_model(profile: Path, short_model_dir: Path, tmp_path_factory) -> Path:
    """A copy of the profile file ``profile`` whose ``model:`` is the short model's folder."""
    file = tmp_path_factory.mktemp(f"{profile.parent.name}-profile") / "profile.yaml"
    file.write_text(profile.read_text() + f"model: {short_model_dir}\n")
    return file


@pytest.fixture(scope="session")
def suite_profile(short_model_dir, tmp_path_factory) -> Path:
    """tests/fixtures/suite/profile.yaml on the short model (``short_model_dir``): the suite grid's profile file."""
    return _on_short_model(SUITE_PROFILE, short_model_dir, tmp_path_factory)


@pytest.fixture(scope="session")
def suite_grid(tmp_path_factory, data_dir, suite_profile):
    """The suite's grid (``suite_profile``: the smoke plan with fewer items, on the short model) through the real
    CLI, once per session, with the baselines in the harness process (``--in-process``) and no cache (``--no-cache``).

    Its subject is the CLI's whole run (every scorer, step kind, record field and output file, the
    estimate, resuming, the metrics command, Ray's equality with it), not the model: the short model
    halves it (AVX2 emulation: 96 s on the full model), and the README's main job runs the real
    `default` grid on the full model, sandboxed, before the suite in CI. Not the `smoke` profile itself:
    on an AVX2-only CPU that grid took 11 minutes of a 33-minute suite. The sandboxed path of the same
    runner is exercised by the hostile-submission grid (tests/test_hostile_submissions.py).
    Returns ``(out folder, CompletedProcess)``; tests/test_ray_executor.py compares Ray's records with these,
    cell id by cell id.
    """
    import subprocess
    import sys

    out = tmp_path_factory.mktemp("grid")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmark.cli",
            "run",
            "--profile",
            str(suite_profile),
            "--out",
            str(out),
            "--data-dir",
            str(data_dir),
            "--bootstrap",
            "300",
            "--in-process",
            "--no-cache",  # the caches have their own tests (tests/test_caches.py); writing 5 states cost 14 s under AVX2
        ],
        capture_output=True,
        text=True,
        timeout=2700,
        env=env,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out, proc


@pytest.fixture(scope="session")
def tiny_profile(short_model_dir, tmp_path_factory) -> Path:
    """tests/fixtures/tiny/profile.yaml on the short model (``short_model_dir``): the kill tests' grid, whose
    subject is what a kill leaves behind, not the model."""
    return _on_short_model(TINY_PROFILE, short_model_dir, tmp_path_factory)


@pytest.fixture(scope="session")
def tiny_reference(tmp_path_factory, data_dir, tiny_profile) -> list[dict]:
    """The tiny grid (``tiny_profile``) run once per session, uninterrupted, by the local executor
    in this process: the reference of the kill tests (tests/test_ray_kill.py, tests/test_resume_after_kill.py)."""
    import torch

    from benchmark.paths import baselines_dir
    from benchmark.profiles import load_profile
    from benchmark.runner import Runner
    from benchmark.submissions import discover

    prof = load_profile(str(tiny_profile))
    threads = torch.get_num_threads()  # the profile pins one thread: give the session its own back
    try:
        records = Runner(
            prof,
            [s for s in discover(baselines_dir()) if s.name in prof.interventions],
            tmp_path_factory.mktemp("tiny-local"),
            data_dir=data_dir,
            isolate=False,
            use_cache=False,
            echo=print,
        ).run()
    finally:
        torch.set_num_threads(threads)
    assert sorted(r["label"] for r in records) == ["base", "ga"]
    assert all(r["status"] == "ok" for r in records), [r["error"] for r in records]
    return records


@pytest.fixture(scope="session")
def ray_local():
    """Ray started once per test session on this machine (``ray.init(num_cpus=2)``), shut down at its end."""
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


# The fast lane: tests that need the real default model (through a fixture, a grid, a smoke application or the
# served app), or fresh harness processes, get the `slow` marker here, at collection, so that `pytest -m "not slow"` runs the rest without a
# model load; CI runs everything. Decided from the fixtures a test uses, then from the modules (or single tests)
# that load the model by other means, so no test file has to say it.
MODEL_FIXTURES = {
    "default_model",
    "short_model",
    "fresh_model",
    "suite_grid",
    "tiny_reference",
    "ray_local",
    "tiny_runner",
    "short_model_dir",
}
MODEL_MODULES = {
    "test_grid_end_to_end",
    "test_resume_after_kill",
    "test_hostile_submissions",
    "test_ray_executor",
    "test_leaderboard_browser",
    "test_leaderboard_paper_browser",
}
MODEL_TESTS = {
    "test_validate_smoke_catches_bad_behaviour",
    "test_second_run_with_a_changed_submission_pays_only_for_its_cells",
    "test_hostile_steps_fail_or_score_what_is_really_there",
    # no model, but fresh harness processes that import torch (5-30 s each on two busy cores, 2026-12-01)
    "test_on_an_avx2_only_cpu_auto_computes_in_float32_and_a_bf16_pin_warns",
    "test_cache_command_shows_and_clears",
    "test_two_processes_sharing_keys_neither_crash_nor_corrupt",
    "test_the_cli_says_one_line_and_runs_nothing",
    "test_metrics_cli_errors_are_one_line",
    "test_fresh_interpreter_import",
    "test_eight_concurrent_publishers_lose_nothing",
    "test_without_namespaces_outside_submissions_are_refused_unless_the_risk_is_named",
    "test_the_box_computes_with_the_harness_cpu_kernels",
    "test_a_published_name_is_reserved_for_the_submission_that_published_it",
    "test_space_bundle_runs_without_the_training_stack",
}


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups (it renames the items of a group)
def pytest_collection_modifyitems(config, items):
    for item in items:
        groups = {SHARED_SESSION_FIXTURES[f] for f in getattr(item, "fixturenames", ()) if f in SHARED_SESSION_FIXTURES}
        for group in sorted(groups):
            item.add_marker(pytest.mark.xdist_group(group))
        module = item.module.__name__.rsplit(".", 1)[-1] if item.module else ""
        if (
            MODEL_FIXTURES & set(getattr(item, "fixturenames", ()))
            or module in MODEL_MODULES
            or getattr(item, "originalname", item.name) in MODEL_TESTS
        ):
            item.add_marker(pytest.mark.slow)
