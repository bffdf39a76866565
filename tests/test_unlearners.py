"""GD and RMU (beside GA) on the real default model, and the offline WMDP stand-in split.

Forget text: real WMDP questions of the stand-in's forget part rendered as text; retain
text: real WikiText-2 paragraphs. Steps are shortened: the tests check the direction of
the effect, the pad-free losses and the bad-input errors, not the tuned strength.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from benchmark.numerics import choose_dtype
from benchmark.api import InterventionContext, InterventionError
from benchmark.data.corpora import STANDIN_NAME, load_forget_corpus, load_wmdp_dev_questions
from benchmark.data.mcq import load_wmdp
from benchmark.data.wmdp_split import DEV, FORGET, SCORED, standin_role
from benchmark.paths import baselines_dir
from benchmark.profiles import load_profile
from benchmark.submissions import load_submission
from benchmark.suite import EvaluationSuite
from benchmark.toolkit import lm_loss, mean_log_likelihood, tokenize_texts_for_lm

CPU = torch.device("cpu")
RUN_DTYPE = choose_dtype("auto", "cpu").dtype  # what the profiles' dtype: auto picks here


def _context(hp: dict, **fields) -> InterventionContext:
    return InterventionContext(
        hyperparameters=hp, seed=0, device=CPU, dtype=RUN_DTYPE, model_family="smollm2", **fields
    )


def _retain(data_dir: Path, n: int) -> list[str]:
    rows = (data_dir / "wikitext-2-raw" / "wikitext-2-raw-v1_test_rows.jsonl").read_text(encoding="utf-8").splitlines()
    return [t for t in (json.loads(r)["text"].strip() for r in rows) if len(t) >= 300][:n]


@pytest.fixture(scope="module")
def forget_texts(data_dir):
    return list(load_forget_corpus(16, 0, data_dir).texts)


@pytest.mark.parametrize(
    "name, overrides",
    [
        # AVX2 emulation, float32 (2026-12-02, contended): GD 5 steps at 4e-4 took 27.6 s and dropped forget / retain by
        # 1.57 / -0.22 nats; 3 steps at 6e-4 16.6 s, 1.00 / -0.17. RMU on 128 tokens 19.7 s, 0.196 / 0.013; on 64 9.9 s,
        # 0.192 / 0.008 (the scoring reads the first 64 tokens)
        ("gd", {"steps": 3, "batch_size": 4, "max_len": 64, "lr": 6e-4}),
        ("rmu", {"steps": 6, "max_len": 64, "retain_max_len": 64}),
    ],
)
def test_unlearner_lowers_forget_likelihood_more_than_retain(fresh_model, data_dir, forget_texts, name, overrides):
    model, tok = fresh_model
    sub = load_submission(baselines_dir() / name)
    hp = {**sub.hyperparameters_for("smollm2"), **overrides}
    retain = _retain(data_dir, 16)
    held_out_retain = _retain(data_dir, 24)[16:]
    # scored on each text's first 64 tokens (128 before issue 13: the scoring was over half of this test's time
    # under the AVX2 emulation); the drops at 128 were 1.03 / -0.17 (gd) and 0.26 / 0.01 (rmu) nats per token
    before = [mean_log_likelihood(model, tok, t, 64) for t in (forget_texts, held_out_retain)]
    sub.instantiate().apply(model, tok, _context(hp, forget_texts=tuple(forget_texts), retain_texts=tuple(retain)))
    after = [mean_log_likelihood(model, tok, t, 64) for t in (forget_texts, held_out_retain)]
    drop_forget, drop_retain = before[0] - after[0], before[1] - after[1]
    print(f"{name}: log-likelihood drop: forget {drop_forget:.3f}, held-out retain {drop_retain:.3f} nats per token")
    assert drop_forget > 0.05, (before, after)
    assert drop_forget > 2 * max(drop_retain, 0.0), (before, after)
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_gd_forget_loss_counts_no_padding(fresh_model, data_dir, forget_texts):
    """GD's first forget loss equals the token-weighted NLL of its texts scored one by one (no pads)."""
    model, tok = fresh_model
    texts = sorted(forget_texts, key=len)
    texts = [texts[0], texts[-1]]  # the shortest and the longest: the short row is padded in the batch
    with torch.no_grad():
        nll = tokens = 0.0
        for t in texts:
            batch = tokenize_texts_for_lm(tok, [t], 128)
            n = int((batch["labels"][:, 1:] != -100).sum())
            nll += float(lm_loss(model, batch)) * n
            tokens += n
    sub = load_submission(baselines_dir() / "gd")
    hp = {**sub.hyperparameters_for("smollm2"), "steps": 1, "batch_size": 2, "accumulation_steps": 1, "max_len": 128}
    gd = sub.instantiate()
    gd.apply(model, tok, _context(hp, forget_texts=tuple(texts), retain_texts=tuple(_retain(data_dir, 2))))
    # what the loss would be with the pad positions counted (the paper's code): far away
    batch = tokenize_texts_for_lm(tok, texts, 128)
    assert int((batch["attention_mask"] == 0).sum()) >= 20  # the batch does hold padding
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.float()
        with_pads = float(
            torch.nn.functional.cross_entropy(
                logits[:, :-1].reshape(-1, logits.size(-1)), batch["input_ids"][:, 1:].reshape(-1)
            )
        )
    pad_free = nll / tokens
    assert abs(with_pads - pad_free) > 0.1
    assert gd.forget_losses[0] == pytest.approx(pad_free, abs=0.02)  # bf16 batching noise only


