"""The evaluation suite of one run: the same items for every cell, and one call that scores a model.

Built once per run from the profile: the seeded zsRE edit set, the stratified MMLU and
WMDP sub-samples (WMDP restricted to the scored half when unlearners train on the
offline stand-in), the WikiText-2 test text, and the base model's locality reference.
:meth:`EvaluationSuite.evaluate` returns every criterion and the per-item values behind
it, which the metrics bootstrap over.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from benchmark.data.corpora import STANDIN_NAME
from benchmark.data.mcq import McqItem, items_sha256, load_mmlu, load_wmdp, stratified_sample, within_length
from benchmark.data.wikitext import load_wikitext_test
from benchmark.data.wmdp_split import is_standin_forget
from benchmark.data.zsre import DEV_SPLIT, ZsreRecord, load_zsre, sample_edits
from benchmark.evaluation.compression_stats import measure_bits, measure_sparsity
from benchmark.evaluation.multiple_choice import evaluate_mcq_measures
from benchmark.evaluation.perplexity import perplexity_from_windows, perplexity_windows
from benchmark.evaluation.zsre import locality_reference, score_edits
from benchmark.profiles import EvaluationSettings
from benchmark.records import DIVERGED, atomic_write_text

log = logging.getLogger(__name__)

ZSRE_KEYS = ("edit_success", "generalization", "locality", "edit_success_tf", "generalization_tf", "locality_tf")
# The per-item MCQ measures besides ``acc`` (which keeps the task's own name): items key ``<task>_<measure>``
MCQ_EXTRA_MEASURES = ("prob", "acc_norm")


def _sha(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


@dataclass
class EvaluationSuite:
    settings: EvaluationSettings
    edits: list[ZsreRecord]
    mcq: dict[str, list[McqItem]]
    wikitext: str
    provenance: dict[str, Any]
    reference: dict[str, Any] = field(default_factory=dict)
    seed: int = 0  # the relearning probe's seed
    probe_texts: tuple[str, ...] = ()  # the relearning probe's fixed corpus (benchmark.probes)

    @classmethod
    def build(
        cls, settings: EvaluationSettings, seed: int, data_dir: str | Path | None, forget_corpus_name: str
    ) -> "EvaluationSuite":
        zsre_all, zsre_src = load_zsre(data_dir)
        edits = sample_edits(zsre_all, settings.n_edits, seed)
        mmlu_all, mmlu_src = load_mmlu(data_dir)
        cap = settings.mcq_max_chars
        mcq = {"mmlu": stratified_sample(within_length(mmlu_all, cap), settings.mmlu_n, seed)}
        wmdp_src = {}
        scored_half = forget_corpus_name == STANDIN_NAME
        for subset in ("bio", "cyber"):
            items, src = load_wmdp(subset, data_dir)
            if scored_half:
                items = [it for it in items if not is_standin_forget(it.question)]
            mcq[f"wmdp_{subset}"] = stratified_sample(within_length(items, cap), settings.wmdp_n_per_subset, seed)
            wmdp_src[subset] = src.describe()
        text, wiki_src = load_wikitext_test(data_dir)
        provenance = {
            "zsre": {
                **zsre_src.describe(),
                "n": len(edits),
                "record_ids": [r.record_id for r in edits],
                "items_sha256": _sha([r.record_id for r in edits]),
                "split": f"evaluation ({DEV_SPLIT})",
            },
            "mmlu": {**mmlu_src.describe(), "n": len(mcq["mmlu"]), "items_sha256": items_sha256(mcq["mmlu"])},
            "wmdp": {
                "sources": wmdp_src,
                "scored_questions": "held-out half (forget stand-in in use)" if scored_half else "all",
                "n_bio": len(mcq["wmdp_bio"]),
                "n_cyber": len(mcq["wmdp_cyber"]),
                "items_sha256": items_sha256(mcq["wmdp_bio"] + mcq["wmdp_cyber"]),
            },
            "wikitext": {
                **wiki_src.describe(),
                "seq_len": settings.perplexity_seq_len,
                "windows": settings.perplexity_windows,
            },
            "prompt_format": settings.prompt_format,
            "mcq_max_chars": cap,
            "batch_size": settings.batch_size,
            "mcq_batch_tokens": settings.mcq_batch_tokens,
        }
        probe_texts: tuple[str, ...] = ()
        if settings.probes.run:  # absent without probes: older records and cache keys stay as they were
            probes: dict[str, Any] = settings.probes.model_dump(mode="json")
            if "relearn" in settings.probes.run:
                from benchmark.probes import relearn_corpus

                probe_texts, described = relearn_corpus(settings.probes.relearn_texts, seed, data_dir)
                probes["relearn_corpus"] = {**described, "items_sha256": _sha(list(probe_texts))}
            provenance["probes"] = probes
        return cls(settings, edits, mcq, text, provenance, seed=seed, probe_texts=probe_texts)

    def prepare_reference(self, model, tokenizer, cache_file: Path, base_weights_sha: str) -> None:
        """The base model's locality reference, computed once and cached beside the records."""
        key = _sha([base_weights_sha, [r.record_id for r in self.edits]])
        if cache_file.exists():
            cached = json.loads(cache_file.read_text())
            if cached.get("key") == key:
                self.reference = cached["reference"]
                return
        self.reference = locality_reference(model, tokenizer, self.edits, batch_size=self.settings.zsre_batch_size)
        atomic_write_text(cache_file, json.dumps({"key": key, "reference": self.reference}))

    @torch.inference_mode()
    def evaluate(self, model, tokenizer, weight_bits: float | None, base_model=None) -> tuple[dict, dict, dict, dict]:
        """Every criterion on ``model``: (scores, per-item values, seconds per part, compression check).

        ``weight_bits`` is what the cell's steps claimed; average bits are measured on the
        weights against ``base_model`` (:func:`measure_bits`), and the check says whether the
        claim held.
        """
        s = self.settings
        model.eval()
        seconds: dict[str, float] = {}
        items: dict[str, list[float]] = {}
        t = time.perf_counter()
        zsre = score_edits(model, tokenizer, self.edits, self.reference, batch_size=s.zsre_batch_size)
        items.update({k: [float(v) for v in zsre[k]] for k in ZSRE_KEYS})
        seconds["zsre"] = time.perf_counter() - t
        t = time.perf_counter()
        mcq = evaluate_mcq_measures(model, tokenizer, self.mcq, s.prompt_format, s.batch_size, s.mcq_batch_tokens)
        mcq_keys = []
        for task, measures in mcq.items():  # one forward pass gave all measures of a task
            items[task] = [float(v) for v in measures["acc"]]
            mcq_keys.append(task)
            for measure in MCQ_EXTRA_MEASURES:
                items[f"{task}_{measure}"] = [float(v) for v in measures[measure]]
                mcq_keys.append(f"{task}_{measure}")
        seconds["mcq"] = time.perf_counter() - t
        t = time.perf_counter()
        nll, ntok = perplexity_windows(
            model, tokenizer, self.wikitext, s.perplexity_seq_len, s.perplexity_windows, s.perplexity_batch_size
        )
        items["perplexity_nll"] = [float(x) for x in nll]
        items["perplexity_tokens"] = [int(x) for x in ntok]
        seconds["perplexity"] = time.perf_counter() - t

        scores: dict[str, Any] = {k: sum(v) / len(v) for k, v in items.items() if k in ZSRE_KEYS or k in mcq_keys}
        scores["wmdp"] = (scores["wmdp_bio"] + scores["wmdp_cyber"]) / 2
        for measure in MCQ_EXTRA_MEASURES:
            scores[f"wmdp_{measure}"] = (scores[f"wmdp_bio_{measure}"] + scores[f"wmdp_cyber_{measure}"]) / 2
        scores["perplexity"] = perplexity_from_windows(nll, ntok)
        sparsity = measure_sparsity(model)
        scores["sparsity"] = sparsity
        t = time.perf_counter()
        bits = measure_bits(model, weight_bits, base_model)
        seconds["compression_stats"] = time.perf_counter() - t
        scores["avg_bits"] = bits.avg_bits
        if s.probes.run:  # after the model's own scores, each on a copy (benchmark.probes)
            from benchmark.probes import run_probes

            probed = run_probes(model, tokenizer, self.mcq, self.probe_texts, s, self.seed)
            scores.update(probed.scores)
            items.update(probed.items)
            seconds.update(probed.seconds)
        return mark_diverged(scores), items, seconds, bits.as_record()


def mark_diverged(scores: dict[str, Any]) -> dict[str, Any]:
    """Scores with every non-finite number (NaN, infinite) replaced by ``"diverged"``.

    JSON has no NaN or infinity, and a null would read as "not measured": the record must say
    that the model was measured and broke (the metrics rank it worst, docs/FORMATS.md).
    """
    out: dict[str, Any] = {}
    for key, value in scores.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isfinite(value):
            out[key] = DIVERGED
        else:
            out[key] = value
    return out
