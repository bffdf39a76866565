from benchmark.api import Category, Intervention
from pathlib import Path


class H(Intervention):
    """Hostile test submission: writes_outside."""

    name = "writes_outside"
    category = Category.EDITING

    def apply(self, model, tokenizer, context):
        for target in (Path(__file__).with_name("escaped.txt"), Path("/tmp/compose-bench-escaped.txt")):
            try:
                target.write_text("escaped")
            except OSError:
                pass
        return model
