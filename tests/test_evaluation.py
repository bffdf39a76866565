"""Every criterion on the real default model: MMLU/WMDP via lm-eval, zsRE scoring, perplexity.

Item counts are small so the file runs in about a minute on two CPU cores. Where a
library computes a score for us (lm-eval), we recompute it independently from the
model's log-probabilities and require the same per-item answers.
"""

from __future__ import annotations

import math
import random

import pytest
import torch

from benchmark.data.mcq import McqItem, load_mmlu, load_wmdp, stratified_sample
from benchmark.data.wikitext import load_wikitext_test
from benchmark.data.zsre import ZsreRecord, load_zsre, sample_edits
from benchmark.evaluation.multiple_choice import evaluate_mcq, evaluate_mcq_measures
from benchmark.evaluation.perplexity import perplexity_from_windows, perplexity_windows
from benchmark.evaluation.zsre import _greedy_and_forced, _query, locality_reference, score_edits, token_set_f1

# --- multiple choice -----------------------------------------------------------------------


def _short(items: list[McqItem]) -> list[McqItem]:
    """Questions without long reading passages, to keep the unbatched checks fast."""
    return [i for i in items if len(i.question) + sum(len(c) for c in i.choices) < 400]


@pytest.fixture(scope="module")
def mcq_items(data_dir):
    mmlu = stratified_sample(_short(load_mmlu(data_dir)[0]), 16, seed=0)
    wmdp = stratified_sample(_short(load_wmdp("bio", data_dir)[0]), 8, seed=0)
    return {"mmlu": mmlu, "wmdp_bio": wmdp}


def _logprob(model, tokenizer, context: str, continuation: str) -> float:
    """Sum of log p(continuation | context), tokenized as lm-eval does (whole, then split)."""
    whole = tokenizer(context + continuation).input_ids
    ctx = tokenizer(context).input_ids
    assert whole[: len(ctx)] == ctx
    with torch.inference_mode():
        logits = model(input_ids=torch.tensor([whole])).logits[0].float()
    logp = torch.log_softmax(logits[len(ctx) - 1 : len(whole) - 1], dim=-1)
    return float(logp.gather(1, torch.tensor(whole[len(ctx) :])[:, None]).sum())


def _next_token_logprobs(model, tokenizer, context: str, continuations: list[str]) -> list[float]:
    """log p(continuation | context) for one-token continuations (the lettered format's " A" .. " D"), from one
    plain forward pass over the context, tokenized as lm-eval does (whole, then split)."""
    ctx = tokenizer(context).input_ids
    tokens = []
    for c in continuations:
        whole = tokenizer(context + c).input_ids
        assert whole[: len(ctx)] == ctx and len(whole) == len(ctx) + 1, (context[-40:], c)
        tokens.append(whole[-1])
    with torch.inference_mode():
        logits = model(input_ids=torch.tensor([ctx])).logits[0, -1].float()
    return torch.log_softmax(logits, dim=-1)[tokens].tolist()


def _acc_and_margin(item: McqItem, scores: list[float]) -> tuple[float, float]:
    """(acc, margin between the two best choices) from our own log-likelihoods."""
    best = max(range(len(scores)), key=scores.__getitem__)
    top = sorted(scores, reverse=True)
    return float(best == item.answer), top[0] - top[1]


def _assert_matches_reference(results: list[float], references: list[tuple[float, float]]) -> None:
    # at batch size 1 lm-eval runs exactly our forward pass; only exact ties may differ
    clear = [(got, ref) for got, (ref, margin) in zip(results, references, strict=True) if margin > 1e-3]
    assert len(clear) >= 0.9 * len(results)
    assert [got for got, _ in clear] == [ref for _, ref in clear]


@pytest.fixture(scope="module")
def cloze_measures(default_model, mcq_items):
    """Batch size 1 so the comparison with our own forward passes is exact (padded bf16
    batches move long-context log-likelihoods by up to ~0.3 nats)."""
    model, tokenizer = default_model
    return evaluate_mcq_measures(model, tokenizer, mcq_items, "cloze", batch_size=1)


@pytest.fixture(scope="module")
def cloze_results(cloze_measures):
    return {name: measures["acc"] for name, measures in cloze_measures.items()}


@pytest.fixture(scope="module")
def reference_lls(default_model, mcq_items) -> dict[str, list[list[float]]]:
    """Our own log-likelihood of every choice of every cloze item (one plain forward pass each),
    computed once for the tests that check the scorer's numbers against them."""
    model, tokenizer = default_model
    return {
        name: [
            [_logprob(model, tokenizer, f"Question: {it.question.strip()}\nAnswer:", f" {c}") for c in it.choices]
            for it in items
        ]
        for name, items in mcq_items.items()
    }


