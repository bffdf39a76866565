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

from benchmark.api import Category, Intervention, InterventionContext, InterventionError
from benchmark.toolkit import flag, layer_list, lm_loss, name_list, number, preserve_grad_state, required_texts, select_parameters, tokenize_texts_for_lm, train


class GD(Intervention):
    """Gradient difference on mini-batches of forget and retain texts.

    Hyperparameters: ``layers`` (block indices to train), ``modules`` (names inside a
    block; ``["*"]`` trains whole blocks), ``lr``, ``steps`` (optimizer steps),
    ``batch_size``, ``accumulation_steps``, ``max_len`` (tokens per text),
    ``retain_weight`` (weight of the retain loss), ``stop_loss_rise`` (0 disables),
    ``train_lm_head`` (default false).
    """

    name = "gd"
    category = Category.UNLEARNING

    def apply(self, model: torch.nn.Module, tokenizer, context: InterventionContext) -> torch.nn.Module:
        forget = required_texts("gd", context.forget_texts, "forget texts")
        retain = required_texts("gd", context.retain_texts, "retain texts")
        layers = layer_list("gd", model, context, "layers")
        modules = name_list("gd", context, "modules", ["mlp.down_proj", "mlp.up_proj", "mlp.gate_proj"])
        lr = number("gd", context, "lr")
        steps = number("gd", context, "steps", kind=int)
        batch_size = number("gd", context, "batch_size", 2, kind=int)
        accumulation = number("gd", context, "accumulation_steps", 1, kind=int)
        max_len = number("gd", context, "max_len", 256, kind=int, minimum=1)
        retain_weight = number("gd", context, "retain_weight", 1.0, allow_minimum=True)
        stop_rise = number("gd", context, "stop_loss_rise", 0.0, allow_minimum=True)
        train_lm_head = flag("gd", context, "train_lm_head", False)

        def batches(texts: list[str]):
            return [tokenize_texts_for_lm(tokenizer, texts[i : i + batch_size], max_len) for i in range(0, len(texts), batch_size)]

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
