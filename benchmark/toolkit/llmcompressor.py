"""Run ``llmcompressor.oneshot`` on an in-memory model and get a plain model back.

Public to submitters, beside :mod:`benchmark.api`. ``llmcompressor`` (vLLM project,
Apache-2.0) does the compression; this wrapper is ours and handles what we measured
going wrong with it on the benchmark's models (see ``PITFALLS.md``):

* **Tied LM head.** ``ignore=["lm_head"]`` does not stop pruners from pruning a tied
  ``lm_head`` (it zeroed half the embedding table). Every modifier with an ``ignore``
  list gets ``"re:.*lm_head"`` added unless it already names the LM head.
* **What oneshot leaves behind.** After ``oneshot`` every module carries an offload
  wrapper (its ``_parameters``/``_buffers`` replaced by an ``OffloadCache`` and its
  ``forward`` wrapped), the model has a patched ``save_pretrained`` and a
  ``quantization_enabled`` flag, and quantized Linears hold ``weight_scale``,
  ``weight_zero_point`` and a ``quantization_scheme`` and re-quantize their weight on
  every forward. :func:`run_oneshot` bakes the quantized values into the plain weights
  (bit-exact with what the wrapped forward computed), removes all of the above, restores
  tied weights, dtypes and ``requires_grad`` flags, and checks that parameter names and
  shapes are unchanged. The result is a vanilla ``transformers`` model that later
  interventions can train and that saves like any other.
* **No GPU needed.** Calibration runs where the model is. AWQ's unconditional
  ``pin_memory`` (which fails without an accelerator) is turned into a no-op on CPU-only
  machines for the duration of the call.
* **No Hub access.** ``oneshot`` re-reads the model's config from ``name_or_path``; we
  point it at a temporary copy of the in-memory config.

The calibration set is built from plain texts by :func:`build_calibration_dataset`:
``num_samples`` windows of ``seq_len`` tokens at seeded random offsets in the texts joined
by EOS (as the Wanda/SparseGPT/GPTQ reference code samples C4), so there is no padding.
"""

from __future__ import annotations

import contextlib
import contextvars
import copy
import logging
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch

from benchmark.api import InterventionError
from benchmark.toolkit.training import decoder_layers

__all__ = [
    "run_oneshot",
    "build_calibration_dataset",
    "largest_group_size",
    "model_group_size",
    "protect_lm_head",
    "fold_quantization",
    "export_compressed",
]

log = logging.getLogger(__name__)

LM_HEAD_IGNORE = "re:.*lm_head"


# --------------------------------------------------------------------------- group sizes


def largest_group_size(in_features: int, preferred: int = 128) -> int:
    """The largest power of two that divides ``in_features`` and is at most ``preferred``.

    Group-wise quantization needs the group size to divide the number of input columns:
    SmolLM2-135M has 576 (= 64 * 9) so the usual 128 fails there and 64 is used. Record
    the value you use.
    """
    if in_features < 1 or preferred < 1:
        raise ValueError("in_features and preferred must be positive")
    size = 1
    while size * 2 <= preferred and in_features % (size * 2) == 0:
        size *= 2
    return size


def model_group_size(model: torch.nn.Module, preferred: int = 128) -> int:
    """One group size valid for every ``nn.Linear`` in the transformer blocks (the smallest of theirs)."""
    sizes = {
        largest_group_size(m.in_features, preferred)
        for layer in decoder_layers(model)
        for m in layer.modules()
        if isinstance(m, torch.nn.Linear)
    }
    if not sizes:
        raise ValueError("the model has no nn.Linear inside its transformer blocks")
    return min(sizes)


# --------------------------------------------------------------------------- calibration data


