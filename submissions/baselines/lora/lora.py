"""LoRA editing: low-rank adapters trained on the edit requests, merged into the weights (baseline, editing).

The method trains low-rank updates ``B @ A`` of chosen projection matrices on the new
targets (Hu et al. 2022, "LoRA", https://arxiv.org/abs/2106.09685); Kolbeinsson et al. 2024
("Composable Interventions for Language Models", https://arxiv.org/abs/2407.06483) used its
adaptive-rank variant AdaLoRA (Zhang et al. 2023, https://arxiv.org/abs/2303.10512) on
``q_proj``/``v_proj`` of Llama-3-8B with r 8, alpha 32, lr 5e-3, 70 steps, in float32
(here the adapter weights are float32 and the frozen base keeps the model's dtype).
The adapters and their merge come from ``peft`` (Hugging Face, Apache-2.0).

Ours (MIT): the loop (Adam on the adapter weights, loss on the target tokens only, each
edit weighing the same, AdaLoRA's rank re-allocation after every step), and returning a
plain model: the adapters are merged into the weights and removed (``merge_and_unload``),
so later interventions see the usual modules with changed weights.
"""

from __future__ import annotations

import torch

from benchmark.api import Category, Intervention, InterventionContext, InterventionError
from benchmark.toolkit import lm_loss, name_list, number, preserve_grad_state, seed_everything, tokenize_prompt_target


class LoRA(Intervention):
    """Train (Ada)LoRA adapters on all edits at once, then merge them.

    Hyperparameters: ``variant`` (``lora`` or ``adalora``), ``rank`` (LoRA r; AdaLoRA's
    initial rank is ``init_rank``, default 1.5 x rank), ``alpha``, ``dropout``,
    ``target_modules`` (module names, e.g. ``[q_proj, v_proj]``), ``layers`` (block indices
    to adapt; default all), ``lr``, ``steps``, ``max_len``, ``early_stop_loss`` (stop once
    the mean target NLL is below it; 0 disables).
    """

    name = "lora"
    category = Category.EDITING

    def apply(self, model: torch.nn.Module, tokenizer, context: InterventionContext) -> torch.nn.Module:
        from peft import AdaLoraConfig, LoraConfig, get_peft_model

        edits = list(context.edits)
        if not edits:
            raise InterventionError("lora: the context holds no edit requests")
        variant = context.hp("variant", "lora")
        if variant not in ("lora", "adalora"):
            raise InterventionError(f"lora: hyperparameter 'variant' must be lora or adalora, got {variant!r}")
        rank = number("lora", context, "rank", 8, kind=int)
        alpha = number("lora", context, "alpha", 32.0)
        dropout = number("lora", context, "dropout", 0.0, minimum=0.0, allow_minimum=True)
        targets = name_list("lora", context, "target_modules", ["q_proj", "v_proj"])
        layers = context.hp("layers")
        if layers is not None and (not isinstance(layers, list) or not layers or not all(isinstance(i, int) and not isinstance(i, bool) for i in layers)):
            raise InterventionError(f"lora: hyperparameter 'layers' must be a list of block indices, got {layers!r}")
        lr = number("lora", context, "lr")
        steps = number("lora", context, "steps", kind=int)
        max_len = number("lora", context, "max_len", 64, kind=int, minimum=1)
        early_stop = number("lora", context, "early_stop_loss", 0.01, allow_minimum=True)

        try:
            batch = tokenize_prompt_target(tokenizer, [e.prompt for e in edits], [e.target for e in edits], max_len)
        except ValueError as exc:
            raise InterventionError(f"lora: {exc}") from exc

        common = dict(lora_alpha=alpha, lora_dropout=dropout, target_modules=targets, layers_to_transform=layers, bias="none")
        if variant == "adalora":
            init_rank = number("lora", context, "init_rank", max(rank + rank // 2, rank), kind=int)
            config = AdaLoraConfig(init_r=init_rank, target_r=rank, total_step=steps, tinit=0, tfinal=0, deltaT=1, **common)
        else:
            config = LoraConfig(r=rank, **common)

        seed_everything(context.seed)
        with preserve_grad_state(model):
            try:
                # adapters in float32 even on a bf16 model (peft's autocast), so small Adam steps are kept
                peft_model = get_peft_model(model, config, autocast_adapter_dtype=True)
            except ValueError as exc:
                raise InterventionError(f"lora: {exc}") from exc
            params = [p for p in peft_model.parameters() if p.requires_grad]
            optimizer = torch.optim.Adam(params, lr=lr)
            self.losses: list[float] = []
            peft_model.train()
            try:
                for step in range(steps):
                    loss = lm_loss(peft_model, batch, reduction="per_example_mean")
                    if not torch.isfinite(loss):
                        raise InterventionError(f"lora: loss became {float(loss)} at step {step}")
                    loss.backward()
                    optimizer.step()
                    if variant == "adalora":
                        peft_model.base_model.update_and_allocate(step)
                    optimizer.zero_grad(set_to_none=True)
                    self.losses.append(float(loss.detach()))
                    if early_stop > 0 and self.losses[-1] < early_stop:
                        break
            finally:
                peft_model.eval()
            merged = peft_model.merge_and_unload()
        for p in merged.parameters():
            p.grad = None
        return merged
