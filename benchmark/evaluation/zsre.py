"""Scoring zsRE edits: edit success, generalization and locality, in two flavours.

* Generation F1 (``edit_success``, ``generalization``, ``locality``): the metric of the
  paper (Composable Interventions, Kolbeinsson et al. 2024). The model greedily
  continues the prompt for exactly as many tokens as the target has (an end-of-text
  token counts as a token, it does not stop the continuation), and we take the F1 of
  the token *sets* of that continuation and the target. It rewards partly right answers
  and cannot be gamed by a high probability alone.
* Teacher-forced accuracy (``*_tf``): the metric of EasyEdit. Prompt and target are fed
  at once and we count the target positions where the argmax token is the target
  token. It needs one forward pass and is the number editing papers usually report.

Locality asks "did the edit leave unrelated facts alone?". The NQ answer in ``loc_ans``
is often not what a small model would say anyway, so scoring against it would mix
"the model never knew" with "the edit broke it". We score against the *unedited*
model instead: its greedy continuation and its teacher-forced argmax on the ``loc``
prompt, computed once by :func:`locality_reference`. The unchanged model therefore
scores exactly 1.0, and any drop is caused by the interventions.

Targets are tokenized the way they follow the prompt: ``prompt + " " + target`` is
tokenized and the prompt's tokens are cut off. Everything is greedy and deterministic;
keep ``batch_size`` equal between the reference and the scoring run, since padding in
low precision can nudge logits.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import torch
from tqdm.auto import tqdm

from benchmark.data.zsre import ZsreRecord
from benchmark.model_layout import pad_token_id

__all__ = ["locality_reference", "score_edits", "token_set_f1", "REFERENCE_FORMAT"]

REFERENCE_FORMAT = "compose-bench/zsre-locality-reference/v1"


@dataclass(frozen=True)
class _Query:
    """A prompt and the answer tokens that should follow it."""

    prompt_ids: list[int]
    answer_ids: list[int]


def token_set_f1(prediction: Sequence[int], target: Sequence[int]) -> float:
    """F1 between the sets of token ids (two empty sequences agree perfectly)."""
    pred, gold = set(prediction), set(target)
    if not pred and not gold:
        return 1.0
    common = len(pred & gold)
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(gold)
    return 2 * precision * recall / (precision + recall)


def _query(tokenizer: Any, prompt: str, answer: str) -> _Query:
    """Tokenize ``prompt`` and the tokens ``" " + answer`` becomes when it follows it."""
    prompt_ids = list(tokenizer(prompt).input_ids)
    full_ids = list(tokenizer(f"{prompt} {answer}").input_ids)
    if full_ids[: len(prompt_ids)] == prompt_ids and len(full_ids) > len(prompt_ids):
        answer_ids = full_ids[len(prompt_ids) :]
    else:  # the merge crossed the boundary: fall back to the answer on its own
        answer_ids = list(tokenizer(f" {answer}", add_special_tokens=False).input_ids)
    if not prompt_ids or not answer_ids:
        raise ValueError(f"prompt {prompt!r} or answer {answer!r} tokenizes to nothing")
    return _Query(prompt_ids, answer_ids)


def _device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def _batches(order: list[int], batch_size: int, desc: str) -> Iterator[list[int]]:
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    chunks = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    yield from tqdm(chunks, desc=desc, leave=False)


def _left_padded(seqs: Sequence[Sequence[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids and attention mask of ``seqs``, left-padded to the longest."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for row, s in enumerate(seqs):
        ids[row, width - len(s) :] = torch.tensor(s, dtype=torch.long)
        mask[row, width - len(s) :] = 1
    return ids, mask


def _greedy_and_forced(
    model, tokenizer, queries: Sequence[_Query], batch_size: int, desc: str
) -> tuple[list[list[int]], list[list[int]]]:
    """Per query: (greedy continuation, teacher-forced argmax), both ``len(answer_ids)`` long.

    The two share their work. One teacher-forced forward over ``prompt + answer`` gives the
    argmax at every answer position (the teacher-forced metric) and, because the model is
    causal, also the greedy tokens up to and including the first position ``k`` where the
    argmax differs from the answer: until then the greedy continuation *is* the answer.
    Only the rest is decoded, one token at a time on the key/value cache of that same
    forward, with the cached answer tokens from ``k`` on masked out and explicit position
    ids, so every row continues ``prompt + answer[:k] + argmax[k]`` exactly as a fresh
    greedy run would. No ``generate()``: it fills unset fields from the model's own
    generation config and stops at EOS, while the score needs the same number of tokens
    from every model (an EOS counts as a token and does not stop the continuation).

    Queries are sorted by length and left-padded, so the answers end in the same column
    and the LM head runs only on the columns that predict answer tokens. Before this, the
    two metrics took six passes (a prompt prefill plus decoding, and a separate forward,
    for each of edit, rephrase and locality); the item-by-item equality with a plain
    unbatched implementation is checked in ``tests/test_zsre_shared_pass.py``.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    device, pad = _device(model), pad_token_id(tokenizer)
    order = sorted(range(len(queries)), key=lambda i: (len(queries[i].prompt_ids) + len(queries[i].answer_ids), i))
    greedy: list[list[int]] = [[] for _ in queries]
    forced: list[list[int]] = [[] for _ in queries]
    for batch in _batches(order, batch_size, desc):
        qs = [queries[i] for i in batch]
        ids, mask = _left_padded([q.prompt_ids + q.answer_ids for q in qs], pad)
        ids, mask = ids.to(device), mask.to(device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        width, longest = ids.shape[1], max(len(q.answer_ids) for q in qs)
        # the logit in column c predicts the token in column c + 1: the answers sit in the
        # last len(answer) columns, so columns width-1-longest .. width-2 predict them all
        keep = torch.arange(width - 1 - longest, width - 1, device=device)
        out = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True, logits_to_keep=keep)
        argmax = out.logits.argmax(-1).tolist()
        resume: list[tuple[int, int]] = []  # (row, first disagreement k) of rows with tokens left
        for row, (i, q) in enumerate(zip(batch, qs)):
            n = len(q.answer_ids)
            forced[i] = argmax[row][longest - n :]
            k = next((j for j, (a, e) in enumerate(zip(forced[i], q.answer_ids)) if a != e), n)
            greedy[i] = forced[i][: k + 1]
            if k + 1 < n:
                resume.append((row, k))
        if resume:
            _decode_rest(model, out.past_key_values, mask, resume, [batch[r] for r, _ in resume], queries, greedy)
    return greedy, forced


