"""Grid steps and import checks in the sealed box (benchmark.sandbox); the harness only ever sees weights.

Why: a pull request's intervention is untrusted code. It must not see the answers (data
folder, run folder, other cells' states, caches, the checkout, other processes), must not
reach the machine (no network, no path socket, no environment secrets), and a crash, a hang
or a memory blow-up in it must fail one cell, not the grid. :mod:`benchmark.sandbox` gives
the box; this module is what a step and an import check do in it, and what the harness
checks of what comes back:

* **the model goes in and comes back as files the harness owns**: the harness writes the
  state to a safetensors file and streams it in; the box holds the architecture's config
  and tokenizer only (a copy of the model folder without weights), on which a warm zygote
  built the model once; the child loads the state, applies the intervention, and the
  weights it returns are checked (:func:`check_returned_state`: same keys, shapes, dtypes,
  finite values, tied tensors still tied) and hashed before the harness builds the model it
  evaluates from them (:func:`verify_built`: byte for byte the returned one).
* **the harness measures**: time from the start of the child's process (import of the
  submission, construction and apply included) against ``resources.time_budget_s``;
  memory as resident set plus the child's ``/tmp`` and ``/dev/shm`` against
  ``resources.memory_budget_gb``; the isolation report from what it set up. The child's
  own figures (apply seconds, claimed bits) are kept as *reported*.
* **audit hooks** inside the box name an attempt (a write outside the scratch, a network
  or UNIX-socket connection) in the record; the box, not the hook, is the barrier.

Where the kernel cannot build the box (:func:`benchmark.sandbox.probe`), only the
repository's baselines run, unconfined, unless the user passed ``--unsafe-no-sandbox``
(:func:`allow_unsafe`); outside submissions are refused with one line (:func:`refusal`).
"""

from __future__ import annotations

import atexit
import dataclasses
import glob
import hashlib
import json
import logging
import mmap
import os
import shutil
import struct
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmark.paths import is_trusted
from benchmark.sandbox import Box, BoxSpec, Limits, OutputMemory, SandboxUnavailable, SealedMemory, probe
from benchmark.sandbox_inside import write_all
from benchmark.toolkit.key_statistics import ENV_STEP_CACHE, ENV_STEP_CACHE_OUT

__all__ = [
    "StepJob",
    "StepOutcome",
    "run_isolated",
    "launch_step_box",
    "check_import",
    "check_returned_state",
    "verify_built",
    "refusal",
    "allow_unsafe",
    "SandboxUnavailable",
    "is_trusted",
]

log = logging.getLogger(__name__)

ENV_REQUIRE = "COMPOSE_BENCH_REQUIRE_SANDBOX"
GRACE_S = 5.0
STARTUP_LIMIT_S = 600.0
LOG_TAIL_CHARS = 600
STEP_CACHE_IN = "step-cache"  # the submission's kept step cache, handed in read-only
STEP_CACHE_OUT_PREFIX = "step-cache-out--"  # returned files that go to the step's outbox
STATE_IN = "in.safetensors"
STATE_OUT = "out.safetensors"
MODEL_IN_BOX = "/box/model"
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf", ".h5", ".msgpack", ".onnx", ".ckpt")
_PRELOAD_PREFIXES = ("transformers", "tokenizers", "safetensors", "huggingface_hub", "accelerate", "benchmark")
_BASE_PRELOAD = (
    "torch",
    "safetensors.torch",
    "benchmark.transformers_setup",  # before transformers: it then skips scikit-learn (~1.3 s per box)
    "transformers",
    "transformers.models.llama.modeling_llama",
    "benchmark.api",
    "benchmark.models",
    "benchmark.submissions",
    "benchmark.resources",
    "benchmark.isolation",
    "benchmark.step_checks",
    "benchmark.toolkit",
)


@dataclass
class StepJob:
    """What the child needs: all picklable, nothing of the harness's live objects."""

    submission: Any  # benchmark.submissions.Submission
    context: Any  # benchmark.api.InterventionContext
    model_path: str  # folder or Hub id the architecture, config and tokenizer are read from (never the weights)
    model_dtype: str  # the harness's dtype, which the weights must come back in
    apply_dtype: str  # the dtype the intervention asked for
    device: str
    threads: int
    label: str
    # benchmark.step_cache.StepCache.environment(): host paths of this submission's own cache (handed
    # into the box read-only) and of the step's outbox (what the step leaves in its own outbox in the box
    # is moved there after the call; benchmark.step_cache keeps it only when the step succeeded)
    # step's outbox (writable); variables set in the child, the outbox bound writable
    step_cache: dict[str, str] = field(default_factory=dict)


