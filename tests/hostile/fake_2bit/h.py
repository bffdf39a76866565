from benchmark.api import Category, Intervention


class H(Intervention):
    """Hostile test submission: a compressor that compresses nothing and claims 2 bits per weight."""

    name = "fake_2bit"
    category = Category.COMPRESSION

    def apply(self, model, tokenizer, context):
        return model

    def weight_bits(self, context):
        return 2.0