def _decode_rest(
    model,
    cache,
    mask: torch.Tensor,
    resume: list[tuple[int, int]],
    which: list[int],
    queries: Sequence[_Query],
    greedy: list[list[int]],
) -> None:
    """Greedy decoding on the teacher-forced cache for rows that left the answer at ``k``.

    ``greedy[i]`` holds ``k + 1`` tokens on entry (the last one not yet fed) and is
    completed to ``len(answer_ids)`` in place.
    """
    device = mask.device
    rows = torch.tensor([r for r, _ in resume], device=device)
    cache.batch_select_indices(rows)
    mask = mask[rows].clone()
    width = mask.shape[1]
    for slot, ((_, k), i) in enumerate(zip(resume, which)):
        n = len(queries[i].answer_ids)
        mask[slot, width - n + k :] = 0  # the answer tokens from the disagreement on are not the prefix
    nxt = torch.tensor([[greedy[i][-1]] for i in which], device=device)
    position = torch.tensor([[len(queries[i].prompt_ids) + k] for (_, k), i in zip(resume, which)], device=device)
    steps = max(len(queries[i].answer_ids) - len(greedy[i]) for i in which)
    for _ in range(steps):
        mask = torch.cat([mask, mask.new_ones((len(which), 1))], dim=-1)
        out = model(input_ids=nxt, attention_mask=mask, position_ids=position, past_key_values=cache, use_cache=True)
        cache, nxt, position = out.past_key_values, out.logits[:, -1, :].argmax(-1, keepdim=True), position + 1
        for slot, token in enumerate(nxt[:, 0].tolist()):
            i = which[slot]
            if len(greedy[i]) < len(queries[i].answer_ids):
                greedy[i].append(token)


