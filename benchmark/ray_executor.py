"""``compose-bench run --executor ray``: the grid as Ray tasks; the driver is the only writer of records.

The plan is the local runner's (:class:`benchmark.runner.Runner`); only where the work runs
changes. First one **inputs task** (:func:`inputs_task`), then two kinds of task, both through
the one step executor (:mod:`benchmark.step_executor`):

* **first step** (one per first intervention with unfinished cells): applies it to the base
  model and writes the state once, atomically, to ``--state-dir`` (a folder every worker can
  read: a shared file system on a cluster). It returns the file's path, SHA-256 and the
  step's timing entry: weights never travel through Ray's object store.
* **cell** (one per unfinished cell): reads its first state (checking the hash), applies the
  remaining steps (the second intervention, a re-applied compressor), evaluates, and
  returns the record. Its argument is the first-step task's result, so Ray starts it only
  after the state exists.

Each task asks for the profile's ``resources`` (GPUs, CPUs, memory; ``paper`` asks for one
GPU). A worker loads the run's inputs once per process (:func:`_worker`) and checks that it
computes the driver's cell ids. The driver holds no model: what it needs to plan (the model
family, the context of the cell ids) comes back from the inputs task, which loads the inputs
on a worker, on ``--device``, and writes the locality reference into the run folder for the
other workers; the driver needs neither a GPU nor the weights (on a cluster, the GPU it would
hold idle for the whole grid is one more task slot). Tasks are retried on worker loss
(``max_retries``); an intervention that fails is a failed record, as locally. The driver appends each record as
its task finishes, so a killed driver resumes like the local executor: finished cells are
skipped, first states already in the state folder are reused, not recomputed.

Object stores (S3, GCS) would plug in where the state file is written and read
(:func:`benchmark.runner.write_state`, :func:`_read_state`) through ``fsspec`` URLs; this
module uses local paths only.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from benchmark.plan import Cell, build_plan, steps_for
from benchmark.record_schema import Record
from benchmark.records import append_record, finished_cells, read_records
from benchmark.run_inputs import RunInputs
from benchmark.runner import Runner, _entry_from_file, cell_ids, state_key, write_state
from benchmark.step_checks import StepFailed

log = logging.getLogger(__name__)

MAX_RETRIES = 3  # a task whose worker died (killed, node lost) runs again; an exception in our code is not retried
STATE_DIR_NAME = "ray-states"


@dataclass(frozen=True)
class RunSpec:
    """What a worker needs to rebuild the driver's run: plain, picklable values."""

    profile: Any  # benchmark.profiles.Profile
    submission_folders: tuple[str, ...]
    out_dir: str
    data_dir: str | None
    model_id: str | None
    device: str | None
    isolate: bool
    use_cache: bool
    unsafe_no_sandbox: bool
    threads: int

    def key(self) -> str:
        """What identifies the run in a worker process (the profile is a pydantic model: not hashable)."""
        return json.dumps(
            {
                **{k: v for k, v in self.__dict__.items() if k != "profile"},
                "profile": self.profile.model_dump(mode="json"),
            },
            sort_keys=True,
            default=str,
        )


class _WorkerRunner(Runner):
    """The runner inside a Ray worker: records go back to the driver instead of to the file."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.loaded_lines: list[str] = []  # what loading the inputs said (the driver prints it)
        super().__init__(*args, **{**kwargs, "echo": self._keep})

    def _keep(self, line: str) -> None:
        self.loaded_lines.append(line)
        log.info(line)

    def _emit(self, record: Record) -> None:
        return None


_WORKERS: dict[str, tuple[_WorkerRunner, RunInputs]] = {}


def _worker(spec: RunSpec) -> tuple[_WorkerRunner, RunInputs]:
    """This worker process's runner and inputs for ``spec``, loaded once."""
    key = spec.key()
    if key not in _WORKERS:
        from benchmark.isolation import allow_unsafe
        from benchmark.submissions import load_submission

        allow_unsafe(spec.unsafe_no_sandbox)
        torch.set_num_threads(spec.threads)
        subs = [load_submission(f) for f in spec.submission_folders]
        runner = _WorkerRunner(
            spec.profile,
            subs,
            Path(spec.out_dir),
            data_dir=spec.data_dir,
            model_id=spec.model_id,
            device=spec.device,
            isolate=spec.isolate,
            use_cache=spec.use_cache,
        )
        inputs = runner._load_inputs()
        if spec.use_cache:
            from benchmark.caches.run import open_run_caches

            runner.caches = open_run_caches(inputs, "sandbox" if spec.isolate else "in-process")
        runner.executor = runner.make_executor(inputs)
        _WORKERS[key] = (runner, inputs)
    return _WORKERS[key]


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 24), b""):
            digest.update(block)
    return digest.hexdigest()


