"""The Ray executor: the same numbers as the local executor, records written once, by the driver.

Budget: the suite must fit 15 minutes on a slow two-core AVX2 machine, so Ray does not run the
suite's grid a second time: it runs two of its cells (FT alone, FT -> Wanda:
one first state through the state folder, read by both; the stepless base cell under Ray is
compared in tests/test_ray_kill.py) and they are compared with the
records of the session's local grid (``suite_grid`` in conftest.py), cell id by cell id, score
by score.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmark.paths import baselines_dir
from benchmark.profiles import load_profile
from benchmark.records import read_records
from benchmark.submissions import discover

CELLS = ["ft", "ft -> wanda(sparsity=0.25)"]


def _ray_runner(profile_file: Path, out: Path, data_dir: Path, **kwargs):
    from benchmark.ray_executor import RayRunner

    prof = load_profile(str(profile_file))
    subs = [s for s in discover(baselines_dir()) if s.name in prof.interventions]
    return RayRunner(
        prof, subs, out, data_dir=data_dir, isolate=False, use_cache=False, echo=print, only_cells=CELLS, **kwargs
    )


def test_ray_cells_equal_the_local_grid(suite_grid, suite_profile, ray_local, data_dir, tmp_path):
    local_out, _ = suite_grid
    local = {r["cell_id"]: r for r in read_records(local_out / "records.jsonl")}
    out = tmp_path / "ray"
    records = _ray_runner(suite_profile, out, data_dir, state_dir=tmp_path / "states").run()
    assert sorted(r["label"] for r in records) == sorted(CELLS)
    assert len({r["cell_id"] for r in records}) == len(CELLS)  # each cell once
    for rec in records:
        assert rec["status"] == "ok", (rec["label"], rec["error"])
        twin = local[rec["cell_id"]]  # the same cell id: same model, data, dtype, settings
        assert rec["provenance"]["dtype"] == twin["provenance"]["dtype"]
        assert rec["scores"] == twin["scores"], rec["label"]  # exact, not approximate
        assert rec["items"] == twin["items"], rec["label"]
        assert rec["provenance"]["weights_sha256"] == twin["provenance"]["weights_sha256"], rec["label"]
        assert rec["cache"] == {"evaluation": "off"}  # computed by the workers, not read from a cache
    ft_then_wanda = next(r for r in records if r["label"] == CELLS[1])
    assert [e["label"] for e in ft_then_wanda["timings"]["interventions"]] == ["ft", "wanda(sparsity=0.25)"]
    assert not list((tmp_path / "states").glob("*.safetensors"))  # the first state is gone once its cells are recorded

    # a second run of the same command resumes: nothing to run, nothing written twice
    again = _ray_runner(suite_profile, out, data_dir, state_dir=tmp_path / "states").run()
    assert [r["cell_id"] for r in again] == [r["cell_id"] for r in records]


def test_unknown_executor_and_stray_ray_options_are_one_line():
    from benchmark.ray_executor import make_runner

    prof = load_profile("smoke")
    with pytest.raises(ValueError, match="--executor must be local or ray, got 'slurm'"):
        make_runner("slurm", prof, [], Path("x"))
    with pytest.raises(ValueError, match="apply to --executor ray only"):
        make_runner("local", prof, [], Path("x"), state_dir=Path("s"))
