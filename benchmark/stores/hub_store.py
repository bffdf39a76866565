"""A results store in a Hugging Face dataset repository, through huggingface_hub.

Publishing is optimistic concurrency on git: read the branch head, plan the files
against that commit, and commit with ``parent_commit`` set to it. If anyone else
committed in between, the Hub refuses (HTTP 412) and we re-read and plan again; the
plan is a union (one file per record, metrics recomputed from all records), so no
publisher loses another's records, and a publish with nothing new makes no commit.

Reads download the layout's files at one commit (cached by huggingface_hub), so the
records and the metrics the app shows always come from the same commit.
"""

from __future__ import annotations

import contextlib
import logging
import random
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

from benchmark.hub import HubUnavailableError, require_hub
from benchmark.stores.layout import METRICS_JSON, is_layout_path
from benchmark.stores.merge import (
    DEFAULT_BOOTSTRAP,
    DEFAULT_CONFIDENCE,
    Snapshot,
    Source,
    StoreError,
    layout_source,
    merge_sources,
)
from benchmark.stores.metadata import metadata_from_folders
from benchmark.stores.plan import PublishPlan, PublishReport, plan_publish

logger = logging.getLogger(__name__)

REPO_TYPE = "dataset"
CONFLICT_STATUS = {409, 412}  # 412: parent commit is not the head any more


