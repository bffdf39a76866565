from benchmark.api import Category, Intervention
import torch


class H(Intervention):
    """Hostile test submission: oom."""

    name = "oom"
    category = Category.EDITING

    def apply(self, model, tokenizer, context):
        hoard = []
        for _ in range(64):  # 64 x 256 MB, far over its 2 GB budget
            hoard.append(torch.ones(64, 2**20))
        return model