@dataclass
class StepOutcome:
    """What came back: the new weights, or a one-line reason; figures measured by the harness."""

    state: dict[str, torch.Tensor] | None
    error: str | None
    seconds: float | None = None  # measured by the harness from the start of the child's process to its exit
    wall_s: float = 0.0  # the whole isolated step: transfer, box call, checks
    peak_rss_mb: float = 0.0  # resident set of the child's processes plus its /tmp and /dev/shm, polled by the harness
    weight_bits: float | None = None  # claimed by the code (weight_bits()); not a measurement
    reported_apply_s: float | None = None  # the child's own timing of apply(); not used for the budget
    returned_sha256: str | None = None  # SHA-256 of the returned safetensors bytes
    isolation: dict[str, Any] = field(default_factory=dict)
    log_tail: str = ""


# --------------------------------------------------------------------------- policy


_UNSAFE = {"allowed": False}


def allow_unsafe(flag: bool) -> None:
    """``--unsafe-no-sandbox``: where no box can be built, run outside submissions unconfined."""
    _UNSAFE["allowed"] = bool(flag)


def _required() -> bool:
    """CI sets ``COMPOSE_BENCH_REQUIRE_SANDBOX=1``: no unconfined step at all, baselines included."""
    return os.environ.get(ENV_REQUIRE, "") not in ("", "0")


def refusal(folders: list[Path], unsafe: bool) -> str | None:
    """One line refusing outside submissions where no box can be built (None: go ahead)."""
    reason = probe()
    if reason is None:
        return None
    if _required():
        return f"${ENV_REQUIRE} is set and this machine cannot build the sandbox: {reason}"
    outside = [str(f) for f in folders if not is_trusted(f)]
    if not outside or unsafe:
        return None
    return (
        f"refusing to run outside submission(s) {outside} without a sandbox ({reason}); pass "
        "--unsafe-no-sandbox to run them unconfined, able to read your data, runs and environment"
    )


def _sealed(folder: Path) -> bool:
    """Box when the kernel allows; unconfined only for baselines or after --unsafe-no-sandbox."""
    reason = probe()
    if reason is None:
        return True
    if _required():
        raise SandboxUnavailable(f"${ENV_REQUIRE} is set and this machine cannot build the sandbox: {reason}")
    if is_trusted(folder) or _UNSAFE["allowed"]:
        return False
    raise SandboxUnavailable(
        f"{folder}: no sandbox here ({reason}); refusing to run an outside submission without --unsafe-no-sandbox"
    )


# --------------------------------------------------------------------------- boxes, one per model


_BOXES: dict[tuple, Box] = {}
_SKELETONS: dict[str, Path] = {}


def _close_all() -> None:
    for box in _BOXES.values():
        box.close()
    _BOXES.clear()
    for folder in _SKELETONS.values():
        shutil.rmtree(folder.parent, ignore_errors=True)
    _SKELETONS.clear()


atexit.register(_close_all)


def model_skeleton(model_path: str) -> Path:
    """A folder with the model's config and tokenizer files only (no weights), made once per model.

    The box builds the architecture from it; the weights always come from the harness's
    state file, so the box never needs the Hub cache or the converted-model cache.
    """
    if model_path in _SKELETONS:
        return _SKELETONS[model_path]
    source = Path(model_path)
    if not source.is_dir():
        from huggingface_hub import snapshot_download

        source = Path(
            snapshot_download(model_path, local_files_only=True, ignore_patterns=[f"*{s}" for s in WEIGHT_SUFFIXES])
        )
    target = Path(tempfile.mkdtemp(prefix="compose-bench-model-")) / "model"
    target.mkdir()
    for file in source.iterdir():
        if file.is_file() and not file.name.endswith(WEIGHT_SUFFIXES) and not file.name.startswith("."):
            shutil.copyfile(file, target / file.name)  # follows the Hub cache's symlinks into blobs
    _SKELETONS[model_path] = target
    return target


