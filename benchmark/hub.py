"""One fast answer to "can we reach the Hugging Face Hub?".

Offline machines must fail over to local data in a second, not after minutes of
retries, so we honour ``HF_HUB_OFFLINE`` and otherwise try one TCP connection with
a short timeout and remember the answer for the process.

:func:`require_hub` is the strict twin for code that cannot fall back (the Hub
results store): it raises one clear error instead of letting huggingface_hub retry.
"""

from __future__ import annotations

import functools
import os
import socket
from urllib.parse import urlsplit

HUB_HOST = "huggingface.co"
OFFLINE_VALUES = {"1", "true", "yes", "on"}


class HubUnavailableError(RuntimeError):
    """The Hub (or the endpoint in ``HF_ENDPOINT``) cannot be used; the message says why."""


def offline_requested() -> bool:
    """True when ``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``) asks for no network."""
    return any(os.environ.get(v, "").lower() in OFFLINE_VALUES for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def _can_connect(host: str, port: int, timeout_s: float) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


@functools.lru_cache(maxsize=1)
def hub_reachable(timeout_s: float = 3.0) -> bool:
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes"}:
        return False
    return _can_connect(HUB_HOST, 443, timeout_s)


def hub_endpoint() -> str:
    """The Hub's base URL: ``HF_ENDPOINT`` when set (a mirror, or a test's fake), else huggingface.co."""
    return (os.environ.get("HF_ENDPOINT") or f"https://{HUB_HOST}").rstrip("/")


def require_hub(endpoint: str | None = None, timeout_s: float = 3.0) -> str:
    """Return the endpoint if it can be reached now; raise :class:`HubUnavailableError` otherwise.

    Checked on every call (no cache): a store is opened once per command, and a test
    may start its fake server after an earlier check failed.
    """
    endpoint = (endpoint or hub_endpoint()).rstrip("/")
    if offline_requested():
        raise HubUnavailableError(
            "HF_HUB_OFFLINE is set, so the Hugging Face Hub store cannot be used; "
            "unset it, or use a local store (a folder path)"
        )
    parts = urlsplit(endpoint)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise HubUnavailableError(f"Hub endpoint {endpoint!r} is not an http(s) URL (check HF_ENDPOINT)")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    if not _can_connect(parts.hostname, port, timeout_s):
        raise HubUnavailableError(
            f"cannot reach the Hugging Face Hub at {endpoint} (no connection within {timeout_s:g} s); "
            "this machine looks offline: use a local store (a folder path) instead"
        )
    return endpoint
