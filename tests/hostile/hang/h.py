from benchmark.api import Category, Intervention
import time


class H(Intervention):
    """Hostile test submission: hang."""

    name = "hang"
    category = Category.EDITING

    def apply(self, model, tokenizer, context):
        while True:
            time.sleep(0.1)