def _preload() -> tuple[str, ...]:
    """What the zygote imports once: the base set plus what the harness has imported of the model's stack."""
    loaded = sorted(n for n in list(sys.modules) if n.split(".")[0] in _PRELOAD_PREFIXES and n != "benchmark.cli")
    return _BASE_PRELOAD + tuple(loaded)


def _gpu_devices(device: str) -> tuple[str, ...]:
    return tuple(sorted(glob.glob("/dev/nvidia*"))) if device.startswith("cuda") else ()


def _step_box(job: StepJob, sealed: bool) -> Box:
    return _step_box_for(job.model_path, job.model_dtype, job.device, sealed)


def _step_box_for(model_path: str, model_dtype: str, device: str, sealed: bool) -> Box:
    skeleton = model_skeleton(model_path)
    key = ("step", str(skeleton), model_dtype, device.split(":")[0], sealed)
    if key not in _BOXES:
        inside = MODEL_IN_BOX if sealed else str(skeleton)
        spec = BoxSpec(
            binds=((str(skeleton), MODEL_IN_BOX),) if sealed else (),
            preload=_preload(),
            warmup="benchmark.isolation:warm_model",
            warmup_arg={"model_dir": inside, "dtype": model_dtype},
            devices=_gpu_devices(device),
        )
        _BOXES[key] = Box(spec, sealed=sealed)
    return _BOXES[key]


def launch_step_box(model_path: str, model_dtype: str, device: str) -> None:
    """Boot the sealed step box for this model now, in the background (:meth:`Box.launch`).

    A run calls it before evaluating the base model: the zygote's imports and warm-up (4-11 s
    on two slow cores) then overlap that evaluation instead of delaying the first step. Does
    nothing where no sealed box can be built (the first step then says why).
    """
    if probe() is not None:
        return
    try:
        _step_box_for(model_path, model_dtype, device, sealed=True).launch()
    except (SandboxUnavailable, OSError) as exc:  # the first call reports it
        log.debug("step box not launched early: %s", exc)


def _import_box(sealed: bool) -> Box:
    key = ("import", sealed)
    if key not in _BOXES:
        _BOXES[key] = Box(BoxSpec(preload=("torch", "benchmark.api", "benchmark.submissions")), sealed=sealed)
    return _BOXES[key]


# --------------------------------------------------------------------------- the parent side


def grace_s(time_budget_s: float) -> float:
    """Time over budget before the kill: the weights are written after apply returns."""
    return min(GRACE_S, 1.0 + 0.1 * time_budget_s)


def tied_groups(state: dict[str, torch.Tensor]) -> list[list[str]]:
    """Names that share storage (e.g. lm_head.weight and model.embed_tokens.weight), in key order."""
    by_ptr: dict[tuple, list[str]] = {}
    for name, tensor in state.items():
        if tensor.numel():
            by_ptr.setdefault(
                (tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape)), []
            ).append(name)
    return [names for names in by_ptr.values() if len(names) > 1]


# safetensors' names of the dtypes a model's state holds
_SAFETENSORS_DTYPES = {
    torch.float64: "F64",
    torch.float32: "F32",
    torch.bfloat16: "BF16",
    torch.float16: "F16",
    torch.int64: "I64",
    torch.int32: "I32",
    torch.int16: "I16",
    torch.int8: "I8",
    torch.uint8: "U8",
    torch.bool: "BOOL",
}


def write_safetensors(fd: int, tensors: dict[str, torch.Tensor]) -> int:
    """Write ``tensors`` (contiguous, CPU, no shared storage) to ``fd`` in the safetensors format; returns the size.

    Written by hand because safetensors cannot write to a descriptor: ``save_file`` writes a
    temporary file beside the path and renames it (impossible for a memfd), and ``save()``
    builds the whole file in a buffer and then a bytes copy of it (5.2 s for the default
    model's 0.65 GB on this VM, against 0.27 s here) before a third copy into the memfd. This
    writes each tensor's own memory into ``fd`` once; the box writes the weights it returns
    the same way. The layout is the library's (8-byte little-endian header length, JSON
    header padded with spaces to a multiple of 8, data sorted by element size then name, so
    every tensor is aligned): the bytes equal ``save()``'s, mixed dtypes included (tested),
    and both sides read them with safetensors' own loader, which checks the header.
    """
    order = sorted(tensors, key=lambda name: (-tensors[name].element_size(), name))
    header: dict[str, Any] = {}
    offset = 0
    for name in order:
        t = tensors[name]
        if t.dtype not in _SAFETENSORS_DTYPES:
            raise ValueError(f"{name}: dtype {t.dtype} has no safetensors name here")
        size = t.numel() * t.element_size()
        header[name] = {
            "dtype": _SAFETENSORS_DTYPES[t.dtype],
            "shape": list(t.shape),
            "data_offsets": [offset, offset + size],
        }
        offset += size
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    write_all(fd, struct.pack("<Q", len(raw)) + raw)
    for name in order:
        t = tensors[name]
        if t.numel():
            write_all(fd, t.detach().reshape(-1).view(torch.uint8).numpy().data)
    return 8 + len(raw) + offset


