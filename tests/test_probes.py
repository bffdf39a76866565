"""Robustness probes (benchmark.probes): seeded and reproducible, never altering the evaluated model's own scores."""

from __future__ import annotations

import re

import pytest
import torch

from benchmark.data.corpora import STANDIN_NAME, load_forget_corpus, load_retain_corpus
from benchmark.data.mcq import load_wmdp
from benchmark.evaluation.zsre import locality_reference
from benchmark.metrics import load_criteria
from benchmark.models import weights_sha256
from benchmark.probes import (
    MEASURES,
    PROBES,
    WMDP_TASKS,
    criterion_key,
    probe_tokens,
    quantize_dequantize_,
    relearn_batches,
    relearn_corpus,
)
from benchmark.profiles import EvaluationSettings, ProfileError, load_profile
from benchmark.suite import EvaluationSuite


def _write_profile(tmp_path, probes: str):
    path = tmp_path / "p.yaml"
    path.write_text(f"name: p\ninterventions: {{ga: {{}}}}\nevaluation:\n  probes: {probes}\n", encoding="utf-8")
    return path


@pytest.mark.parametrize(
    "probes, message",
    [
        ("{run: [rtn4, rtn4]}", r"field 'evaluation.probes.run': .*each probe at most once"),
        ("{run: [rtn3]}", r"field 'evaluation.probes.run.0'"),
        ("{run: [rtn4], wmdp_n_per_subset: 0}", r"field 'evaluation.probes.wmdp_n_per_subset'"),
        ("{run: [relearn], relearn_lr: 0}", r"field 'evaluation.probes.relearn_lr'"),
        ("{run: [rtn4], bits: 3}", r"field 'evaluation.probes.bits'"),
    ],
)
def test_profile_probe_field_is_validated(tmp_path, probes, message):
    path = _write_profile(tmp_path, probes)
    with pytest.raises(ProfileError, match=message) as err:
        load_profile(str(path))
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_profiles_choose_probes_and_no_probe_leaves_the_settings_as_before():
    for name in ("default", "unlearning"):
        assert load_profile(name).evaluation.probes.run, name
    smoke = load_profile("smoke")
    assert smoke.evaluation.probes.run == [] and "probes" not in smoke.settings()["evaluation"]
    assert set(load_profile("unlearning").evaluation.probes.run) == set(PROBES)
    assert "probes" in load_profile("default").settings()["evaluation"]  # part of cell ids and cache keys


def test_every_probe_score_is_a_lower_is_better_criterion_with_items():
    criteria = load_criteria()
    for probe in PROBES:
        for measure in MEASURES:
            for task in (*WMDP_TASKS, "wmdp"):
                crit = criteria[criterion_key(task, measure, probe)]
                assert crit.direction == "lower_is_better" and crit.has_items
            assert criteria[criterion_key("wmdp", measure, probe)].items_keys == tuple(
                criterion_key(t, measure, probe) for t in WMDP_TASKS
            )


def test_relearning_corpus_shares_no_text_with_wmdp(data_dir):
    """No 13-word sequence of the relearning texts occurs in any WMDP question or choice (bio, cyber, chem),
    and no relearning text is in the retain or forget corpora the unlearners train on."""

    def grams(text: str, n: int = 13) -> set[tuple[str, ...]]:
        words = re.findall(r"\w+", text.lower())
        return {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}

    settings = EvaluationSettings().probes
    texts, described = relearn_corpus(settings.relearn_texts, 0, data_dir)
    assert len(texts) == settings.relearn_texts and described["name"] == "wikitext-2-test-paragraphs"
    assert texts == relearn_corpus(settings.relearn_texts, 0, data_dir)[0]  # seeded: the same corpus
    retain = set(load_retain_corpus(128, 0, data_dir).texts) | set(load_forget_corpus(None, 0, data_dir).texts)
    assert not set(texts) & retain  # nothing an unlearner trains on
    corpus = set().union(*(grams(t) for t in texts))
    assert corpus
    for subset in ("bio", "cyber", "chem"):
        items, _ = load_wmdp(subset, data_dir)
        wmdp = set().union(*(grams(it.question + " " + " ".join(it.choices)) for it in items))
        assert not corpus & wmdp, subset


