from benchmark.api import Category, Intervention
import ctypes


class H(Intervention):
    """Hostile test submission: segfault."""

    name = "segfault"
    category = Category.EDITING

    def apply(self, model, tokenizer, context):
        ctypes.string_at(0)  # reads address 0: SIGSEGV
        return model
