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

from benchmark.api import Category, Intervention, InterventionContext, InterventionError
from benchmark.toolkit import (
    block_output,
    decoder_layers,
    layer_list,
    name_list,
    number,
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
    head_name = next((n for n in ("lm_head", "embed_out") if isinstance(getattr(model, n, None), torch.nn.Module)), None)
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


class RMU(Intervention):
    """Steer forget activations at one block to a random direction; hold retain activations.

    Hyperparameters: ``layer`` (the steered block), ``update_layers`` (blocks whose
    ``modules`` train; default the steered one and the two below), ``modules`` (default
    ``["mlp.down_proj", "mlp.up_proj", "mlp.gate_proj"]``), ``steering_coeff``, ``alpha``
    (retain weight), ``lr``, ``steps``, ``batch_size``, ``max_len`` (forget tokens),
    ``retain_max_len``.
    """

    name = "rmu"
    category = Category.UNLEARNING

    def apply(self, model: torch.nn.Module, tokenizer, context: InterventionContext) -> torch.nn.Module:
        forget = required_texts("rmu", context.forget_texts, "forget texts")
        retain = required_texts("rmu", context.retain_texts, "retain texts")
        layer = number("rmu", context, "layer", kind=int, minimum=0, allow_minimum=True)
        if layer >= len(decoder_layers(model)):
            raise InterventionError(f"rmu: hyperparameter 'layer' is {layer}; the model has {len(decoder_layers(model))} blocks")
        update = layer_list("rmu", model, context, "update_layers", [max(layer - 2, 0), max(layer - 1, 0), layer])
        if max(update) > layer:
            raise InterventionError(f"rmu: update_layers {update} must not lie above the steered layer {layer}")
        modules = name_list("rmu", context, "modules", ["mlp.down_proj", "mlp.up_proj", "mlp.gate_proj"])
        coeff = number("rmu", context, "steering_coeff")
        alpha = number("rmu", context, "alpha", allow_minimum=True)
        lr = number("rmu", context, "lr")
        steps = number("rmu", context, "steps", kind=int)
        batch_size = number("rmu", context, "batch_size", 4, kind=int)
        max_len = number("rmu", context, "max_len", 512, kind=int, minimum=1)
        retain_max_len = number("rmu", context, "retain_max_len", max_len, kind=int, minimum=1)

        def batches(texts: list[str], length: int):
            return [tokenize_texts_for_lm(tokenizer, texts[i : i + batch_size], length) for i in range(0, len(texts), batch_size)]

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
                model, params, loss, steps=steps, lr=lr, seed=context.seed,
                desc=f"rmu ({len(forget)} forget / {len(retain)} retain texts)",
            )
        self.loss_parts = parts  # (forget, retain) per step, for logs and tests
        return model

