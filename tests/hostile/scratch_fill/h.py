import os
import tempfile
import time

from benchmark.api import Category, Intervention


class H(Intervention):
    """Hostile test submission: write into the scratch folder until it is full, then carry on."""

    name = "scratch_fill"
    category = Category.EDITING

    def apply(self, model, tokenizer, context):
        chunk = b"\1" * (64 << 20)
        try:
            with open(os.path.join(tempfile.gettempdir(), "fill"), "wb") as fh:
                for _ in range(10_000):
                    fh.write(chunk)
        except OSError:
            pass
        time.sleep(3)
        return model
