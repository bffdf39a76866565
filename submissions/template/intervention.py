"""Template intervention: replace the method, keep the shape.

A submission is a subclass of :class:`benchmark.api.Intervention` whose ``apply`` gets the
model, its tokenizer and an :class:`~benchmark.api.InterventionContext` (edit requests,
forget/retain texts or calibration texts, depending on the category; the hyperparameters
of ``submission.yaml``) and returns the model it leaves behind: same architecture, finite
weights. Import only ``benchmark.api``, ``benchmark.toolkit`` and libraries the harness
installs. The harness runs ``apply`` in a sandboxed process without network and with a
read-only file system (the working directory and ``$TMPDIR`` are writable scratch space).

Declare every hyperparameter as a typed field of a :class:`~benchmark.api.Hyperparameters`
model (type, range, default, one-line description) and set it as the class's
``Hyperparameters``: ``compose-bench validate`` then rejects a wrong type, an out-of-range
value or an unknown name in ``submission.yaml`` in one line, before any model loads, and
``compose-bench list interventions`` shows your knobs. Read them in ``apply`` with
``TemplateHyperparameters.from_context(context)``.

This example fine-tunes ``mlp.down_proj`` of a few layers on the edits with the toolkit's
training loop (float32 master weights for bf16 models).
"""

from __future__ import annotations

import torch
from pydantic import Field

from benchmark.api import Category, Hyperparameters, Intervention, InterventionContext, InterventionError
from benchmark.toolkit import (
    block_indices,
    lm_loss,
    preserve_grad_state,
    select_parameters,
    tokenize_prompt_target,
    train,
)


class TemplateHyperparameters(Hyperparameters):
    """The knobs of the template: every value submission.yaml may set, typed and bounded."""

    layers: list[int] = Field(
        default_factory=lambda: [4, 5, 6],
        min_length=1,
        description="Blocks whose mlp.down_proj trains (negative counts from the top).",
    )
    lr: float = Field(1e-3, gt=0.0, description="Learning rate.")
    steps: int = Field(5, ge=1, le=10_000, description="Optimizer steps, all edits in each.")
    max_len: int = Field(64, ge=1, description="Most tokens per prompt + target.")


class TemplateIntervention(Intervention):
    """Fine-tune chosen MLP output projections on all edit requests at once."""

    name = "template"  # must equal `name` in submission.yaml
    category = Category.EDITING  # must equal `category` in submission.yaml
    Hyperparameters = TemplateHyperparameters  # what submission.yaml's `hyperparameters` blocks are checked against

    def apply(self, model: torch.nn.Module, tokenizer, context: InterventionContext) -> torch.nn.Module:
        edits = list(context.edits)
        if not edits:  # an InterventionError fails the cell with this message as its reason
            raise InterventionError("template: the context holds no edit requests")
        hp = TemplateHyperparameters.from_context(context)  # typed values, defaults filled in
        batch = tokenize_prompt_target(tokenizer, [e.prompt for e in edits], [e.target for e in edits], hp.max_len)
        with preserve_grad_state(model):
            params = select_parameters(model, ["mlp.down_proj"], block_indices("template", model, hp.layers))
            train(
                model,
                params,
                lambda _i: lm_loss(model, batch, reduction="per_example_mean"),
                steps=hp.steps,
                lr=hp.lr,
                seed=context.seed,
                desc=f"template ({len(edits)} edits)",
            )
        return model

    def weight_bits(self, context: InterventionContext) -> float | None:
        """Compressors claim the bits per stored weight (e.g. 4 for a 4-bit quantizer); others None.

        The harness measures the returned weights (distinct values per group of 64/128) and scores
        what is there; a claim they do not back is recorded as refuted.
        """
        return None
