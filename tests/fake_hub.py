"""An in-process fake of the Hugging Face Hub's HTTP API, for testing the Hub results store.

It serves, over real HTTP on 127.0.0.1, the endpoints that huggingface_hub 1.x calls
for a dataset repository, with the Hub's semantics where the store depends on them:

    POST     /api/repos/create                               create_repo (409 when it exists)
    GET      /api/datasets/{repo}/revision/{rev}              repo_info (head commit, siblings)
    GET      /api/datasets/{repo}/tree/{rev}[/{path}]         list_repo_tree (blob ids)
    POST     /api/datasets/{repo}/preupload/{rev}             create_commit, step 1 (all "regular")
    POST     /api/datasets/{repo}/commit/{rev}                create_commit, step 2 (NDJSON);
                                                              412 when parentCommit is not the head
    HEAD/GET /datasets/{repo}/resolve/{rev}/{path}            hf_hub_download

Commits are immutable snapshots; a branch is a pointer to one. Every request is
served on its own thread and commits are serialised by a lock, as on the Hub, so
concurrent publishers really race. Point huggingface_hub at it with ``HF_ENDPOINT``
(or ``endpoint=``).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

GITATTRIBUTES = b"*.parquet filter=lfs diff=lfs merge=lfs -text\n"


def git_oid(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class Repo:
    repo_id: str
    commits: dict[str, dict[str, bytes]] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)
    history: list[str] = field(default_factory=list)

    def resolve(self, revision: str) -> str | None:
        if revision in self.branches:
            return self.branches[revision]
        return revision if revision in self.commits else None

    def add_commit(self, parent: str | None, files: dict[str, bytes], message: str) -> str:
        digest = hashlib.sha1(f"{parent}:{len(self.history)}:{message}".encode())
        for path in sorted(files):
            digest.update(f"{path}:{git_oid(files[path])}".encode())
        sha = digest.hexdigest()
        self.commits[sha] = files
        self.history.append(sha)
        return sha


class _HTTPError(Exception):
    def __init__(self, status: int, message: str, error_code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.error_code = status, message, error_code


_API = re.compile(r"^/api/datasets/(?P<repo>[^/]+/[^/]+)/(?P<op>revision|tree|preupload|commit)/(?P<rest>.+)$")
_RESOLVE = re.compile(r"^/datasets/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<path>.+)$")


class FakeHub:
    """The fake server; ``url`` is its endpoint once started. Use as a context manager."""

    def __init__(self) -> None:
        self.repos: dict[str, Repo] = {}
        self.lock = threading.Lock()
        self.requests: Counter[str] = Counter()
        self.conflicts = 0
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> "FakeHub":
        handler = type("Handler", (_Handler,), {"hub": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-hub", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        assert self._server is not None
        self._server.shutdown()
        self._server.server_close()

    @property
    def url(self) -> str:
        assert self._server is not None, "start the fake with `with FakeHub() as hub:`"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    # ------------------------------------------------------------------ repositories

    def create_repo(self, repo_id: str) -> Repo:
        with self.lock:
            if repo_id in self.repos:
                raise _HTTPError(409, "You already created this dataset repo")
            repo = Repo(repo_id)
            repo.branches["main"] = repo.add_commit(None, {".gitattributes": GITATTRIBUTES}, "initial commit")
            self.repos[repo_id] = repo
            return repo

    def repo(self, repo_id: str) -> Repo:
        repo = self.repos.get(repo_id)
        if repo is None:
            raise _HTTPError(404, "Repository not found", "RepoNotFound")
        return repo

    def files(self, repo_id: str, revision: str = "main") -> dict[str, bytes]:
        """The files of a branch or commit (for assertions)."""
        repo = self.repo(repo_id)
        sha = repo.resolve(revision)
        if sha is None:
            raise KeyError(revision)
        return dict(repo.commits[sha])

    def snapshot(self, repo_id: str, revision: str) -> tuple[str, dict[str, bytes]]:
        repo = self.repo(repo_id)
        sha = repo.resolve(unquote(revision))
        if sha is None:
            raise _HTTPError(404, f"Revision {revision} not found", "RevisionNotFound")
        return sha, repo.commits[sha]

    def commit(self, repo_id: str, revision: str, lines: list[dict[str, Any]]) -> str:
        header = next((line["value"] for line in lines if line.get("key") == "header"), None)
        if header is None:
            raise _HTTPError(400, "missing header line")
        with self.lock:  # the Hub serialises commits to a branch
            repo = self.repo(repo_id)
            branch = unquote(revision)
            head = repo.branches.get(branch)
            if head is None:
                raise _HTTPError(404, f"Revision {branch} not found", "RevisionNotFound")
            parent = header.get("parentCommit")
            if parent is not None and not head.startswith(parent):
                self.conflicts += 1
                raise _HTTPError(412, "A commit has happened since. Please refresh and try again.")
            files = dict(repo.commits[head])
            for line in lines:
                key, value = line.get("key"), line.get("value") or {}
                if key == "file":
                    if value.get("encoding") != "base64":
                        raise _HTTPError(400, "only base64 file content is supported by this fake")
                    files[value["path"]] = base64.b64decode(value["content"])
                elif key == "deletedFile":
                    files.pop(value["path"], None)
                elif key not in ("header",):
                    raise _HTTPError(400, f"operation {key!r} is not supported by this fake")
            sha = repo.add_commit(head, files, header.get("summary", ""))
            repo.branches[branch] = sha
            return sha


class _Handler(BaseHTTPRequestHandler):
    hub: FakeHub
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # keep pytest output clean
        pass

    # ------------------------------------------------------------------ plumbing

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().strip(), 16)
                if size == 0:
                    self.rfile.readline()
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None, head: bool = False) -> None:
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _json(self, status: int, value: Any) -> None:
        self._send(status, json.dumps(value).encode(), {"Content-Type": "application/json"})

    def _dispatch(self, method: str) -> None:
        url = urlsplit(self.path)
        body = self._body() if method == "POST" else b""
        route = "other"
        try:
            if method == "POST" and url.path == "/api/repos/create":
                route = "create_repo"
                payload = json.loads(body)
                repo_id = (
                    f"{payload['organization']}/{payload['name']}" if payload.get("organization") else payload["name"]
                )
                self.hub.create_repo(repo_id)
                return self._json(200, {"url": f"{self.hub.url}/datasets/{repo_id}"})
            if match := _API.match(url.path):
                route = match["op"]
                return getattr(self, f"_api_{route}")(method, match["repo"], match["rest"], parse_qs(url.query), body)
            if method in ("GET", "HEAD") and (match := _RESOLVE.match(url.path)):
                route = "resolve"
                return self._resolve(match["repo"], match["rev"], unquote(match["path"]), head=method == "HEAD")
            raise _HTTPError(404, f"no such endpoint in the fake Hub: {method} {url.path}")
        except _HTTPError as exc:
            headers = {"Content-Type": "application/json", "X-Error-Message": exc.message}
            if exc.error_code:
                headers["X-Error-Code"] = exc.error_code
            self._send(exc.status, json.dumps({"error": exc.message}).encode(), headers, head=method == "HEAD")
        finally:
            with self.hub.lock:
                self.hub.requests[f"{method} {route}"] += 1

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    def do_POST(self) -> None:
        self._dispatch("POST")

    # ------------------------------------------------------------------ endpoints

    def _api_revision(self, method: str, repo_id: str, rest: str, query: dict, body: bytes) -> None:
        sha, files = self.hub.snapshot(repo_id, rest)
        self._json(
            200,
            {
                "id": repo_id,
                "author": repo_id.split("/")[0],
                "sha": sha,
                "private": False,
                "disabled": False,
                "gated": False,
                "lastModified": "2026-01-01T00:00:00.000Z",
                "tags": [],
                "downloads": 0,
                "likes": 0,
                "siblings": [{"rfilename": p} for p in sorted(files)],
            },
        )

    def _api_tree(self, method: str, repo_id: str, rest: str, query: dict, body: bytes) -> None:
        revision, _, folder = rest.partition("/")
        sha, files = self.hub.snapshot(repo_id, revision)
        folder = unquote(folder).strip("/")
        recursive = query.get("recursive", ["false"])[0].lower() == "true"
        prefix = f"{folder}/" if folder else ""
        entries: dict[str, dict] = {}
        for path in sorted(files):
            if not path.startswith(prefix):
                continue
            parts = path[len(prefix) :].split("/")
            for depth in range(1, len(parts)):
                if not recursive and depth > 1:
                    break
                directory = prefix + "/".join(parts[:depth])
                entries.setdefault(
                    directory, {"type": "directory", "oid": git_oid(directory.encode()), "size": 0, "path": directory}
                )
            if recursive or len(parts) == 1:
                data = files[path]
                entries[path] = {"type": "file", "oid": git_oid(data), "size": len(data), "path": path}
        if folder and not entries:
            raise _HTTPError(404, f"{folder} does not exist at {sha}", "EntryNotFound")
        self._json(200, list(entries.values()))

    def _api_preupload(self, method: str, repo_id: str, rest: str, query: dict, body: bytes) -> None:
        _, files = self.hub.snapshot(repo_id, rest)
        wanted = json.loads(body)["files"]
        self._json(
            200,
            {
                "files": [
                    {
                        "path": f["path"],
                        "uploadMode": "regular",
                        "shouldIgnore": False,
                        "oid": git_oid(files[f["path"]]) if f["path"] in files else None,
                    }
                    for f in wanted
                ]
            },
        )

    def _api_commit(self, method: str, repo_id: str, rest: str, query: dict, body: bytes) -> None:
        lines = [json.loads(line) for line in body.splitlines() if line.strip()]
        sha = self.hub.commit(repo_id, rest, lines)
        self._json(
            200,
            {"commitUrl": f"{self.hub.url}/datasets/{repo_id}/commit/{sha}", "commitOid": sha, "pullRequestUrl": None},
        )

    def _resolve(self, repo_id: str, revision: str, path: str, head: bool) -> None:
        sha, files = self.hub.snapshot(repo_id, revision)
        if path not in files:
            raise _HTTPError(404, f"{path} not found at {sha}", "EntryNotFound")
        data = files[path]
        headers = {"X-Repo-Commit": sha, "ETag": f'"{git_oid(data)}"', "Content-Type": "application/octet-stream"}
        if head:
            self.send_response(200)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
        else:
            self._send(200, data, headers)