# exponent bits of IEEE formats: all ones means inf or NaN
_EXPONENT = {
    torch.bfloat16: (torch.int16, 0x7F80),
    torch.float16: (torch.int16, 0x7C00),
    torch.float32: (torch.int32, 0x7F800000),
}


def _finite(t: torch.Tensor) -> bool:
    """All values finite, read from the exponent bits in numpy (one thread): torch's elementwise
    ops ran ~50 ns per element here on a contended 2-core machine (6.8 s for the default model)."""
    if t.dtype in _EXPONENT and t.numel():
        itype, mask = _EXPONENT[t.dtype]
        bits = t.detach().cpu().contiguous().view(itype).numpy()
        return not bool(np.any((bits & mask) == mask))
    return bool(torch.isfinite(t).all())


def check_returned_state(
    state: dict[str, torch.Tensor],
    reference: dict[str, torch.Tensor],
    label: str,
    tied: list[list[str]] | None = None,
) -> str | None:
    """None when ``state`` has the reference's keys, shapes, dtypes, finite values and ties.

    ``tied`` lists the names tied in the input (default: read from ``reference``'s storage);
    each group must come back equal, byte for byte: a step that unties the LM head from the
    embedding and edits one of them fails here, instead of the harness silently evaluating
    the model with one of the two edits dropped.
    """
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
        if got.is_floating_point() and not _finite(got):
            return f"{label}: weights are not finite (NaN or inf in {name})"
    for group in tied if tied is not None else tied_groups(reference):
        first = state[group[0]]
        for other in group[1:]:
            if not torch.equal(first, state[other]):
                return (
                    f"{label}: {other} is no longer tied to {group[0]} (the step untied them and changed "
                    "one; tied weights must come back tied)"
                )
    return None


def verify_built(model: torch.nn.Module, returned: dict[str, torch.Tensor] | None, label: str) -> str | None:
    """None when the model the harness built holds exactly the returned tensors, every key, byte for byte.

    With tied keys (one storage in the model, two tensors in the file) this fails when the
    two returned tensors differ, whatever the loading order made of them.
    """
    if returned is None:
        return f"{label}: no returned weights to compare with"
    built = model.state_dict()
    if set(built) != set(returned):
        return f"{label}: the model built from the returned weights has other keys"
    for name, tensor in returned.items():
        other = built[name].detach()
        if other.dtype != tensor.dtype or other.shape != tensor.shape or not torch.equal(other.cpu(), tensor):
            return f"{label}: the model built from the returned weights differs from them at {name}"
    return None


def _one_line(text: Any, limit: int = 700) -> str:
    return " ".join(str(text).split())[:limit]


