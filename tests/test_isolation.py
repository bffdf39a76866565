"""The step sandbox (benchmark.isolation) on the real default model and in plain child processes."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from benchmark.api import InterventionContext
from benchmark.isolation import StepJob, check_returned_state, run_isolated, verify_built
from benchmark.models import DEFAULT_MODEL_ID, resolve_model, weights_sha256
from benchmark.paths import PROJECT_ROOT
from benchmark.sandbox import Box, BoxSpec, Limits, OutputMemory, SealedMemory, probe, python_binds
from benchmark.submissions import load_submission

HOSTILE = Path(__file__).parent / "hostile"

_PROBE = """
import errno, os, socket
seen = {"pid": os.getpid(), "root": sorted(os.listdir("/")), "env": dict(os.environ)}
for name, target in (("write_outside", ARGS["outside"]), ("write_box_root", "/escape.txt")):
    try:
        open(target, "w").write("escaped")
        seen[name] = "SUCCEEDED"
    except OSError as exc:
        seen[name] = errno.errorcode[exc.errno]
try:
    socket.create_connection(("192.0.2.1", 80), timeout=2)
    seen["network"] = "SUCCEEDED"
except OSError as exc:
    seen["network"] = errno.errorcode.get(exc.errno, type(exc).__name__)
try:
    socket.socket(socket.AF_UNIX).connect(ARGS["socket"])
    seen["unix_socket"] = "SUCCEEDED"
except OSError as exc:
    seen["unix_socket"] = errno.errorcode.get(exc.errno, type(exc).__name__)
for name in ("data", "checkout"):
    seen[name + "_visible"] = os.path.exists(ARGS[name])
reached = []  # the box's other processes (bubblewrap's init, the zygote): listed in /proc, never entered
me = os.readlink("/proc/self")  # this process as the box's /proc numbers it
for pid in (p for p in os.listdir("/proc") if p.isdigit() and p != me):
    for what in ("environ", "mem", "root/tmp", "cwd", "fd/1"):
        try:
            os.close(os.open(f"/proc/{pid}/{what}", os.O_RDONLY))
            reached.append(f"{pid}/{what}")
        except OSError:
            pass
