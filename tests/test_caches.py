"""The evaluation and state caches (benchmark/caches): hits equal fresh results, LRU eviction,
concurrent use, damaged entries, the code digest, the `cache` command, and the runner's use.

Every test points the caches at its own folder with $COMPOSE_BENCH_RESULTS_CACHE (or an
explicit root); the converted default model in $COMPOSE_BENCH_CACHE/models is shared.
The runner-level tests use the real default model, real data and the real GA baseline at
tiny sizes (2 edits, 2 + 1 + 1 questions of at most 300 characters, one 32-token window; one GA step).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import textwrap
import time

import pytest
import torch
from safetensors.torch import load_file

from benchmark.caches import keys
from benchmark.caches.evaluations import CachedEvaluation, EvaluationCache
from benchmark.caches.folders import open_caches
from benchmark.caches.run import RunCaches
from benchmark.paths import is_trusted
from benchmark.caches.states import StateCache
from benchmark.caches.store import ENV_RESULTS_CACHE, CacheConfigError, size_limit_bytes
from benchmark.paths import PROJECT_ROOT, baselines_dir

KEYS = [f"{i:064x}" for i in range(1, 9)]


def _evaluation(i: int, n_items: int = 50) -> CachedEvaluation:
    scores = {"mmlu": 0.1 * i + 1 / 3, "perplexity": 30.0 + i / 7}
    items = {"mmlu": [float((i + k) % 2) for k in range(n_items)], "perplexity_tokens": [255 + i, 256]}
    return CachedEvaluation(scores, items, {"zsre": 1.5, "mcq": 2.25}, 3.75, 900.0, {"cell": f"c{i}"})


# ------------------------------------------------------------------ entries, eviction, damage


def test_evaluation_entry_round_trips_exactly(tmp_path):
    cache = EvaluationCache(tmp_path, 10**9)
    original = _evaluation(3)
    assert cache.get(KEYS[0]) is None
    assert cache.put(KEYS[0], {"weights_sha256": "x"}, original)
    found = cache.get(KEYS[0])
    assert found.scores == original.scores and found.items == original.items
    assert [type(v) for v in found.items["perplexity_tokens"]] == [int, int]
    assert found.seconds == 3.75 and found.origin["cell"] == "c3" and "stored_at" in found.origin
    stats = cache.store.stats()
    assert (stats.hits, stats.misses, stats.stores, stats.saved_s) == (1, 1, 1, 3.75)


def test_least_recently_used_entry_is_evicted_first(tmp_path):
    cache = EvaluationCache(tmp_path, 10**9)
    now = time.time()
    for age, key in zip((300, 200, 100), KEYS[:3]):  # written 5, 3.3 and 1.7 minutes ago, in that order
        assert cache.put(key, {}, _evaluation(1))
        os.utime(cache.store.path(key), (now - age, now - age))
    entries, size = cache.store.usage()
    assert entries == 3
    cache.store.limit_bytes = size + size // 6  # room for three entries, not four
    assert cache.get(KEYS[0]) is not None  # the oldest entry is used now: it becomes the most recent
    assert cache.put(KEYS[3], {}, _evaluation(1))  # over the limit: one entry must go
    present = [k for k in KEYS[:4] if cache.store.path(k).exists()]
    assert present == [KEYS[0], KEYS[2], KEYS[3]]  # the least recently used (KEYS[1]) went
    assert cache.store.stats().evictions == 1
    assert cache.store.usage()[1] <= cache.store.limit_bytes


def test_damaged_evaluation_entry_is_discarded_with_a_warning(tmp_path, caplog):
    cache = EvaluationCache(tmp_path, 10**9)
    cache.put(KEYS[0], {}, _evaluation(1))
    cache.put(KEYS[1], {}, _evaluation(2))
    path = cache.store.path(KEYS[0])
    entry = json.loads(path.read_text())
    entry["payload"]["scores"]["mmlu"] = 0.99  # valid JSON, wrong numbers
    path.write_text(json.dumps(entry))
    cache.store.path(KEYS[1]).write_text(cache.store.path(KEYS[1]).read_text()[:100])  # truncated
    with caplog.at_level(logging.WARNING):
        assert cache.get(KEYS[0]) is None and cache.get(KEYS[1]) is None
    assert not path.exists() and not cache.store.path(KEYS[1]).exists()
    assert "checksum mismatch" in caplog.text and caplog.text.count("discarding damaged entry") == 2
    assert cache.store.stats().discarded == 2


def _state() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    embed = torch.randn(64, 8, generator=g).to(torch.bfloat16)
    return {
        "embed.weight": embed,
        "lm_head.weight": embed,
        "norm.weight": torch.rand(8, generator=g),
        "mask": torch.tensor([1, 0, 1], dtype=torch.int64),
    }


def test_state_entry_is_byte_identical_and_damage_is_detected(tmp_path, caplog):
    cache = StateCache(tmp_path, 10**9)
    state, entry = _state(), {"label": "ga", "seconds": 12.5, "weight_bits": None}
    assert cache.put(KEYS[0], {"input": "x"}, state, entry)
    got, got_entry = cache.get(KEYS[0])
    assert got_entry == entry and set(got) == set(state)
    for name, tensor in state.items():
        assert got[name].dtype == tensor.dtype and torch.equal(got[name].view(torch.uint8), tensor.view(torch.uint8))
    path = cache.store.path(KEYS[0])
    raw = bytearray(path.read_bytes())
    raw[-5] ^= 0xFF  # one flipped bit pattern inside the tensor data
    path.write_bytes(bytes(raw))
    with caplog.at_level(logging.WARNING):
        assert cache.get(KEYS[0]) is None
    assert "tensor checksum mismatch" in caplog.text and not path.exists()
    cache.put(KEYS[1], {}, state, entry)
    cache.store.path(KEYS[1]).write_bytes(cache.store.path(KEYS[1]).read_bytes()[:40])  # a cut header
    assert cache.get(KEYS[1]) is None and not cache.store.path(KEYS[1]).exists()
    assert cache.store.stats().discarded == 2


def test_state_larger_than_the_limit_is_not_stored(tmp_path):
    cache = StateCache(tmp_path, 100)
    assert not cache.put(KEYS[0], {}, _state(), {"seconds": 1.0})
    assert cache.store.usage() == (0, 0)


def test_size_limit_setting(monkeypatch):
    monkeypatch.setenv("X_CACHE_GB", "0.5")
    assert size_limit_bytes("X_CACHE_GB", 5) == 500_000_000
    monkeypatch.delenv("X_CACHE_GB")
    assert size_limit_bytes("X_CACHE_GB", 5) == 5_000_000_000
    for bad in ("lots", "-1", "inf"):
        monkeypatch.setenv("X_CACHE_GB", bad)
        with pytest.raises(CacheConfigError, match=rf"\$X_CACHE_GB='{bad}'"):
            size_limit_bytes("X_CACHE_GB", 5)


# ------------------------------------------------------------------ concurrency

_WORKER = textwrap.dedent("""
    import sys, torch
    from benchmark.caches.evaluations import CachedEvaluation, EvaluationCache
    from benchmark.caches.states import StateCache
    root, rounds = sys.argv[1], int(sys.argv[2])
    keys = [f"{i:064x}" for i in range(1, 5)]
    ev = EvaluationCache(root + "/evaluations", 32_000)   # entries of ~10.3 kB: room for 3 of the 4 keys
    st = StateCache(root + "/states", 3_300_000)   # entries of ~1.05 MB: room for 3 of 4
    def expected(i):
        return CachedEvaluation({"x": i / 3}, {"x": [float(i)] * 2000}, {}, 1.0, 1.0, {})
    def tensors(i):
        return {"w": torch.full((512, 512), float(i), dtype=torch.float32)}
    gets = 0
    for r in range(rounds):
        for i, key in enumerate(keys):
            found = ev.get(key); gets += 1
            if found is None:
                ev.put(key, {}, expected(i))
            else:
                assert found.scores == {"x": i / 3} and found.items["x"] == [float(i)] * 2000, (key, found.scores)
            got = st.get(key); gets += 1
            if got is None:
                st.put(key, {}, tensors(i), {"seconds": 1.0})
            else:
                assert torch.equal(got[0]["w"], tensors(i)["w"]), key
    print("GETS", gets)
