import os

from benchmark.api import Category, Intervention

import torch


class H(Intervention):
    """Control submission for the isolation tests: zeroes the smaller half of one matrix, claims 8-bit weights."""

    name = "prune_bits"
    category = Category.COMPRESSION

    def apply(self, model, tokenizer, context):
        # what library code does all the time (MEMIT's cache through benchmark.paths.cache_dir):
        # makedirs(exist_ok=True) on folders that exist outside the scratch folder is no violation
        os.makedirs(os.path.expanduser("~"), exist_ok=True)
        os.makedirs(os.path.dirname(os.path.abspath(__file__)), exist_ok=True)
        weight = model.model.layers[0].mlp.down_proj.weight
        with torch.no_grad():
            weight[weight.abs() < weight.abs().float().median().to(weight.dtype)] = 0
        return model

    def weight_bits(self, context):
        return 8.0
