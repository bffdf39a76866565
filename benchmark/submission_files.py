"""Reading an untrusted submission folder safely: its files, its YAML, its hash.

The schema (:mod:`benchmark.submissions`) checks what the fields *mean*; this module makes
sure that reading them cannot hurt the harness first. A hostile folder could hold a symlink
to a file outside it (which the harness, unsandboxed, would hash and so read), a FIFO
(reading it blocks forever), millions of files, a binary ``submission.yaml``, or a YAML
alias bomb (a 1 KB file whose aliases expand to hundreds of MB once the harness serializes
a cell id). Every such folder gets one :class:`SubmissionError`-style line, decided from
sizes and the YAML *node graph*, before anything is expanded.

Written by hand: PyYAML builds aliases as shared objects without a size limit, and no
maintained library bounds an alias expansion; counting the composed node graph (where an
alias is the same node object as its anchor) costs one pass with memoisation.
"""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "FolderProblem",
    "MAX_YAML_BYTES",
    "MAX_EXPANDED_NODES",
    "MAX_FILES",
    "MAX_FOLDER_BYTES",
    "read_yaml_bounded",
    "folder_files",
    "folder_sha256",
]

MAX_YAML_BYTES = 64 * 1024  # the largest baseline's submission.yaml is about 2.5 KB
MAX_EXPANDED_NODES = 20_000  # YAML nodes after alias expansion (a baseline has under 200)
MAX_SCALAR_CHARS = 16 * 1024  # one string value (the schema sets tighter limits per field)
MAX_FILES = 1_000
MAX_FOLDER_BYTES = 256 * 2**20  # code and small assets; weights belong in a Hub repository
SKIPPED_PARTS = ("__pycache__",)


class FolderProblem(ValueError):
    """A folder or file that the harness refuses to read further; ``str()`` is one line."""


def _expanded_size(root: yaml.Node, path: Path) -> int:
    """Number of nodes ``root`` expands to, counted on the graph (aliases share node objects)."""
    sizes: dict[int, int] = {}
    active: set[int] = set()

    def size(node: yaml.Node) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in active:
            raise FolderProblem(f"{path}: a YAML alias refers to itself (recursive anchor); write the values out")
        active.add(key)
        if isinstance(node, yaml.ScalarNode):
            if len(node.value) > MAX_SCALAR_CHARS:
                raise FolderProblem(
                    f"{path}: line {node.start_mark.line + 1}: a value of {len(node.value)} characters "
                    f"(at most {MAX_SCALAR_CHARS})"
                )
            total = 1
        elif isinstance(node, yaml.SequenceNode):
            total = 1 + sum(size(child) for child in node.value)
        else:  # MappingNode: pairs of nodes
            total = 1 + sum(size(k) + size(v) for k, v in node.value)
        active.discard(key)
        if total > MAX_EXPANDED_NODES:
            raise FolderProblem(
                f"{path}: the YAML expands to over {MAX_EXPANDED_NODES} values through aliases "
                f"(an alias bomb?); write the values out"
            )
        sizes[key] = total
        return total

    return size(root)


def read_yaml_bounded(path: Path) -> Any:
    """The parsed YAML of ``path``: UTF-8 only, at most :data:`MAX_YAML_BYTES`, bounded expansion.

    Raises :class:`FolderProblem` (one line) for a file that is too large, not UTF-8, not
    YAML, or whose aliases would expand past :data:`MAX_EXPANDED_NODES` nodes.
    """
    info = os.lstat(path)
    if stat.S_ISLNK(info.st_mode) or not stat.S_ISREG(info.st_mode):
        raise FolderProblem(f"{path}: not a regular file (a symlink or special file); submit the file itself")
    if info.st_size > MAX_YAML_BYTES:
        raise FolderProblem(f"{path}: {info.st_size} bytes, over the limit of {MAX_YAML_BYTES} bytes")
    data = path.read_bytes()[: MAX_YAML_BYTES + 1]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FolderProblem(f"{path}: not UTF-8 text (byte {exc.start}: {data[exc.start : exc.start + 1]!r})") from None
    if "\x00" in text:
        raise FolderProblem(f"{path}: not text (holds a NUL character)")
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _expanded_size(node, path)
        return loader.construct_document(node)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        problem = str(getattr(exc, "problem", None) or exc).replace("\n", " ")
        raise FolderProblem(f"{path}:{where} not valid YAML: {problem}") from None
    finally:
        loader.dispose()


def folder_files(folder: Path) -> list[Path]:
    """Every file of the submission, without following any symlink; refuses what could hurt reading it.

    A symlink is allowed only when it points inside the folder (it is then hashed as its
    target path, never followed); a symlink leading out of the folder, a special file (FIFO,
    socket, device), more than :data:`MAX_FILES` files or more than :data:`MAX_FOLDER_BYTES`
    bytes make the whole folder unusable.
    """
    root = os.path.realpath(folder)
    files: list[Path] = []
    total = 0
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIPPED_PARTS)
        for name in sorted(filenames) + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
            path = Path(dirpath, name)
            info = os.lstat(path)
            if stat.S_ISLNK(info.st_mode):
                target = os.path.realpath(path)
                if os.path.commonpath([root, target]) != root:
                    raise FolderProblem(
                        f"{path}: a symlink pointing out of the submission folder (to {os.readlink(path)}); "
                        f"copy the file in instead"
                    )
            elif not stat.S_ISREG(info.st_mode):
                raise FolderProblem(f"{path}: not a regular file (a FIFO, socket or device); remove it")
            else:
                total += info.st_size
            files.append(path)
            if len(files) > MAX_FILES:
                raise FolderProblem(f"{folder}: more than {MAX_FILES} files; a submission is code and small assets")
            if total > MAX_FOLDER_BYTES:
                raise FolderProblem(
                    f"{folder}: more than {MAX_FOLDER_BYTES // 2**20} MiB of files; "
                    f"download large assets from a Hub repository at run time"
                )
    return files


def folder_sha256(folder: Path) -> str:
    """SHA-256 over the submission's files (relative path + bytes; a symlink as its target text).

    Byte-code caches and dot files are left out; symlinks are never followed.
    """
    folder = Path(folder)
    h = hashlib.sha256()
    for file in sorted(folder_files(folder)):  # the order of the earlier rglob-based hash: same digests
        rel = file.relative_to(folder)
        if rel.suffix == ".pyc" or rel.name.startswith("."):
            continue
        h.update(str(rel).encode() + b"\0")
        if file.is_symlink():
            h.update(b"symlink:" + os.readlink(file).encode())
        else:
            h.update(file.read_bytes())
        h.update(b"\0")
    return h.hexdigest()
