"""lm-eval's HFLM with the question read once per item instead of once per answer choice.

lm-eval scores a multiple-choice item as one log-likelihood request per choice,
``context + choice``, and runs every request through the model from its first token.
Its only sharing (``group_by="contexts"``) covers one-token continuations, i.e. the
lettered format. In the cloze format the choices are answer texts, so a WMDP-cyber
question of ~2,700 tokens is read four times: on two CPU cores that is ~80% of a
grid's evaluation time. No maintained backend shares the prefix for a model object on
CPU (vLLM's prefix cache needs its own engine), so this subclass does it by hand,
through lm-eval's own extension point (``_loglikelihood_tokens``), and leaves tasks,
prompts, metrics and aggregation to lm-eval:

1. requests are grouped by their context tokens;
2. contexts run once, several right-padded in one batch, keeping their key/value cache
   and the logits at each context's last token (which score every choice's first token);
3. the continuations run in one batch on the rows of that cache that belong to their
   context (right-padded, with an attention mask), and only their positions go through
   the float32 log-softmax.

The result is the same sum of log-probabilities lm-eval computes (up to bf16 rounding
of differently shaped matmuls, the same order of difference lm-eval's own padding
makes); ``tests/test_evaluation.py`` checks it against a plain forward pass. Requests
that need left-truncation (context + continuation longer than the model's window) go
through lm-eval's own code path, batched by a token budget.
"""

from __future__ import annotations

import copy
from collections import defaultdict
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from benchmark.model_layout import pad_token_id

__all__ = ["shared_prefix_lm_class"]

Request = tuple[tuple[str, str], list[int], list[int]]


