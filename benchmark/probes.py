"""Robustness probes: does an evaluated model's WMDP score survive a cheap attack on a copy of it?

Unlearning can be undone. Zhang et al. (ICLR 2025, arXiv 2410.16454) saw knowledge kept
after unlearning rise from 21% to 83% once the weights were rounded to 4 bits, and light
fine-tuning on unrelated text brings forgotten answers back as well. A probe applies such
an attack to a *copy* of the evaluated model and scores WMDP on it again; each probe's
scores are criteria of their own (``tasks/criteria.yaml``: ``wmdp_<probe>``,
``wmdp_prob_<probe>``, ``wmdp_acc_norm_<probe>`` and their bio/cyber parts), with per-item
values, so the paired bootstrap, Order-free Error and Order Sensitivity apply unchanged. The
base model is probed like every cell: its probed score is the control an unlearner's probed
score is compared with.

Probes (``evaluation.probes.run`` of a profile):

* ``rtn4`` / ``rtn8``: round-to-nearest weight quantization of every Linear layer inside the
  decoder blocks to 4 / 8 bits, asymmetric min-max per group of ``group_size`` input columns,
  no calibration (the cited work's cheap attack), then dequantized back to the model's dtype.
  The embedding and the (tied) LM head are left as they are, as weight-only quantizer
  recipes usually leave ``lm_head``.
* ``relearn``: a few seeded Adam steps of full fine-tuning (every parameter) on a small fixed
  corpus of Wikipedia prose (WikiText-2) that shares nothing with WMDP (see :func:`relearn_corpus`).

Not a scorer (``benchmark/evaluation/`` holds those, and they stay clear of the submitters'
toolkit): a probe is an attack followed by the WMDP scorer, and the relearning attack trains
with the toolkit's seeded :func:`~benchmark.toolkit.training.train`, the loop every
gradient-based baseline uses, rather than a second one.

The evaluated model is never touched: every probe works on ``copy.deepcopy(model)``, after
the model's own scores were computed, and the copy is dropped afterwards.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import torch

from benchmark.data.mcq import McqItem
from benchmark.evaluation.multiple_choice import evaluate_mcq_measures
from benchmark.model_layout import decoder_layers

PROBES = ("rtn4", "rtn8", "relearn")
RTN_BITS = {"rtn4": 4, "rtn8": 8}
WMDP_TASKS = ("wmdp_bio", "wmdp_cyber")
MEASURES = ("acc", "prob", "acc_norm")  # ``acc`` keeps the task's own name, as in the suite's own scores


def criterion_key(task: str, measure: str, probe: str) -> str:
    """``wmdp_bio`` + ``prob`` + ``rtn4`` -> ``wmdp_bio_prob_rtn4`` (``acc`` adds nothing: ``wmdp_bio_rtn4``)."""
    return f"{task}_{probe}" if measure == "acc" else f"{task}_{measure}_{probe}"


# --------------------------------------------------------------------------- quantization


@torch.no_grad()
def quantize_dequantize_(model: torch.nn.Module, bits: int, group_size: int) -> int:
    """Round every decoder Linear weight of ``model`` in place to ``bits`` per group; returns how many layers.

    The rounding itself is torch's maintained quantize-dequantize op,
    ``torch.fake_quantize_per_channel_affine``, applied with one "channel" per group of
    ``group_size`` consecutive input columns (the weight reshaped to groups x group_size).
    The per-group scale and zero point (asymmetric min-max over the group, the range widened
    to include 0 as integer quantizers do) are computed here: llm-compressor's RTN path would
    do the same but replaces the modules with quantized wrappers that must be folded back
    (docs/COMPRESSION.md), a heavier route for a probe that only needs the rounded values.
    Deterministic: no randomness, no calibration data.
    """
    if bits < 2 or bits > 8:
        raise ValueError(f"quantization probe: bits must be 2..8, got {bits}")
    qmax = 2**bits - 1
    n = 0
    for layer in decoder_layers(model):
        for module in layer.modules():
            if not isinstance(module, torch.nn.Linear):
                continue
            w = module.weight
            out_f, in_f = w.shape
            if in_f % group_size:
                raise ValueError(
                    f"quantization probe: {in_f} input columns are not a multiple of group_size {group_size}"
                )
            groups = w.detach().float().reshape(-1, group_size)
            lo = groups.amin(dim=1).clamp(max=0.0)
            hi = groups.amax(dim=1).clamp(min=0.0)
            scale = ((hi - lo) / qmax).clamp(min=torch.finfo(torch.float32).tiny)
            zero = torch.round(-lo / scale).clamp(0, qmax).to(torch.int32)
            rounded = torch.fake_quantize_per_channel_affine(groups, scale, zero, 0, 0, qmax)
            w.copy_(rounded.reshape(out_f, in_f).to(w.dtype))
            n += 1
    if n == 0:
        raise ValueError("quantization probe: no Linear layer found in the decoder blocks")
    return n


# --------------------------------------------------------------------------- relearning


def relearn_corpus(n: int, seed: int, data_dir: Any = None) -> tuple[tuple[str, ...], dict[str, Any]]:
    """The relearning probe's fixed corpus: ``n`` seeded paragraphs of WikiText-2 test, and its provenance.

    Why this text: it is general encyclopaedia prose (Wikipedia Good and Featured articles) that
    no intervention trains on. The retain corpus would not do: GD and RMU train to keep it,
    so relearning on it would be a weaker attack on exactly those unlearners (a seeded sample
    of 16 of its paragraphs fell entirely inside the 128 they are handed). Perplexity is
    measured on WikiText-2 test, but only on the evaluated model, never on a probe's copy, so
    training the copy on it leaks nothing into a score. It shares no text with WMDP: WMDP's
    questions are expert-written items published only with WMDP (and the offline forget
    stand-in is made of those questions); tests/test_probes.py checks that no 13-word sequence
    of these paragraphs occurs in any WMDP question or choice. Whatever WMDP accuracy the
    relearned copy gains is recovered, not taught. Paragraphs of at least 200 characters,
    section headings left out.
    """
    import random

    from benchmark.data.wikitext import load_wikitext_test

    text, source = load_wikitext_test(data_dir)
    paragraphs = [p.strip() for p in text.split("\n") if len(p.strip()) >= 200 and not p.strip().startswith("=")]
    if n > len(paragraphs):
        raise ValueError(
            f"relearning probe: relearn_texts {n} is more than the {len(paragraphs)} paragraphs of WikiText-2 test"
        )
    chosen = tuple(paragraphs[i] for i in sorted(random.Random(seed).sample(range(len(paragraphs)), n)))
    origin = source.describe()  # the shape of benchmark.data.corpora.Corpus.describe
    return chosen, {
        "name": "wikitext-2-test-paragraphs",
        "n_texts": n,
        "source": origin["source"],
        "location": origin["name"],
        "revision": origin["revision"],
    }


def relearn_batches(tokenizer: Any, texts: Sequence[str], batch_size: int, seq_len: int, steps: int) -> list[dict]:
    """The fixed batches of the relearning probe: texts in corpus order, cycled, ``batch_size`` per step."""
    from benchmark.toolkit.training import tokenize_texts_for_lm

    if not texts:
        raise ValueError("relearning probe: the corpus is empty")
    batches = []
    for step in range(steps):
        chunk = [texts[(step * batch_size + i) % len(texts)] for i in range(batch_size)]
        batches.append(tokenize_texts_for_lm(tokenizer, chunk, seq_len))
    return batches


def relearn_(model: torch.nn.Module, tokenizer: Any, texts: Sequence[str], settings: Any, seed: int) -> list[float]:
    """Fine-tune every parameter of ``model`` in place for ``settings.relearn_steps`` seeded Adam steps; the losses."""
    from benchmark.model_layout import model_device
    from benchmark.toolkit.training import lm_loss, train

    device = model_device(model)
    batches = [
        {k: v.to(device) for k, v in b.items()}
        for b in relearn_batches(
            tokenizer, texts, settings.relearn_batch_size, settings.relearn_seq_len, settings.relearn_steps
        )
    ]
    params = [p for p in model.parameters()]
    result = train(
        model,
        params,
        lambda i: lm_loss(model, batches[i]),
        steps=settings.relearn_steps,
        lr=settings.relearn_lr,
        seed=seed,
        desc="relearning probe",
        progress=False,
    )
    model.eval()
    return result.losses


# --------------------------------------------------------------------------- the probes


@dataclass
class ProbeResult:
    scores: dict[str, float]
    items: dict[str, list[float]]
    seconds: dict[str, float]


def probe_items(mcq: Mapping[str, Sequence[McqItem]], n_per_subset: int | None) -> dict[str, list[McqItem]]:
    """The WMDP questions a probe scores: the first ``n_per_subset`` of the suite's own (seeded) sample."""
    return {task: list(mcq[task])[:n_per_subset] if n_per_subset else list(mcq[task]) for task in WMDP_TASKS}