""")


def test_two_processes_sharing_keys_neither_crash_nor_corrupt(tmp_path, caplog):
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    rounds = 12
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _WORKER, str(tmp_path), str(rounds)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
        assert "discarding damaged entry" not in err, err[-2000:]  # no reader ever saw a half-written entry
    ev, st = open_caches(tmp_path)
    for cache in (ev, st):
        stats = cache.store.stats()
        # every lookup of both processes was counted exactly once: no lost update of the statistics
        assert stats.hits + stats.misses == 2 * rounds * 4, stats
        assert stats.stores == stats.misses and stats.evictions > 0 and stats.discarded == 0
        assert cache.store.usage()[1] <= cache.store.limit_bytes
        assert not [p for p in tmp_path.rglob(".tmp-*")]
    for key in KEYS[:4]:  # whatever survived is intact
        if ev.store.path(key).exists():
            assert ev.get(key) is not None
        if st.store.path(key).exists():
            assert st.get(key) is not None


# ------------------------------------------------------------------ keys


def test_code_digest_follows_the_scorers_not_the_display_code(tmp_path, monkeypatch):
    copy = tmp_path / "benchmark"
    shutil.copytree(PROJECT_ROOT / "benchmark", copy, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(keys, "PACKAGE_DIR", copy)

    def digests() -> tuple[str, str]:
        keys.code_digest.cache_clear()
        return keys.code_digest(keys.EVALUATION_CODE_EXCLUDES), keys.code_digest(keys.STEP_CODE_EXCLUDES)

    before = digests()
    with open(copy / "cli.py", "a") as fh:  # a dirty checkout that changes only the command line
        fh.write("\n# a comment\n")
    assert digests() == before
    with open(copy / "evaluation" / "zsre.py", "a") as fh:  # a changed scorer: new evaluation keys
        fh.write("\n# a comment\n")
    after_scorer = digests()
    assert after_scorer[0] != before[0]
    with open(copy / "step_executor.py", "a") as fh:  # the step executor: new state keys, same evaluation keys
        fh.write("\n# a comment\n")
    after_runner = digests()
    assert after_runner[0] == after_scorer[0] and after_runner[1] != after_scorer[1]
    keys.code_digest.cache_clear()


def test_only_the_baselines_are_trusted(tmp_path):
    assert is_trusted(baselines_dir() / "ga")
    assert not is_trusted(PROJECT_ROOT / "submissions" / "template")
    assert not is_trusted(tmp_path)


# ------------------------------------------------------------------ the runner, on the real model

# {model}: the session's short model (conftest.py `short_model_dir`): what is tested is what the caches
# reuse, and the full model's weights only made each cached or sandboxed step slower
TINY_PROFILE = """
name: cache-test
model: {model}
dtype: auto
seed: 0
threads: 2
interventions:
  ga: {hyperparameters: {steps: 1, batch_size: 2, max_len: 32}}
