"""The code that runs inside the box: a warm zygote that forks one sealed child per call.

Started by :mod:`benchmark.sandbox` as the command of a bubblewrap box (or, only where the
user accepted the risk, as a plain process). It imports the heavy libraries once, runs an
optional warm-up, then waits on the one anonymous socket it inherited (no path, so nothing
else can reach it). For each request it forks a child that

1. drops the zygote's socket and every other file descriptor except the call's own pipes
   (input stream, output stream, log);
2. enters fresh user, mount, PID, network, IPC and UTS namespaces *inside* the box (so one
   call cannot see or leave anything for the next: each gets a private size-limited tmpfs
   scratch at ``/tmp`` and ``/dev/shm``, its own PID 1 and nothing that outlives it);
3. receives its input files over the input pipe, mounts folders read-only;
4. drops every capability, sets ``no_new_privs`` and loads a seccomp filter (no mounts, no
   further namespaces, no ptrace, no keyring, no BPF, no io_uring, no memfd);
5. calls the target ``module:function(payload, in_dir, out_dir)`` and streams the files it
   left in ``out_dir`` and its JSON report back over the output pipe.

Why hand-written: bubblewrap builds the box once per run (the host side: blind root,
cleared environment, no network, no host processes), but it can only exec a fresh program,
and a fresh ``python -c "import torch, transformers"`` costs ~5 s per step. Keeping a warm
process means forking inside the box, and no maintained tool confines an already running
forked process; the per-call layer below is the few system calls that takes (ctypes for
``unshare``/``mount``/``capset``, libseccomp through ctypes for the filter).

Protocol (all messages are 4-byte big-endian length + JSON; file descriptors ride along
with SCM_RIGHTS): zygote -> parent ``{"ready": pid}``; parent -> zygote ``{"op": "run",
...}`` + 3 fds; zygote -> parent ``{"started": pid}`` then ``{"exited": status}``. The
child answers on its output pipe only; the parent never unpickles anything that comes out
of a box (the request's pickled payload goes the other way, parent to child).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import importlib
import io
import json
import os
import pickle
import signal
import socket
import struct
import sys
import tarfile
import time
from typing import Any

_CLONE_NEWNS, _CLONE_NEWCGROUP, _CLONE_NEWUTS, _CLONE_NEWIPC = 0x00020000, 0x02000000, 0x04000000, 0x08000000
_CLONE_NEWUSER, _CLONE_NEWPID, _CLONE_NEWNET = 0x10000000, 0x20000000, 0x40000000
_NS_FLAGS = (_CLONE_NEWNS, _CLONE_NEWCGROUP, _CLONE_NEWUTS, _CLONE_NEWIPC, _CLONE_NEWUSER, _CLONE_NEWPID, _CLONE_NEWNET)
_MS_RDONLY, _MS_NOSUID, _MS_NODEV, _MS_REMOUNT, _MS_BIND, _MS_REC, _MS_PRIVATE = 1, 2, 4, 32, 4096, 16384, 1 << 18
_PR_SET_PDEATHSIG, _PR_SET_DUMPABLE, _PR_CAPBSET_DROP, _PR_SET_NO_NEW_PRIVS, _PR_CAP_AMBIENT = 1, 4, 24, 38, 47
# system calls a step never needs and an escape or an uncounted resource would (seccomp, EPERM)
_DENIED_SYSCALLS = (
    "mount",
    "umount2",
    "pivot_root",
    "chroot",
    "unshare",
    "setns",
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
    "keyctl",
    "add_key",
    "request_key",
    "bpf",
    "perf_event_open",
    "userfaultfd",
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
    "memfd_create",
    "memfd_secret",
    "fsopen",
    "fsmount",
    "fsconfig",
    "move_mount",
    "open_tree",
    "mount_setattr",
    "kexec_load",
    "kexec_file_load",
    "init_module",
    "finit_module",
    "delete_module",
    "acct",
    "swapon",
    "swapoff",
    "reboot",
    "syslog",
    "quotactl",
    "name_to_handle_at",
    "open_by_handle_at",
    "lookup_dcookie",
    "personality",
    "vhangup",
    "pidfd_getfd",
)


# --------------------------------------------------------------------------- framing


def send_msg(sock: socket.socket, obj: dict, fds: list[int] | None = None) -> None:
    data = json.dumps(obj).encode()
    frame = struct.pack(">I", len(data)) + data
    if fds:
        socket.send_fds(sock, [frame], fds)
    else:
        sock.sendall(frame)


def recv_msg(sock: socket.socket, max_bytes: int = 64 << 20) -> tuple[dict | None, list[int]]:
    """One message and the fds that came with it; (None, []) at end of stream."""
    head, fds, _, _ = socket.recv_fds(sock, 4, 8)
    if not head:
        return None, list(fds)
    while len(head) < 4:
        more = sock.recv(4 - len(head))
        if not more:
            return None, list(fds)
        head += more
    (size,) = struct.unpack(">I", head)
    if size > max_bytes:
        raise ValueError(f"message of {size} bytes")
    body = b""
    while len(body) < size:
        chunk = sock.recv(min(1 << 20, size - len(body)))
        if not chunk:
            return None, list(fds)
        body += chunk
    return json.loads(body), list(fds)


def _read_exact(fd: int, n: int) -> bytearray:
    out = bytearray(n)
    view = memoryview(out)
    pos = 0
    while pos < n:
        got = os.readv(fd, [view[pos : pos + (4 << 20)]])
        if not got:
            raise EOFError(f"input stream ended after {pos} of {n} bytes")
        pos += got
    return out


def write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _sendfile_all(out_fd: int, in_fd: int, size: int) -> None:
    """Copy ``size`` bytes of the file ``in_fd`` into ``out_fd`` (a pipe) in the kernel."""
    offset = 0
    while offset < size:
        sent = os.sendfile(out_fd, in_fd, offset, min(size - offset, 1 << 30))
        if sent == 0:
            raise EOFError(f"the file ended after {offset} of {size} bytes")
        offset += sent


# --------------------------------------------------------------------------- system calls


def _libc():
    lib = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    lib.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_void_p]
    lib.unshare.argtypes = [ctypes.c_int]
    lib.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    return lib


class ConfineError(RuntimeError):
    """A step of the per-call confinement failed; the message names it."""


def _check(ok: bool, what: str) -> None:
    if not ok:
        err = ctypes.get_errno()
        raise ConfineError(f"{what} failed: {os.strerror(err)}")


def _write(path: str, text: str) -> None:
    with open(path, "w") as fh:
        fh.write(text)


def _enter_namespaces(libc, scratch_bytes: int, shm_bytes: int) -> None:
    """New user/mount/PID/net/IPC/UTS namespaces; private tmpfs at /tmp and /dev/shm (this process)."""
    uid, gid = os.getuid(), os.getgid()
    flags = _CLONE_NEWUSER | _CLONE_NEWNS | _CLONE_NEWPID | _CLONE_NEWNET | _CLONE_NEWIPC | _CLONE_NEWUTS
    _check(libc.unshare(flags) == 0, "unshare(user, mount, pid, net, ipc, uts)")
    try:
        _write("/proc/self/setgroups", "deny")
        _write("/proc/self/uid_map", f"{uid} {uid} 1")
        _write("/proc/self/gid_map", f"{gid} {gid} 1")
    except OSError as exc:
        raise ConfineError(f"writing the id maps failed: {exc}") from exc
    _check(libc.mount(None, b"/", None, _MS_REC | _MS_PRIVATE, None) == 0, "making mounts private")
    for point, size in ((b"/tmp", scratch_bytes), (b"/dev/shm", shm_bytes)):
        opts = f"size={max(int(size), 4096)},mode=1777".encode()
        _check(
            libc.mount(b"tmpfs", point, b"tmpfs", _MS_NOSUID | _MS_NODEV, opts) == 0,
            f"mounting tmpfs on {point.decode()}",
        )


def _read_only(libc, folder: str) -> None:
    _check(libc.mount(folder.encode(), folder.encode(), None, _MS_BIND | _MS_REC, None) == 0, f"binding {folder}")
    flags = _MS_REMOUNT | _MS_BIND | _MS_RDONLY | _MS_NOSUID | _MS_NODEV
    _check(libc.mount(None, folder.encode(), None, flags, None) == 0, f"making {folder} read-only")


def _seccomp() -> str:
    """Load the deny-list filter through libseccomp; returns what was done, for the report."""
    name = ctypes.util.find_library("seccomp") or "libseccomp.so.2"
    try:
        lib = ctypes.CDLL(name, use_errno=True)
    except OSError:
        return "unavailable (libseccomp not found)"

    class ArgCmp(ctypes.Structure):
        _fields_ = [
            ("arg", ctypes.c_uint),
            ("op", ctypes.c_int),
            ("datum_a", ctypes.c_uint64),
            ("datum_b", ctypes.c_uint64),
        ]

    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_load.argtypes = [ctypes.c_void_p]
    allow, errno_eperm, errno_enosys = 0x7FFF0000, 0x00050000 | 1, 0x00050000 | 38
    ctx = lib.seccomp_init(allow)
    _check(bool(ctx), "seccomp_init")
    add = lib.seccomp_rule_add
    add.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint]
    for call in _DENIED_SYSCALLS:
        nr = lib.seccomp_syscall_resolve_name(call.encode())
        if nr >= 0:
            _check(add(ctx, errno_eperm, nr, 0) == 0, f"seccomp rule for {call}")
    nr = lib.seccomp_syscall_resolve_name(b"clone3")  # glibc falls back to clone(), whose flags we can read
    if nr >= 0:
        _check(add(ctx, errno_enosys, nr, 0) == 0, "seccomp rule for clone3")
    nr = lib.seccomp_syscall_resolve_name(b"clone")
    add_cmp = lib.seccomp_rule_add
    add_cmp.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint, ArgCmp]
    for flag in _NS_FLAGS:  # clone() creating any namespace
        _check(add_cmp(ctx, errno_eperm, nr, 1, ArgCmp(0, 7, flag, flag)) == 0, "seccomp rule for clone")
    _check(lib.seccomp_load(ctx) == 0, "seccomp_load")
    return f"deny-list of {len(_DENIED_SYSCALLS) + 2} system calls"


def _drop_privileges(libc) -> str:
    """Empty capability sets (bounding, ambient, effective, permitted, inheritable), no_new_privs, seccomp."""
    for cap in range(64):
        libc.prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0)  # EINVAL past the last capability: ignored
    libc.prctl(_PR_CAP_AMBIENT, 4, 0, 0, 0)  # PR_CAP_AMBIENT_CLEAR_ALL
    _check(libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0, "no_new_privs")
    report = _seccomp()

    class Header(ctypes.Structure):
        _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

    class Data(ctypes.Structure):
        _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]

    data = (Data * 2)()
    _check(libc.capset(ctypes.byref(Header(0x20080522, 0)), data) == 0, "capset")
    return report


# --------------------------------------------------------------------------- one call


# in-memory inputs and outputs of the current call. MEMORY_IN: bytes that came through the pipe, or
# the read-only path (/proc/self/fd/N) of a sealed memfd the harness sent with the request (a model's
# weights: mapped, never copied here). MEMORY_OUT: bytes, or the path of a file in the call's scratch
# that is streamed back by the kernel (os.sendfile) and removed.
MEMORY_IN: dict[str, bytes | str] = {}
MEMORY_OUT: dict[str, bytes | str] = {}


def _receive_inputs(fd: int, in_dir: str, files: list[list], memfds: list[int]) -> list[str]:
    """Input files, folders (tar), in-memory blobs and sealed memfds in the order announced; returns the folders."""
    folders = []
    memfds = list(memfds)
    for name, size, kind in files:
        if kind == "fd":
            if not memfds:
                raise ConfineError(f"input {name!r} was announced as a file descriptor that did not come")
            MEMORY_IN[name] = f"/proc/self/fd/{memfds.pop(0)}"
            continue
        data = _read_exact(fd, int(size))
        target = os.path.join(in_dir, name)
        if kind == "mem":
            MEMORY_IN[name] = bytes(data)
        elif kind == "dir":
            os.makedirs(target)
            with tarfile.open(fileobj=io.BytesIO(data)) as tar:
                tar.extractall(target, filter="data")
            folders.append(target)
        else:
            with open(target, "wb") as fh:
                fh.write(data)
        del data
    return folders


def _send_outputs(fd: int, out_dir: str, report: dict) -> None:
    for name in sorted(MEMORY_OUT):
        data = MEMORY_OUT.pop(name)
        if isinstance(data, str):  # a scratch file: the kernel copies it into the pipe, no copy in this process
            with open(data, "rb") as fh:
                size = os.fstat(fh.fileno()).st_size
                head = json.dumps({"file": name, "size": size, "mem": True}).encode()
                write_all(fd, struct.pack(">I", len(head)) + head)
                _sendfile_all(fd, fh.fileno(), size)
            os.unlink(data)
            continue
        head = json.dumps({"file": name, "size": len(data), "mem": True}).encode()
        write_all(fd, struct.pack(">I", len(head)) + head)
        write_all(fd, data)
        del data
    names = sorted(n for n in os.listdir(out_dir) if os.path.isfile(os.path.join(out_dir, n)))
    for name in names:
        path = os.path.join(out_dir, name)
        size = os.path.getsize(path)
        head = json.dumps({"file": name, "size": size}).encode()
        write_all(fd, struct.pack(">I", len(head)) + head)
        with open(path, "rb") as fh:
            while chunk := fh.read(1 << 22):
                write_all(fd, chunk)
        os.unlink(path)
    head = json.dumps({"report": report}, default=str).encode()
    write_all(fd, struct.pack(">I", len(head)) + head)


def _call(request: dict, in_fd: int, out_fd: int, memfds: list[int], sealed: bool, libc) -> None:
    """PID 1 of the call (or the call's only process when not sealed): inputs, target, outputs."""
    root = request["scratch"]
    in_dir, out_dir, work = (os.path.join(root, d) for d in ("in", "out", "work"))
    for d in (in_dir, out_dir, work, os.path.join(root, "home")):
        os.makedirs(d, exist_ok=True)
    folders = _receive_inputs(in_fd, in_dir, request["files"], memfds)
    payload = pickle.loads(_read_exact_file(os.path.join(in_dir, "payload.pickle")))
    os.unlink(os.path.join(in_dir, "payload.pickle"))
    confinement = {}
    if sealed:
        for folder in folders:
            _read_only(libc, folder)
        confinement["seccomp"] = _drop_privileges(libc)
    # sealed: the parent reads this process's namespaces, capabilities and seccomp mode, then says go
    head = json.dumps({"sealed": True}).encode()
    write_all(out_fd, struct.pack(">I", len(head)) + head)
    if _read_exact(in_fd, 1) != b"g":
        raise ConfineError("the harness did not confirm the seal")
    os.close(in_fd)
    os.environ.update({"TMPDIR": root, "HOME": os.path.join(root, "home")})
    import tempfile

    tempfile.tempdir = root
    os.chdir(work)
    module, func = request["target"].split(":")
    report = getattr(importlib.import_module(module), func)(payload, in_dir, out_dir)
    if not isinstance(report, dict):
        report = {"value": report}
    report.setdefault("confinement", confinement)
    _send_outputs(out_fd, out_dir, report)
    os.close(out_fd)


def _read_exact_file(path: str) -> bytes:
    with open(path, "rb") as fh:
        return fh.read()


def _child(request: dict, fds: list[int], sealed: bool) -> None:
    """The forked child: close everything else, confine, run; never returns."""
    in_fd, out_fd, log_fd = fds[:3]
    memfds = fds[3:]  # sealed read-only inputs (sandbox.SealedMemory)
    code = 0
    try:
        os.setsid()
        os.dup2(log_fd, 1)
        os.dup2(log_fd, 2)
        os.close(log_fd)
        for name in os.listdir("/proc/self/fd"):  # the zygote's socket and anything else inherited
            fd = int(name)
            if fd > 2 and fd not in (in_fd, out_fd, *memfds):
                try:
                    os.close(fd)
                except OSError:
                    pass
        sys.stdout = io.TextIOWrapper(os.fdopen(1, "wb", closefd=False), line_buffering=True)
        sys.stderr = io.TextIOWrapper(os.fdopen(2, "wb", closefd=False), line_buffering=True)
        libc = _libc()
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if sealed:
            _enter_namespaces(libc, request["scratch_bytes"], request["shm_bytes"])
            pid = os.fork()  # the new PID namespace applies to children: this one becomes its PID 1
            if pid:
                for f in (in_fd, out_fd, *memfds):
                    os.close(f)
                _, status = os.waitpid(pid, 0)
                if os.WIFSIGNALED(status):  # die of the same signal, so the harness can name it
                    signal.signal(os.WTERMSIG(status), signal.SIG_DFL)
                    os.kill(os.getpid(), os.WTERMSIG(status))
                os._exit(os.waitstatus_to_exitcode(status) & 0xFF)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        _call(request, in_fd, out_fd, memfds, sealed, libc)
    except BaseException as exc:  # noqa: BLE001 - every failure becomes the call's exit code and log line
        code = 1
        try:
            print(f"compose-bench box: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        except Exception:  # noqa: BLE001
            pass
    finally:
        os._exit(code)


def run_script(payload: dict, in_dir: str, out_dir: str) -> dict:
    """A target for checks and tests: run ``in_dir/<payload["script"]>``; its global ``REPORT`` is the report."""
    path = os.path.join(in_dir, payload["script"])
    scope = {"__name__": "__box__", "__file__": path, "IN_DIR": in_dir, "OUT_DIR": out_dir, "ARGS": payload.get("args")}
    with open(path, encoding="utf-8") as fh:
        exec(compile(fh.read(), path, "exec"), scope)  # noqa: S102 - the point: run the given code in the box
    return dict(scope.get("REPORT") or {})


def _warm(preload: list[str], warmup: str | None, warmup_arg: Any) -> float:
    t0 = time.perf_counter()
    for name in preload:
        try:
            importlib.import_module(name)
        except Exception as exc:  # noqa: BLE001 - a missing optional module only costs a lazy import later
            print(f"compose-bench box: preload {name} failed: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
    if warmup:
        module, func = warmup.split(":")
        getattr(importlib.import_module(module), func)(warmup_arg)
    return time.perf_counter() - t0


def main() -> None:
    """Entry of the box: ``python -m benchmark.sandbox_inside FD CONFIG_JSON``."""
    sys.modules.setdefault("benchmark.sandbox_inside", sys.modules[__name__])  # one module, also under -m
    fd = int(sys.argv[1])
    config = json.loads(sys.argv[2])
    sealed = bool(config["sealed"])
    sys.dont_write_bytecode = True
    libc = _libc()
    libc.prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0)  # calls cannot read this process's memory through /proc
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    sock = socket.socket(fileno=fd)
    warm_s = _warm(config.get("preload", []), config.get("warmup"), config.get("warmup_arg"))
    send_msg(sock, {"ready": os.getpid(), "warm_s": round(warm_s, 3)})
    while True:
        request, fds = recv_msg(sock)
        if request is None or request.get("op") == "exit":
            break
        if len(fds) < 3:
            for f in fds:
                os.close(f)
            send_msg(sock, {"error": f"expected at least 3 file descriptors, got {len(fds)}"})
            continue
        pid = os.fork()
        if pid == 0:
            sock.detach()
            _child(request, fds, sealed)
        for f in fds:
            os.close(f)
        send_msg(sock, {"started": pid})
        _, status = os.waitpid(pid, 0)
        send_msg(sock, {"exited": status})
    os._exit(0)


if __name__ == "__main__":
    main()
