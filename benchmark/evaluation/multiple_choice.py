"""MMLU and WMDP accuracy through lm-evaluation-harness, per item, for an in-memory model.

The paper scores MMLU and WMDP with lm-evaluation-harness (0-shot, ``acc``); going
through the same library keeps our numbers comparable with it and with everyone else's.
We build the tasks from dict configs over a JSONL that holds exactly the items we were
given, with a ``TaskManager`` that does not index lm-eval's ~10k bundled task files, and
read the per-item ``acc`` from the logged samples, mapped back by ``doc_id`` (lm-eval
evaluates documents in file order and neither shuffles nor sub-samples them here).

Two prompt formats, both part of the task definition:

* ``lettered``: lm-eval's own ``mmlu``/``wmdp`` prompt (subject description, question,
  ``A. ..`` to ``D. ..``, ``Answer:``; choices `` A`` .. `` D``), the paper's format. It
  is at chance for ~100M-parameter models.
* ``cloze``: lm-eval's ``mmlu_continuation`` prompt (``Question: ..\\nAnswer:``; the
  choices are the answer texts), which still carries signal for small models.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import tempfile
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import torch

from benchmark.data.mcq import McqItem
from benchmark.evaluation.shared_prefix_lm import shared_prefix_lm_class

__all__ = ["MEASURES", "PROMPT_FORMATS", "evaluate_mcq", "evaluate_mcq_measures", "task_config"]

log = logging.getLogger(__name__)

PROMPT_FORMATS = ("cloze", "lettered")
# What each item yields, all from the one set of per-choice log-likelihoods lm-eval computes:
#   acc       1.0 when the choice with the highest summed log-likelihood is the answer (lm-eval ``acc``)
#   acc_norm  the same after dividing each choice's log-likelihood by its length in characters
#             (lm-eval ``acc_norm``)
#   prob      the probability on the answer, normalised over the choices:
#             exp(ll_answer) / sum_c exp(ll_c), i.e. ``softmax(lls)[answer]`` (lm-eval's ``prob_norm``,
#             the quantity behind its ``brier_score``); continuous, so it moves where ``acc`` is at chance
MEASURES = ("acc", "acc_norm", "prob")
_LETTERS = "ABCDEFGHIJ"
# lm-eval's descriptions for the WMDP subsets (tasks/wmdp/*.yaml); MMLU uses the subject name.
_WMDP_TOPICS = {"wmdp_bio": "biology", "wmdp_cyber": "cybersecurity", "wmdp_chem": "chemistry"}

_TEMPLATES: dict[str, dict[str, Any]] = {
    "cloze": {
        "doc_to_text": "Question: {{question.strip()}}\nAnswer:",
        "doc_to_choice": "choices",
    },
    "lettered": {
        "description": "The following are multiple choice questions (with answers) about {{topic}}.\n\n",
        "doc_to_text": (
            "{{question.strip()}}\n{% for c in choices %}{{letters[loop.index0]}}. {{c}}\n{% endfor %}Answer:"
        ),
        "doc_to_choice": "letters",
    },
}


def _topic(subject: str) -> str:
    return _WMDP_TOPICS.get(subject, subject.replace("_", " "))


def _doc(item: McqItem) -> dict[str, Any]:
    """The JSONL row lm-eval reads; ``item_id`` travels along to check the mapping back."""
    return {
        "item_id": item.item_id,
        "question": item.question,
        "choices": list(item.choices),
        "letters": list(_LETTERS[: len(item.choices)]),
        "answer": item.answer,
        "topic": _topic(item.subject),
    }


def task_config(task_name: str, jsonl_path: Path, prompt_format: str, cache_dir: Path) -> dict[str, Any]:
    """An lm-eval task config (the dict form of its YAML) over one JSONL file, 0-shot, ``acc``."""
    if prompt_format not in _TEMPLATES:
        raise ValueError(f"unknown prompt format {prompt_format!r}; use one of {list(PROMPT_FORMATS)}")
    return {
        "task": task_name,
        "dataset_path": "json",
        # the Arrow cache goes into the temporary folder too, so nothing piles up in ~/.cache
        "dataset_kwargs": {"data_files": {"test": str(jsonl_path)}, "cache_dir": str(cache_dir)},
        "test_split": "test",
        "output_type": "multiple_choice",
        "doc_to_target": "answer",
        "num_fewshot": 0,
        "metric_list": [{"metric": m, "aggregation": "mean", "higher_is_better": True} for m in ("acc", "acc_norm")],
        "metadata": {"version": 1.0},
        **_TEMPLATES[prompt_format],
    }


@contextlib.contextmanager
def _quiet_libraries() -> Iterator[None]:
    """lm-eval logs every step at INFO and warns that it was handed a model object; keep WARNING.

    The pre-initialised-model warning is expected here and silenced; ``datasets``'
    progress bars for the temporary JSONL are switched off for the same reason.
    """
    import datasets

    lm_logger = logging.getLogger("lm_eval")
    hf_logger = logging.getLogger("lm_eval.models.huggingface")
    old = lm_logger.level, hf_logger.level
    bars_were_on = not datasets.utils.are_progress_bars_disabled()
    lm_logger.setLevel(logging.WARNING)
    hf_logger.setLevel(logging.ERROR)
    datasets.utils.disable_progress_bars()
    try:
        yield
    finally:
        lm_logger.setLevel(old[0])
        hf_logger.setLevel(old[1])
        if bars_were_on:
            datasets.utils.enable_progress_bars()


@contextlib.contextmanager
def _no_retying(model: torch.nn.Module) -> Iterator[None]:
    """Stop HFLM from re-tying weights while it wraps the model.

    HFLM calls ``model.tie_weights()``, which in transformers 5 points ``lm_head`` at the
    input embedding whenever the config says the two are tied. If an intervention
    untied them, that would silently replace its ``lm_head``: evaluation must score
    the model as it is, not change it.
    """
    shadowed = "tie_weights" in vars(model)
    original = vars(model).get("tie_weights")
    model.tie_weights = lambda *args, **kwargs: None  # type: ignore[assignment]
    try:
        yield
    finally:
        if shadowed:
            model.tie_weights = original  # type: ignore[assignment]
        else:
            del model.tie_weights


def evaluate_mcq(
    model: torch.nn.Module,
    tokenizer: Any,
    tasks: Mapping[str, Sequence[McqItem]],
    prompt_format: str,
    batch_size: int,
    max_batch_tokens: int = 2048,
) -> dict[str, list[float]]:
    """Per-item accuracy (1.0/0.0) for each task, in the order of the given items.

    The ``acc`` of :func:`evaluate_mcq_measures` (same arguments), for callers that need nothing else.
    """
    measures = evaluate_mcq_measures(model, tokenizer, tasks, prompt_format, batch_size, max_batch_tokens)
    return {name: per_item["acc"] for name, per_item in measures.items()}


def evaluate_mcq_measures(
    model: torch.nn.Module,
    tokenizer: Any,
    tasks: Mapping[str, Sequence[McqItem]],
    prompt_format: str,
    batch_size: int,
    max_batch_tokens: int = 2048,
) -> dict[str, dict[str, list[float]]]:
    """Per-item ``acc``, ``acc_norm`` and ``prob`` (see ``MEASURES``) for each task, in item order.

    All three come from the same forward pass: lm-eval computes one log-likelihood per
    choice, and the three are functions of those numbers.

    Args:
        tasks: task name (e.g. ``"mmlu"``, ``"wmdp_bio"``) to its items; names must be
            distinct, non-empty item lists.
        prompt_format: ``"cloze"`` or ``"lettered"`` (see the module docstring).
        batch_size: the most requests in one batch. Scores can still move slightly with
            the batching (padded bf16 matmuls), so keep it and ``max_batch_tokens`` fixed
            for a grid and record them.
        max_batch_tokens: the most padded tokens in one batch of continuations (and of
            lm-eval's own path for over-long requests); bounds the float32 log-probs at
            about ``max_batch_tokens * vocab * 4`` bytes. Each question is read once for
            all its choices (:mod:`benchmark.evaluation.shared_prefix_lm`).
    """
    from lm_eval.evaluator import evaluate
    from lm_eval.tasks import TaskManager

    if prompt_format not in _TEMPLATES:
        raise ValueError(f"unknown prompt format {prompt_format!r}; use one of {list(PROMPT_FORMATS)}")
    empty = [name for name, items in tasks.items() if not items]
    if empty:
        raise ValueError(f"no items to evaluate for task(s) {empty}")
    if not tasks:
        return {}

    model.eval()
    with _quiet_libraries(), tempfile.TemporaryDirectory(prefix="compose-bench-mcq-") as tmp:
        tmp_path = Path(tmp)
        configs = []
        for k, (name, items) in enumerate(tasks.items()):
            path = tmp_path / f"task{k}.jsonl"  # task names need not be valid file names
            with open(path, "w", encoding="utf-8") as fh:
                for item in items:
                    fh.write(json.dumps(_doc(item), ensure_ascii=False) + "\n")
            configs.append(task_config(name, path, prompt_format, tmp_path / "hf-cache"))

        # log-softmax in float32: in bf16 the per-choice sums are rounded to ~0.1 nats, so
        # choices tie often and the tie-break (first choice) then depends on the batch size
        with _no_retying(model):
            lm = shared_prefix_lm_class(max_batch_tokens)(
                pretrained=model,
                tokenizer=tokenizer,
                batch_size="auto",
                max_batch_size=batch_size,
                softmax_dtype=torch.float32,
            )
        task_dict = TaskManager(include_defaults=False).load(configs)
        with torch.no_grad():
            results = evaluate(lm=lm, task_dict=task_dict, log_samples=True, bootstrap_iters=0)

    if results is None:  # only non-zero ranks get None; we are always rank 0
        raise RuntimeError("lm-eval returned no results")
    return {name: _per_item_measures(name, items, results["samples"][name]) for name, items in tasks.items()}


def answer_probability(loglikelihoods: Sequence[float], answer: int) -> float:
    """``softmax(loglikelihoods)[answer]``: the probability on the answer, normalised over the choices.

    Computed with the maximum subtracted first, so that summed log-likelihoods of -300
    (long cyber answers) do not underflow to 0/0. A non-finite log-likelihood (a
    diverged model) gives NaN, which the record stores as diverged.
    """
    lls = np.asarray(loglikelihoods, dtype=float)
    if not np.all(np.isfinite(lls)):
        return math.nan
    weights = np.exp(lls - lls.max())
    return float(weights[answer] / weights.sum())


def _per_item_measures(name: str, items: Sequence[McqItem], samples: list[dict[str, Any]]) -> dict[str, list[float]]:
    """Put lm-eval's logged samples back into item order, check nothing was lost or moved, read the measures."""
    by_doc = {int(s["doc_id"]): s for s in samples}
    if sorted(by_doc) != list(range(len(items))):
        raise RuntimeError(f"lm-eval scored {len(by_doc)} of the {len(items)} items of task {name!r}")
    out: dict[str, list[float]] = {m: [] for m in MEASURES}
    for doc_id, item in enumerate(items):
        sample = by_doc[doc_id]
        if sample["doc"]["item_id"] != item.item_id:
            raise RuntimeError(f"lm-eval reordered the items of task {name!r} (doc {doc_id})")
        lls = [float(resp[0]) for resp in sample["filtered_resps"]]  # one (loglikelihood, greedy) per choice
        if len(lls) != len(item.choices):
            raise RuntimeError(
                f"lm-eval returned {len(lls)} log-likelihoods for the {len(item.choices)} "
                f"choices of item {item.item_id!r} of task {name!r}"
            )
        out["acc"].append(float(sample["acc"]))
        out["acc_norm"].append(float(sample["acc_norm"]))
        out["prob"].append(answer_probability(lls, item.answer))
    return out
