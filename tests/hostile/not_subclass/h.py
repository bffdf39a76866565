class H:
    name = "not_subclass"
    category = "editing"

    def apply(self, model, tokenizer, context):
        return model
