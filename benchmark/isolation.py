"""Run a submission's code in a sandboxed child process; the harness only ever sees its weights.

Why: a pull request's intervention is untrusted code, and a crash, a hang or a memory
blow-up in it must fail one cell, not the grid. Each application runs in a fresh process
forked from a warm fork server (torch and transformers already imported, so a step costs
fork + model load instead of a Python start-up), with:

* **its own copy of the model**: the harness writes the model's state to a safetensors
  file in a per-step scratch folder; the child loads the default architecture from the
  model folder, loads that state, applies the intervention and writes the weights back.
  The harness checks the returned file (same keys, shapes and dtypes, finite values, a
  sane size) before it builds a model from it; its own model object is never handed over.
* **a time limit**: the intervention's ``resources.time_budget_s``, counted from the
  moment ``apply`` starts (the child touches a marker file), plus :data:`GRACE_S`; the
  harness kills the child's process group when it runs over. Start-up (model load)
  has its own limit, :data:`STARTUP_LIMIT_S`.
* **a memory limit**: ``resources.memory_budget_gb`` against the resident set of the
  child and its descendants, polled every :data:`POLL_S` (``RLIMIT_AS`` is not used: torch
  reserves large virtual ranges it never touches, so an address-space limit kills sound
  runs). A burst faster than the poll can overshoot by what it allocates in that time.
* **Linux namespaces** (where the kernel lets an unprivileged user create them, as
  ``unshare -rn true`` tests): a user namespace mapping the caller's uid to itself; a
  network namespace (only a downed loopback: every connection fails); a PID namespace (the
  code cannot signal the harness or any other process); a mount namespace in which every
  mount is remounted read-only except the scratch folder (also the working directory,
  ``$TMPDIR`` and ``$HOME``-style caches) and the toolkit's statistics cache.
* **audit hooks** (:func:`sys.addaudithook`) that record attempts to open a file for
  writing outside those folders or to reach a non-loopback address, and refuse the
  network ones (``PermissionError`` before any packet, also where namespaces are
  missing). They are not the barrier (code can bypass Python through C), the namespaces
  are; they give the record a clear reason, and an attempt fails the step even when the
  code caught the error.

Where namespaces are not available (containers without user namespaces, Ubuntu's
AppArmor restriction on unprivileged user namespaces), the child runs with the process,
time and memory limits only; every timing entry says which protections held
(``isolation``), and ``COMPOSE_BENCH_REQUIRE_SANDBOX=1`` turns the fallback into a
failed step. Written by hand because no maintained library does this for Python
workers: multiprocessing provides the fork server, ctypes the two system calls.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import json
import multiprocessing as mp
import os
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import torch

ENV_REQUIRE = "COMPOSE_BENCH_REQUIRE_SANDBOX"
POLL_S = 0.05
GRACE_S = 5.0
STARTUP_LIMIT_S = 600.0
LOG_TAIL_CHARS = 600
STATE_IN = "in.safetensors"
STATE_OUT = "out.safetensors"
RESULT = "result.json"
STARTED = "apply.started"
LOG = "child.log"

_CLONE_NEWNS = 0x00020000
_CLONE_NEWUSER = 0x10000000
_CLONE_NEWPID = 0x20000000
_CLONE_NEWNET = 0x40000000
_MS_RDONLY, _MS_NOSUID, _MS_NODEV, _MS_NOEXEC = 1, 2, 4, 8
_MS_NOATIME, _MS_NODIRATIME, _MS_RELATIME = 1024, 2048, 1 << 21
_MS_REMOUNT, _MS_BIND, _MS_REC, _MS_PRIVATE = 32, 4096, 16384, 1 << 18
# mounts left as they are: kernel pseudo file systems and devices (GPU nodes, /dev/null, /dev/shm)
_KEEP_MOUNTS = ("/proc", "/sys", "/dev")


class SandboxUnavailable(RuntimeError):
    """The kernel refused a namespace; the message says which and why."""


@dataclass
class StepJob:
    """What the child needs: all picklable, nothing of the harness's live objects."""

    submission: Any  # benchmark.submissions.Submission
    context: Any  # benchmark.api.InterventionContext
    model_path: str  # folder the architecture, config and tokenizer are read from
    model_dtype: str  # the harness's dtype, which the weights must come back in
    apply_dtype: str  # the dtype the intervention asked for
    device: str
    threads: int
    label: str
    # benchmark.step_cache.StepCache.environment(): this submission's own cache (read-only) and the
    # step's outbox (writable); variables set in the child, the outbox bound writable
    step_cache: dict[str, str] = field(default_factory=dict)


