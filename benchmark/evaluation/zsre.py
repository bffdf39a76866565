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
from benchmark.toolkit.training import pad_token_id

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


def _greedy(model, tokenizer, queries: Sequence[_Query], batch_size: int, desc: str) -> list[list[int]]:
    """Exactly ``len(answer_ids)`` greedy tokens after each prompt, EOS included as a token.

    A short KV-cached loop instead of ``generate()``: ``generate`` fills unset fields
    from the model's own generation config and always stops at its EOS, while the score
    needs the same number of tokens from every model (an instruct model often ends a
    question with EOS; what it says next still tells edited and unedited models apart).
    Prompts are batched by length (fewer pad tokens), left-padded, with an attention
    mask and explicit position ids, so every row continues its own prompt.
    """
    device, pad = _device(model), pad_token_id(tokenizer)
    order = sorted(range(len(queries)), key=lambda i: (len(queries[i].prompt_ids), i))
    out: list[list[int]] = [[] for _ in queries]
    for batch in _batches(order, batch_size, desc):
        width = max(len(queries[i].prompt_ids) for i in batch)
        ids = torch.full((len(batch), width), pad, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, i in enumerate(batch):
            p = queries[i].prompt_ids
            ids[row, width - len(p) :] = torch.tensor(p)
            mask[row, width - len(p) :] = 1
        ids, mask = ids.to(device), mask.to(device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        steps = max(len(queries[i].answer_ids) for i in batch)
        result = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True)
        tokens = []
        for step in range(steps):
            nxt = result.logits[:, -1, :].argmax(-1, keepdim=True)
            tokens.append(nxt)
            if step + 1 == steps:
                break
            mask = torch.cat([mask, mask.new_ones((len(batch), 1))], dim=-1)
            positions = positions[:, -1:] + 1
            result = model(
                input_ids=nxt,
                attention_mask=mask,
                position_ids=positions,
                past_key_values=result.past_key_values,
                use_cache=True,
            )
        generated = torch.cat(tokens, dim=-1).tolist()
        for row, i in enumerate(batch):
            out[i] = generated[row][: len(queries[i].answer_ids)]
    return out


def _teacher_forced_argmax(model, tokenizer, queries: Sequence[_Query], batch_size: int, desc: str) -> list[list[int]]:
    """The argmax token at each answer position when prompt and answer are fed at once.

    Right padding keeps every real token at its natural position.
    """
    device, pad = _device(model), pad_token_id(tokenizer)
    order = sorted(range(len(queries)), key=lambda i: (len(queries[i].prompt_ids) + len(queries[i].answer_ids), i))
    out: list[list[int]] = [[] for _ in queries]
    for batch in _batches(order, batch_size, desc):
        seqs = [queries[i].prompt_ids + queries[i].answer_ids for i in batch]
        width = max(len(s) for s in seqs)
        ids = torch.full((len(batch), width), pad, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, s in enumerate(seqs):
            ids[row, : len(s)] = torch.tensor(s)
            mask[row, : len(s)] = 1
        argmax = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.argmax(-1).tolist()
        for row, i in enumerate(batch):
            start = len(queries[i].prompt_ids) - 1  # the logit at position t predicts token t + 1
            out[i] = argmax[row][start : start + len(queries[i].answer_ids)]
    return out


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
        continuations = _greedy(model, tokenizer, queries, batch_size, "locality reference (generate)")
        argmaxes = _teacher_forced_argmax(model, tokenizer, queries, batch_size, "locality reference (forward)")
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
    with torch.inference_mode():
        edit_gen = _greedy(model, tokenizer, edit_q, batch_size, "zsRE edit (generate)")
        para_gen = _greedy(model, tokenizer, para_q, batch_size, "zsRE rephrase (generate)")
        loc_gen = _greedy(model, tokenizer, loc_q, batch_size, "zsRE locality (generate)")
        edit_tf = _teacher_forced_argmax(model, tokenizer, edit_q, batch_size, "zsRE edit (forward)")
        para_tf = _teacher_forced_argmax(model, tokenizer, para_q, batch_size, "zsRE rephrase (forward)")
        loc_tf = _teacher_forced_argmax(model, tokenizer, loc_q, batch_size, "zsRE locality (forward)")
    return {
        "edit_success": [token_set_f1(g, q.answer_ids) for g, q in zip(edit_gen, edit_q)],
        "generalization": [token_set_f1(g, q.answer_ids) for g, q in zip(para_gen, para_q)],
        "locality": [token_set_f1(g, e["continuation"]) for g, e in zip(loc_gen, entries)],
        "edit_success_tf": [_tf_accuracy(a, q.answer_ids) for a, q in zip(edit_tf, edit_q)],
        "generalization_tf": [_tf_accuracy(a, q.answer_ids) for a, q in zip(para_tf, para_q)],
        "locality_tf": [_tf_accuracy(a, e["argmax"]) for a, e in zip(loc_tf, entries)],
    }
