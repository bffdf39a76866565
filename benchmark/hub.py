"""One fast answer to "can we reach the Hugging Face Hub?".

Offline machines must fail over to local data in a second, not after minutes of
retries, so we honour ``HF_HUB_OFFLINE`` and otherwise try one TCP connection with
a short timeout and remember the answer for the process.
"""

from __future__ import annotations

import functools
import os
import socket

HUB_HOST = "huggingface.co"


@functools.lru_cache(maxsize=1)
def hub_reachable(timeout_s: float = 3.0) -> bool:
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes"}:
        return False
    try:
        with socket.create_connection((HUB_HOST, 443), timeout=timeout_s):
            return True
    except OSError:
        return False
