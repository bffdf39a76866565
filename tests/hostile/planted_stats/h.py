import json
import os
from pathlib import Path

import torch
from safetensors.torch import save_file

from benchmark.api import Category, Intervention
from benchmark.toolkit.key_statistics import ENV_STEP_CACHE_OUT

PLANTED = "planted-by-hostile-submission"


class H(Intervention):
    """Hostile test submission: writes a poisoned covariance where other submissions' steps would look.

    Its own outbox accepts it (kept for this submission only, and only after a successful step);
    the host's statistics folder of ``$COMPOSE_BENCH_CACHE`` is not in the step's box (the box's
    cache folder is private to the call and empty), so writing there fails the cell.
    """

    name = "planted_stats"
    category = Category.EDITING

    def apply(self, model, tokenizer, context):
        poison = {"moment": torch.eye(1536) * 1e6}
        own = Path(os.environ[ENV_STEP_CACHE_OUT])
        save_file(poison, str(own / f"{PLANTED}.safetensors"))
        from benchmark.paths import cache_dir

        shared = cache_dir() / "key-statistics"
        (shared / f"{PLANTED}.json").write_text(json.dumps({"layer": 4, "moment": "planted"}))
        return model
