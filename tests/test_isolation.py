"""The step sandbox (benchmark.isolation) on the real default model and in plain child processes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch

from benchmark.api import InterventionContext
from benchmark.isolation import StepJob, check_returned_state, run_isolated
from benchmark.models import DEFAULT_MODEL_ID, resolve_model, weights_sha256
from benchmark.paths import PROJECT_ROOT
from benchmark.submissions import load_submission

HOSTILE = Path(__file__).parent / "hostile"

_CONFINED = """
import errno, os, socket, sys
from benchmark.isolation import confine
scratch, outside = sys.argv[1], sys.argv[2]
if os.fork():  # torch's import started threads; unshare(CLONE_NEWUSER) needs a single-threaded process
    os._exit(os.waitstatus_to_exitcode(os.wait()[1]))
info = confine([scratch])
with open(os.path.join(scratch, "inside.txt"), "w") as fh:
    fh.write("ok")
try:
    open(outside, "w").write("escaped")
    print("WRITE-OUTSIDE-SUCCEEDED")
except OSError as exc:
    print("write outside:", errno.errorcode[exc.errno])
try:
    socket.create_connection(("192.0.2.1", 80), timeout=2)
    print("NETWORK-SUCCEEDED")
except OSError as exc:
    print("network:", errno.errorcode.get(exc.errno, type(exc).__name__))
print("pid", os.getpid(), info["network"])
"""


def test_confine_blocks_writes_outside_and_the_network(tmp_path):
    """unshare -rn works on this machine, so the sandbox must hold here (no fallback accepted).

    The script forks first as the fork server's children do: confine needs a single thread.
    """
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    outside = PROJECT_ROOT / "tests" / "hostile" / "confine-escape.txt"
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    done = subprocess.run([sys.executable, "-c", _CONFINED, str(scratch), str(outside)], capture_output=True,
                          text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "write outside: EROFS" in done.stdout
    assert "network: ENETUNREACH" in done.stdout  # the kernel refuses: no route in the empty network namespace
    assert "NETWORK-SUCCEEDED" not in done.stdout and "WRITE-OUTSIDE-SUCCEEDED" not in done.stdout
    assert "pid 1 none (network namespace)" in done.stdout  # PID 1 of its own PID namespace
    assert (scratch / "inside.txt").read_text() == "ok"
    assert not outside.exists()


def test_returned_state_is_checked(default_model):
    model, _ = default_model
    reference = model.state_dict()
    assert check_returned_state(dict(reference), reference, "x") is None
    name = "model.layers.0.mlp.down_proj.weight"
    missing = {k: v for k, v in reference.items() if k != name}
    assert "architecture changed" in check_returned_state(missing, reference, "x")
    reshaped = {**reference, name: reference[name][:, :-1]}
    assert f"{name} is" in check_returned_state(reshaped, reference, "x")
    recast = {**reference, name: reference[name].float()}
    assert "came back as torch.float32" in check_returned_state(recast, reference, "x")
    poisoned = {**reference, name: torch.full_like(reference[name], float("inf"))}
    assert "not finite" in check_returned_state(poisoned, reference, "x")


def test_isolated_step_returns_weights_and_bits_and_leaves_the_harness_model_alone(default_model):
    model, _ = default_model
    sub = load_submission(HOSTILE / "prune_bits")
    before = weights_sha256(model)
    context = InterventionContext(hyperparameters={}, seed=0, device=torch.device("cpu"), dtype=torch.bfloat16,
                                  model_family="smollm2")
    job = StepJob(sub, context, resolve_model(DEFAULT_MODEL_ID).path, "bfloat16", "bfloat16", "cpu",
                  torch.get_num_threads(), sub.name)
    outcome = run_isolated(job, model.state_dict(), sub.spec.resources.time_budget_s, sub.spec.resources.memory_budget_gb)
    assert outcome.error is None, outcome.error
    assert outcome.weight_bits == 8.0  # computed in the child, carried back to the record
    assert outcome.isolation["network"] == "none (network namespace)" and outcome.isolation["pid_namespace"]
    assert weights_sha256(model) == before
    name = "model.layers.0.mlp.down_proj.weight"
    changed = [k for k, v in model.state_dict().items() if not torch.equal(v, outcome.state[k])]
    assert changed == [name]
    zero_share = (outcome.state[name] == 0).float().mean().item()
    assert 0.45 < zero_share < 0.55
    print(f"isolated step: wall {outcome.wall_s:.2f} s, apply {outcome.seconds:.2f} s, "
          f"overhead {outcome.wall_s - outcome.seconds:.2f} s, child peak {outcome.peak_rss_mb:.0f} MB")