def probe_tokens(mcq: Mapping[str, Sequence[McqItem]], settings: Any, tokenizer: Any) -> int:
    """What the probes add to one evaluation, in MCQ-scoring tokens (the pre-run estimate counts them there).

    Each probe scores its questions once more (question once, every choice: as
    :func:`benchmark.cost.count_tokens` counts them); relearning adds its training tokens
    three times (a backward pass costs about two forward passes).
    """
    if not settings.run:
        return 0

    def n(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    questions = [it for items in probe_items(mcq, settings.wmdp_n_per_subset).values() for it in items]
    per_probe = sum(n(it.question) + sum(n(" " + c) for c in it.choices) + 8 for it in questions)
    training = 3 * settings.relearn_steps * settings.relearn_batch_size * settings.relearn_seq_len
    return len(settings.run) * per_probe + (training if "relearn" in settings.run else 0)


def run_probes(
    model: torch.nn.Module,
    tokenizer: Any,
    mcq: Mapping[str, Sequence[McqItem]],
    texts: Sequence[str],
    evaluation: Any,
    seed: int,
) -> ProbeResult:
    """Every probe of ``evaluation.probes.run`` on its own copy of ``model``: WMDP scores, per-item values, seconds."""
    settings = evaluation.probes
    questions = probe_items(mcq, settings.wmdp_n_per_subset)
    out = ProbeResult({}, {}, {})
    for probe in settings.run:
        started = time.perf_counter()
        # outside inference mode: the copy's tensors must be ordinary ones (relearning needs autograd)
        with torch.inference_mode(False), torch.enable_grad():
            probed = copy.deepcopy(model)
            if probe in RTN_BITS:
                quantize_dequantize_(probed, RTN_BITS[probe], settings.group_size)
            elif probe == "relearn":
                relearn_(probed, tokenizer, texts, settings, seed)
            else:  # the profile's validation lists the same names
                raise ValueError(f"unknown probe {probe!r} (known: {', '.join(PROBES)})")
        with torch.inference_mode():
            measures = evaluate_mcq_measures(
                probed,
                tokenizer,
                questions,
                evaluation.prompt_format,
                evaluation.batch_size,
                evaluation.mcq_batch_tokens,
            )
        del probed
        for task in WMDP_TASKS:
            for measure in MEASURES:
                key = criterion_key(task, measure, probe)
                out.items[key] = [float(v) for v in measures[task][measure]]
                out.scores[key] = sum(out.items[key]) / len(out.items[key])
        for measure in MEASURES:
            parts = [out.scores[criterion_key(task, measure, probe)] for task in WMDP_TASKS]
            out.scores[criterion_key("wmdp", measure, probe)] = sum(parts) / len(parts)
        out.seconds[f"probe_{probe}"] = time.perf_counter() - started
    return out
