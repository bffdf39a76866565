from benchmark.api import Category, Intervention


class H(Intervention):
    """Hostile test submission: crash."""

    name = "crash"
    category = Category.EDITING

    def apply(self, model, tokenizer, context):
        raise RuntimeError("deliberate crash in apply")
