from benchmark.api import Category, Intervention


class H(Intervention):
    """Hostile test submission: missing_data (its harm is in submission.yaml or the folder)."""

    name = "missing_data"
    category = Category.EDITING

    def apply(self, model, tokenizer, context):
        return model
