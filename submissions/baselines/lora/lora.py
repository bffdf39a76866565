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

from typing import Literal

import torch
from pydantic import Field

from benchmark.api import Category, Hyperparameters, Intervention, InterventionContext, InterventionError
from benchmark.toolkit import ModuleName, lm_loss, preserve_grad_state, seed_everything, tokenize_prompt_target


class LoRAHyperparameters(Hyperparameters):
    """LoRA's knobs (the paper's Llama-3-8B setting: AdaLoRA r 8, alpha 32, q/v, lr 5e-3, 70 steps)."""

    variant: Literal["lora", "adalora"] = Field("lora", description="Plain LoRA or AdaLoRA (adaptive ranks).")
    rank: int = Field(8, ge=1, description="LoRA r (AdaLoRA's target rank).")
    init_rank: int | None = Field(None, ge=1, description="AdaLoRA's initial rank; default 1.5 x rank.")
    alpha: float = Field(32.0, gt=0.0, description="LoRA alpha (scale = alpha / r).")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="Dropout on the adapter input.")
    target_modules: list[ModuleName] = Field(
        default_factory=lambda: ["q_proj", "v_proj"], min_length=1, description="Module names that get adapters."
    )
    layers: list[int] | None = Field(None, min_length=1, description="Blocks to adapt; default all.")
    lr: float = Field(gt=0.0, description="Adam learning rate.")
    steps: int = Field(ge=1, description="Optimizer steps, all edits in each.")
    max_len: int = Field(64, ge=1, description="Most tokens per prompt + target.")
    early_stop_loss: float = Field(0.01, ge=0.0, description="Stop once the mean target NLL is below it; 0 disables.")


class LoRA(Intervention):
    """Train (Ada)LoRA adapters on all edits at once, then merge them.

    Hyperparameters: :class:`LoRAHyperparameters` (``compose-bench list interventions``).
    """

    name = "lora"
    category = Category.EDITING
    Hyperparameters = LoRAHyperparameters

    def apply(self, model: torch.nn.Module, tokenizer, context: InterventionContext) -> torch.nn.Module:
        from peft import AdaLoraConfig, LoraConfig, get_peft_model

        edits = list(context.edits)
        if not edits:
            raise InterventionError("lora: the context holds no edit requests")
        hp = LoRAHyperparameters.from_context(context)
        variant, rank, alpha, dropout, targets, layers = (
            hp.variant,
            hp.rank,
            hp.alpha,
            hp.dropout,
            hp.target_modules,
            hp.layers,
        )
        lr, steps, max_len, early_stop = hp.lr, hp.steps, hp.max_len, hp.early_stop_loss

        try:
            batch = tokenize_prompt_target(tokenizer, [e.prompt for e in edits], [e.target for e in edits], max_len)
        except ValueError as exc:
            raise InterventionError(f"lora: {exc}") from exc

        common = dict(
            lora_alpha=alpha, lora_dropout=dropout, target_modules=targets, layers_to_transform=layers, bias="none"
        )
        if variant == "adalora":
            init_rank = hp.init_rank or max(rank + rank // 2, rank)
            config = AdaLoraConfig(
                init_r=init_rank, target_r=rank, total_step=steps, tinit=0, tfinal=0, deltaT=1, **common
            )
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