@pytest.mark.parametrize(
    "name, hp, message",
    [
        ("gd", {"retain_weight": -1.0}, "retain_weight: Input should be greater than or equal to 0"),
        ("gd", {"layers": [40]}, "'layers' must list block indices of this 30-layer model"),
        ("rmu", {"layer": 30}, "'layer' is 30; the model has 30 blocks"),
        ("rmu", {"update_layers": [6]}, "must not lie above the steered layer"),
        ("rmu", {"steering_coeff": 0}, "steering_coeff: Input should be greater than 0"),
    ],
)
def test_unlearners_reject_bad_input(fresh_model, forget_texts, name, hp, message):
    model, tok = fresh_model
    sub = load_submission(baselines_dir() / name)
    context = _context(
        {**sub.hyperparameters_for("smollm2"), **hp},
        forget_texts=tuple(forget_texts),
        retain_texts=("some retain text",) * 2,
    )
    with pytest.raises(InterventionError, match=message):
        sub.instantiate().apply(model, tok, context)
    with pytest.raises(InterventionError, match="no retain texts"):
        sub.instantiate().apply(
            model, tok, _context(sub.hyperparameters_for("smollm2"), forget_texts=tuple(forget_texts))
        )


def test_offline_standin_never_overlaps_the_scored_or_development_questions(data_dir):
    questions = {s: load_wmdp(s, data_dir)[0] for s in ("bio", "cyber")}
    roles = {it.question.strip(): standin_role(it.question) for items in questions.values() for it in items}
    counts = {r: sum(v == r for v in roles.values()) for r in (SCORED, DEV, FORGET)}
    assert all(counts.values()) and counts[SCORED] > counts[FORGET] > counts[DEV]
    corpus = load_forget_corpus(None, 0, data_dir)
    assert corpus.name == STANDIN_NAME
    rendered_questions = {text.rsplit("\nAnswer:", 1)[0] for text in corpus.texts}
    assert rendered_questions and all(roles[q] == FORGET for q in rendered_questions)
    dev = load_wmdp_dev_questions(data_dir)
    assert all(roles[it.question.strip()] == DEV for items in dev.values() for it in items)
    # what the harness scores: the scored half only
    profile = load_profile("default")
    suite = EvaluationSuite.build(profile.evaluation, profile.seed, data_dir, STANDIN_NAME)
    scored = [it.question.strip() for s in ("wmdp_bio", "wmdp_cyber") for it in suite.mcq[s]]
    assert scored and all(roles[q] == SCORED for q in scored)
    assert not set(scored) & rendered_questions


@pytest.mark.parametrize("name, entry", [("gd", "gd:GD"), ("rmu", "rmu:RMU")])
def test_unlearner_submission_files(name, entry):
    sub = load_submission(baselines_dir() / name)
    assert sub.spec.entry_point == entry and sub.category.value == "unlearning" and sub.spec.license == "MIT"
    assert {"default", "llama3", "smollm2"} <= set(sub.spec.hyperparameters)
    assert sub.load_class().__doc__
