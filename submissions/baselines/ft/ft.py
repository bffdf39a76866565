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

from typing import Literal

import torch
from pydantic import Field

from benchmark.api import Category, Hyperparameters, Intervention, InterventionContext, InterventionError
from benchmark.toolkit import (
    ModuleName,
    block_indices,
    lm_loss,
    preserve_grad_state,
    select_parameters,
    tokenize_prompt_target,
    train,
)


class FTHyperparameters(Hyperparameters):
    """FT's knobs (the paper's Llama-3-8B setting: layers 4-8, mlp.down_proj, lr 5e-5, 25 steps)."""

    layers: list[int] = Field(min_length=1, description="Blocks whose modules train (negative counts from the top).")
    modules: list[ModuleName] = Field(
        default_factory=lambda: ["mlp.down_proj"], min_length=1, description="Module names inside a block to train."
    )
    lr: float = Field(gt=0.0, description="Learning rate.")
    steps: int = Field(ge=1, description="Optimizer steps, all edits in each.")
    optimizer: Literal["adam", "adamw", "sgd"] = Field("adam", description="Optimizer.")
    weight_decay: float = Field(0.0, ge=0.0, description="Weight decay.")
    max_len: int = Field(64, ge=1, description="Most tokens per prompt + target.")
    early_stop_loss: float = Field(0.01, ge=0.0, description="Stop once the mean target NLL is below it; 0 disables.")
    master_weights: Literal["auto", True, False] = Field(
        "auto", description="float32 master copies (auto: for bf16/fp16 models)."
    )


class FT(Intervention):
    """Fine-tune chosen modules of chosen layers on all edits at once (teacher forcing, target tokens only).

    Hyperparameters: :class:`FTHyperparameters` (``compose-bench list interventions``).
    """

    name = "ft"
    category = Category.EDITING
    Hyperparameters = FTHyperparameters

    def apply(self, model: torch.nn.Module, tokenizer, context: InterventionContext) -> torch.nn.Module:
        edits = list(context.edits)
        if not edits:
            raise InterventionError("ft: the context holds no edit requests")
        hp = FTHyperparameters.from_context(context)
        layers = block_indices("ft", model, hp.layers)
        early_stop = hp.early_stop_loss

        try:
            batch = tokenize_prompt_target(tokenizer, [e.prompt for e in edits], [e.target for e in edits], hp.max_len)
        except ValueError as exc:
            raise InterventionError(f"ft: {exc}") from exc

        with preserve_grad_state(model):
            try:
                params = select_parameters(model, hp.modules, layers)
            except ValueError as exc:
                raise InterventionError(f"ft: {exc}") from exc
            result = train(
                model,
                params,
                lambda _i: lm_loss(model, batch, reduction="per_example_mean"),
                steps=hp.steps,
                lr=hp.lr,
                seed=context.seed,
                optimizer=hp.optimizer,
                weight_decay=hp.weight_decay,
                master_weights=hp.master_weights,
                callback=(lambda _step, loss: loss < early_stop) if early_stop > 0 else None,
                desc=f"ft ({len(edits)} edits)",
            )
        self.last_result = result  # for logs and tests: losses per step, steps run
        return model
