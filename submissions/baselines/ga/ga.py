"""Gradient ascent (GA) unlearning on the forget texts (baseline, unlearning).

The method is the simplest unlearner of the literature: maximise the language-modelling
loss of the forget texts (Jang et al. 2023, "Knowledge Unlearning for Mitigating Privacy
Risks in Language Models", https://arxiv.org/abs/2210.01504), as used by Kolbeinsson et
al. 2024 ("Composable Interventions for Language Models", https://arxiv.org/abs/2407.06483)
beside GD and RMU.

Ours (MIT): this implementation on :mod:`benchmark.toolkit`; padding never enters the
loss; only the chosen modules of the chosen layers train; and a stop rule, because
unbounded ascent destroys the model: training stops once the forget loss has risen by
``stop_loss_rise`` nats per token above its starting value.
"""

from __future__ import annotations

import torch
from pydantic import Field

from benchmark.api import Category, Hyperparameters, Intervention, InterventionContext, InterventionError
from benchmark.toolkit import (
    ModuleName,
    block_indices,
    lm_loss,
    preserve_grad_state,
    required_texts,
    select_parameters,
    tokenize_texts_for_lm,
    train,
)

MLP = ["mlp.down_proj", "mlp.up_proj", "mlp.gate_proj"]


class GAHyperparameters(Hyperparameters):
    """GA's knobs (the paper's Llama-3-8B setting: layers 16-31 and the LM head, lr 5e-5, batch 8)."""

    layers: list[int] = Field(min_length=1, description="Blocks whose modules train (negative counts from the top).")
    modules: list[ModuleName] = Field(
        default_factory=lambda: list(MLP),
        min_length=1,
        description="Module names inside a block to train; ['*'] trains whole blocks.",
    )
    lr: float = Field(gt=0.0, description="Learning rate.")
    steps: int = Field(ge=1, description="Optimizer steps.")
    batch_size: int = Field(4, ge=1, description="Forget texts per step.")
    max_len: int = Field(128, ge=1, description="Most tokens per forget text.")
    stop_loss_rise: float = Field(
        0.0, ge=0.0, description="Stop once the forget loss is this many nats above its start; 0 disables."
    )
    train_lm_head: bool = Field(
        False, description="Also train the LM head (with tied embeddings: the embedding table too)."
    )


class GA(Intervention):
    """Gradient ascent on mini-batches of forget texts.

    Hyperparameters: :class:`GAHyperparameters` (``compose-bench list interventions``).
    """

    name = "ga"
    category = Category.UNLEARNING
    Hyperparameters = GAHyperparameters

    def apply(self, model: torch.nn.Module, tokenizer, context: InterventionContext) -> torch.nn.Module:
        texts = required_texts("ga", context.forget_texts, "forget texts")
        hp = GAHyperparameters.from_context(context)
        layers = block_indices("ga", model, hp.layers)
        batch_size, stop_rise = hp.batch_size, hp.stop_loss_rise

        batches = [
            tokenize_texts_for_lm(tokenizer, texts[i : i + batch_size], hp.max_len)
            for i in range(0, len(texts), batch_size)
        ]
        start_loss: list[float] = []

        def stop(_step: int, loss: float) -> bool:
            ascent = -loss  # train() minimises; our loss is the negated forget NLL
            if not start_loss:
                start_loss.append(ascent)
                return False
            return stop_rise > 0 and ascent - start_loss[0] >= stop_rise

        with preserve_grad_state(model):
            try:
                params = select_parameters(model, hp.modules, layers, include=["lm_head"] if hp.train_lm_head else ())
            except ValueError as exc:
                raise InterventionError(f"ga: {exc}") from exc
            self.last_result = train(
                model,
                params,
                lambda i: -lm_loss(model, batches[i % len(batches)]),
                steps=hp.steps,
                lr=hp.lr,
                seed=context.seed,
                callback=stop,
                desc=f"ga ({len(texts)} forget texts)",
            )
        return model