def test_rounding_is_deterministic_on_a_grid_and_leaves_other_weights(fresh_model):
    model, _ = fresh_model
    first = [m.weight for m in model.model.layers[0].modules() if isinstance(m, torch.nn.Linear)][0]
    before = first.detach().clone()
    embed = model.get_input_embeddings().weight.detach().clone()
    import copy

    other = copy.deepcopy(model)
    assert quantize_dequantize_(model, 4, 64) == quantize_dequantize_(other, 4, 64) == 7 * len(model.model.layers)
    assert weights_sha256(model) == weights_sha256(other)
    assert not torch.equal(first, before)
    groups = first.detach().float().reshape(-1, 64)
    assert max(len(torch.unique(g)) for g in groups) <= 16  # 4 bits: at most 16 levels per group
    assert (groups - before.float().reshape(-1, 64)).abs().max() <= (groups.amax(1) - groups.amin(1)).max() / 15 + 1e-2
    assert torch.equal(model.get_input_embeddings().weight, embed)  # embedding (and the tied head) untouched


def test_relearning_batches_are_fixed(default_model, data_dir):
    _, tok = default_model
    texts = relearn_corpus(5, 0, data_dir)[0]
    a = relearn_batches(tok, texts, 2, 32, 4)
    b = relearn_batches(tok, texts, 2, 32, 4)
    assert len(a) == 4 and all(torch.equal(x["input_ids"], y["input_ids"]) for x, y in zip(a, b))
    assert torch.equal(a[0]["input_ids"], relearn_batches(tok, texts[:2], 2, 32, 1)[0]["input_ids"])


def test_the_estimate_counts_the_probes(default_model, data_dir):
    """probe_tokens: nothing without probes, each probe its questions once more, relearning its training tokens x3."""
    _, tok = default_model
    suite = _suite(data_dir, [])
    settings = EvaluationSettings(probes={"run": ["rtn4"], "wmdp_n_per_subset": 3}).probes
    one = probe_tokens(suite.mcq, settings, tok)
    assert probe_tokens(suite.mcq, EvaluationSettings().probes, tok) == 0 and one > 6 * 8
    both = settings.model_copy(update={"run": ["rtn4", "rtn8"]})
    assert probe_tokens(suite.mcq, both, tok) == 2 * one
    relearn = settings.model_copy(update={"run": ["rtn4", "rtn8", "relearn"]})
    assert probe_tokens(suite.mcq, relearn, tok) == 3 * one + 3 * 4 * 4 * 128


def _suite(data_dir, probes: list[str]) -> EvaluationSuite:
    settings = EvaluationSettings(
        n_edits=2,
        zsre_batch_size=2,
        mmlu_n=3,
        wmdp_n_per_subset=4,
        mcq_max_chars=300,  # 600 drew questions of up to 150 tokens; three evaluations read them (issue 13)
        perplexity_seq_len=64,
        perplexity_windows=1,
        probes={
            "run": probes,
            "wmdp_n_per_subset": 3,
            "relearn_steps": 2,
            "relearn_batch_size": 2,
            "relearn_seq_len": 32,
            "relearn_texts": 4,
        },
    )
    return EvaluationSuite.build(settings, 0, data_dir, STANDIN_NAME)


