"""RMU (Representation Misdirection for Unlearning) (baseline, unlearning).

The method is Li et al. 2024, "The WMDP Benchmark: Measuring and Reducing Malicious Use
With Unlearning" (https://arxiv.org/abs/2403.03218): at one block ``layer`` the hidden
states of forget text are pushed toward a fixed random direction ``u`` (a unit vector
drawn once, scaled by ``steering_coeff``), while the hidden states of retain text are kept
close to those of a frozen copy of the model (weight ``alpha``); only the MLP weights of a
few blocks at and below ``layer`` are updated. Kolbeinsson et al. 2024 ran it on
Llama-3-8B at layer 3 with alpha 1000, steering coefficient 20, lr 5e-5, batch 4, forget
texts cut at 512 tokens (bio) / 768 (cyber).

Ours (MIT): this implementation on :mod:`benchmark.toolkit`. Both losses are means of
squared differences over the hidden units of real tokens only (padding is masked). The
frozen reference holds only what the block ``layer`` output depends on, the embeddings
and blocks ``0..layer``, no output head (for Llama-3-8B at layer 3: ~1.6 GB instead of a
second 16 GB model), and forward passes stop at ``layer`` (``benchmark.toolkit.block_output``).
The steering coefficient must be large against the norm of the hidden states at ``layer``
(about 150 at block 5-6 of SmolLM2-135M) for the forget activations to be misdirected
rather than merely shrunk.
"""

from __future__ import annotations

import copy

import torch

from pydantic import Field

from benchmark.api import Category, Hyperparameters, Intervention, InterventionContext, InterventionError
from benchmark.toolkit import (
    ModuleName,
    block_indices,
    block_output,
    decoder_layers,
    preserve_grad_state,
    required_texts,
    select_parameters,
    tokenize_texts_for_lm,
    train,
)


def _frozen_prefix(model: torch.nn.Module, layer: int) -> torch.nn.Module:
    """A frozen copy of ``model`` holding only the embeddings and blocks ``0..layer`` (what block ``layer``'s output needs).

    The blocks above ``layer`` and the output head are left out of the copy (forward passes
    stop at ``layer``), so on Llama-3-8B at layer 3 the copy is ~1.6 GB (embeddings and four
    blocks), not a second 16 GB model.
    """
    blocks = decoder_layers(model)
    owner = next(m for m in model.modules() if any(child is blocks for child in m.children()))
    attr = next(name for name, child in owner.named_children() if child is blocks)
    head_name = next(
        (n for n in ("lm_head", "embed_out") if isinstance(getattr(model, n, None), torch.nn.Module)), None
    )
    head = getattr(model, head_name) if head_name else None
    setattr(owner, attr, torch.nn.ModuleList(list(blocks)[: layer + 1]))
    if head_name:
        setattr(model, head_name, torch.nn.Identity())
    try:
        frozen = copy.deepcopy(model)
    finally:
        setattr(owner, attr, blocks)
        if head_name:
            setattr(model, head_name, head)
    frozen.requires_grad_(False)
    frozen.eval()
    return frozen


def _masked_mse(hidden: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over real tokens of the mean squared difference over hidden units (float32)."""
    mask = mask.to(hidden.device).unsqueeze(-1).float()
    sq = (hidden.float() - target.float()).pow(2) * mask
    return sq.sum() / (mask.sum() * hidden.size(-1)).clamp(min=1)


class RMUHyperparameters(Hyperparameters):
    """RMU's knobs (the paper's Llama-3-8B setting: layer 3, steering 20, alpha 1000, lr 5e-5, batch 4)."""

    layer: int = Field(ge=0, description="The steered block.")
    update_layers: list[int] | None = Field(
        None, min_length=1, description="Blocks whose modules train; default the steered one and the two below."
    )
    modules: list[ModuleName] = Field(
        default_factory=lambda: ["mlp.down_proj", "mlp.up_proj", "mlp.gate_proj"],
        min_length=1,
        description="Module names inside a block to train.",
    )
    steering_coeff: float = Field(gt=0.0, description="Norm of the random direction forget activations are steered to.")
    alpha: float = Field(ge=0.0, description="Weight of the retain loss.")
    lr: float = Field(gt=0.0, description="Learning rate.")
    steps: int = Field(ge=1, description="Optimizer steps.")
    batch_size: int = Field(4, ge=1, description="Forget and retain texts per step.")
    max_len: int = Field(512, ge=1, description="Most tokens per forget text.")
    retain_max_len: int | None = Field(None, ge=1, description="Most tokens per retain text; default max_len.")


class RMU(Intervention):
    """Steer forget activations at one block to a random direction; hold retain activations.

    Hyperparameters: :class:`RMUHyperparameters` (``compose-bench list interventions``).
    """

    name = "rmu"
    category = Category.UNLEARNING
    Hyperparameters = RMUHyperparameters

    def apply(self, model: torch.nn.Module, tokenizer, context: InterventionContext) -> torch.nn.Module:
        forget = required_texts("rmu", context.forget_texts, "forget texts")
        retain = required_texts("rmu", context.retain_texts, "retain texts")
        hp = RMUHyperparameters.from_context(context)
        layer = hp.layer
        if layer >= len(decoder_layers(model)):
            raise InterventionError(
                f"rmu: hyperparameter 'layer' is {layer}; the model has {len(decoder_layers(model))} blocks"
            )
        update = block_indices(
            "rmu", model, hp.update_layers or [max(layer - 2, 0), max(layer - 1, 0), layer], "update_layers"
        )
        if max(update) > layer:
            raise InterventionError(f"rmu: update_layers {update} must not lie above the steered layer {layer}")
        modules, coeff, alpha, lr, steps = hp.modules, hp.steering_coeff, hp.alpha, hp.lr, hp.steps
        batch_size, max_len, retain_max_len = hp.batch_size, hp.max_len, hp.retain_max_len or hp.max_len

        def batches(texts: list[str], length: int):
            return [
                tokenize_texts_for_lm(tokenizer, texts[i : i + batch_size], length)
                for i in range(0, len(texts), batch_size)
            ]

        forget_batches, retain_batches = batches(forget, max_len), batches(retain, retain_max_len)
        hidden = model.config.hidden_size
        generator = torch.Generator().manual_seed(context.seed)
        direction = torch.rand(hidden, generator=generator)
        control = (coeff * direction / direction.norm()).to(next(model.parameters()).device)

        frozen = _frozen_prefix(model, layer)
        parts: list[tuple[float, float]] = []

        def loss(i: int) -> torch.Tensor:
            fb = forget_batches[i % len(forget_batches)]
            rb = retain_batches[i % len(retain_batches)]
            f_hidden = block_output(model, fb, layer)
            forget_loss = _masked_mse(f_hidden, control.expand_as(f_hidden), fb["attention_mask"])
            with torch.no_grad():
                reference = block_output(frozen, rb, layer)
            retain_loss = _masked_mse(block_output(model, rb, layer), reference, rb["attention_mask"])
            parts.append((float(forget_loss.detach()), float(retain_loss.detach())))
            return forget_loss + alpha * retain_loss

        with preserve_grad_state(model):
            try:
                params = select_parameters(model, modules, update)
            except ValueError as exc:
                raise InterventionError(f"rmu: {exc}") from exc
            self.last_result = train(
                model,
                params,
                loss,
                steps=steps,
                lr=lr,
                seed=context.seed,
                desc=f"rmu ({len(forget)} forget / {len(retain)} retain texts)",
            )
        self.loss_parts = parts  # (forget, retain) per step, for logs and tests
        return model
