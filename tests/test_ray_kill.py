"""``kill -9`` under the Ray executor: of a worker during a step, and of the driver during a grid.

Both runs use the smallest grid that shows it (``tests/fixtures/tiny/profile.yaml`` on the short model: the base
model and GA alone, one first step, a few items, one torch thread) on the session's Ray
(``ray_local``), and are compared with one uninterrupted run of the local executor (``tiny_reference``
in conftest.py, shared with tests/test_resume_after_kill.py): the same cell ids, statuses, scores,
per-item values and weight hashes, each cell recorded once.

Measured twice on the shared two-core AVX-512 machine under a load average of 6-11
(contended): the reference with Ray's start 45 / 54 s, the worker kill 44 / 58 s, the driver
kill 118 / 108 s (two CLI start-ups, each with its inputs task). With two torch threads the same
grid took 5 min 52 s under that load, hence ``threads: 1`` in the profile.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import psutil

from benchmark.paths import baselines_dir
from benchmark.profiles import load_profile
from benchmark.records import read_records
from benchmark.submissions import discover

KILL_WAIT_S = 600  # on a slow, shared machine the first step may take minutes to start


def _essence(records: list[dict]) -> dict[str, tuple]:
    """What must not change when a run is interrupted: everything but timings and host details."""
    return {
        r["cell_id"]: (
            r["status"],
            r["label"],
            r["scores"],
            r["items"],
            r["provenance"]["weights_sha256"],
            r["provenance"]["dtype"],
        )
        for r in records
    }


def _submissions(profile):
    return [s for s in discover(baselines_dir()) if s.name in profile.interventions]


def _our_process_titled(title: str) -> psutil.Process | None:
    """A process of this session's Ray (a descendant of this test process) whose title is ``title``.

    Ray names a worker ``ray::<function>`` while it executes a task; other sessions' Ray
    workers on the same machine are not descendants of this process and are never touched.
    """
    for proc in psutil.Process().children(recursive=True):
        try:
            if proc.cmdline()[:1] == [title]:
                return proc
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return None


def _kill_worker_when_it_runs(title: str, killed: dict) -> None:
    """SIGKILL the first worker seen running ``title``, once (its retry carries the same title)."""
    deadline = time.time() + KILL_WAIT_S
    while time.time() < deadline and not killed.get("stop"):
        proc = _our_process_titled(title)
        if proc is not None:
            killed["pid"] = proc.pid
            proc.send_signal(signal.SIGKILL)
            try:
                proc.wait(timeout=30)
                killed["dead"] = True
            except psutil.TimeoutExpired:
                killed["dead"] = False
            return
        time.sleep(0.05)


def test_worker_killed_during_a_step_is_retried_and_nothing_changes(
    ray_local, tiny_reference, tiny_profile, data_dir, tmp_path
):
    from benchmark.ray_executor import RayRunner

    prof = load_profile(str(tiny_profile))
    killed: dict = {}
    killer = threading.Thread(target=_kill_worker_when_it_runs, args=("ray::first_step_task", killed), daemon=True)
    killer.start()
    try:
        # GA's cell alone: the worker that loaded the inputs is idle when the first step is submitted
        runner = RayRunner(
            prof,
            _submissions(prof),
            tmp_path / "run",
            data_dir=data_dir,
            isolate=False,
            use_cache=False,
            echo=print,
            state_dir=tmp_path / "states",
            only_cells=["ga"],
        )
        records = runner.run()
    finally:
        killed["stop"] = True
        killer.join(timeout=10)
    assert "pid" in killed, "no worker was seen running the first step: nothing was killed"
    assert killed["dead"], f"worker {killed['pid']} survived SIGKILL"
    on_disk = read_records(tmp_path / "run" / "records.jsonl")
    assert len(on_disk) == len({r["cell_id"] for r in on_disk}) == 1  # nothing lost, nothing twice
    reference = [r for r in tiny_reference if r["label"] == "ga"]
    assert _essence(on_disk) == _essence(records) == _essence(reference)
    ga = next(r for r in on_disk if r["label"] == "ga")
    assert not ga["timings"]["interventions"][0].get("reused_from_disk")  # the retry applied GA afresh
    assert not list((tmp_path / "states").glob("*.safetensors"))

    # the same command again: nothing to run, nothing written twice
    again = RayRunner(
        prof,
        _submissions(prof),
        tmp_path / "run",
        data_dir=data_dir,
        isolate=False,
        use_cache=False,
        echo=print,
        state_dir=tmp_path / "states",
        only_cells=["ga"],
    ).run()
    assert _essence(again) == _essence(on_disk) and len(read_records(tmp_path / "run" / "records.jsonl")) == 1


def test_driver_killed_during_a_grid_resumes_like_the_local_executor(
    ray_local, tiny_reference, tiny_profile, data_dir, tmp_path
):
    address = ray_local.get_runtime_context().gcs_address  # the driver joins the session's Ray
    out, states = tmp_path / "run", tmp_path / "states"
    cmd = [
        sys.executable,
        "-m",
        "benchmark.cli",
        "run",
        "--profile",
        str(tiny_profile),
        "--out",
        str(out),
        "--data-dir",
        str(data_dir),
        "--bootstrap",
        "20",
        "--in-process",
        "--no-cache",
        "--executor",
        "ray",
        "--ray-address",
        address,
        "--state-dir",
        str(states),
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    driver = subprocess.Popen(
        cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    # kill once GA's first state is in the state folder and its cell is still to be recorded
    deadline = time.time() + KILL_WAIT_S
    while time.time() < deadline and driver.poll() is None and not list(states.glob("*.safetensors")):
        time.sleep(0.1)
    assert driver.poll() is None, "the driver ended before it could be killed"
    assert list(states.glob("*.safetensors")), "GA's first state never appeared"
    os.killpg(driver.pid, signal.SIGKILL)
    driver.wait(timeout=30)
    records_file = out / "records.jsonl"
    partial = read_records(records_file) if records_file.exists() else []  # readable: no half-written line
    assert len(partial) < 2 and "ga" not in [r["label"] for r in partial]

    resumed = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=KILL_WAIT_S, check=False)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert f"{len(partial)} already recorded" in resumed.stdout
    final = read_records(records_file)
    assert len(final) == len({r["cell_id"] for r in final}) == 2  # nothing lost, nothing twice
    assert _essence(final) == _essence(tiny_reference)
    ga = next(r for r in final if r["label"] == "ga")
    assert (
        ga["timings"]["interventions"][0].get("reused_from_disk") is True
    )  # the killed run's first state, not recomputed
    assert not list(states.glob("*.safetensors"))