def inputs_task(spec: RunSpec) -> dict:
    """What the driver plans with, from a worker that loaded the run's inputs (the driver loads no model).

    Returns the model family (the plan's settings depend on it), the cell ids' context and
    the lines a local run prints about its model and data; the worker keeps its inputs for
    the tasks that follow, and the locality reference it computed is in the run folder.
    """
    runner, inputs = _worker(spec)
    return {"family": inputs.family, "context_key": inputs.context_key, "lines": list(runner.loaded_lines)}


def first_step_task(spec: RunSpec, step_index: int, state_path: str) -> dict:
    """Apply the first step and write its state to ``state_path`` (reused when a killed run left it there)."""
    runner, inputs = _worker(spec)
    step = runner.steps[step_index]
    path = Path(state_path)
    if path.exists():
        entry = _entry_from_file(path) or {"label": step.label, "seconds": None, "peak_rss_mb": 0.0}
        return {"path": str(path), "sha256": _file_sha256(path), "entry": {**entry, "reused_from_disk": True}}
    try:
        model, entry = runner.executor.apply(step, inputs.fresh())
    except StepFailed as exc:
        return {"error": str(exc)}
    state = {k: v.detach().to("cpu").clone() for k, v in model.state_dict().items()}
    del model
    return {"path": str(path), "sha256": write_state(path, state, entry), "entry": entry}


def _read_state(first: dict) -> dict[str, torch.Tensor]:
    """The first state from the state folder, refused when its bytes are not the ones written."""
    from safetensors.torch import load

    data = Path(first["path"]).read_bytes()
    if hashlib.sha256(data).hexdigest() != first["sha256"]:
        raise RuntimeError(f"{first['path']}: the first state changed after it was written (SHA-256 differs)")
    return load(data)


def cell_task(spec: RunSpec, cell_index: int, expected_id: str, first: dict | None) -> Record:
    """One cell's remaining steps and evaluation; returns its record (the driver writes it)."""
    runner, inputs = _worker(spec)
    cell = runner.cells[cell_index]
    cid, hps = cell_ids([cell], inputs.context_key)[cell]
    if cid != expected_id:
        raise RuntimeError(
            f"worker computed cell id {cid} for {cell.label!r}, the driver {expected_id}: "
            "its inputs (model, data, dtype) differ from the driver's"
        )
    if first is None:
        return runner._run_cell(inputs, cell, cid, hps, None, None)
    if "error" in first:
        return runner._run_cell(inputs, cell, cid, hps, None, None, first["error"])
    return runner._run_cell(inputs, cell, cid, hps, first["entry"], _read_state(first))