seen["reached"] = reached
open("/dev/shm/parked", "wb").write(b"x" * 1000)
open(os.path.join(OUT_DIR, "note.txt"), "w").write("ok")
REPORT = seen
"""


def _run_script(tmp_path, source: str, limits: Limits, *, args=None, inputs=None, sealed=True, box=None):
    """Run ``source`` in a box through ``sandbox_inside.run_script`` (a fresh box, closed after, unless ``box``)."""
    script = tmp_path / "script.py"
    script.write_text(source)
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    own = box is None
    box = box or Box(BoxSpec(), sealed=sealed)
    try:
        return box.call(
            "benchmark.sandbox_inside:run_script",
            {"script": "script.py", "args": args},
            {"script.py": script, **(inputs or {})},
            limits,
            out,
            "script",
        )
    finally:
        if own:
            box.close()


def test_box_is_blind_and_sealed(tmp_path, data_dir, monkeypatch):
    """bwrap works on this machine, so the box must hold here (no fallback accepted)."""
    import socket

    assert probe() is None, probe()
    monkeypatch.setenv("HF_TOKEN", "hf_FAKE_secret_for_the_box_test")
    outside = tmp_path / "outside.txt"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(tmp_path / "host.sock"))
    server.listen(1)
    server.settimeout(0.1)
    args = {
        "outside": str(outside),
        "socket": str(tmp_path / "host.sock"),
        "data": str(data_dir),
        "checkout": str(PROJECT_ROOT / "tests"),
    }
    result = _run_script(tmp_path, _PROBE, Limits(60, 1, 4 * 2**30, 1 << 20), args=args)
    assert result.error is None, (result.error, result.log_tail)
    seen = result.report
    assert seen["pid"] == 1  # PID 1 of its own PID namespace
    assert seen["write_outside"] in ("ENOENT", "EROFS") and seen["write_box_root"] == "EROFS"
    assert seen["network"] == "ENETUNREACH" and seen["unix_socket"] in ("ENOENT", "ECONNREFUSED")
    assert not seen["data_visible"] and not seen["checkout_visible"] and seen["reached"] == []
    assert "HF_TOKEN" not in seen["env"] and "hf_FAKE" not in json.dumps(seen)
    # the system folders, plus the first folder on the way to each bound interpreter prefix (a venv under
    # /check/work/... shows "check", one under /opt/... shows "opt"; whatever the checkout is called)
    prefix_tops = {inside.strip("/").split("/")[0] for _, inside in python_binds()}
    assert (
        set(seen["root"])
        <= {"bin", "box", "dev", "etc", "lib", "lib32", "lib64", "proc", "root", "sbin", "tmp", "usr"} | prefix_tops
    )
    assert (tmp_path / "out" / "note.txt").read_text() == "ok"
    assert not outside.exists() and not os.path.exists("/escape.txt") and not os.path.exists("/dev/shm/parked")
    try:
        server.accept()
        raise AssertionError("the box reached a UNIX socket of the host")
    except socket.timeout:
        pass
    iso = result.isolation  # written by the harness from /proc, not by the child
    assert iso["pid_namespace"] and iso["capabilities_effective"] == "0000000000000000" and iso["no_new_privs"]
    assert iso["seccomp_mode"] == "2"
    assert {"mnt", "net", "pid", "user", "ipc"} <= set(iso["namespaces_distinct_from_harness"])
    assert result.seconds > 0 and result.peak_memory_bytes > 0


def test_returned_state_is_checked(default_model):
    model, _ = default_model
    reference = model.state_dict()
    assert check_returned_state(dict(reference), reference, "x") is None
    name = "model.layers.0.mlp.down_proj.weight"
    missing = {k: v for k, v in reference.items() if k != name}
    assert "architecture changed" in check_returned_state(missing, reference, "x")
    reshaped = {**reference, name: reference[name][:, :-1]}
    assert f"{name} is" in check_returned_state(reshaped, reference, "x")
    other = torch.float16 if reference[name].dtype == torch.float32 else torch.float32  # not the model's dtype
    recast = {**reference, name: reference[name].to(other)}
    assert f"came back as {other}" in check_returned_state(recast, reference, "x")
    poisoned = {**reference, name: torch.full_like(reference[name], float("inf"))}
    assert "not finite" in check_returned_state(poisoned, reference, "x")
    one_nan = reference[name].clone()
    one_nan[3, 7] = float("nan")
    assert "not finite" in check_returned_state({**reference, name: one_nan}, reference, "x")
    # tied in the input (the default model ties the LM head to the embedding): must come back tied
    assert reference["lm_head.weight"].data_ptr() == reference["model.embed_tokens.weight"].data_ptr()
    copies = {k: v.clone() for k, v in reference.items()}  # what a file gives back: separate, equal tensors
    assert check_returned_state(copies, reference, "x") is None
    edited = dict(copies)
    edited["model.embed_tokens.weight"] = copies["model.embed_tokens.weight"] + 1
    problem = check_returned_state(edited, reference, "x")
    assert "lm_head.weight is no longer tied to model.embed_tokens.weight" in problem


def test_the_built_model_is_the_returned_one(fresh_model):
    model, _ = fresh_model
    returned = {k: v.clone() for k, v in model.state_dict().items()}
    assert verify_built(model, returned, "x") is None
    with torch.no_grad():
        model.model.layers[0].mlp.down_proj.weight[0, 0] += 1
    assert "differs from them at model.layers.0.mlp.down_proj.weight" in verify_built(model, returned, "x")


def test_a_copy_holding_a_state_equals_a_deep_copy_loaded_with_it(default_model):
    """benchmark.models.copy_holding (how the harness builds a cell's model from a state, one copy of the weights)
    gives the same model as deepcopy + load_state_dict(strict=True): same values, ties, buffers; nothing shared
    with the base model or the state; the same refusals."""
    import copy

    from benchmark.models import copy_holding

    model, _ = default_model
    state = {k: v.detach() + 0.5 for k, v in model.state_dict().items()}  # separate tensors, as from a file
    state["lm_head.weight"] = state["model.embed_tokens.weight"]
    built = copy_holding(model, state)
    loaded = copy.deepcopy(model)
    loaded.load_state_dict(state, strict=True)
    assert weights_sha256(built) == weights_sha256(loaded) != weights_sha256(model)
    assert verify_built(built, state, "x") is None
    assert built.lm_head.weight is built.model.embed_tokens.weight  # tied, as in the base model
    ours = [t.data_ptr() for t in built.state_dict().values()]
    assert not set(ours) & {t.data_ptr() for t in [*model.state_dict().values(), *state.values()]}
    assert all(torch.equal(a, b) for a, b in zip(built.buffers(), model.buffers()))  # non-persistent ones too
    assert copy_holding(model) is not model and weights_sha256(copy_holding(model)) == weights_sha256(model)
    name = "model.norm.weight"
    with pytest.raises(RuntimeError, match="missing keys \\['model.norm.weight'\\]"):
        copy_holding(model, {k: v for k, v in state.items() if k != name})
    with pytest.raises(RuntimeError, match="model.norm.weight is"):
        copy_holding(model, {**state, name: state[name][:-1]})


def test_own_storage_unshares_tied_and_viewed_tensors_for_safetensors(tmp_path):
    """benchmark.models.own_storage, the one rule every weights writer applies: safetensors' save_file takes its
    output (it refuses shared memory, ties and views alike); values, names and order kept; untied tensors not copied."""
    from safetensors.torch import load_file, save_file

    from benchmark.models import own_storage

    base = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    state = {
        "embed": base,
        "head": base,  # tied
        "row": base[1],  # a view of the same storage at an offset
        "t": base.t(),  # not contiguous
        "empty": torch.empty(0),
        "other": torch.ones(2, dtype=torch.bfloat16),
    }
    with pytest.raises(RuntimeError):  # what the rule is for
        save_file(state, str(tmp_path / "refused.safetensors"))
    out = own_storage(state)
    assert list(out) == list(state) and all(torch.equal(out[k], v) for k, v in state.items())
    # the first holder of a storage is not copied
    assert out["embed"].data_ptr() == base.data_ptr() and out["other"].data_ptr() == state["other"].data_ptr()
    storages = [t.untyped_storage().data_ptr() for k, t in out.items() if t.numel()]
    assert len(storages) == len(set(storages))
    save_file(out, str(tmp_path / "own.safetensors"))
    back = load_file(str(tmp_path / "own.safetensors"))
    assert all(torch.equal(back[k], v) for k, v in state.items())


def test_isolated_step_returns_weights_and_bits_and_leaves_the_harness_model_alone(default_model):
    model, _ = default_model
    sub = load_submission(HOSTILE / "prune_bits")
    before = weights_sha256(model)
    dtype = next(model.parameters()).dtype
    name = str(dtype).removeprefix("torch.")
    context = InterventionContext(
        hyperparameters={}, seed=0, device=torch.device("cpu"), dtype=dtype, model_family="smollm2"
    )
    job = StepJob(
        sub, context, resolve_model(DEFAULT_MODEL_ID).path, name, name, "cpu", torch.get_num_threads(), sub.name
    )
    outcome = run_isolated(
        job, model.state_dict(), sub.spec.resources.time_budget_s, sub.spec.resources.memory_budget_gb
    )
    assert outcome.error is None, outcome.error
    assert outcome.weight_bits == 8.0  # claimed by the child, carried back to the record
    assert outcome.isolation["network"] == "none (network namespace)" and outcome.isolation["pid_namespace"]
    assert outcome.isolation["seccomp_mode"] == "2" and outcome.isolation["no_new_privs"]
    assert outcome.seconds >= outcome.reported_apply_s  # the harness's clock covers import, __init__ and apply
    assert len(outcome.returned_sha256) == 64
    assert weights_sha256(model) == before
    name = "model.layers.0.mlp.down_proj.weight"
    changed = [k for k, v in model.state_dict().items() if not torch.equal(v, outcome.state[k])]
    assert changed == [name]
    zero_share = (outcome.state[name] == 0).float().mean().item()
    assert 0.45 < zero_share < 0.55
    print(
        f"isolated step: wall {outcome.wall_s:.2f} s, process {outcome.seconds:.2f} s (apply {outcome.reported_apply_s} s), "
        f"overhead {outcome.wall_s - outcome.reported_apply_s:.2f} s, peak {outcome.peak_rss_mb:.0f} MB"
    )


def test_without_namespaces_outside_submissions_are_refused_unless_the_risk_is_named(monkeypatch):
    """A kernel that refuses namespaces, for real: bwrap replaced by a program that fails as bwrap would."""
    from typer.testing import CliRunner

    import benchmark.isolation as isolation
    import benchmark.sandbox as sandbox
    from benchmark.cli import app

    monkeypatch.setattr(sandbox, "bwrap_binary", lambda: "/bin/false")
    monkeypatch.delenv("COMPOSE_BENCH_REQUIRE_SANDBOX", raising=False)
    sandbox.probe.cache_clear()
    try:
        assert "cannot create namespaces" in sandbox.probe()
        runner = CliRunner()
        refused = runner.invoke(app, ["validate", str(HOSTILE / "crash"), "--no-smoke"])
        assert refused.exit_code == 2
        assert len(refused.output.strip().splitlines()) == 1 and "--unsafe-no-sandbox" in refused.output
        accepted = runner.invoke(app, ["validate", str(HOSTILE / "crash"), "--no-smoke", "--unsafe-no-sandbox"])
        assert accepted.exit_code == 0, accepted.output
        assert "NOT sandboxed" in accepted.output
        baseline = runner.invoke(
            app, ["validate", str(PROJECT_ROOT / "submissions" / "baselines" / "ft"), "--no-smoke"]
        )
        assert baseline.exit_code == 0, baseline.output  # trusted: runs, unconfined
        monkeypatch.setenv("COMPOSE_BENCH_REQUIRE_SANDBOX", "1")  # CI: nothing unconfined, baselines included
        required = runner.invoke(
            app, ["validate", str(PROJECT_ROOT / "submissions" / "baselines" / "ft"), "--no-smoke"]
        )
        assert required.exit_code == 2 and "COMPOSE_BENCH_REQUIRE_SANDBOX" in required.output
    finally:
        isolation.allow_unsafe(False)
        sandbox.probe.cache_clear()


def test_the_box_computes_with_the_harness_cpu_kernels(tmp_path, monkeypatch):
    """The CPU kernel dispatch variables go into the box, so a step computes with the kernels the harness chose its
    dtype on (the AVX2-only emulation once held outside the box only); nothing else of the caller's does."""
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "avx2")
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    monkeypatch.setenv("MKL_CBWR", "COMPATIBLE")
    monkeypatch.setenv("SOME_HARNESS_SETTING", "not for the box")
    source = (
        "import os, torch\nREPORT = {'capability': torch.backends.cpu.get_cpu_capability(), 'env': dict(os.environ)}\n"
    )
    result = _run_script(tmp_path, source, Limits(120, 1, 4 * 2**30, 1 << 20))
    assert result.error is None, (result.error, result.log_tail)
    env = result.report["env"]
    assert (env["ATEN_CPU_CAPABILITY"], env["ONEDNN_MAX_CPU_ISA"], env["MKL_CBWR"]) == ("avx2", "AVX2", "COMPATIBLE")
    assert result.report["capability"] == "AVX2" and "SOME_HARNESS_SETTING" not in env


