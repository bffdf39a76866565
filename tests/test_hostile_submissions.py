"""Bad and hostile submissions through ``validate`` and through the runner (benchmark.isolation).

Each must end with its own one-line reason; none may crash the harness; the well-behaved
cells of the same grid must still be recorded complete.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from benchmark.profiles import load_profile
from benchmark.runner import Runner
from benchmark.submissions import load_submission
from benchmark.validate import validate_folder

HOSTILE = Path(__file__).parent / "hostile"
TEMPLATE = Path(__file__).parents[1] / "submissions" / "template"

# refused by validate before any grid: schema, licence, import, API
STATIC = {
    "bad_schema": "field 'category'",
    "no_license": "field 'license'",
    "unknown_license": "field 'license'",
    "import_error": "import failed: ModuleNotFoundError",
    "not_subclass": "is not a subclass of benchmark.api.Intervention",
    "no_apply": "does not implement apply",
}
# pass the static checks, misbehave when applied
RUNTIME = {
    "crash": "RuntimeError: deliberate crash in apply",
    "segfault": "was killed by SIGSEGV",
    "exits": "exited with code 0 without a result",
    "hang": "ran over its time budget of 2 s",
    "oom": "out of memory",
    "nan_weights": "weights are not finite",
    "arch_change": "architecture changed",
    "returns_none": "apply returned NoneType, not a torch model",
    "network": "tried to reach the network: name lookup of 192.0.2.1",
    "writes_outside": "tried to write outside its folder",
    # the box (issue 14): each attack ends as a failed cell with its reason, nothing outside the box changes
    "slow_init": "ran over its time budget of 5 s, counted from the start of its process",
    "untie_edit": "lm_head.weight is no longer tied to model.embed_tokens.weight",
    "shm_park": "out of memory",
    "scratch_fill": "out of memory",
    "socket_escape": "tried to connect to a UNIX socket",
    "leak_probe": "visible: []; foreign processes: []; secrets: []",
}
# measured amounts in the reason: what the harness counted of each parking place
COUNTED = {"shm_park": r"/dev/shm (\d+\.\d) GB", "scratch_fill": r"scratch (\d+\.\d) GB"}
FAKE_TOKEN = "hf_FAKE0secret0for0the0hostile0test"
MARKERS = [Path("/dev/shm/compose-bench-parked"), Path("/tmp/fill")]
ESCAPES = [HOSTILE / "writes_outside" / "escaped.txt", Path("/tmp/compose-bench-escaped.txt")]

MICRO = {
    "name": "micro-hostile",
    "description": "tiny grid for the hostile-submission test",
    "seed": 0,
    "evaluation": {
        "n_edits": 2,
        "zsre_batch_size": 2,
        "mmlu_n": 4,
        "wmdp_n_per_subset": 1,
        "mcq_max_chars": 300,  # a quarter of the questions' characters at seed 0 (4755 -> 1171): MCQ led each evaluation
        "perplexity_seq_len": 64,
        "perplexity_windows": 1,
        "batch_size": 8,
        "mcq_batch_tokens": 512,
    },
    "corpora": {"forget_n": 4, "retain_n": 4, "calibration_n": 2},
}


def _renamed_template(root: Path, name: str = "my-method") -> Path:
    """What a contributor does first: copy the template folder and rename the intervention."""
    folder = root / name
    shutil.copytree(TEMPLATE, folder)
    spec = folder / "submission.yaml"
    spec.write_text(spec.read_text().replace("name: template ", f"name: {name} "))
    code = folder / "intervention.py"
    code.write_text(code.read_text().replace('name = "template"', f'name = "{name}"'))
    return folder


def test_validate_names_each_static_problem():
    for folder in sorted(STATIC):
        report = validate_folder(HOSTILE / folder, smoke=False)
        assert len(report.problems) == 1, (folder, report.problems)
        assert STATIC[folder] in report.problems[0], (folder, report.problems)
        assert "\n" not in report.problems[0]
    for folder in sorted(RUNTIME):  # their code imports and follows the API: only a run shows the harm
        report = validate_folder(HOSTILE / folder, smoke=False)
        assert report.ok, (folder, report.problems)


def test_validate_smoke_application(tmp_path, data_dir, short_model_dir):
    """On the short model (``--model``): what is tested is validate's sandboxed application and its checks; the
    default model's smoke application is in tests/test_submissions.py."""
    good = validate_folder(_renamed_template(tmp_path), smoke=True, data_dir=data_dir, model=str(short_model_dir))
    assert good.ok, good.problems
    assert "same architecture" in good.passed[-1] and "NOT sandboxed" not in good.passed[-1]
    assert good.passed[-1].startswith(f"smoke application on {short_model_dir}: "), good.passed[-1]
    example = TEMPLATE.parent / "examples" / "edit_unlearn"
    multi = validate_folder(example, smoke=True, data_dir=data_dir, model=str(short_model_dir))
    assert multi.ok, multi.problems  # the `multi` example: edits and unlearns in one sandboxed step
    assert "same architecture" in multi.passed[-1]
    unknown = validate_folder(example, smoke=True, data_dir=data_dir, model="no-such-org/no-such-model")
    assert len(unknown.problems) == 1 and "'no-such-org/no-such-model'" in unknown.problems[0], unknown.problems
    # runtime faults through validate: tests/test_submissions.py; all of these through the runner: the grid test below


