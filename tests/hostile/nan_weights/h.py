from benchmark.api import Category, Intervention
import torch


class H(Intervention):
    """Hostile test submission: nan_weights."""

    name = "nan_weights"
    category = Category.EDITING

    def apply(self, model, tokenizer, context):
        with torch.no_grad():
            next(model.parameters()).fill_(float("nan"))
        return model