class RayRunner(Runner):
    """The local runner's plan, executed as Ray tasks (``ray.init(address)``; local when None)."""

    def __init__(
        self,
        *args: Any,
        ray_address: str | None = None,
        state_dir: Path | None = None,
        only_cells: list[str] | None = None,
        unsafe_no_sandbox: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.ray_address = ray_address
        self.state_dir = Path(state_dir) if state_dir else self.out_dir / STATE_DIR_NAME
        self.only_cells = set(only_cells) if only_cells else None  # labels; None: every cell of the plan
        self.unsafe_no_sandbox = unsafe_no_sandbox

    def _task_options(self, threads: int) -> dict[str, Any]:
        res = self.profile.resources
        options: dict[str, Any] = {
            "num_cpus": res.num_cpus or threads,
            "num_gpus": res.num_gpus,
            "max_retries": MAX_RETRIES,
            "retry_exceptions": False,
        }
        if res.memory_gb:
            options["memory"] = int(res.memory_gb * 2**30)
        return options

    def run(self) -> list[dict]:
        self.check_hyperparameters()
        import ray

        if not ray.is_initialized():
            ray.init(address=self.ray_address, log_to_driver=False)
        threads = self.profile.threads or torch.get_num_threads()
        spec = RunSpec(
            self.profile,
            tuple(str(s.folder) for s in self.submissions),
            str(self.out_dir),
            str(self.data_dir) if self.data_dir else None,
            self.model_id,
            self.device_name,
            self.isolate,
            self.use_cache,
            self.unsafe_no_sandbox,
            threads,
        )
        options = self._task_options(threads)
        context_key = self._plan_from_worker(spec, options)
        ids = cell_ids(self.cells, context_key)
        done = finished_cells(read_records(self.records_path), self.retry_failed)
        todo = [
            c for c in self.cells if ids[c][0] not in done and (self.only_cells is None or c.label in self.only_cells)
        ]
        self.echo(
            f"plan: {len(self.cells)} cells, {len(self.cells) - len(todo)} already recorded or left out, "
            f"{len(todo)} to run as Ray tasks (states in {self.state_dir})"
        )
        if not todo:
            return read_records(self.records_path)
        first_remote = ray.remote(first_step_task).options(**options)
        cell_remote = ray.remote(cell_task).options(**options)
        index = {cell: i for i, cell in enumerate(self.cells)}
        pending: dict[Any, Cell] = {}
        open_states: dict[Path, int] = {}  # state file -> cells still to finish
        state_of: dict[Cell, Path] = {}
        for cell in todo:
            if cell.first is None:
                pending[cell_remote.remote(spec, index[cell], ids[cell][0], None)] = cell
        for i, first in enumerate(self.steps):
            group = [c for c in todo if c.first == first]
            if not group:
                continue
            path = self.state_dir / f"{state_key(first, context_key)}.safetensors"
            first_ref = first_remote.remote(spec, i, str(path))
            open_states[path] = len(group)
            for cell in group:
                pending[cell_remote.remote(spec, index[cell], ids[cell][0], first_ref)] = cell
                state_of[cell] = path
        self._collect(pending, state_of, open_states)
        return read_records(self.records_path)

    def _collect(self, pending: dict[Any, Cell], state_of: dict[Cell, Path], open_states: dict[Path, int]) -> None:
        """Append each record as its task finishes; drop a first state once its last cell is recorded."""
        import ray

        finished = 0
        total = len(pending)
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            cell = pending.pop(ready[0])
            try:
                record = ray.get(ready[0])
            except (
                ray.exceptions.RayError
            ) as exc:  # a bug or a lost worker past its retries: no record, resume retries it
                lines = [line for line in str(exc).splitlines() if line.strip()]
                self.echo(f"ERROR {cell.label}: no record ({type(exc).__name__}: {(lines[-1] if lines else '')[:300]})")
                open_states.pop(state_of.get(cell), None)  # keep the state for the resumed run
                continue
            append_record(self.records_path, record)
            finished += 1
            self.echo(
                f"[{finished}/{total}] {record.status} {cell.label}"
                + (f": {record.error}" if record.status != "ok" else "")
            )
            path = state_of.get(cell)
            if path in open_states:
                open_states[path] -= 1
                if open_states[path] == 0:
                    del open_states[path]
                    path.unlink(missing_ok=True)

    def _plan_from_worker(self, spec: RunSpec, options: dict[str, Any]) -> dict[str, Any]:
        """Build the plan from what a worker loaded (:func:`inputs_task`); returns the cell ids' context."""
        import ray

        self.echo("loading the run's inputs on a worker (the driver holds no model)")
        info = ray.get(ray.remote(inputs_task).options(**options).remote(spec))
        for line in info["lines"]:
            self.echo(line)
        self.steps = steps_for(self.submissions, self.profile, info["family"])
        self.cells = build_plan(self.steps, self.profile.protocol.recompress_when_first)
        return info["context_key"]


def make_runner(
    executor: str,
    *args: Any,
    ray_address: str | None = None,
    state_dir: Path | None = None,
    unsafe_no_sandbox: bool = False,
    **kwargs: Any,
) -> Runner:
    """The runner for ``--executor`` (``local`` or ``ray``)."""
    if executor == "local":
        if ray_address or state_dir:
            raise ValueError("--ray-address and --state-dir apply to --executor ray only")
        return Runner(*args, **kwargs)
    if executor == "ray":
        try:
            import ray  # noqa: F401
        except ImportError:
            raise ValueError('--executor ray needs Ray: pip install ".[ray]"') from None
        return RayRunner(
            *args, ray_address=ray_address, state_dir=state_dir, unsafe_no_sandbox=unsafe_no_sandbox, **kwargs
        )
    raise ValueError(f"--executor must be local or ray, got {executor!r}")


__all__ = ["RayRunner", "RunSpec", "make_runner", "inputs_task", "first_step_task", "cell_task"]