def run_isolated(
    job: StepJob,
    state: dict[str, torch.Tensor],
    time_budget_s: float,
    memory_budget_gb: float,
    extra_inputs: dict[str, Path | bytes] | None = None,
) -> StepOutcome:
    """Apply ``job`` to a model holding ``state`` in the sealed box; never raises for the child's faults.

    ``extra_inputs`` is the hook for harness-computed, per-submission and per-step data
    (e.g. the key statistics MEMIT needs): folders arrive read-only at
    ``<in_dir>/<name>`` (``in_dir`` is the parent of ``submission.folder`` inside the box),
    bytes in ``benchmark.sandbox_inside.MEMORY_IN``. Nothing written in the box outlives the
    call: the toolkit's cache there (``$COMPOSE_BENCH_CACHE`` = ``/tmp/compose-bench-cache``)
    is private to the call and counted in its memory.
    """
    from benchmark.models import own_storage

    t0 = time.perf_counter()
    try:
        sealed = _sealed(job.submission.folder)
    except SandboxUnavailable as exc:
        return StepOutcome(None, f"{job.label}: {exc}")
    box = _step_box(job, sealed)
    scratch = Path(tempfile.mkdtemp(prefix="compose-bench-step-"))
    try:
        reference = dict(state)
        tied = tied_groups(reference)
        # the weights go in as a sealed memfd the box maps (no pipe, no copy there): ~3 s less per step
        # for the default model's 0.54 GB on two cores of a VM whose memory copies run at ~1 GB/s;
        # written into it once from the tensors' own memory (save() made a buffer and a bytes copy first)
        memory = SealedMemory(lambda fd: write_safetensors(fd, own_storage(state)), STATE_IN)
        output_limit = 2 * memory.size + (64 << 20)  # the weights back, and the pipe's other outputs
        # and come back the same way: the box writes them into a memfd of bounded size, sealed after
        returned = OutputMemory(output_limit, STATE_OUT)
        out_dir = scratch / "out"
        out_dir.mkdir()
        limits = Limits(
            time_s=time_budget_s,
            grace_s=grace_s(time_budget_s),
            memory_bytes=int(memory_budget_gb * 2**30),
            output_bytes=output_limit,
            startup_s=STARTUP_LIMIT_S,
        )
        inputs = {**(extra_inputs or {}), "submission": job.submission.folder, STATE_IN: memory, STATE_OUT: returned}
        kept = Path(job.step_cache.get(ENV_STEP_CACHE, ""))
        if job.step_cache.get(ENV_STEP_CACHE) and kept.is_dir() and any(kept.iterdir()):
            inputs[STEP_CACHE_IN] = kept
        with memory, returned:
            result = box.call("benchmark.isolation:step_main", job, inputs, limits, out_dir, job.label)
            report = result.report or {}
            weights = (None, None, None)
            if result.error is None and not report.get("error"):
                weights = _collect(returned, report.get("state_bytes"), reference, tied, job.label)
        outcome = StepOutcome(
            None,
            result.error,
            seconds=round(result.seconds, 3),
            peak_rss_mb=result.peak_memory_bytes / 2**20,
            isolation=result.isolation,
            log_tail=result.log_tail[-LOG_TAIL_CHARS:],
        )
        outcome.weight_bits = _number(report.get("weight_bits"))
        outcome.reported_apply_s = _number(report.get("apply_s"))
        if outcome.error is None and report.get("error"):
            outcome.error = _one_line(report["error"])
        if outcome.error is None:
            outcome.error, outcome.state, outcome.returned_sha256 = weights
        if outcome.error is None and job.step_cache.get(ENV_STEP_CACHE_OUT):
            _hand_out_step_cache(out_dir, Path(job.step_cache[ENV_STEP_CACHE_OUT]))
        outcome.wall_s = time.perf_counter() - t0
        return outcome
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _hand_out_step_cache(out_dir: Path, outbox: Path) -> None:
    """Move the files the step left in its cache outbox (returned as ``STEP_CACHE_OUT_PREFIX*``) to the host outbox.

    Only names and plain files: benchmark.step_cache.StepCache.keep checks sizes and names again.
    """
    for path in sorted(out_dir.glob(STEP_CACHE_OUT_PREFIX + "*")):
        name = path.name.removeprefix(STEP_CACHE_OUT_PREFIX)
        if path.is_file() and not path.is_symlink() and name and "/" not in name:
            shutil.move(str(path), str(outbox / name))


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _collect(returned: OutputMemory, size: Any, reference: dict, tied: list[list[str]], label: str):
    """Seal and read the weights the box wrote (untrusted safetensors) and check them; (error, state, sha256).

    The tensors are mapped from the sealed memfd (copied on write), not copied: the harness
    builds its model from them (one copy) and may close the memfd before they are dropped.
    """
    from safetensors.torch import load_file

    problem = returned.seal(size)
    if problem:
        return f"{label}: the sandboxed process returned no readable weights: {problem}", None, None
    with mmap.mmap(returned.fd, returned.size, prot=mmap.PROT_READ) as view:
        digest = hashlib.sha256(view).hexdigest()
    try:
        state = load_file(returned.path)
    except Exception as exc:  # noqa: BLE001 - a malformed file is the child's fault
        return f"{label}: unreadable weights from the sandboxed process ({_one_line(exc, 200)})", None, None
    problem = check_returned_state(state, reference, label, tied)
    if problem:
        return problem, None, None
    return None, state, digest