def test_cloze_probability_and_acc_norm_follow_the_log_likelihoods(run_dtype, cloze_measures, mcq_items, reference_lls):
    """The continuous measure is softmax(lls)[answer] of our own forward passes; acc_norm the
    argmax of lls divided by the answer texts' lengths in characters (lm-eval's rule).

    The scorer reads the question once and the answers on its key/value cache; in bf16 that
    moves a summed log-likelihood by a few hundredths of a nat against one plain forward pass
    (measured: probability 0.535 vs 0.527 on one MMLU item on an AMD EPYC; on an Intel Xeon's AMX
    the MMLU gaps reached 0.067, mean 0.012), hence the bf16 tolerances. In float32 the two paths
    agree to 3e-6 (mean 6e-7, AVX2 emulation), so float32 is held to 1e-4.
    """
    max_gap, mean_gap = (0.1, 0.02) if run_dtype == torch.bfloat16 else (1e-4, 1e-5)
    for name, items in mcq_items.items():
        got = cloze_measures[name]
        assert len(got["prob"]) == len(got["acc_norm"]) == len(items)
        gaps, clear = [], []
        for k, (it, lls) in enumerate(zip(items, reference_lls[name], strict=True)):
            expected = torch.softmax(torch.tensor(lls, dtype=torch.float64), dim=0)[it.answer].item()
            gaps.append(abs(got["prob"][k] - expected))
            normed = [ll / len(c) for ll, c in zip(lls, it.choices)]
            best = max(range(len(normed)), key=normed.__getitem__)
            top = sorted(normed, reverse=True)
            if top[0] - top[1] > 0.02:  # nats per character: beyond the bf16 difference of the two paths
                clear.append((got["acc_norm"][k], float(best == it.answer)))
        assert max(gaps) < max_gap and sum(gaps) / len(gaps) < mean_gap, (name, gaps)
        assert len(clear) >= len(items) // 2 and all(g == r for g, r in clear), (name, clear)
        assert 0.0 < min(got["prob"]) and max(got["prob"]) < 1.0


def test_cloze_gives_one_valid_value_per_item(cloze_results, mcq_items):
    assert set(cloze_results) == {"mmlu", "wmdp_bio"}
    for name, items in mcq_items.items():
        assert len(cloze_results[name]) == len(items)
        assert set(cloze_results[name]) <= {0.0, 1.0}
    assert 0 < sum(cloze_results["mmlu"]) < len(mcq_items["mmlu"])


def test_cloze_accuracy_is_the_log_likelihood_argmax(cloze_results, mcq_items, reference_lls):
    for name, items in mcq_items.items():
        refs = [_acc_and_margin(it, lls) for it, lls in zip(items, reference_lls[name], strict=True)]
        _assert_matches_reference(cloze_results[name], refs)


def test_lettered_format_follows_item_order(default_model, mcq_items):
    model, tokenizer = default_model
    items = mcq_items["mmlu"][:6]
    forward = evaluate_mcq(model, tokenizer, {"mmlu": items}, "lettered", batch_size=1)["mmlu"]
    backward = evaluate_mcq(model, tokenizer, {"mmlu": items[::-1]}, "lettered", batch_size=1)["mmlu"]
    assert backward == forward[::-1]
    refs = []
    for it in items:
        topic = it.subject.replace("_", " ")
        lines = "".join(f"{letter}. {c}\n" for letter, c in zip("ABCD", it.choices))
        context = (
            f"The following are multiple choice questions (with answers) about {topic}.\n\n"
            f"{it.question.strip()}\n{lines}Answer:"
        )
        refs.append(_acc_and_margin(it, _next_token_logprobs(model, tokenizer, context, [" A", " B", " C", " D"])))
    _assert_matches_reference(forward, refs)


def test_mcq_does_not_retie_an_untied_head(fresh_model, mcq_items):
    model, tokenizer = fresh_model
    assert model.lm_head.weight is model.model.embed_tokens.weight
    model.lm_head.weight = torch.nn.Parameter(model.lm_head.weight.detach().clone())
    evaluate_mcq(model, tokenizer, {"mmlu": mcq_items["mmlu"][:1]}, "lettered", batch_size=1)
    assert model.lm_head.weight is not model.model.embed_tokens.weight
    assert "tie_weights" not in vars(model)