def _tf_accuracy(argmax: Sequence[int], expected: Sequence[int]) -> float:
    return sum(int(a == e) for a, e in zip(argmax, expected, strict=True)) / len(expected)


def locality_reference(
    model: torch.nn.Module, tokenizer: Any, records: Sequence[ZsreRecord], batch_size: int = 16
) -> dict[str, Any]:
    """The unedited model's behaviour on each record's ``loc`` prompt (JSON-serialisable).

    Per record (keyed by ``str(record_id)``): ``loc_ans_ids`` (the answer tokens, whose
    count sets how far we generate), ``continuation`` (that many greedy tokens) and
    ``argmax`` (teacher-forced argmax over the ``loc_ans`` positions).
    """
    model.eval()
    queries = [_query(tokenizer, r.loc, r.loc_ans) for r in records]
    with torch.inference_mode():
        continuations, argmaxes = _greedy_and_forced(model, tokenizer, queries, batch_size, "zsRE locality reference")
    return {
        "format": REFERENCE_FORMAT,
        "records": {
            str(r.record_id): {"loc_ans_ids": q.answer_ids, "continuation": c, "argmax": a}
            for r, q, c, a in zip(records, queries, continuations, argmaxes, strict=True)
        },
    }


def _reference_entries(reference: dict[str, Any], records: Sequence[ZsreRecord], queries: Sequence[_Query]):
    if reference.get("format") != REFERENCE_FORMAT:
        raise ValueError(f"locality reference has format {reference.get('format')!r}, expected {REFERENCE_FORMAT!r}")
    entries = []
    for record, query in zip(records, queries, strict=True):
        entry = reference["records"].get(str(record.record_id))
        if entry is None:
            raise ValueError(f"the locality reference has no entry for zsRE record {record.record_id}")
        if list(entry["loc_ans_ids"]) != query.answer_ids:
            raise ValueError(
                f"the locality reference of zsRE record {record.record_id} was computed with another tokenizer"
            )
        entries.append(entry)
    return entries


def score_edits(
    model: torch.nn.Module,
    tokenizer: Any,
    records: Sequence[ZsreRecord],
    reference: dict[str, Any],
    batch_size: int = 16,
) -> dict[str, list[float]]:
    """Per-record scores, in the order of ``records``.

    Keys: ``edit_success``, ``generalization``, ``locality`` (generation F1) and
    ``edit_success_tf``, ``generalization_tf``, ``locality_tf`` (teacher-forced
    accuracy). ``reference`` comes from :func:`locality_reference` on the unedited model
    with the same tokenizer and, ideally, the same batch size.
    """
    model.eval()
    edit_q = [_query(tokenizer, r.prompt, r.target) for r in records]
    para_q = [_query(tokenizer, r.rephrase, r.target) for r in records]
    loc_q = [_query(tokenizer, r.loc, r.loc_ans) for r in records]
    entries = _reference_entries(reference, records, loc_q)
    n = len(records)
    with torch.inference_mode():
        # edit and rephrase prompts share batches; locality prompts run in the same batches as
        # locality_reference did, so the unchanged model reproduces its reference bit for bit
        gen, tf = _greedy_and_forced(model, tokenizer, edit_q + para_q, batch_size, "zsRE edit + rephrase")
        loc_gen, loc_tf = _greedy_and_forced(model, tokenizer, loc_q, batch_size, "zsRE locality")
    edit_gen, para_gen, edit_tf, para_tf = gen[:n], gen[n:], tf[:n], tf[n:]
    return {
        "edit_success": [token_set_f1(g, q.answer_ids) for g, q in zip(edit_gen, edit_q)],
        "generalization": [token_set_f1(g, q.answer_ids) for g, q in zip(para_gen, para_q)],
        "locality": [token_set_f1(g, e["continuation"]) for g, e in zip(loc_gen, entries)],
        "edit_success_tf": [_tf_accuracy(a, q.answer_ids) for a, q in zip(edit_tf, edit_q)],
        "generalization_tf": [_tf_accuracy(a, q.answer_ids) for a, q in zip(para_tf, para_q)],
        "locality_tf": [_tf_accuracy(a, e["argmax"]) for a, e in zip(loc_tf, entries)],
    }