@dataclass
class StepOutcome:
    """What came back: the new weights, or a one-line reason."""

    state: dict[str, torch.Tensor] | None
    error: str | None
    seconds: float | None = None  # apply() only, measured in the child
    wall_s: float = 0.0  # the whole isolated step: transfer, start-up, apply, checks
    peak_rss_mb: float = 0.0  # the child's resident set (with its children), polled by the harness
    weight_bits: float | None = None
    isolation: dict[str, Any] = field(default_factory=dict)
    log_tail: str = ""


# --------------------------------------------------------------------------- the parent side


# always imported by the server: the default model's architecture and what every step uses
_BASE_PRELOAD = ("safetensors.torch", "transformers", "transformers.models.llama.modeling_llama",
                 "benchmark.api", "benchmark.models", "benchmark.runner", "benchmark.toolkit")
_PRELOAD_PREFIXES = ("transformers", "tokenizers", "safetensors", "huggingface_hub", "accelerate", "benchmark")


def _context() -> mp.context.BaseContext:
    """The fork server context; the server imports what the harness has imported so far.

    The harness has loaded the model before the first step, so its ``sys.modules`` holds
    the architecture's modeling code and the tokenizer's: importing them once in the server
    saves every step ~5 s of lazy imports (measured on the default model, 2 CPU cores).
    """
    ctx = mp.get_context("forkserver")
    preload = sorted(
        name for name in list(sys.modules)
        if name.split(".")[0] in _PRELOAD_PREFIXES and name != "benchmark.cli"
    )
    ctx.set_forkserver_preload(["benchmark.isolation", *_BASE_PRELOAD, *preload])
    return ctx