_SEALED_READER = """
import errno, mmap, os
from benchmark.sandbox_inside import MEMORY_IN, MEMORY_OUT
path = MEMORY_IN["weights"]
seen = {"path": path, "content": open(path, "rb").read().decode()}
inherited = int(path.rsplit("/", 1)[1])  # memfd_create's own descriptor: opened for reading and writing
for name, attempt in (
    ("write", lambda: os.pwrite(inherited, b"overwritten", 0)),
    ("truncate", lambda: os.ftruncate(inherited, 0)),
    ("reopen_for_write", lambda: os.write(os.open(path, os.O_RDWR), b"overwritten")),
    ("shared_writable_map", lambda: mmap.mmap(inherited, 0, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)),
):
    try:
        attempt()
        seen[name] = "SUCCEEDED"
    except OSError as exc:
        seen[name] = errno.errorcode[exc.errno]
back = os.path.join(os.path.dirname(IN_DIR), "back.bin")
with open(back, "wb") as fh:
    fh.write(b"streamed back " * 100_000)
MEMORY_OUT["back"] = back  # a scratch file: sent by the kernel (os.sendfile), then removed
REPORT = seen
"""


@pytest.mark.parametrize("sealed", [True, False], ids=["sealed", "plain-child"])
def test_sealed_memory_reaches_the_call_read_only_and_scratch_files_stream_back(tmp_path, sealed):
    """A model's weights go into the box as a sealed memfd (mapped there, not piped and copied): the call reads
    it, cannot write it in any way, and what it leaves in MEMORY_OUT as a scratch file comes back whole."""
    with SealedMemory(b"the harness's weights") as weights:
        limits = Limits(60, 1, 4 * 2**30, 4 << 20)
        result = _run_script(tmp_path, _SEALED_READER, limits, inputs={"weights": weights}, sealed=sealed)
        assert os.pread(weights.fd, 100, 0) == b"the harness's weights"
    assert result.error is None, (result.error, result.log_tail)
    seen = result.report
    assert seen["content"] == "the harness's weights" and seen["path"].startswith("/proc/self/fd/")
    assert [seen[k] for k in ("write", "truncate", "reopen_for_write", "shared_writable_map")] == ["EPERM"] * 4
    assert result.blobs["back"] == b"streamed back " * 100_000