# A "long" question: more context tokens than this. The tests' token budgets lie below it (64 for the
# batching check, 256 for the comparison with lm-eval's stock path), so a long question is read alone, the
# path the real WMDP-cyber questions of up to ~2,800 tokens take under the default budget of 2048; a
# question of ~300 tokens takes that path at a ninth of the cost (issue 13: the suite on an AVX2-only CPU).
LONG_TOKENS = 300


def _context_tokens(tokenizer, item: McqItem) -> int:
    return len(tokenizer(f"Question: {item.question.strip()}\nAnswer:").input_ids)


@pytest.fixture(scope="module")
def cyber_short_and_long(default_model, data_dir):
    """Six of the shortest WMDP-cyber questions, then the two shortest of those over ``LONG_TOKENS`` tokens
    whose answers are short (at most 16 tokens, as the longest questions' are), so that every continuation
    fits the batching check's 64-token budget."""
    from benchmark.data.mcq import load_wmdp

    _, tokenizer = default_model
    cyber, _ = load_wmdp("cyber", data_dir)
    sized = sorted(((_context_tokens(tokenizer, it), it.question, k) for k, it in enumerate(cyber)))
    by_length = [cyber[k] for _, _, k in sized]
    long = (
        cyber[k]
        for n, _, k in sized
        if n > LONG_TOKENS and max(len(tokenizer(f" {c}").input_ids) for c in cyber[k].choices) <= 16
    )
    return by_length[:6] + [next(long), next(long)]


def test_mcq_reads_each_question_once(default_model, cyber_short_and_long):
    """One pass per question for all its choices; batches within the token budget."""
    model, tokenizer = default_model
    items = cyber_short_and_long
    calls: list[tuple[int, int, bool]] = []  # batch, length, continuation pass (on a cache)?

    def record(module, args, kwargs):
        batch, length = kwargs["input_ids"].shape
        calls.append((batch, length, kwargs.get("past_key_values") is not None))

    handle = model.register_forward_pre_hook(record, with_kwargs=True)
    try:
        result = evaluate_mcq(model, tokenizer, {"wmdp_cyber": items}, "cloze", batch_size=16, max_batch_tokens=64)
    finally:
        handle.remove()
    assert len(result["wmdp_cyber"]) == len(items)
    contexts = [(b, n) for b, n, on_cache in calls if not on_cache]
    assert sum(b for b, _ in contexts) == len(items)  # each question read once ...
    # ... the longest whole (every one of its tokens, more than the budget) and alone (below)
    assert max(n for _, n in contexts) == max(_context_tokens(tokenizer, it) for it in items) > LONG_TOKENS
    assert any(b > 1 for b, _ in contexts)  # short questions share a batch
    assert all(b * n <= 64 or b == 1 for b, n in contexts)
    continuations = [b * n for b, n, on_cache in calls if on_cache]
    assert continuations and max(continuations) <= 64


def _requests(lm, items) -> list:
    reqs = []
    for it in items:
        context = f"Question: {it.question.strip()}\nAnswer:"
        for choice in it.choices:
            ctx, cont = lm._encode_pair(context, f" {choice}")
            reqs.append(((context, f" {choice}"), ctx, cont))
    return reqs


def _shared_and_stock(model, tokenizer, items, budget=2048, **lm_kwargs):
    from lm_eval.models.huggingface import HFLM

    from benchmark.evaluation.multiple_choice import _no_retying
    from benchmark.evaluation.shared_prefix_lm import shared_prefix_lm_class

    with _no_retying(model):
        lm = shared_prefix_lm_class(budget)(pretrained=model, tokenizer=tokenizer, batch_size="auto", **lm_kwargs)
    reqs = _requests(lm, items)
    shared = lm._loglikelihood_tokens(reqs, disable_tqdm=True)
    stock = HFLM._loglikelihood_tokens(lm, reqs, disable_tqdm=True)
    assert len(shared) == len(stock) == len(reqs)
    return reqs, shared, stock


def test_shared_prefix_log_likelihoods_equal_lm_evals_own(fresh_model, cyber_short_and_long, mcq_items):
    """In float32 the shared-prefix sums equal lm-eval's stock path (batch 1) to rounding;
    in bf16 they differ only by the rounding of differently shaped matmuls.

    The token budget (256) lies below the long question (over ``LONG_TOKENS``), so that question is read
    alone in a pack of its own, as the ~2,700-token ones are under the default budget of 2048.
    """
    model, tokenizer = fresh_model
    items = cyber_short_and_long[:6] + cyber_short_and_long[-1:] + mcq_items["mmlu"][:6]  # one long question
    reqs, shared, stock = _shared_and_stock(model.float(), tokenizer, items, budget=256, max_batch_size=1)
    assert max(len(ctx) for _, ctx, _ in reqs) > 256  # the long question takes the pack-of-one path
    assert max(abs(a - b) for (a, _), (b, _) in zip(shared, stock)) < 2e-3
    assert [g for _, g in shared] == [g for _, g in stock]


