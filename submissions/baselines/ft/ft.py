"""Constrained fine-tuning (FT) of chosen MLP output projections on the edit requests (baseline, editing).

The method is the fine-tuning baseline of the knowledge-editing literature: gradient
descent on the new targets, restricted to a few weight matrices (Zhu et al. 2020,
"Modifying Memories in Transformer Models", https://arxiv.org/abs/2012.00363; the FT
baseline of ROME/MEMIT and EasyEdit), as used by Kolbeinsson et al. 2024 ("Composable
Interventions for Language Models", https://arxiv.org/abs/2407.06483): Adam on
``mlp.down_proj`` of layers 4-8 of Llama-3-8B, lr 5e-5, 25 steps, all edits at once,
negative log-likelihood of the target tokens given the prompt.

Ours (MIT): this implementation; float32 master copies of the trained matrices so that
bf16 training does not round small Adam steps away; early stopping once the loss is
below ``early_stop_loss`` (EasyEdit's FT stops at 1e-2); per-edit averaging of the loss
(each edit weighs the same, whatever its target length); the SmolLM2 settings.
"""

from __future__ import annotations

import math

import torch

from benchmark.api import Category, Intervention, InterventionContext, InterventionError
from benchmark.toolkit import lm_loss, num_layers, preserve_grad_state, select_parameters, tokenize_prompt_target, train


def _int_list(value, key: str) -> list[int]:
    if isinstance(value, int) and not isinstance(value, bool):
        return [value]
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        return list(value)
    raise InterventionError(f"ft: hyperparameter {key!r} must be a non-empty list of layer indices, got {value!r}")


def _positive(value, key: str, kind=float, allow_zero: bool = False):
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if kind is int:
        ok = ok and isinstance(value, int)
    if not ok or value < 0 or (value == 0 and not allow_zero):
        raise InterventionError(f"ft: hyperparameter {key!r} must be a {'non-negative' if allow_zero else 'positive'} {kind.__name__}, got {value!r}")
    return kind(value)


class FT(Intervention):
    """Fine-tune chosen modules of chosen layers on all edits at once (teacher forcing, target tokens only).

    Hyperparameters: ``layers`` (block indices), ``modules`` (names inside a block,
    default ``["mlp.down_proj"]``), ``lr``, ``steps``, ``optimizer`` (adam/adamw/sgd),
    ``weight_decay``, ``max_len`` (tokens per prompt+target), ``early_stop_loss``
    (stop once the mean target NLL is below it; 0 disables), ``master_weights``
    (``auto``: float32 masters for bf16/fp16 models).
    """

    name = "ft"
    category = Category.EDITING

    def apply(self, model: torch.nn.Module, tokenizer, context: InterventionContext) -> torch.nn.Module:
        edits = list(context.edits)
        if not edits:
            raise InterventionError("ft: the context holds no edit requests")
        layers = _int_list(context.hp("layers"), "layers")
        n = num_layers(model)
        bad = [i for i in layers if not -n <= i < n]
        if bad:
            raise InterventionError(f"ft: layers {bad} do not exist; the model has {n} layers (0..{n - 1})")
        modules = context.hp("modules", ["mlp.down_proj"])
        if isinstance(modules, str):
            modules = [modules]
        if not isinstance(modules, list) or not modules or not all(isinstance(m, str) and m for m in modules):
            raise InterventionError(f"ft: hyperparameter 'modules' must be a list of module names, got {modules!r}")
        lr = _positive(context.hp("lr"), "lr")
        steps = _positive(context.hp("steps"), "steps", int)
        weight_decay = _positive(context.hp("weight_decay", 0.0), "weight_decay", allow_zero=True)
        max_len = _positive(context.hp("max_len", 64), "max_len", int)
        early_stop = _positive(context.hp("early_stop_loss", 0.01), "early_stop_loss", allow_zero=True)
        optimizer = context.hp("optimizer", "adam")
        if optimizer not in ("adam", "adamw", "sgd"):
            raise InterventionError(f"ft: hyperparameter 'optimizer' must be adam, adamw or sgd, got {optimizer!r}")
        master = context.hp("master_weights", "auto")
        if master not in ("auto", True, False):
            raise InterventionError(f"ft: hyperparameter 'master_weights' must be auto, true or false, got {master!r}")

        try:
            batch = tokenize_prompt_target(tokenizer, [e.prompt for e in edits], [e.target for e in edits], max_len)
        except ValueError as exc:
            raise InterventionError(f"ft: {exc}") from exc

        with preserve_grad_state(model):
            try:
                params = select_parameters(model, modules, layers)
            except ValueError as exc:
                raise InterventionError(f"ft: {exc}") from exc
            result = train(
                model,
                params,
                lambda _i: lm_loss(model, batch, reduction="per_example_mean"),
                steps=steps,
                lr=lr,
                seed=context.seed,
                optimizer=optimizer,
                weight_decay=weight_decay,
                master_weights=master,
                callback=(lambda _step, loss: loss < early_stop) if early_stop > 0 else None,
                desc=f"ft ({len(edits)} edits)",
            )
        self.last_result = result  # for logs and tests: losses per step, steps run
        return model
