from benchmark.api import Category, Intervention


class H(Intervention):
    """Hostile test submission: symlink_out (its harm is in submission.yaml or the folder)."""

    name = "symlink_out"
    category = Category.EDITING

    def apply(self, model, tokenizer, context):
        return model
