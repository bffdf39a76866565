from benchmark.api import Category, Intervention


class H(Intervention):
    """Hostile test submission: bad_link (its harm is in submission.yaml or the folder)."""

    name = "bad_link"
    category = Category.EDITING

    def apply(self, model, tokenizer, context):
        return model
