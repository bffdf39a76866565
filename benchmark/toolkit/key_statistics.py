"""Second moments of a module's inputs over a text sample, cached on disk with their provenance.

Public to submitters, beside :mod:`benchmark.api`. Locate-then-edit methods (MEMIT and its
successors) spread an edit over a layer's weights through ``C = E[k k^T]``, the second
moment of the layer's input vectors ("keys") over generic text. Estimating ``C`` takes a
forward pass over many tokens, so it is computed once per (model weights, layer, module,
corpus, token count) and kept on disk: a safetensors file with the float32 matrix and a
JSON file with its provenance, both written atomically. A cache entry is used only when
every provenance field matches; otherwise it is recomputed, never silently reused.

Where the cache lives decides whom it can hurt. Inside a grid step the harness names two
folders (:mod:`benchmark.step_cache`): ``$COMPOSE_BENCH_STEP_CACHE``, this submission's
own statistics from earlier steps (read-only), and ``$COMPOSE_BENCH_STEP_CACHE_OUT``, where
new entries go (the harness keeps them for this submission only after the step). Both are
keyed by the submission's hash, the base weights and the step's settings, so a file one
submission plants is never read by another's step. Outside a step (a script, a notebook,
the tests) the user's own folder is used: ``key-statistics/`` under ``$COMPOSE_BENCH_CACHE``
(default ``~/.cache/compose-bench``).

The weights fingerprint covers only what the keys depend on: the embeddings and the
blocks up to the deepest requested layer. An intervention that changed those blocks (a
compression, an edit, an unlearning step before this one) gets statistics of the model it
actually edits. No library computes this for an arbitrary ``transformers`` model, hence
this module.

Text: :func:`reference_texts` gives generic encyclopaedic text, WikiText-2 *train* from
the Hub when reachable, the Wikipedia extract of the local data folder otherwise (never the
WikiText-2 *test* split, on which perplexity is measured).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch

from benchmark.toolkit.training import _model_device, decoder_layers

__all__ = [
    "KeyStatistics",
    "key_second_moments",
    "reference_texts",
    "prefix_weights_sha256",
    "cache_folders",
    "ENV_STEP_CACHE",
    "ENV_STEP_CACHE_OUT",
]

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
ENV_STEP_CACHE = "COMPOSE_BENCH_STEP_CACHE"  # read: this submission's own statistics (harness steps)
ENV_STEP_CACHE_OUT = "COMPOSE_BENCH_STEP_CACHE_OUT"  # write: new statistics, kept by the harness after the step


def cache_folders(cache_root: str | Path | None = None) -> tuple[Path | None, Path | None]:
    """``(read folder, write folder)`` of the statistics cache (see the module docstring)."""
    if cache_root is not None:
        return Path(cache_root), Path(cache_root)
    step_cache = os.environ.get(ENV_STEP_CACHE)
    if step_cache:  # inside a harness step: never the shared folder
        out = os.environ.get(ENV_STEP_CACHE_OUT)
        return Path(step_cache), (Path(out) if out else None)
    from benchmark.paths import cache_dir

    root = cache_dir() / "key-statistics"
    return root, root


@dataclass(frozen=True)
class KeyStatistics:
    """``moments[layer]`` is ``E[k k^T]`` (float32, ``in_features x in_features``) of ``module`` at that block."""

    moments: dict[int, torch.Tensor]
    provenance: dict[str, Any]
    from_cache: bool


def reference_texts(n: int | None = None, seed: int = 0) -> tuple[tuple[str, ...], dict]:
    """Generic encyclopaedic text for statistics, and where it came from (see module docstring)."""
    from benchmark.data.corpora import load_retain_corpus

    corpus = load_retain_corpus(n, seed)
    return corpus.texts, corpus.describe()


def prefix_weights_sha256(model: torch.nn.Module, up_to_layer: int) -> str:
    """SHA-256 of the embeddings and blocks ``0..up_to_layer`` (what a key at that layer depends on)."""
    from benchmark.models import tensors_sha256

    blocks = decoder_layers(model)
    tensors: list[tuple[str, torch.Tensor]] = [("embed", model.get_input_embeddings().weight)]
    for index in range(up_to_layer + 1):
        tensors += [(f"{index}.{n}", p) for n, p in blocks[index].state_dict().items()]
    return tensors_sha256(tensors)


def _atomic_write(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


class _Reached(Exception):
    pass


@torch.no_grad()
def _estimate(
    model, tokenizer, layers: Sequence[int], module: str, texts: Sequence[str], n_tokens: int, seq_len: int
) -> tuple[dict[int, torch.Tensor], int]:
    blocks = decoder_layers(model)
    sums: dict[int, torch.Tensor] = {}
    counts = {"tokens": 0}
    mask_holder: dict[str, torch.Tensor] = {}
    handles = []
    deepest = max(layers)

    def make_hook(layer: int):
        def hook(_mod, inputs):
            keys = inputs[0].detach().float()
            keys = keys[mask_holder["mask"]]  # real tokens only
            acc = keys.T @ keys
            sums[layer] = acc if layer not in sums else sums[layer] + acc
            if layer == deepest:
                raise _Reached

        return hook

    for layer in layers:
        target = blocks[layer].get_submodule(module)
        handles.append(target.register_forward_pre_hook(make_hook(layer)))
    device = _model_device(model)
    was_training = model.training
    model.eval()
    from tqdm.auto import tqdm

    bar = tqdm(total=n_tokens, desc=f"key statistics (layers {list(layers)})", leave=False)
    try:
        batch_texts: list[str] = []
        for text in list(texts) + [None]:  # None flushes the last batch
            if text is not None:
                batch_texts.append(text)
                if len(batch_texts) < 8:
                    continue
            if not batch_texts:
                break
            enc = tokenizer(batch_texts, return_tensors="pt", padding=True, truncation=True, max_length=seq_len)
            batch_texts = []
            mask = enc["attention_mask"].bool()
            remaining = n_tokens - counts["tokens"]
            if int(mask.sum()) > remaining:  # keep exactly n_tokens: cut the last rows' tails
                flat = mask.flatten().cumsum(0).view(mask.shape)
                mask = mask & (flat <= remaining)
            mask_holder["mask"] = mask.to(device)
            try:
                model(
                    input_ids=enc["input_ids"].to(device),
                    attention_mask=enc["attention_mask"].to(device),
                    use_cache=False,
                )
            except _Reached:
                pass
            got = int(mask.sum())
            counts["tokens"] += got
            bar.update(got)
            if counts["tokens"] >= n_tokens:
                break
    finally:
        bar.close()
        for h in handles:
            h.remove()
        model.train(was_training)
    if counts["tokens"] == 0:
        raise ValueError("no tokens in the reference texts")
    return {layer: sums[layer] / counts["tokens"] for layer in layers}, counts["tokens"]


def key_second_moments(
    model: torch.nn.Module,
    tokenizer: Any,
    layers: Sequence[int],
    *,
    module: str = "mlp.down_proj",
    n_tokens: int = 100_000,
    seq_len: int = 256,
    texts: Sequence[str] | None = None,
    corpus: dict | None = None,
    cache: bool = True,
    cache_root: str | Path | None = None,
) -> KeyStatistics:
    """``E[k k^T]`` of the inputs of ``module`` in each of ``layers``, from the cache when it matches.

    Args:
        layers: block indices.
        module: the module inside a block whose input is the key (MEMIT: ``mlp.down_proj``).
        n_tokens: how many real (non-pad) tokens to average over.
        seq_len: texts are cut to this many tokens.
        texts / corpus: the text and its description; default :func:`reference_texts`.
        cache: read and write the on-disk cache.
        cache_root: override the cache folder (tests); default :func:`cache_folders`.
    """
    if not layers:
        raise ValueError("no layers given")
    layers = sorted(set(int(i) for i in layers))
    if texts is None:
        texts, corpus = reference_texts()
    corpus = corpus or {"name": "caller-supplied", "sha256": hashlib.sha256("\n".join(texts).encode()).hexdigest()}
    root, write_root = cache_folders(cache_root)
    fingerprint = prefix_weights_sha256(model, max(layers))
    results: dict[int, torch.Tensor] = {}
    provenance_of: dict[int, dict] = {}
    missing: list[int] = []
    for layer in layers:
        provenance = {
            "format_version": FORMAT_VERSION,
            "weights_sha256_prefix": prefix_weights_sha256(model, layer),
            "layer": layer,
            "module": module,
            "corpus": corpus,
            "n_tokens": n_tokens,
            "seq_len": seq_len,
            "statistic": "E[k k^T] over real tokens, float32",
        }
        key = hashlib.sha256(json.dumps(provenance, sort_keys=True, default=str).encode()).hexdigest()[:20]
        provenance_of[layer] = {**provenance, "cache_key": key}
        found = [
            folder
            for folder in dict.fromkeys((root, write_root))
            if folder is not None and (folder / f"{key}.safetensors").is_file() and (folder / f"{key}.json").is_file()
        ]
        tensor_path, meta_path = (found[0] / f"{key}.safetensors", found[0] / f"{key}.json") if found else (None, None)
        if cache and found:
            try:
                stored = json.loads(meta_path.read_text())
                if {k: stored.get(k) for k in provenance} == json.loads(json.dumps(provenance, default=str)):
                    from safetensors.torch import load_file

                    moment = load_file(str(tensor_path))["moment"]
                    square = moment.dim() == 2 and moment.shape[0] == moment.shape[1]
                    if moment.dtype == torch.float32 and square and bool(torch.isfinite(moment).all()):
                        results[layer] = moment
                        continue
                    log.warning("key statistics %s: not a finite square float32 matrix; recomputing", tensor_path)
                else:
                    log.warning("key statistics %s: provenance does not match; recomputing", meta_path)
            except (OSError, ValueError, KeyError) as exc:
                log.warning("key statistics %s unreadable (%s); recomputing", meta_path, exc)
        missing.append(layer)
    if missing:
        start = time.perf_counter()
        computed, used = _estimate(model, tokenizer, missing, module, texts, n_tokens, seq_len)
        seconds = time.perf_counter() - start
        log.info("key statistics for layers %s: %d tokens in %.1f s", missing, used, seconds)
        for layer, moment in computed.items():
            results[layer] = moment
            provenance_of[layer].update(tokens_used=used, seconds=round(seconds, 2))
            if cache and write_root is not None:
                from safetensors.torch import save_file

                key = provenance_of[layer]["cache_key"]
                _atomic_write(
                    write_root / f"{key}.safetensors", lambda p, m=moment: save_file({"moment": m.contiguous()}, p)
                )
                _atomic_write(
                    write_root / f"{key}.json",
                    lambda p, meta=provenance_of[layer]: Path(p).write_text(json.dumps(meta, indent=1, default=str)),
                )
    return KeyStatistics(
        results,
        {"layers": provenance_of, "weights_fingerprint": fingerprint, "computed_layers": missing},
        from_cache=not missing,
    )
