"""Small, seeded training helpers for interventions that update weights by gradient descent.

Public to submitters, beside :mod:`benchmark.api`. Everything here works on any
``transformers`` causal LM and keeps two promises:

* **Pad tokens never enter a loss.** Labels are ``-100`` on padding (found through the
  attention mask, not the pad id: many tokenizers reuse EOS as pad) and, for
  prompt/target pairs, on every prompt token.
* **Training in bf16/fp16 does not silently stall.** A 16-bit weight cannot take an Adam
  step much smaller than its own rounding step (bf16 keeps 8 significant bits, so a weight
  of 0.05 moves in steps of ~2e-4 and an update of 5e-5 rounds away). :func:`train` keeps
  float32 master copies of the trained parameters only, runs Adam on those, and writes
  them back into the model's dtype after each step.

Typical use (see ``submissions/baselines/ft/ft.py``)::

    from benchmark.toolkit import preserve_grad_state, select_parameters, tokenize_prompt_target, lm_loss, train

    batch = tokenize_prompt_target(tokenizer, prompts, targets, max_len=64)
    with preserve_grad_state(model):
        params = select_parameters(model, ["mlp.down_proj"], layers=[4, 5, 6])
        train(model, params, lambda step: lm_loss(model, batch), steps=25, lr=5e-4, seed=context.seed)
"""

from __future__ import annotations

import contextlib
import math
import random
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Mapping, Sequence

import torch
import torch.nn.functional as F

# the model-layout helpers live below both the toolkit and the scorers; public here under these names
from benchmark.model_layout import decoder_layers, num_layers, pad_token_id  # noqa: F401
from benchmark.model_layout import model_device as _model_device  # noqa: F401

__all__ = [
    "IGNORE_INDEX",
    "pad_token_id",
    "collate",
    "seed_everything",
    "decoder_layers",
    "num_layers",
    "tokenize_prompt_target",
    "tokenize_texts_for_lm",
    "lm_loss",
    "sequence_log_likelihood",
    "mean_log_likelihood",
    "select_parameters",
    "preserve_grad_state",
    "TrainResult",
    "train",
]

IGNORE_INDEX = -100
"""Label value that :func:`lm_loss` (and ``transformers``) leave out of the loss."""

Batch = dict[str, torch.Tensor]


# --------------------------------------------------------------------------- seeding, layers


def seed_everything(seed: int) -> None:
    """Seed Python's ``random``, NumPy (when installed) and torch (CPU and CUDA)."""
    random.seed(seed)
    try:
        import numpy as np

        np.random.seed(seed % (2**32))
    except ImportError:  # pragma: no cover - numpy ships with torch wheels
        pass
    torch.manual_seed(seed)


# --------------------------------------------------------------------------- tokenization


def _as_str_list(values: Sequence[str] | str, what: str) -> list[str]:
    if isinstance(values, str):
        values = [values]
    out = list(values)
    for i, v in enumerate(out):
        if not isinstance(v, str):
            raise TypeError(f"{what}[{i}] is a {type(v).__name__}, not a str")
    return out


def collate(rows: list[tuple[list[int], list[int]]], pad_id: int, padding_side: str = "right") -> Batch:
    """Pad ``(input_ids, labels)`` rows into tensors; padding gets attention 0 and label -100.

    Right padding (the default) keeps every row's token ``i`` at column ``i``, which editors that
    index positions (e.g. a subject's last token) rely on.
    """
    width = max(len(ids) for ids, _ in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(rows), width), dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
    for i, (ids, lab) in enumerate(rows):
        n = len(ids)
        sl = slice(width - n, width) if padding_side == "left" else slice(0, n)
        input_ids[i, sl] = torch.tensor(ids, dtype=torch.long)
        attention[i, sl] = 1
        labels[i, sl] = torch.tensor(lab, dtype=torch.long)
    return {"input_ids": input_ids, "attention_mask": attention, "labels": labels}


