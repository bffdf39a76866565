"""Shared by the store and leaderboard tests: the real fixture records, and test-only stores.

The fixture records were produced by the harness (see tests/fixtures/README.md). The only
altered copies made here are for the escaping tests: one real record whose intervention
name is replaced by a ``<script>`` payload, under a profile named ``escaping-test`` so it
can never be mistaken for a result.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from benchmark.records import read_records

FIXTURES = Path(__file__).parent / "fixtures"
SCRIPT_NAME = "<script>window.__xss=1</script>ft"
ESCAPING_PROFILE = "escaping-test"
HOSTILE_METADATA = {
    "name": "ft",
    "category": "editing",
    "description": '<img src=x onerror="window.__xss=2"> described',
    "authors": ["<script>window.__xss=3</script>Mallory"],
    "link": "javascript:window.__xss=4",
    "license": "MIT",
}


def fixture_records(name: str) -> list[dict]:
    """The real records of ``tests/fixtures/<name>/records.jsonl`` (``smoke`` or ``micro``)."""
    return read_records(FIXTURES / name / "records.jsonl")


def script_named_record() -> dict:
    """A copy of the real smoke record of ``ft`` alone, renamed to a ``<script>`` payload (escaping tests only)."""
    record = copy.deepcopy(next(r for r in fixture_records("smoke") if r["label"] == "ft"))
    record["label"] = SCRIPT_NAME
    record["sequence"][0]["name"] = record["sequence"][0]["label"] = SCRIPT_NAME
    record["provenance"]["profile"] = ESCAPING_PROFILE
    return record


def local_store_with_fixtures(root: Path, hostile: bool = False) -> Path:
    """A local store folder holding the smoke and micro run folders (and, if asked, the escaping inputs)."""
    for name in ("smoke", "micro"):
        shutil.copytree(FIXTURES / name, root / name)
    if hostile:
        (root / "escaping").mkdir()
        (root / "escaping" / "records.jsonl").write_text(json.dumps(script_named_record()) + "\n")
        (root / "interventions").mkdir()
        (root / "interventions" / "ft.json").write_text(json.dumps(HOSTILE_METADATA))
    return root


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def served_leaderboard(store: Path, log_dir: Path) -> Iterator[str]:
    """`compose-bench leaderboard --store STORE` on a free port of 127.0.0.1: yields its URL once it answers
    (fails the test with the server's log if it exits or does not answer within 90 s); stops it afterwards."""
    port = _free_port()
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1"}
    log = (log_dir / "server.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "benchmark.cli", "leaderboard", "--store", str(store), "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 90
        while True:
            if proc.poll() is not None:
                pytest.fail(f"the leaderboard exited with {proc.returncode}: {Path(log.name).read_text()[-3000:]}")
            try:
                urllib.request.urlopen(url, timeout=2)
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"the leaderboard did not answer on {url} within 90 s")
                time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
