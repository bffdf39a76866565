from benchmark.api import Category, Intervention


class H(Intervention):
    """Hostile test submission: alias_bomb (its harm is in submission.yaml or the folder)."""

    name = "alias_bomb"
    category = Category.EDITING

    def apply(self, model, tokenizer, context):
        return model