def build_calibration_dataset(tokenizer: Any, texts: Sequence[str], num_samples: int, seq_len: int, seed: int = 0):
    """A ``datasets.Dataset`` of ``num_samples`` token windows of length ``seq_len``.

    The texts are tokenized (no special tokens), joined with the EOS token, and windows
    start at seeded random offsets (they may overlap when the texts are short). When all
    the text is shorter than ``seq_len``, one window of all of it is returned. Columns:
    ``input_ids`` and ``attention_mask`` (all ones: no padding anywhere).
    """
    from datasets import Dataset

    if num_samples < 1 or seq_len < 2:
        raise ValueError(f"need num_samples >= 1 and seq_len >= 2, got {num_samples} and {seq_len}")
    texts = [t for t in texts if isinstance(t, str) and t.strip()]
    if not texts:
        raise ValueError("no calibration texts")
    eos = getattr(tokenizer, "eos_token_id", None)
    stream: list[int] = []
    for text in texts:
        stream.extend(tokenizer(text, add_special_tokens=False)["input_ids"])
        if eos is not None:
            stream.append(int(eos))
    if len(stream) <= seq_len:
        log.warning("calibration texts hold %d tokens, fewer than seq_len=%d: using one window", len(stream), seq_len)
        windows = [stream]
    else:
        gen = torch.Generator().manual_seed(seed)
        starts = torch.randint(0, len(stream) - seq_len + 1, (num_samples,), generator=gen).tolist()
        windows = [stream[s : s + seq_len] for s in starts]
    return Dataset.from_dict({"input_ids": windows, "attention_mask": [[1] * len(w) for w in windows]})


# --------------------------------------------------------------------------- modifiers


def _names_lm_head(entries: Sequence[str]) -> bool:
    return any("lm_head" in str(e) for e in entries)


def protect_lm_head(modifier_or_recipe: Any) -> Any:
    """Copies of the modifiers with ``"re:.*lm_head"`` added to each ``ignore`` list that lacks it.

    Accepts a modifier, a list of modifiers, or anything else (a recipe path/string,
    returned unchanged: write the ignore entry into such recipes yourself).
    """
    if isinstance(modifier_or_recipe, (list, tuple)):
        return [protect_lm_head(m) for m in modifier_or_recipe]
    mod = modifier_or_recipe
    ignore = getattr(mod, "ignore", None)
    if not isinstance(ignore, list) or not hasattr(mod, "model_fields_set") or _names_lm_head(ignore):
        return mod
    # Rebuild from the fields the caller set, so validators run again and nothing derived
    # from the old ignore list (e.g. QuantizationModifier's cached resolved config) survives.
    fields = {name: getattr(mod, name) for name in mod.model_fields_set}
    fields["ignore"] = [*ignore, LM_HEAD_IGNORE]
    return type(mod)(**fields)


# --------------------------------------------------------------------------- contexts


@contextlib.contextmanager
def _cpu_safe_pin_memory() -> Iterator[None]:
    """Make the intermediates cache's ``pin_memory`` a no-op when no accelerator exists (AWQ on CPU)."""
    if torch.cuda.is_available():
        yield
        return
    try:
        from llmcompressor.pipelines.cache import IntermediatesCache
    except ImportError:  # pragma: no cover - other llmcompressor layouts
        yield
        return
    original = IntermediatesCache.pin_memory
    IntermediatesCache.pin_memory = lambda self, *args, **kwargs: None
    try:
        yield
    finally:
        IntermediatesCache.pin_memory = original


@contextlib.contextmanager
def _quiet_loguru(quiet: bool) -> Iterator[None]:
    """Silence llmcompressor's per-module INFO logs (loguru) while ``quiet``."""
    if not quiet:
        yield
        return
    from loguru import logger

    names = ("llmcompressor", "compressed_tensors")
    for name in names:
        logger.disable(name)
    try:
        yield
    finally:
        for name in names:
            logger.enable(name)


@contextlib.contextmanager
def _config_on_disk(model: torch.nn.Module) -> Iterator[None]:
    """Point ``config.name_or_path`` at a temporary copy of the config for oneshot's re-read."""
    config = getattr(model, "config", None)
    if config is None or not hasattr(config, "save_pretrained"):
        yield
        return
    original = config.name_or_path
    with tempfile.TemporaryDirectory(prefix="compose-bench-oneshot-") as tmp:
        config.save_pretrained(tmp)
        config.name_or_path = tmp
        try:
            yield
        finally:
            config.name_or_path = original


# --------------------------------------------------------------------------- cleanup