def test_over_long_requests_take_lm_evals_truncating_path(default_model, mcq_items):
    """Requests longer than the window are left-truncated by lm-eval itself, not by us."""
    model, tokenizer = default_model
    items = sorted(mcq_items["mmlu"], key=lambda it: len(it.question))[:2] + mcq_items["mmlu"][:2]
    reqs, shared, stock = _shared_and_stock(model, tokenizer, items, budget=256, max_batch_size=4, max_length=40)
    lengths = [len(c) + len(t) for _, c, t in reqs]
    assert min(lengths) <= 41 < max(lengths)  # both paths are taken
    for (a, _), (b, _), n in zip(shared, stock, lengths):
        if n > 41:  # truncated: lm-eval's own code on both sides, identical batches of one length
            assert a == b
        else:
            assert a == pytest.approx(b, abs=0.5)


def test_mcq_rejects_unknown_format_and_empty_tasks(default_model, mcq_items):
    model, tokenizer = default_model
    with pytest.raises(ValueError, match="unknown prompt format 'mc2'"):
        evaluate_mcq(model, tokenizer, mcq_items, "mc2", batch_size=4)
    with pytest.raises(ValueError, match="no items"):
        evaluate_mcq(model, tokenizer, {"mmlu": []}, "cloze", batch_size=4)


# --- zsRE ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def edits(data_dir):
    return sample_edits(load_zsre(data_dir)[0], 8, seed=0)


@pytest.fixture(scope="module")
def base_reference(default_model, edits):
    model, tokenizer = default_model
    return locality_reference(model, tokenizer, edits, batch_size=4)


def test_token_set_f1():
    assert token_set_f1([1, 2, 3], [1, 2, 3]) == 1.0
    assert token_set_f1([1, 1, 2], [2, 1]) == 1.0  # sets, not multisets
    assert token_set_f1([4, 5], [1, 2]) == 0.0
    assert token_set_f1([1, 2], [1, 3]) == pytest.approx(0.5)
    assert token_set_f1([], [1]) == 0.0 and token_set_f1([], []) == 1.0


def test_reference_is_json_and_covers_every_record(base_reference, edits):
    import json

    assert json.loads(json.dumps(base_reference)) == base_reference
    for r in edits:
        entry = base_reference["records"][str(r.record_id)]
        assert len(entry["continuation"]) == len(entry["argmax"]) == len(entry["loc_ans_ids"]) > 0


def test_unchanged_model_has_perfect_locality(default_model, edits, base_reference):
    model, tokenizer = default_model
    scores = score_edits(model, tokenizer, edits, base_reference, batch_size=4)
    keys = {"edit_success", "generalization", "locality", "edit_success_tf", "generalization_tf", "locality_tf"}
    assert set(scores) == keys
    assert all(len(v) == len(edits) and all(0.0 <= x <= 1.0 for x in v) for v in scores.values())
    assert scores["locality"] == [1.0] * len(edits)
    assert scores["locality_tf"] == [1.0] * len(edits)
    # the unedited model does not know the counterfactual targets
    assert sum(scores["edit_success_tf"]) / len(edits) < 0.6


def test_damaged_model_loses_locality(fresh_model, edits, base_reference):
    model, tokenizer = fresh_model
    with torch.no_grad():
        gen = torch.Generator().manual_seed(0)
        for layer in model.model.layers[:4]:
            w = layer.mlp.down_proj.weight
            w.add_(torch.randn(w.shape, generator=gen).to(w.dtype) * w.float().std().to(w.dtype) * 2)
    scores = score_edits(model, tokenizer, edits, base_reference, batch_size=4)
    assert sum(scores["locality_tf"]) / len(edits) < 0.9
    assert sum(scores["locality"]) / len(edits) < 1.0