_OUTPUT_WRITER = """
import errno, os
from benchmark.sandbox_inside import MEMORY_IN
fd = int(MEMORY_IN["result"].rsplit("/", 1)[1])
for _ in range(ARGS["size"] >> 20):  # in 1 MB pieces: the call's own memory stays flat
    os.write(fd, b"w" * (1 << 20))
seen = {}
try:
    os.pwrite(fd, b"x", ARGS["limit"])  # one byte past the limit: the file may not grow
    seen["grow"] = "SUCCEEDED"
except OSError as exc:
    seen["grow"] = errno.errorcode[exc.errno]
import time
time.sleep(1)  # the watcher samples the call's memory every 50 ms: let it see what was written
REPORT = seen
"""


@pytest.mark.parametrize("sealed", [True, False], ids=["sealed", "plain-child"])
def test_output_memory_is_bounded_counted_and_sealed_after_the_call(tmp_path, sealed):
    """How a step's weights come back (benchmark.sandbox.OutputMemory): the call writes into the harness's memfd,
    cannot grow it past its limit, what it wrote counts in its memory, and after the call the harness cuts it to
    the announced size and seals it (a figure outside the limit is refused with the reason)."""
    size, limit = 48 << 20, 64 << 20
    with OutputMemory(limit) as result_memory:
        result = _run_script(
            tmp_path,
            _OUTPUT_WRITER,
            Limits(60, 1, 4 * 2**30, 1 << 20),
            args={"size": size, "limit": limit},
            inputs={"result": result_memory},
            sealed=sealed,
        )
        assert result.error is None, (result.error, result.log_tail)
        assert result.report["grow"] == "EPERM"
        assert result.peak_scratch_bytes >= size  # the written memory was counted while the call ran
        assert "not within 1.." in result_memory.seal(limit + 1)
        assert result_memory.seal(size) is None and result_memory.size == size
        assert os.pread(result_memory.fd, size + 10, 0) == b"w" * size
        with pytest.raises(PermissionError):  # sealed: nobody writes it any more
            os.pwrite(result_memory.fd, b"x", 0)


