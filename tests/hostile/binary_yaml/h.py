from benchmark.api import Category, Intervention


class H(Intervention):
    """Hostile test submission: binary_yaml (its harm is in submission.yaml or the folder)."""

    name = "binary_yaml"
    category = Category.EDITING

    def apply(self, model, tokenizer, context):
        return model
