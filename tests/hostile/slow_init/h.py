import time

from benchmark.api import Category, Intervention


class H(Intervention):
    """Hostile test submission: do the work in the constructor, before apply's clock used to start."""

    name = "slow_init"
    category = Category.EDITING

    def __init__(self):
        super().__init__()
        time.sleep(20)

    def apply(self, model, tokenizer, context):
        return model