def _untied(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """safetensors refuses shared storage: tied tensors get their own copy (tied again on load)."""
    seen: set[int] = set()
    out = {}
    for name, tensor in state.items():
        tensor = tensor.detach().to("cpu")
        out[name] = tensor.clone() if tensor.data_ptr() in seen else tensor.contiguous()
        seen.add(tensor.data_ptr())
    return out


def _tree_rss(proc: psutil.Process) -> int:
    total = 0
    try:
        tree = [proc, *proc.children(recursive=True)]
    except psutil.Error:  # exited between two polls
        return 0
    for p in tree:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total


def grace_s(time_budget_s: float) -> float:
    """Time over budget before the kill: the result and weights are written after apply returns."""
    return min(GRACE_S, 1.0 + 0.1 * time_budget_s)


def _die_with_parent() -> None:
    """PR_SET_PDEATHSIG: this process gets SIGKILL when its parent exits (a killed harness leaves no orphans)."""
    try:
        _libc().prctl(1, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def _kill_group(pid: int) -> None:
    for target in (lambda: os.killpg(pid, signal.SIGKILL), lambda: os.kill(pid, signal.SIGKILL)):
        try:
            target()
        except ProcessLookupError:
            pass
        except PermissionError:
            pass


def _tail(path: Path) -> str:
    try:
        text = path.read_bytes()[-4 * LOG_TAIL_CHARS:].decode("utf-8", "replace")
    except OSError:
        return ""
    lines = [ln.strip() for ln in text.replace("\r", "\n").splitlines() if ln.strip()]
    return " | ".join(lines)[-LOG_TAIL_CHARS:]


def _exit_text(code: int | None) -> str:
    if code is None:
        return "did not exit"
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


def check_returned_state(
    state: dict[str, torch.Tensor], reference: dict[str, torch.Tensor], label: str
) -> str | None:
    """None when ``state`` has exactly the reference's keys, shapes and dtypes and finite values."""
    missing = sorted(set(reference) - set(state))[:3]
    added = sorted(set(state) - set(reference))[:3]
    if missing or added:
        return f"{label}: architecture changed (missing {missing}, added {added})"
    for name, ref in reference.items():
        got = state[name]
        if tuple(got.shape) != tuple(ref.shape):
            return f"{label}: architecture changed ({name} is {tuple(got.shape)}, was {tuple(ref.shape)})"
        if got.dtype != ref.dtype:
            return f"{label}: {name} came back as {got.dtype}, expected {ref.dtype}"
        if got.is_floating_point() and not torch.isfinite(got).all():
            return f"{label}: weights are not finite (NaN or inf in {name})"
    return None


def run_isolated(
    job: StepJob,
    state: dict[str, torch.Tensor],
    time_budget_s: float,
    memory_budget_gb: float,
) -> StepOutcome:
    """Apply ``job`` to a model holding ``state`` in a sandboxed child; never raises for the child's faults."""
    t0 = time.perf_counter()
    scratch = Path(tempfile.mkdtemp(prefix="compose-bench-step-"))
    try:
        reference = dict(state)
        from safetensors.torch import save_file

        save_file(_untied(state), str(scratch / STATE_IN))
        in_size = (scratch / STATE_IN).stat().st_size
        ctx = _context()
        proc = ctx.Process(target=child_main, args=(job, str(scratch)), name=f"compose-bench:{job.label}", daemon=False)
        _start_without_main(proc)
        outcome = _watch(proc, scratch, job.label, time_budget_s, memory_budget_gb)
        if outcome.error is None:
            outcome = _collect(outcome, scratch, reference, in_size, job.label, time_budget_s)
        outcome.wall_s = time.perf_counter() - t0
        return outcome
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _start_without_main(proc) -> None:
    """Start ``proc`` without multiprocessing re-importing our ``__main__`` in the child.

    The child needs only this module; re-running a caller's script (or the CLI) there
    would cost time and, for unguarded scripts, start the work again.
    """
    import types

    main = sys.modules["__main__"]
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        proc.start()
    finally:
        sys.modules["__main__"] = main


def _watch(proc, scratch: Path, label: str, time_budget_s: float, memory_budget_gb: float) -> StepOutcome:
    """Poll the child until it exits; kill its process group when it runs over a limit."""
    limit_bytes = memory_budget_gb * 2**30
    started_at: float | None = None
    t_start = time.perf_counter()
    peak = 0
    reason = None
    ps = psutil.Process(proc.pid)
    while True:
        proc.join(POLL_S)
        if proc.exitcode is not None:
            break
        now = time.perf_counter()
        rss = _tree_rss(ps)
        peak = max(peak, rss)
        if started_at is None and (scratch / STARTED).exists():
            started_at = now
        if rss > limit_bytes:
            reason = (f"{label}: out of memory: used {rss / 2**30:.1f} GB, over its memory budget of "
                      f"{memory_budget_gb:g} GB (killed)")
        elif started_at is not None and now - started_at > time_budget_s + grace_s(time_budget_s):
            reason = f"{label}: ran over its time budget of {time_budget_s:g} s (killed after {now - started_at:.0f} s)"
        elif started_at is None and now - t_start > STARTUP_LIMIT_S:
            reason = f"{label}: did not start within {STARTUP_LIMIT_S:.0f} s (killed)"
        if reason:
            _kill_group(proc.pid)
            proc.join(10)
            break
    outcome = StepOutcome(None, reason, peak_rss_mb=peak / 2**20)
    if reason is None and not (scratch / RESULT).exists():
        tail = _tail(scratch / LOG)
        outcome.error = f"{label}: the isolated process {_exit_text(proc.exitcode)} without a result" + (
            f"; its output ends: {tail}" if tail else "")
    outcome.log_tail = _tail(scratch / LOG)
    return outcome


def _collect(outcome: StepOutcome, scratch: Path, reference: dict, in_size: int, label: str, budget: float) -> StepOutcome:
    """Read the child's result and weights; treat both as untrusted."""
    try:
        result = json.loads((scratch / RESULT).read_text(encoding="utf-8", errors="replace")[:100_000])
        if not isinstance(result, dict):
            raise ValueError("not an object")
    except (OSError, ValueError) as exc:
        outcome.error = f"{label}: unreadable result from the isolated process ({exc})"
        return outcome
    outcome.isolation = result.get("isolation") if isinstance(result.get("isolation"), dict) else {}
    seconds = result.get("seconds")
    outcome.seconds = float(seconds) if isinstance(seconds, (int, float)) else None
    bits = result.get("weight_bits")
    outcome.weight_bits = float(bits) if isinstance(bits, (int, float)) and not isinstance(bits, bool) else None
    if result.get("error"):
        outcome.error = str(result["error"]).replace("\n", " ")[:700]
        return outcome
    if outcome.seconds is not None and outcome.seconds > budget:
        outcome.error = f"{label}: ran {outcome.seconds:.0f} s, over its time budget of {budget:g} s"
        return outcome
    out = scratch / STATE_OUT
    if not out.exists() or out.stat().st_size > in_size * 1.05 + 2**20:
        outcome.error = f"{label}: the isolated process returned no weights file or an oversized one"
        return outcome
    from safetensors.torch import load_file

    try:
        state = load_file(str(out))
    except Exception as exc:  # a malformed file written by untrusted code
        outcome.error = f"{label}: unreadable weights from the isolated process ({type(exc).__name__}: {exc})"
        return outcome
    problem = check_returned_state(state, reference, label)
    if problem:
        outcome.error = problem
        return outcome
    outcome.state = state
    return outcome


# --------------------------------------------------------------------------- the child side


def _libc():
    lib = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    lib.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_void_p]
    lib.unshare.argtypes = [ctypes.c_int]
    return lib


def _write(path: str, text: str) -> None:
    with open(path, "w") as fh:
        fh.write(text)


def _mount_points() -> list[tuple[str, set[str]]]:
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        parts = line.split()
        point = parts[4].encode().decode("unicode_escape")
        points.append((point, set(parts[5].split(","))))
    return points


def _flags(options: set[str]) -> int:
    """Mount flags a remount inside a user namespace must keep (the kernel locks them)."""
    table = {"nosuid": _MS_NOSUID, "nodev": _MS_NODEV, "noexec": _MS_NOEXEC, "noatime": _MS_NOATIME,
             "nodiratime": _MS_NODIRATIME, "relatime": _MS_RELATIME}
    return sum(v for k, v in table.items() if k in options)


def confine(writable: list[str]) -> dict[str, Any]:
    """Enter user, network, PID and mount namespaces; make every mount but ``writable`` read-only.

    Must run in a single-threaded process. Forks once (a new PID namespace takes effect for
    children only): the caller returns in the grandchild, PID 1 of the new namespace, while
    this process waits for it and exits with its status. Raises SandboxUnavailable.
    """
    libc = _libc()
    uid, gid = os.getuid(), os.getgid()
    if libc.unshare(_CLONE_NEWUSER | _CLONE_NEWNET | _CLONE_NEWNS | _CLONE_NEWPID) != 0:
        err = ctypes.get_errno()
        raise SandboxUnavailable(f"unshare(user, net, mount, pid) failed: {os.strerror(err)}")
    try:
        _write("/proc/self/setgroups", "deny")
        _write("/proc/self/uid_map", f"{uid} {uid} 1")
        _write("/proc/self/gid_map", f"{gid} {gid} 1")
    except OSError as exc:
        raise SandboxUnavailable(f"writing the user namespace's id maps failed: {exc}") from exc
    if libc.mount(None, b"/", None, _MS_REC | _MS_PRIVATE, None) != 0:
        raise SandboxUnavailable(f"making mounts private failed: {os.strerror(ctypes.get_errno())}")
    for folder in writable:  # a bind mount of its own, so it stays writable below a read-only parent
        if libc.mount(folder.encode(), folder.encode(), None, _MS_BIND | _MS_REC, None) != 0:
            raise SandboxUnavailable(f"bind-mounting {folder} failed: {os.strerror(ctypes.get_errno())}")
    read_only = []
    for point, options in _mount_points():
        if point in writable or any(point == k or point.startswith(k + "/") for k in _KEEP_MOUNTS):
            continue
        if "ro" in options:
            continue
        flags = _MS_REMOUNT | _MS_BIND | _MS_RDONLY | _flags(options)
        if libc.mount(None, point.encode(), None, flags, None) != 0:
            err = ctypes.get_errno()
            if err in (errno.ENOENT, errno.EACCES) and point != "/":
                continue  # a mount hidden below another one: not reachable anyway
            raise SandboxUnavailable(f"remounting {point} read-only failed: {os.strerror(err)}")
        read_only.append(point)
    pid = os.fork()
    if pid:  # the outer process: wait for PID 1 of the new namespace and pass on its status
        _, status = os.waitpid(pid, 0)
        if os.WIFSIGNALED(status):  # die of the same signal, so the harness can name it
            signal.signal(os.WTERMSIG(status), signal.SIG_DFL)
            os.kill(os.getpid(), os.WTERMSIG(status))
        os._exit(os.waitstatus_to_exitcode(status) & 0xFF)
    _die_with_parent()
    return {"network": "none (network namespace)", "pid_namespace": True,
            "filesystem": f"read-only except {writable}", "read_only_mounts": len(read_only)}


class _Watchdog:
    """Audit hook: records writes outside the writable folders and non-loopback network use."""

    def __init__(self, writable: list[str]) -> None:
        self.writable = [os.path.realpath(w) for w in writable] + ["/dev", "/proc/self"]
        self.violations: list[str] = []
        self.armed = False

    def _allowed(self, path: str) -> bool:
        real = os.path.realpath(path)
        return any(real == w or real.startswith(w.rstrip("/") + "/") for w in self.writable)

    def __call__(self, event: str, args: tuple) -> None:
        if not self.armed:
            return
        if event == "open":
            path, mode, flags = (list(args) + [None, None, None])[:3]
            if isinstance(path, int) or path is None:
                return
            writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
                isinstance(flags, int) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND))
            if writing and not self._allowed(os.fsdecode(path)):
                self._note(f"tried to write outside its folder: {os.fsdecode(path)}")
        elif event in ("os.remove", "os.rename", "os.mkdir", "os.rmdir", "shutil.rmtree", "os.truncate"):
            path = args[0] if args else None
            if event == "os.mkdir" and isinstance(path, (str, bytes, os.PathLike)) and os.path.isdir(path):
                return  # makedirs(exist_ok=True) on a folder that exists changes nothing (cache_dir() does it)
            if isinstance(path, (str, bytes, os.PathLike)) and not self._allowed(os.fsdecode(path)):
                self._note(f"tried to change the file system outside its folder: {event} {os.fsdecode(path)}")
        elif event in ("socket.connect", "socket.sendto"):
            address = args[1] if len(args) > 1 else None
            if isinstance(address, tuple) and address and not _loopback(str(address[0])):
                self._block(f"tried to reach the network: {event.split('.')[1]} to {address[0]}:{address[1] if len(address) > 1 else ''}")
        elif event == "socket.getaddrinfo":
            host = args[0] if args else None
            if isinstance(host, bytes):
                host = host.decode(errors="replace")
            if host and not _loopback(str(host)):
                self._block(f"tried to reach the network: name lookup of {host}")

    def _block(self, text: str) -> None:
        """Note the attempt and refuse it: with or without a network namespace, Python code sends nothing."""
        self._note(text)
        raise PermissionError(f"compose-bench sandbox: {text}")

    def _note(self, text: str) -> None:
        if text not in self.violations and len(self.violations) < 5:
            self.violations.append(text)


