from benchmark.api import Category, Intervention


class H(Intervention):
    """Hostile test submission: huge_author (its harm is in submission.yaml or the folder)."""

    name = "huge_author"
    category = Category.EDITING

    def apply(self, model, tokenizer, context):
        return model