class _Snapshot:
    """What the model looked like before oneshot, to restore and check against."""

    def __init__(self, model: torch.nn.Module):
        self.params = [(n, tuple(p.shape), p.dtype) for n, p in model.named_parameters(remove_duplicate=False)]
        self.buffers = [(n, tuple(b.shape), b.dtype) for n, b in model.named_buffers(remove_duplicate=False)]
        self.requires_grad = {n: p.requires_grad for n, p in model.named_parameters(remove_duplicate=False)}
        self.modules = {n: m for n, m in model.named_modules(remove_duplicate=False)}
        self.attrs = {n: set(vars(m)) for n, m in self.modules.items()}
        self.members = {
            n: {a: set(getattr(m, a)) for a in ("_parameters", "_buffers", "_modules")} for n, m in self.modules.items()
        }
        self.hooks = {n: self._hook_ids(m) for n, m in self.modules.items()}
        self.training = {n: m.training for n, m in self.modules.items()}
        # groups of parameter names that share one tensor (tied weights)
        by_id: dict[int, list[str]] = {}
        for n, p in model.named_parameters(remove_duplicate=False):
            by_id.setdefault(id(p), []).append(n)
        self.tied = [names for names in by_id.values() if len(names) > 1]
        config = getattr(model, "config", None)
        self.config_keys = set(vars(config)) if config is not None else set()

    @staticmethod
    def _hook_ids(m: torch.nn.Module) -> dict[str, set[int]]:
        names = (
            "_forward_hooks",
            "_forward_pre_hooks",
            "_backward_hooks",
            "_backward_pre_hooks",
            "_state_dict_hooks",
            "_load_state_dict_pre_hooks",
            "_load_state_dict_post_hooks",
        )
        return {h: set(getattr(m, h, {}).keys()) for h in names}


@torch.no_grad()
def fold_quantization(model: torch.nn.Module) -> int:
    """Bake compressed-tensors fake quantization into plain weights and strip its state.

    For every module with a weight ``quantization_scheme`` the weight becomes exactly
    what the quantized forward computed (quantize then dequantize with the stored scale,
    zero point and, if any, global scale), in the weight's dtype. Scales, zero points,
    schemes, statuses and the wrapped forward are removed. Input/output activation
    quantization cannot be baked into weights: such schemes raise ``InterventionError``.
    Returns the number of modules folded.
    """
    from compressed_tensors.quantization import QuantizationStatus
    from compressed_tensors.quantization.lifecycle.forward import forward_quantize
    from compressed_tensors.quantization.quant_metadata import QuantizationMetadata

    folded = 0
    for name, module in model.named_modules():
        scheme = getattr(module, "quantization_scheme", None)
        if scheme is not None:
            if (
                getattr(scheme, "input_activations", None) is not None
                or getattr(scheme, "output_activations", None) is not None
            ):
                raise InterventionError(
                    f"{name}: activation quantization cannot be baked into plain weights; "
                    "use a weight-only scheme (e.g. W4A16) in this benchmark"
                )
            status = getattr(module, "quantization_status", None)
            if scheme.weights is not None and hasattr(module, "weight"):
                if status is not None and status >= QuantizationStatus.COMPRESSED:
                    raise InterventionError(f"{name}: weights are already packed (compressed); cannot fold")
                weight = module.weight
                q = forward_quantize(module, weight.data, "weight", scheme.weights)
                weight.data.copy_(q.to(weight.dtype))
                folded += 1
            QuantizationMetadata.clear_quantization(module)
        for attr in ("quantization_scheme", "quantization_status", "quantization_enabled"):
            if attr in vars(module):
                delattr(module, attr)
    return folded