class HubStore:
    """A results store in the dataset repository ``repo_id`` (branch ``revision``)."""

    kind = "hub"

    def __init__(
        self,
        repo_id: str,
        revision: str = "main",
        *,
        token: str | None = None,
        endpoint: str | None = None,
        cache_dir: str | Path | None = None,
        create: bool = False,
        private: bool = False,
        max_attempts: int = 30,
        metadata_folders: Iterable[str | Path] = (),
    ) -> None:
        if repo_id.count("/") != 1 or not all(repo_id.split("/")):
            raise StoreError(f"Hub store: {repo_id!r} is not a dataset repository id of the form owner/name")
        self.repo_id = repo_id
        self.revision = revision
        self.token = token
        self.endpoint = endpoint
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.create = create
        self.private = private
        self.max_attempts = max_attempts
        self.metadata_folders = [Path(f) for f in metadata_folders]

    @property
    def description(self) -> str:
        return f"Hugging Face dataset {self.repo_id}@{self.revision}"

    # ------------------------------------------------------------------ Hub access

    @contextlib.contextmanager
    def _errors(self, action: str) -> Iterator[None]:
        """Turn the client's HTTP and network errors into one-line :class:`StoreError`s."""
        import httpx
        from huggingface_hub.errors import HfHubHTTPError

        try:
            yield
        except (HfHubHTTPError, httpx.HTTPError, OSError) as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise StoreError(f"{self.description}: {action} failed: {first}") from None

    def _api(self):
        try:
            endpoint = require_hub(self.endpoint)
        except HubUnavailableError as exc:
            raise StoreError(f"{self.description}: {exc}") from None
        from huggingface_hub import HfApi

        return HfApi(endpoint=endpoint, token=self.token)

    def _head(self, api) -> str:
        from huggingface_hub.errors import RepositoryNotFoundError, RevisionNotFoundError

        try:
            return api.repo_info(self.repo_id, repo_type=REPO_TYPE, revision=self.revision).sha
        except RevisionNotFoundError:
            raise StoreError(f"{self.description}: branch or revision {self.revision!r} not found") from None
        except RepositoryNotFoundError:
            if not self.create:
                raise StoreError(
                    f"{self.description}: repository not found (or not visible with this token); "
                    "create it on the Hub, or publish with --create"
                ) from None
        api.create_repo(self.repo_id, repo_type=REPO_TYPE, private=self.private, exist_ok=True)
        return api.repo_info(self.repo_id, repo_type=REPO_TYPE, revision=self.revision).sha

    def _files(self, api, commit: str) -> dict[str, str]:
        """Layout files at ``commit`` and their ids (git blob id, or sha256 for LFS files)."""
        from huggingface_hub.hf_api import RepoFile

        files = {}
        for entry in api.list_repo_tree(self.repo_id, repo_type=REPO_TYPE, revision=commit, recursive=True):
            if isinstance(entry, RepoFile) and is_layout_path(entry.path):
                files[entry.path] = f"sha256:{entry.lfs.sha256}" if entry.lfs else entry.blob_id
        return files

    def _download(self, api, commit: str, paths: list[str]) -> dict[str, bytes]:
        from huggingface_hub import hf_hub_download

        def one(path: str) -> tuple[str, bytes]:
            local = hf_hub_download(
                self.repo_id,
                path,
                repo_type=REPO_TYPE,
                revision=commit,
                endpoint=api.endpoint,
                token=self.token,
                cache_dir=self.cache_dir,
            )
            return path, Path(local).read_bytes()

        if not paths:
            return {}
        with ThreadPoolExecutor(max_workers=min(8, len(paths))) as pool:
            return dict(pool.map(one, paths))

    # ------------------------------------------------------------------ store interface

    def read(self, n_bootstrap: int = DEFAULT_BOOTSTRAP, confidence: float = DEFAULT_CONFIDENCE) -> Snapshot:
        """Records, metrics and metadata at the head of the branch."""
        api = self._api()
        with self._errors("reading"):
            commit = self._head(api)
            wanted = sorted(p for p in self._files(api, commit) if not p.endswith("/" + METRICS_JSON))
            files = self._download(api, commit, wanted)
        name = f"{self.description} (commit {commit[:12]})"
        sources = [
            layout_source(name, files),
            Source("submission folders", interventions=metadata_from_folders(self.metadata_folders)),
        ]
        return merge_sources(name, sources, n_bootstrap=n_bootstrap, confidence=confidence)

    def publish(
        self,
        records: Iterable[Mapping[str, Any]],
        interventions: Mapping[str, Mapping[str, Any]] | None = None,
        n_bootstrap: int = DEFAULT_BOOTSTRAP,
        confidence: float = DEFAULT_CONFIDENCE,
    ) -> PublishReport:
        """Commit ``records`` and recomputed metrics; re-plan and retry when another commit got in first."""
        records = list(records)
        api = self._api()
        for attempt in range(1, self.max_attempts + 1):
            with self._errors("reading before the commit"):
                parent = self._head(api)
                plan = plan_publish(
                    self._files(api, parent),
                    lambda wanted, parent=parent: self._download(api, parent, wanted),
                    records,
                    interventions,
                    n_bootstrap=n_bootstrap,
                    confidence=confidence,
                )
            if plan.empty:
                return PublishReport.from_plan(self.description, plan, commit=None, attempts=attempt)
            commit = self._commit(api, plan, parent)
            if commit is not None:
                return PublishReport.from_plan(self.description, plan, commit=commit, attempts=attempt)
            delay = random.uniform(0.0, min(2.0, 0.05 * 2**attempt))
            logger.info("%s: the head moved past %s; re-reading in %.2f s", self.description, parent[:12], delay)
            time.sleep(delay)
        raise StoreError(
            f"{self.description}: gave up after {self.max_attempts} attempts, each overtaken by another commit"
        )

    def _commit(self, api, plan: PublishPlan, parent: str) -> str | None:
        """Commit ``plan`` on top of ``parent``: the new commit id, or None when the head is not ``parent`` any more."""
        from huggingface_hub import CommitOperationAdd
        from huggingface_hub.errors import HfHubHTTPError

        operations = [
            CommitOperationAdd(path_in_repo=p, path_or_fileobj=data) for p, data in sorted(plan.files.items())
        ]
        groups = (
            ", ".join(sorted({f"{profile}/{model}/{dtype}" for model, profile, dtype in plan.groups})) or "metadata"
        )
        with self._errors("the commit"):
            try:
                return api.create_commit(
                    self.repo_id,
                    operations,
                    commit_message=f"compose-bench publish: {len(plan.added)} new, {len(plan.replaced)} replaced "
                    f"record(s) ({groups})",
                    repo_type=REPO_TYPE,
                    revision=self.revision,
                    parent_commit=parent,
                ).oid
            except HfHubHTTPError as exc:
                if getattr(exc.response, "status_code", None) in CONFLICT_STATUS:
                    return None
                raise
