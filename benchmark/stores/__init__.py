"""Results stores: where the leaderboard reads records and metrics, and where ``publish`` writes.

Two kinds, one interface (``read() -> Snapshot``, ``publish(records) -> PublishReport``):

* :class:`LocalStore`, the default: a folder (run folders below it are read too);
* :class:`HubStore`: a Hugging Face dataset repository, written with
  ``HfApi.create_commit`` and a parent-commit check, so concurrent publishers never
  lose each other's records.

A store is named by one string (:func:`open_store`): ``hf://datasets/owner/name``
(optionally ``@branch``) or ``hf:owner/name`` for the Hub, anything else is a folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

from benchmark.stores.hub_store import HubStore
from benchmark.stores.local_store import LocalStore
from benchmark.stores.merge import Snapshot, StoreError
from benchmark.stores.plan import PublishReport

__all__ = ["HubStore", "LocalStore", "PublishReport", "Snapshot", "StoreError", "open_store", "parse_hub_spec"]

HUB_PREFIXES = ("hf://datasets/", "hf:")
ENV_STORE = "COMPOSE_BENCH_STORE"


def parse_hub_spec(spec: str) -> tuple[str, str] | None:
    """``(repo_id, revision)`` when ``spec`` names a Hub dataset, else None."""
    for prefix in HUB_PREFIXES:
        if spec.startswith(prefix):
            rest = spec[len(prefix) :].strip("/")
            repo_id, _, revision = rest.partition("@")
            return repo_id, revision or "main"
    return None


def open_store(
    spec: str | Path,
    *,
    metadata_folders: Iterable[str | Path] = (),
    create: bool = False,
    cache_dir: str | Path | None = None,
) -> LocalStore | HubStore:
    """The store named by ``spec`` (see the module docstring). Opening does no I/O."""
    hub = parse_hub_spec(str(spec))
    if hub is None:
        return LocalStore(spec, metadata_folders=metadata_folders)
    repo_id, revision = hub
    return HubStore(repo_id, revision, create=create, cache_dir=cache_dir, metadata_folders=metadata_folders)