def _restore_vanilla(model: torch.nn.Module, snap: _Snapshot) -> dict[str, Any]:
    """Undo everything oneshot attached; return a short report of what was removed."""
    from compressed_tensors.offload import remove_dispatch

    report: dict[str, Any] = {}
    remove_dispatch(model, onload_tensors=False)
    report["folded_quantized_modules"] = fold_quantization(model)

    removed_attrs: set[str] = set()
    removed_hooks = 0
    for name, module in model.named_modules(remove_duplicate=False):
        before = snap.attrs.get(name)
        if before is not None:
            for attr in set(vars(module)) - before:
                delattr(module, attr)
                removed_attrs.add(attr)
            for attr in ("_parameters", "_buffers", "_modules"):
                extra = set(getattr(module, attr)) - snap.members[name][attr]
                for key in extra:
                    del getattr(module, attr)[key]
                    removed_attrs.add(f"{attr}.{key}")
        for hook_dict, ids in snap.hooks.get(name, {}).items():
            hooks = getattr(module, hook_dict, None)
            if hooks is None:
                continue
            for key in [k for k in hooks if k not in ids]:
                del hooks[key]
                removed_hooks += 1
        if name in snap.training:
            module.training = snap.training[name]
        for attr in ("_parameters", "_buffers"):
            if type(vars(module)[attr]) is not dict:
                raise InterventionError(f"{name}: {attr} is still a {type(vars(module)[attr]).__name__} after cleanup")
    report["removed_attributes"] = sorted(removed_attrs)
    report["removed_hooks"] = removed_hooks

    config = getattr(model, "config", None)
    if config is not None:
        for key in set(vars(config)) - snap.config_keys:
            delattr(config, key)
        if getattr(config, "quantization_config", None) is not None and "quantization_config" not in snap.config_keys:
            del config.quantization_config
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer = None

    # tied weights: point every name of a tied group back at one tensor
    retied = 0
    for names in snap.tied:
        first = model.get_parameter(names[0])
        for other in names[1:]:
            owner_name, _, attr = other.rpartition(".")
            owner = model.get_submodule(owner_name) if owner_name else model
            if getattr(owner, attr) is not first:
                setattr(owner, attr, first)
                retied += 1
    report["retied"] = retied

    # dtypes and requires_grad as before; parameter names and shapes unchanged
    now = {n: p for n, p in model.named_parameters(remove_duplicate=False)}
    for n, shape, dtype in snap.params:
        p = now.get(n)
        if p is None:
            raise InterventionError(f"oneshot removed parameter {n}")
        if tuple(p.shape) != shape:
            raise InterventionError(f"oneshot changed the shape of {n}: {shape} -> {tuple(p.shape)}")
        if p.dtype != dtype:
            p.data = p.data.to(dtype)
        p.requires_grad_(snap.requires_grad[n])
    if len(now) != len(snap.params):
        extra = sorted(set(now) - {n for n, _, _ in snap.params})
        raise InterventionError(f"oneshot left extra parameters: {extra[:5]}")
    buffers_now = [(n, tuple(b.shape), b.dtype) for n, b in model.named_buffers(remove_duplicate=False)]
    if buffers_now != snap.buffers:
        extra = sorted({n for n, _, _ in buffers_now} ^ {n for n, _, _ in snap.buffers})
        raise InterventionError(f"oneshot changed the model's buffers: {extra[:5]}")
    return report


def oneshot_arguments(
    model: torch.nn.Module, tokenizer: Any, recipe: Any, dataset: Any, pipeline: str | None
) -> dict[str, Any]:
    """The keyword arguments of ``llmcompressor.oneshot`` for an in-memory model (no output dir)."""
    kwargs: dict[str, Any] = dict(
        model=model,
        tokenizer=tokenizer,
        recipe=recipe,
        output_dir=None,
        tie_word_embeddings=True,
    )
    if dataset is not None:
        kwargs.update(
            dataset=dataset,
            num_calibration_samples=len(dataset),
            max_seq_length=max(len(r) for r in dataset["input_ids"]),
            shuffle_calibration_samples=False,
            batch_size=1,
        )
    if pipeline is not None:
        kwargs["pipeline"] = pipeline
    return kwargs


_EXPORT_DIR: contextvars.ContextVar[Path | None] = contextvars.ContextVar("compose_bench_export_dir", default=None)


@contextlib.contextmanager
def export_compressed(directory: str | os.PathLike) -> Iterator[Path]:
    """While active, :func:`run_oneshot` also saves the model in llm-compressor's compressed format.

    Saving with ``save_compressed=True`` packs the weights of the model it is called on
    (no ``.weight`` left), so the export compresses a copy of the uncompressed model with
    the same recipe and calibration windows, saves that copy to ``directory`` (a
    ``transformers`` folder with the compressed-tensors ``quantization_config`` /
    ``sparsity_config``, loadable by ``from_pretrained`` and vLLM), and then compresses
    the model itself as usual. It costs a second compression; the grid never uses it,
    the deployment check does (``benchmark.evaluation.deployment``).
    """
    path = Path(directory)
    token = _EXPORT_DIR.set(path)
    try:
        yield path
    finally:
        _EXPORT_DIR.reset(token)


def _export_copy(
    model: torch.nn.Module, tokenizer: Any, recipe: Any, dataset: Any, pipeline: str | None, extra: dict, path: Path
) -> None:
    from llmcompressor import oneshot
    from llmcompressor.core import reset_session

    twin = copy.deepcopy(model)
    try:
        with _cpu_safe_pin_memory(), _config_on_disk(twin):
            kwargs = oneshot_arguments(twin, tokenizer, copy.deepcopy(recipe), dataset, pipeline)
            kwargs.update(extra)
            oneshot(**kwargs)
            # inside the context: llm-compressor re-saves the config from ``name_or_path``
            path.mkdir(parents=True, exist_ok=True)
            twin.save_pretrained(path, save_compressed=True)
        tokenizer.save_pretrained(path)
    finally:
        reset_session()
        del twin


