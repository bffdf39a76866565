import time

from benchmark.api import Category, Intervention


class H(Intervention):
    """Hostile test submission: park memory in /dev/shm and leave it there."""

    name = "shm_park"
    category = Category.EDITING

    def apply(self, model, tokenizer, context):
        chunk = b"\1" * (64 << 20)
        with open("/dev/shm/compose-bench-parked", "wb") as fh:
            for _ in range(30):  # 1.9 GB
                fh.write(chunk)
        time.sleep(3)
        return model