def test_target_equal_to_greedy_continuation_scores_one(default_model):
    model, tokenizer = default_model
    prompt = "The capital of France is"
    prompt_ids = tokenizer(prompt).input_ids
    with torch.inference_mode():
        out = model.generate(
            input_ids=torch.tensor([prompt_ids]),
            attention_mask=torch.ones(1, len(prompt_ids), dtype=torch.long),
            max_new_tokens=3,
            do_sample=False,
        )
    generated = out[0, len(prompt_ids) :].tolist()
    target = tokenizer.decode(generated)
    assert target.startswith(" ")
    target = target[1:]
    query = _query(tokenizer, prompt, target)
    assert query.answer_ids == generated  # the construction really is the model's own continuation
    record = ZsreRecord(0, "France", prompt, target, prompt, "nq question: who wrote hamlet", "Shakespeare")
    wrong = ZsreRecord(1, "France", prompt, "a purple elephant", prompt, "nq question: who wrote hamlet", "Shakespeare")
    reference = locality_reference(model, tokenizer, [record, wrong], batch_size=2)
    scores = score_edits(model, tokenizer, [record, wrong], reference, batch_size=2)
    assert scores["edit_success_tf"][0] == 1.0 and scores["edit_success"][0] == 1.0
    assert scores["generalization_tf"][0] == 1.0
    assert scores["edit_success_tf"][1] < 1.0 and scores["edit_success"][1] < 1.0


def test_batched_greedy_matches_transformers_generate(default_model):
    model, tokenizer = default_model
    prompts = ["The capital of France is", "Water boils at a temperature of", "My favourite food is"]
    queries = [_query(tokenizer, p, "x y z w v u") for p in prompts]
    ours = _greedy_and_forced(model, tokenizer, queries, batch_size=1, desc="test")[0]
    for q, tokens in zip(queries, ours):
        with torch.inference_mode():
            out = model.generate(
                input_ids=torch.tensor([q.prompt_ids]),
                attention_mask=torch.ones(1, len(q.prompt_ids), dtype=torch.long),
                max_new_tokens=len(q.answer_ids),
                do_sample=False,
            )
        hf = out[0, len(q.prompt_ids) :].tolist()
        eos = model.generation_config.eos_token_id
        if eos in hf:  # generate() stops at EOS; we go on past it
            hf = hf[: hf.index(eos) + 1]
        assert tokens[: len(hf)] == hf
    batched = _greedy_and_forced(model, tokenizer, queries, batch_size=3, desc="test")[0]
    assert sum(a == b for a, b in zip(batched, ours)) >= 2  # left padding in bf16 may nudge one


def test_reference_from_other_records_is_refused(default_model, edits, base_reference):
    model, tokenizer = default_model
    other = ZsreRecord(99999, "x", "Who is x?", "y", "Who is x?", "nq question: who", "z")
    with pytest.raises(ValueError, match="no entry for zsRE record 99999"):
        score_edits(model, tokenizer, [other], base_reference)


# --- perplexity ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def wikitext(data_dir):
    return load_wikitext_test(data_dir)[0]


def test_base_perplexity_is_plausible_and_shuffling_raises_it(default_model, wikitext):
    model, tokenizer = default_model
    nll, tokens = perplexity_windows(model, tokenizer, wikitext, seq_len=256, n_windows=4, batch_size=2)
    assert len(nll) == len(tokens) == 4 and tokens == [255] * 4
    ppl = perplexity_from_windows(nll, tokens)
    assert math.isfinite(ppl) and 10 < ppl < 60
    assert ppl == pytest.approx(math.exp(sum(nll) / sum(tokens)))
    words = wikitext[:40_000].split(" ")
    random.Random(0).shuffle(words)
    shuffled = perplexity_from_windows(*perplexity_windows(model, tokenizer, " ".join(words), 256, 4, 2))
    print(f"perplexity {ppl:.2f}, shuffled {shuffled:.2f} (x{shuffled / ppl:.1f})")
    assert shuffled > 3 * ppl


def test_perplexity_in_fp32_and_other_batch_size_agrees(fresh_model, wikitext):
    model, tokenizer = fresh_model
    bf16 = perplexity_from_windows(*perplexity_windows(model, tokenizer, wikitext, 128, 4, batch_size=4))
    one = perplexity_from_windows(*perplexity_windows(model, tokenizer, wikitext, 128, 4, batch_size=1))
    fp32 = perplexity_from_windows(*perplexity_windows(model.float(), tokenizer, wikitext, 128, 4, batch_size=2))
    assert one == pytest.approx(bf16, rel=0.01)
    assert fp32 == pytest.approx(bf16, rel=0.05)


def test_perplexity_rejects_more_windows_than_the_text_has(default_model):
    model, tokenizer = default_model
    with pytest.raises(ValueError, match="full windows"):
        perplexity_windows(model, tokenizer, "just a few words", 256, 1)
    with pytest.raises(ValueError, match="NLL values"):
        perplexity_from_windows([1.0], [])