# --------------------------------------------------------------------------- entry point


def run_oneshot(
    model: torch.nn.Module,
    tokenizer: Any,
    modifier_or_recipe: Any,
    calibration_texts: Sequence[str] | None = None,
    num_samples: int = 128,
    seq_len: int = 2048,
    *,
    seed: int = 0,
    pipeline: str | None = None,
    keep_lm_head: bool = True,
    quiet: bool = True,
    report: dict | None = None,
    **oneshot_kwargs: Any,
) -> torch.nn.Module:
    """Apply ``llmcompressor.oneshot`` to ``model`` in place and return it as a vanilla model.

    Args:
        model: a ``transformers`` causal LM, on any device (CPU works).
        tokenizer: its tokenizer.
        modifier_or_recipe: an llmcompressor modifier (e.g.
            ``WandaPruningModifier(sparsity=0.5, mask_structure="0:0")``), a list of them, or
            a recipe (path or YAML string) as ``oneshot`` accepts.
        calibration_texts: plain texts; None for data-free schemes (round-to-nearest).
        num_samples, seq_len: calibration windows (see :func:`build_calibration_dataset`).
        seed: seeds the choice of calibration windows.
        pipeline: llmcompressor calibration pipeline; None lets it choose per modifier.
        keep_lm_head: add ``"re:.*lm_head"`` to every modifier's ``ignore`` (default).
        quiet: silence llmcompressor's per-module log lines (progress bars stay).
        report: a dict to fill with what was cleaned up (for logs/records).
        **oneshot_kwargs: passed on to ``llmcompressor.oneshot``.

    Returns:
        The same model object: weights in their original dtype with pruning masks /
        quantized values baked in; no hooks, quantization state, offload wrappers or
        patched methods; tied weights tied; parameter names and shapes as before.

    Raises:
        InterventionError: bad arguments, or oneshot failed (the message says why).
    """
    if num_samples < 1 or seq_len < 2:
        raise InterventionError(f"num_samples must be >= 1 and seq_len >= 2 (got {num_samples}, {seq_len})")
    from llmcompressor import oneshot
    from llmcompressor.core import reset_session

    recipe = protect_lm_head(modifier_or_recipe) if keep_lm_head else modifier_or_recipe
    dataset = None
    if calibration_texts is not None:
        try:
            dataset = build_calibration_dataset(tokenizer, calibration_texts, num_samples, seq_len, seed)
        except ValueError as exc:
            raise InterventionError(f"calibration data: {exc}") from exc
    export_dir = _EXPORT_DIR.get()
    if export_dir is not None:
        with _quiet_loguru(quiet):
            try:
                _export_copy(model, tokenizer, recipe, dataset, pipeline, oneshot_kwargs, export_dir)
            except Exception as exc:
                raise InterventionError(
                    f"saving the compressed copy to {export_dir} failed: {type(exc).__name__}: {exc}"
                ) from exc
    snap = _Snapshot(model)
    kwargs = oneshot_arguments(model, tokenizer, recipe, dataset, pipeline)
    kwargs.update(oneshot_kwargs)
    error: Exception | None = None
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    with _quiet_loguru(quiet):
        try:
            with _cpu_safe_pin_memory(), _config_on_disk(model):
                out = oneshot(**kwargs)
            if out is not model:
                error = InterventionError("llmcompressor.oneshot returned a different model object than it was given")
        except InterventionError as exc:
            error = exc
        except Exception as exc:  # whatever llmcompressor raised: one readable line
            error = InterventionError(f"llmcompressor.oneshot failed: {type(exc).__name__}: {exc}")
            error.__cause__ = exc
        # Always strip what oneshot attached, even after a failure, and free its global session.
        try:
            cleanup = _restore_vanilla(model, snap)
        except Exception as exc:
            if error is None:
                raise
            log.warning("cleanup after a failed oneshot also failed: %s", exc)
            cleanup = {}
        finally:
            reset_session()
    if error is not None:
        raise error
    if report is not None:
        report.update(cleanup)
        report["calibration_samples"] = 0 if dataset is None else len(dataset)
        report["calibration_seq_len"] = 0 if dataset is None else max(len(r) for r in dataset["input_ids"])
    for n, p in model.named_parameters():
        if not torch.isfinite(p).all():
            raise InterventionError(f"oneshot left non-finite values in {n}")
    return model
