from benchmark.api import Category, Intervention


class H(Intervention):
    """Hostile test submission: published_name (its harm is in submission.yaml or the folder)."""

    name = "published-method"
    category = Category.EDITING

    def apply(self, model, tokenizer, context):
        return model
