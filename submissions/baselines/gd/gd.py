"""Gradient difference (GD) unlearning: ascent on forget texts, descent on retain texts (baseline, unlearning).

The method (Liu et al. 2022, "Continual Learning and Private Unlearning",
https://arxiv.org/abs/2203.12817; the GD baseline of TOFU, Maini et al. 2024) maximises
the language-modelling loss of the forget texts while minimising that of retain texts,
weighted by ``retain_weight``, so the model keeps its general ability. Kolbeinsson et al.
2024 ("Composable Interventions for Language Models", https://arxiv.org/abs/2407.06483)
ran it on Llama-3-8B with lr 5e-5, retain weight 40, 2,000 samples, batch 2 with 2
accumulation steps and the lower layers frozen.

Ours (MIT): this implementation on :mod:`benchmark.toolkit`. Padding never enters either
loss: labels are -100 on every padded position, found through the attention mask (the
paper's code computed both losses over padded batches with the pad token, which is the
EOS token, left in the labels, so part of its "forget" signal was ascent on EOS
predictions at padding). A stop rule bounds the ascent: training stops once the forget
loss has risen by ``stop_loss_rise`` nats per token above its start (0 disables).
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


class GDHyperparameters(Hyperparameters):
    """GD's knobs (the paper's Llama-3-8B setting: layers 16-31, lr 5e-5, retain weight 40, 500 steps of 2 x 2)."""

    layers: list[int] = Field(min_length=1, description="Blocks whose modules train (negative counts from the top).")
    modules: list[ModuleName] = Field(
        default_factory=lambda: list(MLP),
        min_length=1,
        description="Module names inside a block to train; ['*'] trains whole blocks.",
    )
    lr: float = Field(gt=0.0, description="Learning rate.")
    steps: int = Field(ge=1, description="Optimizer steps.")
    batch_size: int = Field(2, ge=1, description="Forget (and retain) texts per micro-batch.")
    accumulation_steps: int = Field(1, ge=1, description="Micro-batches per optimizer step.")
    max_len: int = Field(256, ge=1, description="Most tokens per text.")
    retain_weight: float = Field(1.0, ge=0.0, description="Weight of the retain loss against the forget loss.")
    stop_loss_rise: float = Field(
        0.0, ge=0.0, description="Stop once the forget loss is this many nats above its start; 0 disables."
    )
    train_lm_head: bool = Field(False, description="Also train the LM head.")


class GD(Intervention):
    """Gradient difference on mini-batches of forget and retain texts.

    Hyperparameters: :class:`GDHyperparameters` (``compose-bench list interventions``).
    """

    name = "gd"
    category = Category.UNLEARNING
    Hyperparameters = GDHyperparameters

    def apply(self, model: torch.nn.Module, tokenizer, context: InterventionContext) -> torch.nn.Module:
        forget = required_texts("gd", context.forget_texts, "forget texts")
        retain = required_texts("gd", context.retain_texts, "retain texts")
        hp = GDHyperparameters.from_context(context)
        layers = block_indices("gd", model, hp.layers)
        modules, lr, steps, batch_size, max_len = hp.modules, hp.lr, hp.steps, hp.batch_size, hp.max_len
        accumulation, retain_weight, stop_rise = hp.accumulation_steps, hp.retain_weight, hp.stop_loss_rise
        train_lm_head = hp.train_lm_head

        def batches(texts: list[str]):
            return [
                tokenize_texts_for_lm(tokenizer, texts[i : i + batch_size], max_len)
                for i in range(0, len(texts), batch_size)
            ]

        forget_batches, retain_batches = batches(forget), batches(retain)
        forget_nll: list[float] = []  # forget loss of each micro-batch, for the stop rule and logs

        def loss(i: int) -> torch.Tensor:
            f = lm_loss(model, forget_batches[i % len(forget_batches)])
            r = lm_loss(model, retain_batches[i % len(retain_batches)])
            forget_nll.append(float(f.detach()))
            return -f + retain_weight * r

        def stop(step: int, _loss: float) -> bool:
            now = forget_nll[-accumulation:]
            first = forget_nll[:accumulation]
            return stop_rise > 0 and step > 0 and sum(now) / len(now) - sum(first) / len(first) >= stop_rise

        with preserve_grad_state(model):
            try:
                params = select_parameters(model, modules, layers, include=["lm_head"] if train_lm_head else ())
            except ValueError as exc:
                raise InterventionError(f"gd: {exc}") from exc
            self.last_result = train(
                model,
                params,
                loss,
                steps=steps,
                lr=lr,
                seed=context.seed,
                accumulation_steps=accumulation,
                callback=stop,
                desc=f"gd ({len(forget)} forget / {len(retain)} retain texts)",
            )
        self.forget_losses = forget_nll
        return model