# --------------------------------------------------------------------------- import check


IMPORT_CHECK_TIMEOUT_S = 300.0


def check_import(folder: str | Path, timeout_s: float, checks: list[dict] | None = None) -> tuple[str, str, dict]:
    """Import a submission's entry point and check its class in the sealed box.

    Returns ``(verdict, message, report)`` with verdict ``"ok"``, ``"import"`` (the entry
    point did not import, or the process died or hung while importing) or ``"api"`` (the
    class does not follow the API). With ``checks`` (hyperparameter sets), the box also
    validates each against the class's declared :class:`benchmark.api.Hyperparameters`
    model and ``report`` holds ``declared``, ``class_name``, ``fields`` and ``errors``
    (:mod:`benchmark.hyperparameter_checks`). The child is forked from a zygote that never
    imported a submission; the harness never imports the submission's code.
    """
    folder = Path(folder).resolve()
    try:
        sealed = _sealed(folder)
    except SandboxUnavailable as exc:
        return "import", str(exc), {}
    with tempfile.TemporaryDirectory(prefix="compose-bench-import-") as out:
        limits = Limits(time_s=timeout_s, grace_s=1.0, memory_bytes=8 * 2**30, output_bytes=1 << 20)
        payload = {"folder": str(folder), "checks": checks}
        result = _import_box(sealed).call(
            "benchmark.isolation:import_main", payload, {"submission": folder}, limits, Path(out), str(folder)
        )
    report = result.report or {}
    if result.error is not None:
        if "time budget" in result.error:
            return "import", f"{folder}: importing the entry point took over {timeout_s:g} s (killed)", {}
        return (
            "import",
            _one_line(result.error.replace("the sandboxed process", "importing the entry point in the sandbox")),
            {},
        )
    verdict = str(report.get("verdict", "import"))
    message = _one_line(report.get("message", ""))
    if verdict == "ok":
        return "ok", "sandboxed" if sealed else "NOT sandboxed (no namespaces on this machine)", report
    return (verdict if verdict in ("import", "api") else "import"), message, {}


# --------------------------------------------------------------------------- the child side (runs in the box)


_WARM: dict[str, Any] = {}


def warm_model(arg: dict) -> None:
    """In the zygote, once: the tokenizer and the model's architecture (weights come per call)."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    from benchmark.models import parse_dtype

    folder = arg["model_dir"]
    torch.set_num_threads(1)  # no thread pool in the zygote: its children fork from it
    tokenizer = AutoTokenizer.from_pretrained(folder)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    config = AutoConfig.from_pretrained(folder)
    try:
        from transformers.initialization import no_init_weights
    except ImportError:  # pragma: no cover - older transformers
        from transformers.modeling_utils import no_init_weights  # type: ignore[attr-defined,no-redef]
    with no_init_weights():
        model = AutoModelForCausalLM.from_config(config, dtype=parse_dtype(arg["dtype"]))
    if os.path.exists(os.path.join(folder, "generation_config.json")):
        model.generation_config = GenerationConfig.from_pretrained(folder)
    model.eval()
    _WARM.update(model=model, tokenizer=tokenizer, dtype=arg["dtype"])


class _Watchdog:
    """Audit hook: records writes outside the scratch and connections out; refuses the connections."""

    def __init__(self, writable: list[str], read_only: list[str]) -> None:
        self.writable = [os.path.realpath(w) for w in writable] + ["/dev/null", "/proc/self"]
        self.read_only = [os.path.realpath(r) for r in read_only]
        self.violations: list[str] = []
        self.armed = False

    @staticmethod
    def _under(path: str, roots: list[str]) -> bool:
        return any(path == r or path.startswith(r.rstrip("/") + "/") for r in roots)

    def _allowed(self, path: str) -> bool:
        real = os.path.realpath(path)
        return self._under(real, self.writable) and not self._under(real, self.read_only)

    def __call__(self, event: str, args: tuple) -> None:
        if not self.armed:
            return
        if event == "open":
            path, mode, flags = (list(args) + [None, None, None])[:3]
            if isinstance(path, int) or path is None:
                return
            writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
                isinstance(flags, int) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND)
            )
            if writing and not self._allowed(os.fsdecode(path)):
                self._note(f"tried to write outside its folder: {os.fsdecode(path)}")
        elif event in ("os.remove", "os.rename", "os.mkdir", "os.rmdir", "shutil.rmtree", "os.truncate"):
            path = args[0] if args else None
            if event == "os.mkdir" and isinstance(path, (str, bytes, os.PathLike)) and os.path.isdir(path):
                return  # makedirs(exist_ok=True) on a folder that exists changes nothing
            if isinstance(path, (str, bytes, os.PathLike)) and not self._allowed(os.fsdecode(path)):
                self._note(f"tried to change the file system outside its folder: {event} {os.fsdecode(path)}")
        elif event in ("socket.connect", "socket.sendto"):
            address = args[1] if len(args) > 1 else None
            if isinstance(address, (str, bytes)):
                self._block(f"tried to connect to a UNIX socket: {os.fsdecode(address)[:200]}")
            if isinstance(address, tuple) and address and not _loopback(str(address[0])):
                self._block(
                    f"tried to reach the network: {event.split('.')[1]} to {address[0]}:{address[1] if len(address) > 1 else ''}"
                )
        elif event == "socket.getaddrinfo":
            host = args[0] if args else None
            if isinstance(host, bytes):
                host = host.decode(errors="replace")
            if host and not _loopback(str(host)):
                self._block(f"tried to reach the network: name lookup of {host}")

    def _block(self, text: str) -> None:
        self._note(text)
        raise PermissionError(f"compose-bench sandbox: {text}")

    def _note(self, text: str) -> None:
        if text not in self.violations and len(self.violations) < 5:
            self.violations.append(text)


def _loopback(host: str) -> bool:
    return host in ("localhost", "::1", "") or host.startswith("127.")


def _thread_only_progress_lock() -> None:
    """tqdm's default lock holds a multiprocessing semaphore; one process needs no inter-process lock."""
    try:
        from tqdm.std import TqdmDefaultWriteLock
    except ImportError:  # pragma: no cover - tqdm ships with transformers
        return
    TqdmDefaultWriteLock.mp_lock = None


