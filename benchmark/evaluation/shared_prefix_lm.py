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
2. the context runs once, keeping its key/value cache and its last-position logits
   (which score every choice's first token);
3. all continuations of the group run in one batch on that cache (right-padded, with
   an attention mask), and only their positions go through the float32 log-softmax.

The result is the same sum of log-probabilities lm-eval computes (up to bf16 rounding
of differently shaped matmuls, the same order of difference lm-eval's own padding
makes); ``tests/test_evaluation.py`` checks it against a plain forward pass. Requests
that need left-truncation (context + continuation longer than the model's window) go
through lm-eval's own code path, batched by a token budget.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

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
            for context in tqdm(order, desc="Scoring choices (shared prefix)", disable=disable_tqdm or self.rank != 0):
                members = groups[context]
                scored = self._score_group(list(context), [requests[i][2] for i in members])
                for i, res in zip(members, scored, strict=True):
                    results[i] = res
                    self.cache_hook.add_partial("loglikelihood", requests[i][0], res)
            assert all(r is not None for r in results)
            return results  # type: ignore[return-value]

        @torch.no_grad()
        def _score_group(self, context: list[int], continuations: list[list[int]]) -> list[tuple[float, bool]]:
            """(sum of log-probabilities, greedy?) of each continuation after one shared context."""
            model = self.model
            ctx = torch.tensor([context], dtype=torch.long, device=self.device)
            out = model(input_ids=ctx, use_cache=True, logits_to_keep=1)  # only the last position is scored
            last = out.logits[:, -1:, :]  # scores every continuation's first token
            width = max(len(c) for c in continuations)
            results: list[tuple[float, bool]] = []
            # all continuations at once unless that exceeds the token budget; then in slices
            per_batch = max(1, min(len(continuations), max_batch_tokens // max(1, width)))
            for start in range(0, len(continuations), per_batch):
                chunk = continuations[start : start + per_batch]
                n = len(chunk)
                logits_first = last.expand(n, -1, -1)
                if width > 1:
                    cache = _repeat_cache(out.past_key_values, n)
                    tail = torch.full((n, width - 1), _pad_id(self.tokenizer), dtype=torch.long, device=self.device)
                    mask = torch.zeros((n, len(context) + width - 1), dtype=torch.long, device=self.device)
                    mask[:, : len(context)] = 1
                    for row, cont in enumerate(chunk):
                        if len(cont) > 1:
                            tail[row, : len(cont) - 1] = torch.tensor(cont[:-1], device=self.device)
                            mask[row, len(context) : len(context) + len(cont) - 1] = 1
                    positions = torch.arange(len(context), len(context) + width - 1, device=self.device).expand(n, -1)
                    rest = model(
                        input_ids=tail, attention_mask=mask, position_ids=positions, past_key_values=cache, use_cache=True
                    ).logits
                    logits = torch.cat([logits_first, rest], dim=1)
                else:
                    logits = logits_first
                logprobs = F.log_softmax(logits, dim=-1, dtype=self.softmax_dtype or torch.float32)
                for row, cont in enumerate(chunk):
                    lp = logprobs[row, : len(cont)]
                    target = torch.tensor(cont, dtype=torch.long, device=lp.device)
                    greedy = bool((lp.argmax(dim=-1) == target).all())
                    total = float(lp.gather(1, target.unsqueeze(1)).sum())
                    results.append((total, greedy))
            return results

    return SharedPrefixHFLM


def _pad_id(tokenizer: Any) -> int:
    """Any valid token id for padded positions (they are masked and never scored)."""
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0


def _repeat_cache(cache: Any, n: int) -> Any:
    """A copy of a one-row key/value cache repeated ``n`` times along the batch."""
    import copy

    repeated = copy.deepcopy(cache)
    if n > 1:
        repeated.batch_repeat_interleave(n)
    return repeated