def shared_prefix_lm_class(max_batch_tokens: int) -> type:
    """An HFLM subclass scoring with shared prefixes; its fallback batches hold at most
    ``max_batch_tokens`` padded tokens (and at least one request)."""
    from lm_eval.models.huggingface import HFLM

    class SharedPrefixHFLM(HFLM):
        _next_start = 0
        _current = 1

        def _batch_scheduler(self, pos: int, n_reordered_requests: Sequence[Any]) -> int:
            """Token-budget batches for lm-eval's own path (used with ``batch_size="auto"``).

            lm-eval's adaptive batching probes for CUDA out-of-memory errors; this plugs a
            deterministic budget into the same hook instead. lm-eval asks for every
            position in order; a batch's size is fixed by its first (longest) request.
            """
            if pos == 0:
                self._next_start = 0
            if pos == self._next_start:
                _, context, continuation = n_reordered_requests[pos]
                padded = min(len(context) + len(continuation), self.max_length + 1)
                self._current = max(1, min(self.max_batch_size, max_batch_tokens // padded))
                self._next_start = pos + self._current
            return self._current

        def _loglikelihood_tokens(
            self, requests: list[Request], disable_tqdm: bool = False, override_bs: int | None = None
        ) -> list[tuple[float, bool]]:
            if self.backend != "causal":
                return super()._loglikelihood_tokens(requests, disable_tqdm, override_bs)
            results: list[tuple[float, bool] | None] = [None] * len(requests)
            too_long = [i for i, (_, ctx, cont) in enumerate(requests) if len(ctx) + len(cont) > self.max_length + 1]
            if too_long:
                fallback = super()._loglikelihood_tokens([requests[i] for i in too_long], disable_tqdm, override_bs)
                for i, res in zip(too_long, fallback, strict=True):
                    results[i] = res
            skip = set(too_long)
            groups: dict[tuple[int, ...], list[int]] = defaultdict(list)
            for i, (_, ctx, _) in enumerate(requests):
                if i not in skip:
                    groups[tuple(ctx)].append(i)
            # longest first: memory trouble shows at once, and the bar's estimate is an upper bound
            order = sorted(groups, key=len, reverse=True)
            bar = tqdm(total=len(order), desc="Scoring choices (shared prefix)", disable=disable_tqdm or self.rank != 0)
            for pack in _packs(
                order,
                [max(len(requests[i][2]) for i in groups[c]) for c in order],
                [len(groups[c]) for c in order],
                max_batch_tokens,
            ):
                scored = self._score_pack([list(c) for c in pack], [[requests[i][2] for i in groups[c]] for c in pack])
                for context, results_of_context in zip(pack, scored, strict=True):
                    for i, res in zip(groups[context], results_of_context, strict=True):
                        results[i] = res
                        self.cache_hook.add_partial("loglikelihood", requests[i][0], res)
                bar.update(len(pack))
            bar.close()
            assert all(r is not None for r in results)
            return results  # type: ignore[return-value]

        @torch.no_grad()
        def _score_pack(
            self, contexts: list[list[int]], continuations: list[list[list[int]]]
        ) -> list[list[tuple[float, bool]]]:
            """(sum of log-probabilities, greedy?) of each continuation of each context.

            The contexts run once, right-padded in one batch; the logits at each context's
            last token score its continuations' first tokens. Then every continuation's
            remaining tokens run in one batch on the key/value cache of its context (rows
            picked out of the cache), masked so that padding is never attended to.
            """
            model, device, pad = self.model, self.device, pad_token_id(self.tokenizer)
            lengths = [len(c) for c in contexts]
            width = max(len(c) for conts in continuations for c in conts)
            ids = torch.full((len(contexts), max(lengths)), pad, dtype=torch.long, device=device)
            context_mask = torch.zeros_like(ids)
            for b, context in enumerate(contexts):
                ids[b, : len(context)] = torch.tensor(context, device=device)
                context_mask[b, : len(context)] = 1
            last_positions = sorted(set(n - 1 for n in lengths))
            out = model(
                input_ids=ids,
                attention_mask=context_mask,
                use_cache=True,
                logits_to_keep=torch.tensor(last_positions, device=device),
            )  # only these are scored
            first = torch.stack([out.logits[b, last_positions.index(n - 1)] for b, n in enumerate(lengths)])
            rows = [(b, cont) for b, conts in enumerate(continuations) for cont in conts]
            flat: list[tuple[float, bool] | None] = [None] * len(rows)
            for chunk in _length_chunks([len(cont) for _, cont in rows], max_batch_tokens):
                picked = [rows[r] for r in chunk]
                which = torch.tensor([b for b, _ in picked], device=device)
                width = max(len(cont) for _, cont in picked)
                logits = first[which].unsqueeze(1)
                if width > 1:
                    cache = copy.deepcopy(out.past_key_values)
                    cache.batch_select_indices(which)
                    tail = torch.full((len(picked), width - 1), pad, dtype=torch.long, device=device)
                    tail_mask = torch.zeros_like(tail)
                    positions = torch.zeros_like(tail)
                    for row, (b, cont) in enumerate(picked):
                        tail[row, : len(cont) - 1] = torch.tensor(cont[:-1], dtype=torch.long, device=device)
                        tail_mask[row, : len(cont) - 1] = 1
                        positions[row] = torch.arange(lengths[b], lengths[b] + width - 1, device=device)
                    rest = model(
                        input_ids=tail,
                        attention_mask=torch.cat([context_mask[which], tail_mask], dim=1),
                        position_ids=positions,
                        past_key_values=cache,
                        use_cache=True,
                    ).logits
                    logits = torch.cat([logits, rest], dim=1)
                # the float32 log-softmax over the vocabulary only at real continuation tokens
                real = torch.zeros(logits.shape[:2], dtype=torch.bool, device=device)
                for row, (_, cont) in enumerate(picked):
                    real[row, : len(cont)] = True
                logprobs = F.log_softmax(logits[real], dim=-1, dtype=self.softmax_dtype or torch.float32)
                targets = torch.tensor([t for _, cont in picked for t in cont], dtype=torch.long, device=device)
                chosen = logprobs.gather(1, targets.unsqueeze(1)).squeeze(1)
                hits = logprobs.argmax(dim=-1) == targets
                start = 0
                for r, (_, cont) in zip(chunk, picked):
                    end = start + len(cont)
                    flat[r] = (float(chosen[start:end].sum()), bool(hits[start:end].all()))
                    start = end
            grouped, k = [], 0
            for conts in continuations:
                grouped.append(flat[k : k + len(conts)])
                k += len(conts)
            return grouped

    return SharedPrefixHFLM


def _length_chunks(lengths: list[int], max_tokens: int) -> list[list[int]]:
    """Indices of ``lengths`` in runs of similar length whose padded size fits ``max_tokens``.

    Continuations of one pack range from one token (a letter) to hundreds (a code answer);
    padding every row to the pack's longest made up most of the continuation pass.
    Sorting by length first keeps the padding to the spread within a chunk.
    """
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    chunks: list[list[int]] = []
    real = 0
    for i in order:
        if chunks and _fits(len(chunks[-1]) + 1, lengths[chunks[-1][0]], real + lengths[i], max_tokens):
            chunks[-1].append(i)
            real += lengths[i]
        else:
            chunks.append([i])
            real = lengths[i]
    return chunks


# A batch may hold at most this many padded positions per real token. Measured on 57 MMLU
# cloze items (bf16, budget 2048): padding only by the budget fed 1.66 context and 3.5
# continuation positions per real token.
MAX_PADDING = 1.25


def _fits(rows: int, longest: int, real_tokens: int, max_tokens: int) -> bool:
    """Whether ``rows`` rows padded to ``longest`` fit the budget without too much padding."""
    padded = rows * longest
    return padded <= max_tokens and padded <= MAX_PADDING * real_tokens


def _packs(contexts: list, widths: list[int], counts: list[int], max_tokens: int, max_contexts: int = 16):
    """Consecutive runs of the (longest-first) contexts that fit one batch.

    A pack's padded context tokens (its first context's length times its size) and its
    continuation tokens (rows times the widest continuation) stay within ``max_tokens``,
    and its padded context tokens within ``MAX_PADDING`` times its real ones;
    a single context always forms a pack, however long. At most ``max_contexts`` contexts,
    which bounds the logits kept at distinct last positions.
    """
    pack: list = []
    longest = rows = widest = real = 0
    for context, width, count in zip(contexts, widths, counts, strict=True):
        if pack:
            fits = (
                len(pack) < max_contexts
                and _fits(len(pack) + 1, longest, real + len(context), max_tokens)
                and (rows + count) * max(widest, width) <= max_tokens
            )
            if not fits:
                yield pack
                pack, rows, widest, real = [], 0, 0, 0
        if not pack:
            longest = len(context)
        pack.append(context)
        real += len(context)
        rows += count
        widest = max(widest, width)
    if pack:
        yield pack