def step_main(job: StepJob, in_dir: str, out_dir: str) -> dict:
    """In the box: load the state into the warm model, import and apply the submission, write the weights."""
    from safetensors.torch import load_file

    from benchmark.models import own_storage, parse_dtype
    from benchmark.sandbox_inside import MEMORY_IN
    from benchmark.step_checks import seed_everything, signature
    from benchmark.submissions import SubmissionError

    sys.dont_write_bytecode = True
    _thread_only_progress_lock()
    if job.threads:
        torch.set_num_threads(job.threads)
    phases: dict[str, float] = {}
    t_phase = time.perf_counter()
    model, tokenizer = _WARM["model"], _WARM["tokenizer"]
    model_dtype, apply_dtype = parse_dtype(job.model_dtype), parse_dtype(job.apply_dtype)
    # assign: the loaded tensors become the parameters (no copy into the skeleton's untouched pages), then re-tie
    state_in = MEMORY_IN.pop(STATE_IN)  # run_isolated sends a sealed memfd: its path here, mapped, copied on write
    assert isinstance(state_in, str), "the weights came through the pipe, not as a sealed memfd"
    model.load_state_dict(load_file(state_in), strict=True, assign=True)
    model.tie_weights()
    phases["load_s"] = round(time.perf_counter() - t_phase, 3)
    base_signature = signature(model)
    model = model.to(device=torch.device(job.device), dtype=apply_dtype)
    submission = dataclasses.replace(job.submission, folder=Path(in_dir) / "submission")
    scratch = os.path.dirname(in_dir)
    cache_out = _open_step_cache(job, in_dir, scratch)
    watchdog = _Watchdog([scratch, "/dev/shm", tempfile.gettempdir()], [in_dir])
    sys.addaudithook(watchdog)
    report: dict[str, Any] = {"phases": phases}
    watchdog.armed = True
    try:
        intervention = submission.instantiate()
    except SubmissionError as exc:
        watchdog.armed = False
        return {"error": f"{job.label}: {exc}"}
    phases["instantiate_s"] = round(time.perf_counter() - t_phase - phases["load_s"], 3)
    seed_everything(job.context.seed)
    error = None
    t_apply = time.perf_counter()
    try:
        model = intervention.apply(model, tokenizer, job.context)
    except torch.OutOfMemoryError as exc:
        error = f"{job.label}: out of memory: {_one_line(f'{type(exc).__name__}: {exc}', 500)}"
    except BaseException as exc:  # noqa: BLE001 - SystemExit/KeyboardInterrupt from the code too
        error = f"{job.label}: {_one_line(f'{type(exc).__name__}: {exc}', 500)}"
    watchdog.armed = False
    report["apply_s"] = round(time.perf_counter() - t_apply, 3)
    if watchdog.violations:
        error = f"{job.label}: {'; '.join(watchdog.violations)}" + (
            f"; then: {error.split(': ', 1)[-1]}" if error else ""
        )
    if error is None:
        try:
            if isinstance(model, torch.nn.Module):
                model = model.to(device="cpu", dtype=model_dtype)
            _check_shape(job.label, model, base_signature)  # the harness checks values and ties of what comes back
            report["weight_bits"] = intervention.weight_bits(job.context)
            t_phase = time.perf_counter()
            # written once, from the tensors' own memory, into the harness's OutputMemory (counted in this
            # call's memory; bounded in size): no scratch file, no pipe, no copy in either process
            out_fd = int(str(MEMORY_IN.pop(STATE_OUT)).rsplit("/", 1)[1])  # the harness's OutputMemory
            try:
                report["state_bytes"] = write_safetensors(out_fd, own_storage(model.state_dict()))
            except OSError as exc:  # EPERM: past the memfd's sealed size
                raise RuntimeError(f"could not write the returned weights ({exc.strerror or exc})") from exc
            phases["save_s"] = round(time.perf_counter() - t_phase, 3)
            if cache_out:
                for entry in os.scandir(cache_out):
                    if entry.is_file(follow_symlinks=False):
                        shutil.move(entry.path, os.path.join(out_dir, STEP_CACHE_OUT_PREFIX + entry.name))
        except Exception as exc:  # noqa: BLE001 - StepFailed or the code's weight_bits raising
            error = (
                str(exc)
                if type(exc).__name__ == "StepFailed"
                else f"{job.label}: {_one_line(f'{type(exc).__name__}: {exc}', 500)}"
            )
    report["error"] = error
    return report