def tokenize_prompt_target(
    tokenizer: Any,
    prompts: Sequence[str],
    targets: Sequence[str],
    max_len: int | None = None,
    *,
    separator: str = " ",
) -> Batch:
    """Tokenize prompt/target pairs for teacher forcing with the loss on target tokens only.

    Each row is ``tokens(prompt) + tokens(separator + target)``: the prompt is tokenized with
    the tokenizer's special tokens (e.g. BOS), the target without them, and ``separator``
    (a space) is put in front of the target unless the prompt ends with, or the target
    starts with, whitespace. This is how the zsRE scorer joins them.

    Args:
        tokenizer: a ``transformers`` tokenizer.
        prompts, targets: equally long lists of strings.
        max_len: longest row in tokens. Longer rows lose prompt tokens from the left (the
            target is always kept whole); a target that does not fit raises ``ValueError``.
        separator: put between prompt and target (see above).

    Returns:
        ``input_ids``, ``attention_mask`` and ``labels`` (long tensors, padded on the
        tokenizer's ``padding_side``); ``labels`` is ``-100`` everywhere except on the
        target tokens, in particular never on padding.
    """
    prompts = _as_str_list(prompts, "prompts")
    targets = _as_str_list(targets, "targets")
    if len(prompts) != len(targets):
        raise ValueError(f"{len(prompts)} prompts but {len(targets)} targets")
    if not prompts:
        raise ValueError("no prompt/target pairs to tokenize")
    rows: list[tuple[list[int], list[int]]] = []
    for i, (prompt, target) in enumerate(zip(prompts, targets)):
        if not target.strip():
            raise ValueError(f"target {i} is empty")
        sep = "" if (not prompt or prompt[-1].isspace() or target[0].isspace()) else separator
        p_ids = list(tokenizer(prompt, add_special_tokens=True)["input_ids"])
        t_ids = list(tokenizer(sep + target, add_special_tokens=False)["input_ids"])
        if not t_ids:
            raise ValueError(f"target {i} ({target!r}) tokenizes to nothing")
        if max_len is not None:
            if len(t_ids) >= max_len:
                raise ValueError(f"target {i} has {len(t_ids)} tokens; it does not fit max_len={max_len} with a prompt")
            keep = max_len - len(t_ids)
            if len(p_ids) > keep:
                p_ids = p_ids[len(p_ids) - keep :]
        if not p_ids:  # a target needs at least one token before it to be predicted
            raise ValueError(f"prompt {i} is empty")
        rows.append((p_ids + t_ids, [IGNORE_INDEX] * len(p_ids) + t_ids))
    return collate(rows, pad_token_id(tokenizer), getattr(tokenizer, "padding_side", "right"))


def tokenize_texts_for_lm(tokenizer: Any, texts: Sequence[str], max_len: int) -> Batch:
    """Tokenize plain texts for language modelling: labels are the input ids, ``-100`` on padding.

    Texts are truncated to ``max_len`` tokens (special tokens included) and padded on the
    tokenizer's ``padding_side``. Padding is found through the attention mask, so a
    tokenizer whose pad token is also its EOS token is handled correctly.
    """
    texts = _as_str_list(texts, "texts")
    if not texts:
        raise ValueError("no texts to tokenize")
    if max_len < 2:
        raise ValueError(f"max_len must be at least 2, got {max_len}")
    rows = []
    for text in texts:
        ids = list(tokenizer(text, add_special_tokens=True, truncation=True, max_length=max_len)["input_ids"])
        if not ids:
            ids = [pad_token_id(tokenizer)]
            rows.append((ids, [IGNORE_INDEX]))
            continue
        rows.append((ids, list(ids)))
    return collate(rows, pad_token_id(tokenizer), getattr(tokenizer, "padding_side", "right"))


# --------------------------------------------------------------------------- losses


def _to_device(batch: Mapping[str, torch.Tensor], device: torch.device) -> Batch:
    return {k: v.to(device) for k, v in batch.items()}