def test_probes_are_reproducible_and_never_alter_the_evaluated_model(short_model, data_dir):
    """On the short model: what is tested is the probes' copies, seeds and criteria, not the model (41 s on the
    full model under the AVX2 emulation, three evaluations with three probes each)."""
    model, tok = short_model
    sha = weights_sha256(model)
    plain = _suite(data_dir, [])
    probed = _suite(data_dir, list(PROBES))
    plain.reference = probed.reference = locality_reference(model, tok, plain.edits, batch_size=2)
    scores0, items0, _, _ = plain.evaluate(model, tok, None, model)
    scores1, items1, seconds1, _ = probed.evaluate(model, tok, None, model)
    assert weights_sha256(model) == sha  # the evaluated model is never touched
    # the model's own scores and items: identical with and without probes
    assert {k: v for k, v in scores1.items() if k in scores0} == scores0
    assert {k: v for k, v in items1.items() if k in items0} == items0
    extra = set(scores1) - set(scores0)
    assert extra == {criterion_key(t, m, p) for p in PROBES for m in MEASURES for t in (*WMDP_TASKS, "wmdp")}
    for p in PROBES:
        assert len(items1[criterion_key("wmdp_bio", "prob", p)]) == 3 and f"probe_{p}" in seconds1
    # the attacks changed something: the 4-bit copy's probabilities differ from the model's own
    own = items0["wmdp_bio_prob"][:3]
    assert items1["wmdp_bio_prob_rtn4"] != own and items1["wmdp_bio_prob_relearn"] != own
    # same seed, same settings: identical per-item scores
    scores2, items2, _, _ = probed.evaluate(model, tok, None, model)
    assert items2 == items1 and scores2 == scores1


def test_the_leaderboard_shows_probe_criteria_from_the_criteria_file(tmp_path):
    """No change in the app: probe criteria in the records reach its criteria lists, rankings and matrices.

    The records are copies of the real smoke fixture records under a profile named for this test, whose
    probe items are their own WMDP accuracy items (the view is tested here, not the probe's numbers).
    """
    import json

    from benchmark.stores import LocalStore
    from leaderboard.data import build_board
    from leaderboard.matrices import pair_matrix
    from leaderboard.ranking import category_ranking
    from leaderboard_helpers import fixture_records

    lines = []
    for record in fixture_records("smoke"):
        record["provenance"]["profile"] = "probe-view-test"
        for task in WMDP_TASKS:  # the fixture records have accuracy only (they predate the continuous forms)
            record["items"][f"{task}_rtn4"] = record["items"][task]
            record["scores"][f"{task}_rtn4"] = record["scores"][task]
        record["scores"]["wmdp_rtn4"] = record["scores"]["wmdp"]
        lines.append(json.dumps(record))
    (tmp_path / "probes").mkdir()
    (tmp_path / "probes" / "records.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    board = build_board(LocalStore(tmp_path).read(n_bootstrap=50)).select(
        "HuggingFaceTB/SmolLM2-135M-Instruct", "probe-view-test"
    )
    shown = board.criteria_with_scores()
    assert {"wmdp_rtn4", "wmdp_bio_rtn4", "wmdp_cyber_rtn4"} <= set(shown) and "wmdp_rtn8" not in shown
    ranking = category_ranking(board, "unlearning", ["wmdp", "wmdp_rtn4"])
    assert ranking["wmdp_rtn4 OFE"].tolist() == ranking["wmdp OFE"].tolist()  # same items, same numbers
    labels, values, _ = pair_matrix(board, "wmdp_rtn4", "order_free_error")
    assert labels and (labels, values) == pair_matrix(board, "wmdp", "order_free_error")[:2]


def test_a_changed_probe_changes_evaluation_keys_not_state_keys(tmp_path, monkeypatch):
    import shutil

    from benchmark.caches import keys
    from benchmark.paths import PROJECT_ROOT

    copy = tmp_path / "benchmark"
    shutil.copytree(PROJECT_ROOT / "benchmark", copy, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(keys, "PACKAGE_DIR", copy)

    def digests() -> tuple[str, str]:
        keys.code_digest.cache_clear()
        return keys.code_digest(keys.EVALUATION_CODE_EXCLUDES), keys.code_digest(keys.STEP_CODE_EXCLUDES)

    before = digests()
    with open(copy / "probes.py", "a") as fh:
        fh.write("\n# a comment\n")
    after = digests()
    keys.code_digest.cache_clear()
    assert after[0] != before[0] and after[1] == before[1]