evaluation:
  n_edits: 2
  zsre_batch_size: 2
  mmlu_n: 2
  wmdp_n_per_subset: 1
  mcq_max_chars: 300  # a quarter of the questions' characters at seed 0 (3411 -> 799): MCQ was half of each evaluation
  batch_size: 8
  perplexity_seq_len: 32
  perplexity_windows: 1
  perplexity_batch_size: 1
corpora: {forget_n: 4, retain_n: 4, calibration_n: 2}
"""


@pytest.fixture(scope="module")
def tiny_runner(tmp_path_factory, data_dir, short_model_dir):
    """A runner over the tiny profile with GA and a copy of the template (untrusted), inputs loaded."""
    from benchmark.profiles import load_profile
    from benchmark.runner import Runner
    from benchmark.submissions import load_submission

    root = tmp_path_factory.mktemp("tiny")
    (root / "tiny.yaml").write_text(TINY_PROFILE.replace("{model}", str(short_model_dir)))
    template = shutil.copytree(PROJECT_ROOT / "submissions" / "template", root / "template")
    subs = [load_submission(baselines_dir() / "ga"), load_submission(template)]
    runner = Runner(
        load_profile(str(root / "tiny.yaml")), subs, root / "out", data_dir=data_dir, isolate=False, echo=lambda _: None
    )
    inputs = runner._load_inputs()
    runner.caches = RunCaches(inputs, "in-process", root=root / "results")
    runner.executor = runner.make_executor(inputs)
    return runner, inputs


def test_evaluation_hit_is_identical_to_a_fresh_evaluation(tiny_runner):
    from benchmark.models import weights_sha256
    from benchmark.plan import Cell

    runner, inputs = tiny_runner
    model = inputs.fresh()
    sha = weights_sha256(model)
    fresh = runner._evaluate(inputs, Cell(()), "c0", model, None, sha)  # a miss: suite.evaluate runs, in memory
    again = runner._evaluate(inputs, Cell(()), "c0", model, None, sha)  # a hit: read back from the entry's file
    assert fresh.mark["evaluation"] == "miss" and fresh.mark["stored"]
    assert again.mark["evaluation"] == "hit" and again.mark["key"] == fresh.mark["key"]
    assert again.mark["computed"]["cell_id"] == "c0"
    assert again.scores == fresh.scores and again.items == fresh.items  # exact, not approximate
    assert set(again.scores) >= {"edit_success", "locality", "mmlu", "wmdp", "perplexity", "avg_bits", "sparsity"}
    assert again.seconds == round(fresh.seconds, 3) and again.parts_s == fresh.parts_s
    # the same weights with other weight bits (the avg_bits score depends on them): another key
    assert EvaluationCache.key(runner.caches.evaluation_material(model, sha, 4.0)) != fresh.mark["key"]


def test_trusted_step_hit_gives_byte_identical_weights_and_untrusted_steps_always_run(tiny_runner):
    from benchmark.models import weights_sha256

    runner, inputs = tiny_runner
    ga, template = runner.steps
    computed, entry = runner.executor.apply(ga, inputs.fresh())
    assert entry["cached"] is False and entry["seconds"] > 0
    assert weights_sha256(computed) != inputs.base_sha
    cached, hit = runner.executor.apply(ga, inputs.fresh())
    assert hit["cached"] is True and hit["cache_key"] == entry["cache_key"] and hit["seconds"] == entry["seconds"]
    assert runner._in_state_cache(entry)  # so a group starting with GA writes no state file of its own
    assert hit["lookup_s"] >= 0
    a, b = computed.state_dict(), cached.state_dict()
    assert set(a) == set(b)
    assert all(torch.equal(a[k].view(torch.uint8), b[k].view(torch.uint8)) for k in a)
    assert cached.lm_head.weight.data_ptr() == cached.model.embed_tokens.weight.data_ptr()  # still tied
    on_disk = load_file(str(runner.caches.states.store.path(entry["cache_key"])))
    assert all(torch.equal(on_disk[k], a[k]) for k in a)
    # another input model (GA's output instead of the base model): another key, a miss
    _, second = runner.executor.apply(ga, cached)
    assert second["cached"] is False and second["cache_key"] != entry["cache_key"]
    # a submitted (untrusted) intervention is run every time and never stored
    before = runner.caches.states.store.usage()
    _, untrusted = runner.executor.apply(template, inputs.fresh())
    assert "cached" not in untrusted and untrusted["seconds"] > 0
    assert not runner._in_state_cache(untrusted)  # a group starting with it keeps a state file for a resumed run
    assert runner.caches.states.store.usage() == before


# ------------------------------------------------------------------ the command


def test_cache_command_shows_and_clears(tmp_path):
    ev, st = open_caches(tmp_path)
    ev.put(KEYS[0], {}, _evaluation(1))
    ev.get(KEYS[0])
    st.put(KEYS[1], {}, _state(), {"seconds": 2.0})
    env = {**os.environ, ENV_RESULTS_CACHE: str(tmp_path), "PYTHONPATH": str(PROJECT_ROOT)}
    cli = [sys.executable, "-m", "benchmark.cli", "cache"]
    shown = subprocess.run(cli + ["show", "--json"], env=env, capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0, shown.stderr
    figures = json.loads(shown.stdout)
    assert figures["evaluations"]["entries"] == 1 and figures["evaluations"]["hits"] == 1
    assert figures["states"]["entries"] == 1 and figures["states"]["bytes"] > 64 * 8 * 2
    text = subprocess.run(cli + ["show"], env=env, capture_output=True, text=True, timeout=120)
    assert "evaluations" in text.stdout and "hits 1, misses 0 (100%)" in text.stdout
    cleared = subprocess.run(cli + ["clear", "--states"], env=env, capture_output=True, text=True, timeout=120)
    assert cleared.returncode == 0 and "states: removed 1 entries" in cleared.stdout
    assert ev.store.usage()[0] == 1 and st.store.usage()[0] == 0
    subprocess.run(cli + ["clear"], env=env, capture_output=True, text=True, timeout=120, check=True)
    assert ev.store.usage()[0] == 0
    bad = subprocess.run(
        cli + ["show"],
        env={**env, "COMPOSE_BENCH_CACHE_STATES_GB": "lots"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 2 and "$COMPOSE_BENCH_CACHE_STATES_GB='lots'" in bad.stderr


# ------------------------------------------------------------------ a second run of a tiny grid


def test_second_run_with_a_changed_submission_pays_only_for_its_cells(tmp_path, data_dir, short_model_dir):
    """GA (trusted) and a copy of the template (submitted), both orders: run, change the submission, run again."""
    from benchmark.records import read_records

    (tmp_path / "tiny.yaml").write_text(TINY_PROFILE.replace("{model}", str(short_model_dir)))
    mine = shutil.copytree(PROJECT_ROOT / "submissions" / "template", tmp_path / "mine")
    yaml_file = mine / "submission.yaml"
    assert "  smollm2: {}" in yaml_file.read_text()
    # one training step for this model family (the template's apply ran 33-48 s of a contended run's 5 steps)
    yaml_file.write_text(yaml_file.read_text().replace("  smollm2: {}", "  smollm2: {steps: 1}"))
    env = {**os.environ, ENV_RESULTS_CACHE: str(tmp_path / "results"), "PYTHONPATH": str(PROJECT_ROOT)}

    def run(out: str) -> dict[str, dict]:
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "benchmark.cli",
                "run",
                "--profile",
                str(tmp_path / "tiny.yaml"),
                "--submission",
                str(mine),
                "--out",
                str(tmp_path / out),
                "--data-dir",
                str(data_dir),
                "--bootstrap",
                "20",
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=1800,
        )
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
        return {r["label"]: r for r in read_records(tmp_path / out)}, proc.stdout

    first, _ = run("first")
    assert sorted(first) == ["base", "ga", "ga -> template", "template", "template -> ga"]
    assert all(r["status"] == "ok" and r["cache"]["evaluation"] == "miss" for r in first.values())
    # the submitter changes their intervention (learning rate 1e-3 -> 2e-3 for this model family) and runs again
    yaml_file.write_text(yaml_file.read_text().replace("  smollm2: {steps: 1}", "  smollm2: {steps: 1, lr: 2.0e-3}"))
    second, stdout = run("second")
    steps = {
        label: [(e["label"], e.get("cached")) for e in r["timings"]["interventions"]] for label, r in second.items()
    }
    evaluation = {label: r["cache"]["evaluation"] for label, r in second.items()}
    assert evaluation == {
        "base": "hit",
        "ga": "hit",
        "template": "miss",
        "ga -> template": "miss",
        "template -> ga": "miss",
    }
    assert steps == {
        "base": [],
        "ga": [("ga", True)],
        "template": [("template", None)],  # a submitted intervention is always run again
        "ga -> template": [("ga", True), ("template", None)],
        "template -> ga": [("template", None), ("ga", False)],  # GA on a new input: computed
    }
    for label in ("base", "ga"):  # what came from the cache is what the first run computed
        assert second[label]["scores"] == first[label]["scores"] and second[label]["items"] == first[label]["items"]
        assert second[label]["provenance"]["weights_sha256"] == first[label]["provenance"]["weights_sha256"]
        assert second[label]["cache"]["key"] == first[label]["cache"]["key"]
    assert second["template"]["provenance"]["weights_sha256"] != first["template"]["provenance"]["weights_sha256"]
    # GA is applied once for the two cells that start with it: one hit, and one computation after the new template
    assert "cache: evaluations 2 hit(s), 3 computed; trusted steps 1 hit(s), 1 computed" in stdout