_FORKING_HOG = """
import subprocess, sys, time
hog = "x = bytearray(700 << 20)\\nfor i in range(0, len(x), 4096): x[i] = 1\\nimport time; time.sleep(60)"
child = subprocess.Popen([sys.executable, "-c", hog])  # the memory is the grandchild's, not the call's own
time.sleep(60)
REPORT = {"survived": True}
"""


@pytest.mark.parametrize("sealed", [True, False], ids=["sealed", "plain-child"])
def test_memory_of_the_calls_own_children_counts_against_its_budget(tmp_path, sealed):
    """The watcher reads the call's whole process tree (benchmark.sandbox.process_tree): memory held by a
    process the step started is counted, and the call is killed over its budget."""
    result = _run_script(tmp_path, _FORKING_HOG, Limits(120, 1, 500 << 20, 1 << 20), sealed=sealed)
    assert result.error is not None and "out of memory" in result.error, (result.error, result.log_tail)
    assert result.peak_rss_bytes > 500 << 20


def test_process_tree_lists_what_psutil_lists(tmp_path):
    """The cheap walk over the kernel's children lists finds the same processes and resident sets as psutil."""
    import contextlib
    import subprocess
    import time

    import psutil

    from benchmark.sandbox import process_tree, resident_bytes

    parent = subprocess.Popen(["sh", "-c", "sleep 30 & (sleep 30 & sleep 30; :) & wait"])
    try:
        deadline = time.monotonic() + 10
        while len(psutil.Process(parent.pid).children(recursive=True)) < 4 and time.monotonic() < deadline:
            time.sleep(0.05)
        expected = {parent.pid, *(p.pid for p in psutil.Process(parent.pid).children(recursive=True))}
        assert len(expected) == 5
        assert set(process_tree(parent.pid)) == expected
        assert resident_bytes(parent.pid) == psutil.Process(parent.pid).memory_info().rss
    finally:
        for pid in process_tree(parent.pid)[::-1]:
            with contextlib.suppress(ProcessLookupError):  # a subshell whose sleep was killed may exit first
                os.kill(pid, 9)
        parent.wait()
    assert process_tree(parent.pid) == [] and resident_bytes(parent.pid) == 0