@pytest.fixture()
def no_escapes():
    for path in ESCAPES:
        path.unlink(missing_ok=True)
    yield
    leaked = [p for p in ESCAPES if p.exists()]
    for path in leaked:
        path.unlink()
    assert not leaked, f"a submission wrote outside its folder: {leaked}"


def _with_hyperparameters(root: Path, name: str, params: dict) -> Path:
    """A copy of a hostile submission whose default hyperparameters name this test's host paths."""
    folder = root / name
    shutil.copytree(HOSTILE / name, folder)
    spec = yaml.safe_load((folder / "submission.yaml").read_text())
    spec["hyperparameters"] = {"default": params}
    (folder / "submission.yaml").write_text(yaml.safe_dump(spec))
    return folder


@pytest.fixture()
def host_socket(tmp_path):
    """A UNIX path socket on the host (what the old fork server listened on); yields what it received."""
    import socket
    import threading

    path = tmp_path / "host.sock"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(path))
    server.listen(4)
    server.settimeout(0.2)
    received: list[bytes] = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            received.append(conn.recv(100) or b"(connected)")
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield path, received
    stop.set()
    thread.join(2)
    server.close()


def test_hostile_cells_fail_with_their_reasons_and_the_rest_completes(
    tmp_path, data_dir, no_escapes, host_socket, monkeypatch, short_model_dir
):
    import re

    import psutil

    from benchmark.paths import PROJECT_ROOT, cache_dir

    for marker in MARKERS:
        marker.unlink(missing_ok=True)
    monkeypatch.setenv("HF_TOKEN", FAKE_TOKEN)  # a secret in the harness's environment
    socket_path, received = host_socket
    run_dir = tmp_path / "run"
    profile_file = tmp_path / "micro.yaml"
    # the short model: what is tested is the box, not the model
    profile_file.write_text(yaml.safe_dump({**MICRO, "model": str(short_model_dir)}))
    good = load_submission(_renamed_template(tmp_path / "subs"))
    probes = [
        str(data_dir),
        str(data_dir / "PROVENANCE.md"),
        str(run_dir),
        str(PROJECT_ROOT),
        str(cache_dir()),
        str(Path.home() / ".cache" / "huggingface"),
        str(tmp_path),
    ]
    folders = {name: HOSTILE / name for name in RUNTIME}
    folders["socket_escape"] = _with_hyperparameters(
        tmp_path / "subs", "socket_escape", {"socket_path": str(socket_path)}
    )
    folders["leak_probe"] = _with_hyperparameters(tmp_path / "subs", "leak_probe", {"paths": probes})
    subs = [good] + [load_submission(folders[name]) for name in sorted(RUNTIME)]
    lines: list[str] = []
    runner = Runner(load_profile(str(profile_file)), subs, run_dir, data_dir=data_dir, device="cpu", echo=lines.append)
    records = runner.run()
    by_label = {r["label"]: r for r in records}
    assert len(records) == 2 + len(RUNTIME)  # the base model, the template and one cell per hostile submission
    for name, reason in RUNTIME.items():
        record = by_label[name]
        assert record["status"] == "failed", name
        assert reason in record["error"], (name, record["error"])
        assert "\n" not in record["error"]
    for label in ("base", "my-method"):
        record = by_label[label]
        assert record["status"] == "ok", record["error"]
        assert {"edit_success", "perplexity", "mmlu", "wmdp"} <= set(record["scores"]), record["scores"].keys()
        assert record["provenance"]["weights_sha256"]
    step = by_label["my-method"]["timings"]["interventions"][0]
    assert step["isolation"]["network"] == "none (network namespace)"
    assert step["seconds"] > 0 and step["isolation_overhead_s"] >= 0
    assert by_label["my-method"]["provenance"]["weights_sha256"] != by_label["base"]["provenance"]["weights_sha256"]
    assert sum(line.startswith("FAILED") for line in lines) == len(RUNTIME)
    for name, pattern in COUNTED.items():  # the parked memory was counted against the budget
        assert float(re.search(pattern, by_label[name]["error"]).group(1)) >= 1.0, by_label[name]["error"]
    # no side effect outside the box
    assert received == [], f"a submission reached the host's UNIX socket: {received}"
    assert not [m for m in MARKERS if m.exists()], [m for m in MARKERS if m.exists()]
    assert sorted(p.name for p in run_dir.iterdir()) == [
        "locality_reference.json",
        "records.jsonl",
        "records.jsonl.lock",
    ]
    assert FAKE_TOKEN not in (run_dir / "records.jsonl").read_text() and not any(FAKE_TOKEN in ln for ln in lines)
    assert not [p for p in psutil.Process().children(recursive=True) if "forkserver" in " ".join(p.cmdline())]
