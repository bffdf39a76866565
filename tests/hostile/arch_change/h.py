from benchmark.api import Category, Intervention


class H(Intervention):
    """Hostile test submission: arch_change."""

    name = "arch_change"
    category = Category.EDITING

    def apply(self, model, tokenizer, context):
        model.model.layers = model.model.layers[:-1]  # drops a decoder layer
        return model