def _token_nll(model: torch.nn.Module, batch: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token negative log-likelihood (float32) of the shifted labels, and the mask of counted tokens."""
    batch = _to_device(batch, _model_device(model))
    # Belt and braces: nothing outside the attention mask is ever a label.
    labels = batch["labels"][:, 1:].masked_fill(batch["attention_mask"][:, 1:] == 0, IGNORE_INDEX)
    # Full logits on purpose: slicing the hidden states (``logits_to_keep``) makes the LM head's
    # matmul run on a non-contiguous bf16 input, which torch 2.13 on CPU executes ~50x slower
    # when gradients are on (measured: 4.9 s instead of 0.09 s for 30x24 tokens).
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False)
    logits = out.logits[:, :-1, :]
    mask = labels != IGNORE_INDEX
    nll = F.cross_entropy(
        logits.float().reshape(-1, logits.size(-1)),
        labels.reshape(-1),
        ignore_index=IGNORE_INDEX,
        reduction="none",
    ).view(labels.shape)
    return nll, mask


def lm_loss(model: torch.nn.Module, batch: Mapping[str, torch.Tensor], reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy of the next-token prediction over the label tokens (computed in float32).

    ``reduction``: ``"mean"`` (over all label tokens of the batch, each token weighs the
    same), ``"per_example_mean"`` (mean of each row's mean; rows without labels count 0),
    or ``"sum"``. Raises ``ValueError`` when the batch has no label token at all.
    """
    nll, mask = _token_nll(model, batch)
    count = mask.sum()
    if int(count) == 0:
        raise ValueError("the batch has no label tokens (all -100)")
    if reduction == "mean":
        return nll.sum() / count
    if reduction == "sum":
        return nll.sum()
    if reduction == "per_example_mean":
        per_row = nll.sum(dim=1) / mask.sum(dim=1).clamp(min=1)
        return per_row.mean()
    raise ValueError(f"unknown reduction {reduction!r}")


@torch.no_grad()
def sequence_log_likelihood(
    model: torch.nn.Module, batch: Mapping[str, torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed log-likelihood of each row's label tokens and the number of those tokens (no grad)."""
    nll, mask = _token_nll(model, batch)
    return -(nll.sum(dim=1)).cpu(), mask.sum(dim=1).cpu()


@torch.no_grad()
def mean_log_likelihood(
    model: torch.nn.Module, tokenizer: Any, texts: Sequence[str], max_len: int = 256, batch_size: int = 8
) -> float:
    """Average per-token log-likelihood of ``texts`` (each truncated to ``max_len``), pads excluded."""
    texts = _as_str_list(texts, "texts")
    total, count = 0.0, 0
    for start in range(0, len(texts), batch_size):
        ll, n = sequence_log_likelihood(
            model, tokenize_texts_for_lm(tokenizer, texts[start : start + batch_size], max_len)
        )
        total += float(ll.sum())
        count += int(n.sum())
    if count == 0:
        raise ValueError("no tokens to score")
    return total / count


# --------------------------------------------------------------------------- parameters


def _matches(name: str, pattern: str) -> bool:
    if pattern in ("", "*"):
        return True
    if pattern.startswith("re:"):
        return re.fullmatch(pattern[3:], name) is not None
    return name == pattern or name.endswith("." + pattern)


def select_parameters(
    model: torch.nn.Module,
    module_patterns: Sequence[str],
    layers: Sequence[int] | None = None,
    *,
    include: Sequence[str] = (),
    freeze_others: bool = True,
) -> list[torch.nn.Parameter]:
    """The parameters of chosen modules in chosen transformer blocks; freeze everything else.

    Args:
        module_patterns: module names relative to a block. ``"mlp.down_proj"`` matches that
            module (and any name ending in ``.mlp.down_proj``); ``"re:<regex>"`` full-matches
            the regex; ``"*"`` takes the whole block.
        layers: block indices (negative ones count from the end); None means every block.
        include: extra module names relative to the model root (e.g. ``"lm_head"``), taken whole.
        freeze_others: set ``requires_grad=False`` on every other parameter (default), and
            ``True`` on the selected ones. Wrap in :func:`preserve_grad_state` to undo.

    Returns:
        The selected parameters, each once (tied weights are not counted twice).
        Raises ``ValueError`` when a layer index is out of range or nothing matches.
    """
    blocks = decoder_layers(model)
    n = len(blocks)
    if isinstance(module_patterns, str):
        module_patterns = [module_patterns]
    indices = list(range(n)) if layers is None else [int(i) for i in layers]
    for i in indices:
        if not -n <= i < n:
            raise ValueError(f"layer {i} is out of range: the model has {n} layers (0..{n - 1})")
    indices = sorted({i % n for i in indices})
    selected: list[torch.nn.Parameter] = []
    seen: set[int] = set()

    def add(module: torch.nn.Module) -> None:
        for p in module.parameters():
            if id(p) not in seen:
                seen.add(id(p))
                selected.append(p)

    for i in indices:
        for name, module in blocks[i].named_modules():
            if name and any(_matches(name, pat) for pat in module_patterns):
                add(module)
            elif not name and any(pat in ("", "*") for pat in module_patterns):
                add(module)
    for name in include:
        try:
            add(model.get_submodule(name))
        except AttributeError as exc:
            raise ValueError(f"the model has no module {name!r}") from exc
    if not selected:
        raise ValueError(f"no parameters match modules {list(module_patterns)} in layers {indices}")
    if freeze_others:
        for p in model.parameters():
            p.requires_grad_(id(p) in seen)
    return selected


@contextlib.contextmanager
def preserve_grad_state(model: torch.nn.Module) -> Iterator[None]:
    """Restore every parameter's ``requires_grad`` and every module's train/eval mode on exit."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    modes = [(m, m.training) for m in model.modules()]
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
        for m, mode in modes:
            m.training = mode


# --------------------------------------------------------------------------- training loop


@dataclass
class TrainResult:
    """What :func:`train` did: the loss before each optimizer step, and why it stopped."""

    losses: list[float] = field(default_factory=list)
    steps: int = 0
    stopped_early: bool = False
    stop_reason: str = ""
    seconds: float = 0.0


def train(
    model: torch.nn.Module,
    params: Sequence[torch.nn.Parameter],
    loss_fn: Callable[[int], torch.Tensor],
    *,
    steps: int,
    lr: float,
    seed: int,
    optimizer: str = "adam",
    weight_decay: float = 0.0,
    accumulation_steps: int = 1,
    max_grad_norm: float | None = None,
    master_weights: str | bool = "auto",
    callback: Callable[[int, float], bool | None] | None = None,
    desc: str = "training",
    progress: bool = True,
) -> TrainResult:
    """A small, seeded optimisation loop over ``params`` with a tqdm progress bar.

    Args:
        loss_fn: called as ``loss_fn(i)`` (``i`` counts micro-batches from 0) and returns a
            scalar loss to *minimise* (negate it for gradient ascent).
        steps: number of optimizer steps; each runs ``accumulation_steps`` micro-batches.
        lr, weight_decay: optimizer settings; ``optimizer`` is ``"adam"``, ``"adamw"`` or ``"sgd"``.
        seed: torch is seeded with it before the first step.
        max_grad_norm: clip the global gradient norm when set.
        master_weights: ``"auto"`` keeps float32 master copies for 16-bit parameters (the
            update happens in float32, the model holds the rounded value); True/False force it.
        callback: called as ``callback(step, loss)`` after each optimizer step (``loss`` is the
            mean micro-batch loss of that step, measured before the update); returning True stops.

    Only ``params`` get gradients: every other parameter is frozen for the duration and all
    ``requires_grad`` flags and train/eval modes are restored afterwards. A non-finite loss
    stops training before it corrupts the weights and raises ``FloatingPointError``.
    """
    import time

    from tqdm.auto import tqdm

    params = list(params)
    if not params:
        raise ValueError("no parameters to train")
    if steps < 0 or accumulation_steps < 1:
        raise ValueError("steps must be >= 0 and accumulation_steps >= 1")
    if not (lr > 0 and math.isfinite(lr)):
        raise ValueError(f"lr must be a positive number, got {lr}")
    use_master = (
        any(p.dtype in (torch.bfloat16, torch.float16) for p in params)
        if master_weights == "auto"
        else bool(master_weights)
    )
    torch.manual_seed(seed)
    result = TrainResult()
    start = time.perf_counter()
    with preserve_grad_state(model):
        chosen = {id(p) for p in params}
        for p in model.parameters():
            p.requires_grad_(id(p) in chosen)
        opt_params: list[torch.Tensor] = (
            [p.detach().float().clone().requires_grad_(True) for p in params] if use_master else list(params)
        )
        opt: torch.optim.Optimizer
        if optimizer == "adam":
            opt = torch.optim.Adam(opt_params, lr=lr, weight_decay=weight_decay)
        elif optimizer == "adamw":
            opt = torch.optim.AdamW(opt_params, lr=lr, weight_decay=weight_decay)
        elif optimizer == "sgd":
            opt = torch.optim.SGD(opt_params, lr=lr, weight_decay=weight_decay)
        else:
            raise ValueError(f"unknown optimizer {optimizer!r} (adam, adamw, sgd)")
        bar = tqdm(range(steps), desc=desc, disable=not progress, leave=False)
        try:
            for step in bar:
                for p in params:
                    p.grad = None
                total = 0.0
                for micro in range(accumulation_steps):
                    loss = loss_fn(step * accumulation_steps + micro)
                    value = float(loss.detach())
                    if not math.isfinite(value):
                        raise FloatingPointError(f"{desc}: loss became {value} at step {step}")
                    (loss / accumulation_steps).backward()
                    total += value / accumulation_steps
                if use_master:
                    for master, p in zip(opt_params, params):
                        master.grad = None if p.grad is None else p.grad.detach().float()
                        p.grad = None
                if max_grad_norm is not None:
                    torch.nn.utils.clip_grad_norm_(opt_params, max_grad_norm)
                opt.step()
                opt.zero_grad(set_to_none=True)
                if use_master:
                    with torch.no_grad():
                        for master, p in zip(opt_params, params):
                            p.copy_(master)
                result.losses.append(total)
                result.steps = step + 1
                bar.set_postfix(loss=f"{total:.4f}")
                if callback is not None and callback(step, total):
                    result.stopped_early = True
                    result.stop_reason = f"callback stopped at step {step + 1}"
                    break
        finally:
            bar.close()
            for p in params:
                p.grad = None
    result.seconds = time.perf_counter() - start
    return result
