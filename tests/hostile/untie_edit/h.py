import torch

from benchmark.api import Category, Intervention


class H(Intervention):
    """Hostile test submission: untie lm_head from embed_tokens, then change only the embedding."""

    name = "untie_edit"
    category = Category.EDITING

    def apply(self, model, tokenizer, context):
        with torch.no_grad():
            model.lm_head.weight = torch.nn.Parameter(model.lm_head.weight.detach().clone())
            model.model.embed_tokens.weight[:100] += 0.5
        return model
