"""Example ``multi`` intervention: apply the edits and unlearn the forget corpus in one step.

The ``multi`` category is for methods that do more than one kind of change at once (the
paper asks for them: "Composable Interventions for Language Models", Kolbeinsson et al.
2024, https://arxiv.org/abs/2407.06483). Its context holds the edit requests and the
forget/retain texts, and it is paired with every other intervention in the grid.

The method is a plain sum of three losses on the same parameters: the edits' target NLL
(as FT), the negated forget NLL capped at ``forget_nll_cap`` (as GA, the cap keeps
gradient ascent from destroying the model) and the retain NLL (as GD's retain term).
"""

from __future__ import annotations

import torch
from pydantic import Field

from benchmark.api import Category, Hyperparameters, Intervention, InterventionContext, InterventionError
from benchmark.toolkit import (
    lm_loss,
    preserve_grad_state,
    select_parameters,
    tokenize_prompt_target,
    tokenize_texts_for_lm,
    train,
)


class EditUnlearnHyperparameters(Hyperparameters):
    """The example's knobs."""

    layers: list[int] = Field(
        default_factory=lambda: [4, 5, 6, 7, 8], min_length=1, description="Blocks whose mlp.down_proj trains."
    )
    lr: float = Field(1e-3, gt=0.0, description="Learning rate.")
    steps: int = Field(8, ge=1, description="Optimizer steps.")
    batch_size: int = Field(4, ge=1, description="Forget and retain texts per step.")
    max_len: int = Field(64, ge=1, description="Most tokens per edit and per text.")
    forget_weight: float = Field(0.5, ge=0.0, description="Weight of the (negated) forget NLL.")
    forget_nll_cap: float = Field(8.0, gt=0.0, description="Stop pushing a forget batch once its NLL is above this.")


class EditUnlearn(Intervention):
    """Edit and unlearn with one optimiser over chosen MLP output projections."""

    name = "edit-unlearn"
    category = Category.MULTI
    Hyperparameters = EditUnlearnHyperparameters

    def apply(self, model: torch.nn.Module, tokenizer, context: InterventionContext) -> torch.nn.Module:
        edits, forget, retain = list(context.edits), list(context.forget_texts), list(context.retain_texts)
        if not edits or not forget:
            raise InterventionError("edit-unlearn: the context needs edit requests and forget texts")
        hp = EditUnlearnHyperparameters.from_context(context)
        max_len, size, weight, cap = hp.max_len, hp.batch_size, hp.forget_weight, hp.forget_nll_cap
        edit_batch = tokenize_prompt_target(tokenizer, [e.prompt for e in edits], [e.target for e in edits], max_len)
        forget_batches = [
            tokenize_texts_for_lm(tokenizer, forget[i : i + size], max_len) for i in range(0, len(forget), size)
        ]
        retain_batches = [
            tokenize_texts_for_lm(tokenizer, retain[i : i + size], max_len) for i in range(0, len(retain), size)
        ]

        def loss(i: int) -> torch.Tensor:
            total = lm_loss(model, edit_batch, reduction="per_example_mean")
            forget_nll = lm_loss(model, forget_batches[i % len(forget_batches)])
            if forget_nll.item() < cap:  # ascend only while the forget text is still likely
                total = total - weight * forget_nll
            if retain_batches:
                total = total + lm_loss(model, retain_batches[i % len(retain_batches)])
            return total

        with preserve_grad_state(model):
            params = select_parameters(model, ["mlp.down_proj"], hp.layers)
            train(
                model,
                params,
                loss,
                steps=hp.steps,
                lr=hp.lr,
                seed=context.seed,
                desc=f"edit-unlearn ({len(edits)} edits, {len(forget)} forget texts)",
            )
        return model