def test_weights_written_into_the_memfd_are_safetensors_own_bytes():
    """The hand-written writer that fills the step's sealed memfd produces exactly safetensors' file, mixed
    dtypes included, and the library reads it back."""
    from safetensors.torch import load, save

    from benchmark.isolation import write_safetensors

    tensors = {
        "model.layers.1.w": torch.randn(5, 7),
        "model.layers.0.w": torch.randn(3, 2),
        "bf": torch.randn(4).to(torch.bfloat16),
        "ids": torch.arange(6),
        "mask": torch.tensor([True, False, True]),
        "empty": torch.zeros(0, 3),
        "scalar": torch.tensor(2.5),
    }
    with SealedMemory(lambda fd: write_safetensors(fd, tensors)) as memory:
        written = os.pread(memory.fd, memory.size + 1, 0)
    assert written == save(tensors)
    back = load(written)
    assert all(torch.equal(back[k], v) and back[k].dtype == v.dtype for k, v in tensors.items())


def test_a_launched_box_boots_without_blocking_and_serves_calls(tmp_path):
    """Box.launch starts the zygote and returns without waiting for it (the runner boots the step box while it
    evaluates the base model); the first call waits until it is ready."""
    box = Box(BoxSpec(), sealed=True)
    try:
        box.launch()
        assert box._proc is not None and box._zygote_pid is None  # launched, not waited for
        first = box._proc.pid
        box.launch()  # idempotent while it runs
        assert box._proc.pid == first
        result = _run_script(tmp_path, "REPORT = {'hello': 1}\n", Limits(60, 1, 2**30, 1 << 20), box=box)
        assert result.error is None and result.report["hello"] == 1
        assert box._zygote_pid is not None and box._proc.pid == first and box.start_s is not None
    finally:
        box.close()
    assert box._proc is None and box._zygote_pid is None
