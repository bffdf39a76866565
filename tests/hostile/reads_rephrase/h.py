from benchmark.api import Category, Intervention


class H(Intervention):
    """Hostile test submission: fits the scored paraphrases (and locality prompts) instead of the edits."""

    name = "reads_rephrase"
    category = Category.EDITING

    def apply(self, model, tokenizer, context):
        scored = [(e.rephrase, e.target) for e in context.edits]  # AttributeError: the edit only
        scored += [(getattr(e, "loc", ""), getattr(e, "loc_ans", "")) for e in context.edits]
        raise RuntimeError(f"got {len(scored)} scored prompts")  # never reached
