"""Entry point of the Hugging Face Space: the leaderboard over the results dataset.

The Space runs ``python app.py`` in a folder made by ``python -m leaderboard.space.bundle``
(this file, the Space README and requirements, the leaderboard package and the light
part of the benchmark package). The store comes from the Space variable
``COMPOSE_BENCH_STORE``; Spaces set ``GRADIO_SERVER_NAME``/``GRADIO_SERVER_PORT``.
"""

from __future__ import annotations

import os

from benchmark.stores import open_store
from leaderboard.app import BoardSource, serve

if __name__ == "__main__":
    store = os.environ.get("COMPOSE_BENCH_STORE")
    if not store:
        raise SystemExit("set the Space variable COMPOSE_BENCH_STORE, e.g. hf://datasets/OWNER/NAME")
    serve(
        BoardSource(open_store(store)),
        host=os.environ.get("GRADIO_SERVER_NAME", "0.0.0.0"),
        port=int(os.environ.get("GRADIO_SERVER_PORT", "7860")),
    )