def _loopback(host: str) -> bool:
    return host in ("localhost", "::1", "") or host.startswith("127.")


def _detach_into_log(scratch: str) -> None:
    """A child's first act: its own process group (killable as one), death with its parent, output to the log."""
    os.setsid()
    _die_with_parent()
    log = os.open(os.path.join(scratch, LOG), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.dup2(log, 1)
    os.dup2(log, 2)


def child_main(job: StepJob, scratch: str) -> None:
    """Entry of the forked child: confine, load, apply, check, write the weights and a result."""
    _detach_into_log(scratch)
    code = 0
    try:
        _child(job, scratch)
    except BaseException as exc:  # noqa: BLE001 - everything becomes the step's reason
        code = 1
        _result(scratch, {"error": f"{job.label}: isolated process failed: {type(exc).__name__}: {exc}"[:700]})
    finally:
        sys.stdout.flush() if sys.stdout else None
        os._exit(code)


def _result(scratch: str, payload: dict) -> None:
    tmp = os.path.join(scratch, RESULT + ".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(payload, fh, default=str)
    os.replace(tmp, os.path.join(scratch, RESULT))


def _thread_only_progress_lock() -> None:
    """tqdm's default lock holds a multiprocessing semaphore, registered with the harness's
    resource tracker; a child ends with ``os._exit``, so the tracker warned at every harness
    exit of a "leaked semaphore". One process needs no inter-process lock for its own bars."""
    try:
        from tqdm.std import TqdmDefaultWriteLock
    except ImportError:  # pragma: no cover - tqdm ships with transformers
        return
    TqdmDefaultWriteLock.mp_lock = None


def _child(job: StepJob, scratch: str) -> None:
    sys.dont_write_bytecode = True
    _thread_only_progress_lock()
    # the step's own cache (benchmark.step_cache), never the shared one: the outbox is writable,
    # the folder of what this submission kept before stays read-only like everything else
    outbox = job.step_cache.get("COMPOSE_BENCH_STEP_CACHE_OUT")
    writable = [os.path.realpath(scratch)] + ([os.path.realpath(outbox)] if outbox else [])
    try:
        import huggingface_hub.constants as hf_constants

        hf_home = hf_constants.HF_HOME
    except Exception:  # pragma: no cover - huggingface_hub ships with transformers
        hf_home = os.path.expanduser("~/.cache/huggingface")
    env = {
        "TMPDIR": scratch, "XDG_CACHE_HOME": os.path.join(scratch, "cache"), "HF_HOME": hf_home,
        "HF_DATASETS_CACHE": os.path.join(scratch, "datasets"), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1", "MPLCONFIGDIR": os.path.join(scratch, "mpl"), "PYTHONDONTWRITEBYTECODE": "1",
        "TOKENIZERS_PARALLELISM": "false", "GRADIO_ANALYTICS_ENABLED": "False", **job.step_cache,
    }
    os.environ.update(env)
    tempfile.tempdir = scratch
    os.chdir(scratch)
    try:
        isolation = {"process": True, **confine(writable)}
    except SandboxUnavailable as exc:
        if os.environ.get(ENV_REQUIRE, "") not in ("", "0"):
            raise
        isolation = {"process": True, "namespaces": f"unavailable: {exc}", "network": "not isolated",
                     "filesystem": "not isolated"}
    watchdog = _Watchdog(writable)
    sys.addaudithook(watchdog)
    if job.threads:
        torch.set_num_threads(job.threads)

    from safetensors.torch import load_file, save_file

    from benchmark.models import ResolvedModel, load_model, parse_dtype
    from benchmark.resources import measure
    from benchmark.runner import _signature, check_model_after, seed_everything
    from benchmark.submissions import SubmissionError

    t_load = time.perf_counter()
    device = torch.device(job.device)
    model_dtype, apply_dtype = parse_dtype(job.model_dtype), parse_dtype(job.apply_dtype)
    model, tokenizer = load_model(ResolvedModel(job.label, "local", job.model_path), model_dtype, torch.device("cpu"))
    model.load_state_dict(load_file(os.path.join(scratch, STATE_IN)), strict=True)
    os.unlink(os.path.join(scratch, STATE_IN))
    signature = _signature(model)
    model = model.to(device=device, dtype=apply_dtype)
    isolation["child_load_s"] = round(time.perf_counter() - t_load, 3)
    payload: dict[str, Any] = {"isolation": isolation}
    watchdog.armed = True
    try:
        intervention = job.submission.instantiate()
    except SubmissionError as exc:
        watchdog.armed = False
        _result(scratch, {**payload, "error": f"{job.label}: {exc}"})
        return
    seed_everything(job.context.seed)
    Path(scratch, STARTED).touch()
    error = None
    with measure() as usage:
        try:
            model = intervention.apply(model, tokenizer, job.context)
        except torch.OutOfMemoryError as exc:
            error = f"{job.label}: out of memory: {_one_line(exc)}"
        except BaseException as exc:  # noqa: BLE001 - SystemExit/KeyboardInterrupt from the code too
            error = f"{job.label}: {_one_line(exc)}"
    watchdog.armed = False
    payload["seconds"] = round(usage.seconds, 3)
    payload["child_peak_rss_mb"] = round(usage.peak_rss_mb, 1)
    if watchdog.violations:
        blocked = " (blocked)" if "namespaces" not in isolation else ""
        error = f"{job.label}: {'; '.join(watchdog.violations)}{blocked}" + (f"; then: {error.split(': ', 1)[-1]}" if error else "")
    if error is None:
        try:
            if isinstance(model, torch.nn.Module):
                model = model.to(device="cpu", dtype=model_dtype)
            check_model_after(job.label, model, signature)
            payload["weight_bits"] = intervention.weight_bits(job.context)
            t_save = time.perf_counter()
            save_file(_untied(model.state_dict()), os.path.join(scratch, STATE_OUT))
            isolation["child_save_s"] = round(time.perf_counter() - t_save, 3)
        except Exception as exc:  # noqa: BLE001 - StepFailed or the code's weight_bits raising
            error = str(exc) if type(exc).__name__ == "StepFailed" else f"{job.label}: {_one_line(exc)}"
    payload["error"] = error
    _result(scratch, payload)


def _one_line(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".strip().replace("\n", " ")
    return text[:500]


# --------------------------------------------------------------------------- import check


def check_import(folder: str | Path, timeout_s: float) -> tuple[str, str]:
    """Import a submission's entry point and check its class in a fresh sandboxed process.

    Returns ``(verdict, message)`` with verdict ``"ok"``, ``"import"`` (the entry point did
    not import, or the process died or hung while importing) or ``"api"`` (the class does
    not follow the API). The process is a child of the fork server (never imported the
    submission: a fresh interpreter state) confined like a grid step; the harness never
    imports the submission's code.
    """
    scratch = Path(tempfile.mkdtemp(prefix="compose-bench-import-"))
    try:
        proc = _context().Process(target=_import_main, args=(str(folder), str(scratch)), name="compose-bench:import")
        _start_without_main(proc)
        proc.join(timeout_s)
        if proc.exitcode is None:
            _kill_group(proc.pid)
            proc.join(10)
            return "import", f"{folder}: importing the entry point took over {timeout_s:g} s (killed)"
        try:
            result = json.loads((scratch / RESULT).read_text(encoding="utf-8", errors="replace")[:20_000])
            return str(result["verdict"]), str(result["message"]).replace("\n", " ")[:700]
        except (OSError, ValueError, KeyError, TypeError):
            tail = _tail(scratch / LOG)
            return "import", (f"{folder}: importing the entry point in a fresh process {_exit_text(proc.exitcode)}"
                              + (f"; its output ends: {tail}" if tail else ""))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _import_main(folder: str, scratch: str) -> None:
    _detach_into_log(scratch)
    code = 0
    try:
        os.environ.update({"TMPDIR": scratch, "PYTHONDONTWRITEBYTECODE": "1", "HF_HUB_OFFLINE": "1"})
        sys.dont_write_bytecode = True
        tempfile.tempdir = scratch
        os.chdir(scratch)
        try:
            confine([os.path.realpath(scratch)])
            sandbox = ""
        except SandboxUnavailable as exc:
            if os.environ.get(ENV_REQUIRE, "") not in ("", "0"):
                raise
            sandbox = f" (NOT sandboxed: {exc})"
        from benchmark.submissions import SubmissionError, load_submission

        sub = load_submission(folder)
        try:
            sub.load_class()
            _result(scratch, {"verdict": "ok", "message": "sandboxed" if not sandbox else sandbox.strip(" ()")})
        except SubmissionError as exc:
            verdict = "import" if isinstance(exc.__cause__, BaseException) and ": import failed: " in str(exc) else "api"
            if "module file" in str(exc) or "has no class" in str(exc):
                verdict = "import"
            _result(scratch, {"verdict": verdict, "message": str(exc)})
    except BaseException as exc:  # noqa: BLE001 - e.g. SystemExit raised at import time
        code = 1
        _result(scratch, {"verdict": "import", "message": f"{folder}: importing the entry point failed: {_one_line(exc)}"})
    finally:
        os._exit(code)
