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

import math

import torch

from benchmark.api import Category, Intervention, InterventionContext, InterventionError
from benchmark.toolkit import lm_loss, num_layers, preserve_grad_state, required_texts, select_parameters, tokenize_texts_for_lm, train


def _number(context: InterventionContext, key: str, default=None, kind=float, minimum: float = 0.0, allow_equal: bool = False):
    value = context.hp(key, default)
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if kind is int:
        ok = ok and isinstance(value, int)
    if not ok or value < minimum or (value == minimum and not allow_equal):
        raise InterventionError(f"ga: hyperparameter {key!r} must be a {kind.__name__} > {minimum}, got {value!r}")
    return kind(value)


class GA(Intervention):
    """Gradient ascent on mini-batches of forget texts.

    Hyperparameters: ``layers`` (block indices), ``modules`` (names inside a block),
    ``lr``, ``steps`` (optimizer steps), ``batch_size``, ``max_len`` (tokens per text),
    ``stop_loss_rise`` (stop once the forget loss is this many nats above its start;
    0 disables), ``train_lm_head`` (also train the LM head, as the paper did; with tied
    embeddings this trains the embedding table too; default false). ``modules: ["*"]``
    trains whole blocks.
    """

    name = "ga"
    category = Category.UNLEARNING

    def apply(self, model: torch.nn.Module, tokenizer, context: InterventionContext) -> torch.nn.Module:
        texts = required_texts("ga", context.forget_texts, "forget texts")
        layers = context.hp("layers")
        n = num_layers(model)
        if not isinstance(layers, list) or not layers or not all(isinstance(i, int) and -n <= i < n for i in layers):
            raise InterventionError(f"ga: hyperparameter 'layers' must list block indices of this {n}-layer model, got {layers!r}")
        modules = context.hp("modules", ["mlp.down_proj", "mlp.up_proj", "mlp.gate_proj"])
        if not isinstance(modules, list) or not modules or not all(isinstance(m, str) and m for m in modules):
            raise InterventionError(f"ga: hyperparameter 'modules' must be a list of module names, got {modules!r}")
        lr = _number(context, "lr")
        steps = _number(context, "steps", kind=int)
        batch_size = _number(context, "batch_size", 4, kind=int)
        max_len = _number(context, "max_len", 128, kind=int, minimum=1)
        stop_rise = _number(context, "stop_loss_rise", 0.0, allow_equal=True)
        train_lm_head = context.hp("train_lm_head", False)
        if not isinstance(train_lm_head, bool):
            raise InterventionError(f"ga: hyperparameter 'train_lm_head' must be true or false, got {train_lm_head!r}")

        batches = [
            tokenize_texts_for_lm(tokenizer, texts[i : i + batch_size], max_len)
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
                params = select_parameters(model, modules, layers, include=["lm_head"] if train_lm_head else ())
            except ValueError as exc:
                raise InterventionError(f"ga: {exc}") from exc
            self.last_result = train(
                model,
                params,
                lambda i: -lm_loss(model, batches[i % len(batches)]),
                steps=steps,
                lr=lr,
                seed=context.seed,
                callback=stop,
                desc=f"ga ({len(texts)} forget texts)",
            )
        return model
