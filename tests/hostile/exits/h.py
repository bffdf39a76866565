from benchmark.api import Category, Intervention
import os


class H(Intervention):
    """Hostile test submission: exits."""

    name = "exits"
    category = Category.EDITING

    def apply(self, model, tokenizer, context):
        os._exit(0)  # leaves without a result