def _open_step_cache(job: StepJob, in_dir: str, scratch: str) -> str | None:
    """In the box: point the toolkit at this submission's kept cache (read-only input) and a fresh outbox."""
    if not job.step_cache:
        return None
    kept = os.path.join(in_dir, STEP_CACHE_IN)
    if not os.path.isdir(kept):
        os.makedirs(kept)
    outbox = os.path.join(scratch, "step-cache-out")
    os.makedirs(outbox, exist_ok=True)
    os.environ.update({ENV_STEP_CACHE: kept, ENV_STEP_CACHE_OUT: outbox})
    return outbox


def _check_shape(label: str, model: Any, signature: dict) -> None:
    """In the box: a torch model of the same architecture (names and shapes), for a clear reason early."""
    from benchmark.step_checks import check_architecture

    check_architecture(label, model, signature)


def import_main(payload: dict, in_dir: str, out_dir: str) -> dict:
    """In the box: import the entry point and check the class against the API."""
    from benchmark.submissions import SubmissionError, load_submission

    sys.dont_write_bytecode = True
    outer = payload["folder"]
    try:
        sub = load_submission(os.path.join(in_dir, "submission"))
        cls = sub.load_class()
        report: dict[str, Any] = {"verdict": "ok", "message": "sandboxed", "class_name": cls.__name__}
        if payload.get("checks") is not None:
            from benchmark.hyperparameter_checks import declared, describe_fields, validate_sets

            report["declared"] = declared(cls)
            if report["declared"]:
                report["fields"] = describe_fields(cls.Hyperparameters)
                report["errors"] = validate_sets(cls.Hyperparameters, payload["checks"])
        return report
    except SubmissionError as exc:
        message = str(exc).replace(os.path.join(in_dir, "submission"), outer)
        verdict = (
            "import"
            if ": import failed: " in message or "module file" in message or "has no class" in message
            else "api"
        )
        return {"verdict": verdict, "message": message}
    except BaseException as exc:  # noqa: BLE001 - e.g. SystemExit raised at import time
        return {
            "verdict": "import",
            "message": f"{outer}: importing the entry point failed: {type(exc).__name__}: {exc}",
        }
