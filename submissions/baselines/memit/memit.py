"""MEMIT: mass-editing memory in a transformer (baseline, editing).

The method is Meng, Sen Sharma, Andonian, Belinkov and Bau, "Mass-Editing Memory in a
Transformer" (ICLR 2023, https://arxiv.org/abs/2210.07229). Facts are read as key-value
pairs stored by MLP output projections: the key is the input of ``mlp.down_proj`` at the
subject's last token, the value what the block writes into the residual stream there.
For all edits at once:

1. **Target values.** At the last edited layer ``L``, find for each edit a vector ``z_i``
   (the block's output at the subject's last token plus a learned ``delta_i``) that makes
   the model produce the new target: gradient steps on ``delta_i`` (lr ``v_lr``,
   ``v_steps``), with a KL penalty keeping the model's next-token distribution after
   "{subject} is a" close to the original (``kl_factor``), a weight decay relative to the
   hidden state's norm (``v_weight_decay``), and ``||delta_i|| <= clamp_norm_factor *
   ||h_i||``.
2. **Spreading.** For each edited layer ``l`` in order, the remaining residual
   ``(z_i - h_i^{current}) / (layers left)`` is written by a least-squares update of
   ``W_down`` that also stays close on generic keys: ``dW = R K^T (lambda C + K K^T)^-1``
   with ``K`` the edits' keys at ``l``, ``R`` the residuals and ``C = E[k k^T]`` over a text
   sample (``benchmark.toolkit.key_second_moments``, cached with its provenance),
   ``lambda = mom2_update_weight``.

Kolbeinsson et al. 2024 ("Composable Interventions for Language Models") ran it on
Llama-3-8B with layers 4-8, v_lr 0.5, 25 steps, clamp norm factor 4, KL factor 0.0625,
update weight 15000 and 100k Wikipedia samples for ``C``.

Ours (MIT): this implementation from the paper's description, in float32 for the solve,
on any Llama-style ``transformers`` model; no context-template augmentation of the prompts
(each edit's own prompt only); subject found as the last occurrence of its tokens in the
prompt (the prompt's last token when the subject is absent).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from pydantic import Field

from benchmark.api import Category, Hyperparameters, Intervention, InterventionContext, InterventionError
from benchmark.toolkit import (
    IGNORE_INDEX,
    block_indices,
    block_output,
    collate,
    decoder_layers,
    key_second_moments,
    module_input,
    pad_token_id,
    preserve_grad_state,
)


def _subject_last_index(tokenizer, prompt_ids: list[int], prompt: str, subject: str) -> int:
    """Index of the subject's last token in the prompt's ids (the prompt's last token when not found)."""
    if subject:
        start = prompt.rfind(subject)
        if start >= 0:
            end_char = start + len(subject)
            enc = tokenizer(prompt, return_offsets_mapping=True)  # special tokens have empty spans
            last = None
            for index, (a, b) in enumerate(enc["offset_mapping"]):
                if b > a and a < end_char and b > start:
                    last = index
            if last is not None and len(enc["input_ids"]) == len(prompt_ids):
                return last
    return len(prompt_ids) - 1


class MEMITHyperparameters(Hyperparameters):
    """MEMIT's knobs (the paper's Llama-3-8B setting: layers 4-8, lambda 15000, 25 steps of lr 0.5 for the values)."""

    layers: list[int] = Field(min_length=1, description="Edited blocks; the last one holds the target values.")
    v_lr: float = Field(0.5, gt=0.0, description="Learning rate of the target-value optimisation.")
    v_steps: int = Field(25, ge=1, description="Steps of the target-value optimisation.")
    v_weight_decay: float = Field(0.5, ge=0.0, description="Weight decay on the value change.")
    clamp_norm_factor: float = Field(
        4.0, gt=0.0, description="Largest value change, as a multiple of the original norm."
    )
    kl_factor: float = Field(0.0625, ge=0.0, description="Weight of the KL term that keeps the subject's meaning.")
    mom2_update_weight: float = Field(15000.0, ge=0.0, description="lambda: weight of the key second moments C.")
    mom2_n_tokens: int = Field(100_000, ge=1, description="Tokens of reference text for C.")
    mom2_seq_len: int = Field(256, ge=1, description="Tokens per reference window for C.")


class MEMIT(Intervention):
    """Locate-then-edit of ``mlp.down_proj`` in several layers for all edits at once.

    Hyperparameters: :class:`MEMITHyperparameters` (``compose-bench list interventions``).
    """

    name = "memit"
    category = Category.EDITING
    Hyperparameters = MEMITHyperparameters

    def apply(self, model: torch.nn.Module, tokenizer, context: InterventionContext) -> torch.nn.Module:
        edits = list(context.edits)
        if not edits:
            raise InterventionError("memit: the context holds no edit requests")
        hp = MEMITHyperparameters.from_context(context)
        layers = sorted(set(block_indices("memit", model, hp.layers)))
        v_lr, v_steps, decay, clamp, kl_factor = (
            hp.v_lr,
            hp.v_steps,
            hp.v_weight_decay,
            hp.clamp_norm_factor,
            hp.kl_factor,
        )
        lam, n_tokens, seq_len = hp.mom2_update_weight, hp.mom2_n_tokens, hp.mom2_seq_len
        blocks = decoder_layers(model)
        for layer in layers:
            if not isinstance(getattr(getattr(blocks[layer], "mlp", None), "down_proj", None), torch.nn.Linear):
                raise InterventionError(
                    f"memit: block {layer} has no mlp.down_proj Linear; MEMIT needs a Llama-style MLP"
                )

        device = next(model.parameters()).device
        pad = pad_token_id(tokenizer)
        prompts, subject_pos, targets = [], [], []
        for e in edits:
            # tokenized as the scorer does (with the model's special tokens, e.g. Llama-3's BOS)
            p_ids = tokenizer(e.prompt)["input_ids"]
            t_ids = tokenizer(" " + e.target.strip(), add_special_tokens=False)["input_ids"]
            if not p_ids or not t_ids:
                raise InterventionError(f"memit: edit {e.record_id} has an empty prompt or target")
            prompts.append(p_ids)
            subject_pos.append(_subject_last_index(tokenizer, p_ids, e.prompt, e.subject))
            targets.append(t_ids)

        with preserve_grad_state(model):
            model.requires_grad_(False)
            model.eval()
            # the harness's reference text (a step cannot read the data folder); None: the toolkit's own
            texts = tuple(context.reference_texts) or None
            stats = key_second_moments(model, tokenizer, layers, n_tokens=n_tokens, seq_len=seq_len, texts=texts)
            self.statistics_provenance = stats.provenance
            z = self._target_values(
                model,
                tokenizer,
                edits,
                prompts,
                subject_pos,
                targets,
                layers[-1],
                v_lr,
                v_steps,
                decay,
                clamp,
                kl_factor,
                pad,
                device,
            )
            prompt_batch = collate([(p, p) for p in prompts], pad)
            prompt_ids, prompt_mask = prompt_batch["input_ids"], prompt_batch["attention_mask"]
            prompt_ids, prompt_mask = prompt_ids.to(device), prompt_mask.to(device)
            rows = torch.arange(len(edits), device=device)
            pos = torch.tensor(subject_pos, device=device)
            batch = {"input_ids": prompt_ids, "attention_mask": prompt_mask}
            for i, layer in enumerate(layers):
                with torch.no_grad():
                    current = block_output(model, batch, layers[-1])[rows, pos].float()
                    keys = module_input(model, batch, blocks[layer].mlp.down_proj)[rows, pos].float()  # n x d_ff
                residual = (z - current) / (len(layers) - i)  # n x d_model
                C = stats.moments[layer].to(device)
                A = lam * C + keys.T @ keys  # d_ff x d_ff
                solved = torch.linalg.solve(A, keys.T)  # d_ff x n
                delta = residual.T @ solved.T  # d_model x d_ff
                weight = blocks[layer].mlp.down_proj.weight
                with torch.no_grad():  # add in float32, round once into the weight's dtype
                    weight.copy_((weight.float() + delta).to(weight.dtype))
        return model

    def _target_values(
        self,
        model,
        tokenizer,
        edits,
        prompts,
        subject_pos,
        targets,
        layer,
        v_lr,
        v_steps,
        decay,
        clamp,
        kl_factor,
        pad,
        device,
    ) -> torch.Tensor:
        """``z_i``: block ``layer``'s output at each subject's last token that makes the target likely."""
        n = len(edits)
        # right-padded prompt + target rows, labels on the target tokens only
        batch = collate([(p + t, [IGNORE_INDEX] * len(p) + t) for p, t in zip(prompts, targets)], pad)
        ids, mask, labels = batch["input_ids"], batch["attention_mask"], batch["labels"]
        # KL prompts: "{subject} is a", delta applied at the subject's last token
        kl_rows, kl_pos = [], []
        for e in edits:
            s_ids = tokenizer(e.subject or e.prompt)["input_ids"] or [pad]
            kl_rows.append(s_ids + tokenizer(" is a", add_special_tokens=False)["input_ids"])
            kl_pos.append(len(s_ids) - 1)
        kl_batch = collate([(r, r) for r in kl_rows], pad)
        kl_ids, kl_mask = kl_batch["input_ids"], kl_batch["attention_mask"]
        ids, mask, labels, kl_ids, kl_mask = (t.to(device) for t in (ids, mask, labels, kl_ids, kl_mask))
        kl_last = kl_mask.sum(1) - 1
        row_index = torch.arange(n, device=device)
        pos = torch.tensor(subject_pos, device=device)
        kl_pos_t = torch.tensor(kl_pos, device=device)
        block = decoder_layers(model)[layer]

        with torch.no_grad():
            h = block_output(model, {"input_ids": ids, "attention_mask": mask}, layer)[row_index, pos].float()
            base_kl = F.log_softmax(
                model(input_ids=kl_ids, attention_mask=kl_mask, use_cache=False).logits[row_index, kl_last].float(), -1
            )
        delta = torch.zeros_like(h, requires_grad=True)
        optimizer = torch.optim.Adam([delta], lr=v_lr)
        state = {"pos": pos}

        def hook(_m, _inputs, output):
            hidden = output[0] if isinstance(output, (tuple, list)) else output
            hidden = hidden.clone()
            hidden[row_index, state["pos"]] = hidden[row_index, state["pos"]] + delta.to(hidden.dtype)
            return (hidden, *output[1:]) if isinstance(output, (tuple, list)) else hidden

        handle = block.register_forward_hook(hook)
        self.v_losses: list[float] = []
        norms = h.norm(dim=1, keepdim=True)
        try:
            for _ in range(v_steps):
                optimizer.zero_grad(set_to_none=True)
                state["pos"] = pos
                logits = model(input_ids=ids, attention_mask=mask, use_cache=False).logits.float()
                logp = F.log_softmax(logits[:, :-1], -1)
                lab = labels[:, 1:]
                tok_mask = lab != IGNORE_INDEX
                nll = -(logp.gather(-1, lab.clamp(min=0).unsqueeze(-1)).squeeze(-1) * tok_mask).sum(1) / tok_mask.sum(1)
                loss = nll.mean()
                if kl_factor > 0:
                    state["pos"] = kl_pos_t
                    kl_logits = (
                        model(input_ids=kl_ids, attention_mask=kl_mask, use_cache=False)
                        .logits[row_index, kl_last]
                        .float()
                    )
                    kl = F.kl_div(
                        F.log_softmax(kl_logits, -1), base_kl, log_target=True, reduction="batchmean"
                    )  # KL(base || edited)
                    loss = loss + kl_factor * kl
                loss = loss + decay * ((delta.norm(dim=1) / norms.squeeze(1)) ** 2).mean()
                self.v_losses.append(float(nll.mean().detach()))
                loss.backward()
                optimizer.step()
                with torch.no_grad():
                    limit = clamp * norms
                    scale = (limit / delta.norm(dim=1, keepdim=True).clamp(min=1e-12)).clamp(max=1.0)
                    delta.mul_(scale)
        finally:
            handle.remove()
        return (h + delta.detach()).float()
