"""Template intervention: replace the method, keep the shape.

A submission is a subclass of :class:`benchmark.api.Intervention` whose ``apply`` gets the
model, its tokenizer and an :class:`~benchmark.api.InterventionContext` (edit requests,
forget/retain texts or calibration texts, depending on the category; the hyperparameters
of ``submission.yaml``) and returns the model it leaves behind: same architecture, finite
weights. Import only ``benchmark.api``, ``benchmark.toolkit`` and libraries the harness
installs. The harness runs ``apply`` in a sandboxed process without network and with a
read-only file system (the working directory and ``$TMPDIR`` are writable scratch space).

This example fine-tunes ``mlp.down_proj`` of a few layers on the edits with the toolkit's
training loop (float32 master weights for bf16 models).
"""

from __future__ import annotations

import torch

from benchmark.api import Category, Intervention, InterventionContext, InterventionError
from benchmark.toolkit import lm_loss, preserve_grad_state, select_parameters, tokenize_prompt_target, train


class TemplateIntervention(Intervention):
    """Fine-tune chosen MLP output projections on all edit requests at once."""

    name = "template"  # must equal `name` in submission.yaml
    category = Category.EDITING  # must equal `category` in submission.yaml

    def apply(self, model: torch.nn.Module, tokenizer, context: InterventionContext) -> torch.nn.Module:
        edits = list(context.edits)
        if not edits:  # an InterventionError fails the cell with this message as its reason
            raise InterventionError("template: the context holds no edit requests")
        batch = tokenize_prompt_target(
            tokenizer, [e.prompt for e in edits], [e.target for e in edits], int(context.hp("max_len", 64))
        )
        with preserve_grad_state(model):
            params = select_parameters(model, ["mlp.down_proj"], list(context.hp("layers", [4, 5, 6])))
            train(
                model, params, lambda _i: lm_loss(model, batch, reduction="per_example_mean"),
                steps=int(context.hp("steps", 5)), lr=float(context.hp("lr", 1e-3)), seed=context.seed,
                desc=f"template ({len(edits)} edits)",
            )
        return model

    def weight_bits(self, context: InterventionContext) -> float | None:
        """Compressors claim the bits per stored weight (e.g. 4 for a 4-bit quantizer); others None.

        The harness measures the returned weights (distinct values per group of 64/128) and scores
        what is there; a claim they do not back is recorded as refuted.
        """
        return None
