from benchmark.api import Category, Intervention
import socket


class H(Intervention):
    """Hostile test submission: network."""

    name = "network"
    category = Category.EDITING

    def apply(self, model, tokenizer, context):
        try:  # a submission must not reach the network; catching the failure does not hide the attempt
            socket.create_connection(("192.0.2.1", 80), timeout=2).close()
        except OSError:
            pass
        return model
