from benchmark.api import Category, Intervention


class H(Intervention):
    """Hostile test submission: returns_none."""

    name = "returns_none"
    category = Category.EDITING

    def apply(self, model, tokenizer, context):
        return None
