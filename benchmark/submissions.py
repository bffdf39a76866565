"""Submission folders: read ``submission.yaml``, check it, import the intervention class.

A submission is a folder with ``submission.yaml`` and its Python files (see
docs/FORMATS.md). Every problem becomes a :class:`SubmissionError` whose message is one
line naming the file and the field, so the CLI and the result records can show it as is.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import inspect
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from benchmark.api import Category, Intervention
from benchmark.submission_files import FolderProblem, folder_sha256, read_yaml_bounded

SUBMISSION_FILE = "submission.yaml"

# Common SPDX identifiers; anything else must be written as LicenseRef-<name>.
KNOWN_LICENSES = {
    "MIT",
    "Apache-2.0",
    "BSD-2-Clause",
    "BSD-3-Clause",
    "GPL-2.0-only",
    "GPL-2.0-or-later",
    "GPL-3.0-only",
    "GPL-3.0-or-later",
    "LGPL-2.1-or-later",
    "LGPL-3.0-or-later",
    "MPL-2.0",
    "AGPL-3.0-only",
    "AGPL-3.0-or-later",
    "CC-BY-4.0",
    "CC-BY-SA-4.0",
    "CC-BY-NC-4.0",
    "CC0-1.0",
    "Unlicense",
    "ISC",
    "BSL-1.0",
    "Zlib",
}


# Sizes of the fields that are copied into every record and shown on the leaderboard.
MAX_DESCRIPTION_CHARS = 2_000
MAX_AUTHORS = 20
MAX_AUTHOR_CHARS = 200
MAX_LINK_CHARS = 500
MAX_HYPERPARAMETER_BLOCKS = 16
MAX_HYPERPARAMETERS_JSON = 16 * 1024  # all blocks serialized as JSON, what a cell id hashes
MAX_LEVELS = 32


class SubmissionError(ValueError):
    """A submission that cannot be used; ``str()`` is a one-line reason naming file and field."""


class Levels(BaseModel):
    model_config = ConfigDict(extra="forbid")
    parameter: str = Field(pattern=r"^[a-z_][a-z0-9_]{0,63}$")
    values: list[float | int | Annotated[str, Field(max_length=64)]] = Field(min_length=1, max_length=MAX_LEVELS)
    default: float | int | str | None = None

    @model_validator(mode="after")
    def _default_is_a_value(self) -> "Levels":
        if self.default is None:
            self.default = self.values[0]
        elif self.default not in self.values:
            raise ValueError(f"default {self.default!r} is not one of values {self.values}")
        return self


class Resources(BaseModel):
    model_config = ConfigDict(extra="forbid")
    dtype: Literal["bfloat16", "float32", "float16"] | None = None
    time_budget_s: float = Field(default=1800, gt=0)
    memory_budget_gb: float = Field(default=16, gt=0)


class Protocol(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reapply_when_first: bool = False


class SubmissionSpec(BaseModel):
    """The schema of ``submission.yaml``."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,47}$")
    category: Category
    description: str = Field(min_length=1, max_length=MAX_DESCRIPTION_CHARS)
    authors: list[Annotated[str, Field(min_length=1, max_length=MAX_AUTHOR_CHARS)]] = Field(
        min_length=1, max_length=MAX_AUTHORS
    )
    link: str = Field(max_length=MAX_LINK_CHARS)
    license: str = Field(max_length=64)
    entry_point: str = Field(
        max_length=200, pattern=r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*$"
    )
    levels: Levels | None = None
    hyperparameters: dict[str, dict[str, Any]] = Field(default_factory=lambda: {"default": dict[str, Any]()})
    resources: Resources = Field(default_factory=Resources)
    protocol: Protocol = Field(default_factory=Protocol)

    @field_validator("license")
    @classmethod
    def _spdx(cls, value: str) -> str:
        if value in KNOWN_LICENSES or re.fullmatch(r"LicenseRef-[A-Za-z0-9.-]+", value):
            return value
        raise ValueError(
            f"{value!r} is not a known SPDX licence identifier (e.g. MIT, Apache-2.0) or LicenseRef-<name>"
        )

    @field_validator("link")
    @classmethod
    def _http_url(cls, value: str) -> str:
        """An http(s) URL with a host and nothing a page could misread (the leaderboard links it)."""
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not value.startswith(parts.scheme + "://"):
            raise ValueError(f"must be an http:// or https:// URL, got scheme {parts.scheme or '(none)'!r}")
        if not parts.hostname or "@" in parts.netloc:
            raise ValueError("must name a host (and no user name or password)")
        if not value.isascii() or any(c.isspace() or c in '"<>\\`^{|}' or ord(c) < 32 for c in value):
            raise ValueError("must be a plain ASCII URL without spaces, quotes or angle brackets (percent-encode them)")
        return value

    @field_validator("hyperparameters")
    @classmethod
    def _blocks(cls, value: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        if len(value) > MAX_HYPERPARAMETER_BLOCKS:
            raise ValueError(f"{len(value)} blocks, at most {MAX_HYPERPARAMETER_BLOCKS}")
        for family, block in value.items():
            if not isinstance(block, dict):
                raise ValueError(f"block {family!r} must be a mapping of hyperparameters")
        size = len(json.dumps(value, default=str))
        if size > MAX_HYPERPARAMETERS_JSON:
            raise ValueError(f"{size} characters as JSON, at most {MAX_HYPERPARAMETERS_JSON}")
        return value

    @model_validator(mode="after")
    def _protocol_fits_category(self) -> "SubmissionSpec":
        if self.protocol.reapply_when_first and self.category != Category.COMPRESSION:
            raise ValueError("protocol.reapply_when_first applies to compression submissions only")
        return self


def _format_validation_error(path: Path, exc: ValidationError) -> str:
    problems = []
    for err in exc.errors():
        field = ".".join(str(p) for p in err["loc"]) or "(top level)"
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "missing":
            msg = "required field is missing"
        elif err["type"] == "extra_forbidden":
            msg = "unknown field"
        problems.append(f"field '{field}': {msg}")
    return f"{path}: " + "; ".join(problems)


@dataclass(frozen=True, eq=False)
class Submission:
    """A validated submission folder (equal when folder and content hash are)."""

    folder: Path
    spec: SubmissionSpec
    sha256: str

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Submission) and (self.folder, self.sha256) == (other.folder, other.sha256)

    def __hash__(self) -> int:
        return hash((self.folder, self.sha256))

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def category(self) -> Category:
        return self.spec.category

    def level_values(self) -> list[Any]:
        return list(self.spec.levels.values) if self.spec.levels else [None]

    def hyperparameters_for(self, family: str, level: Any = None) -> dict[str, Any]:
        """The ``default`` block, the family's block merged over it, then the grid level.

        The merge is what submission.yaml's template and CONTRIBUTING.md promise: a family
        block names only what differs for that family. Called once per step, when the plan
        is built (:func:`benchmark.plan.steps_for`).
        """
        blocks = self.spec.hyperparameters
        if family not in blocks and "default" not in blocks:
            raise SubmissionError(
                f"{self.folder / SUBMISSION_FILE}: field 'hyperparameters' has no block for model "
                f"family {family!r} and no 'default' block"
            )
        params = {**blocks.get("default", {}), **blocks.get(family, {})}
        if self.spec.levels is not None and level is not None:
            params[self.spec.levels.parameter] = level
        return params

    def load_class(self) -> type[Intervention]:
        """Import the entry point and check the class against the API."""
        module_name, class_name = self.spec.entry_point.split(":")
        where = f"{self.folder / SUBMISSION_FILE}: field 'entry_point' ({self.spec.entry_point})"
        module_file = self.folder / (module_name.replace(".", "/") + ".py")
        if not module_file.exists():
            raise SubmissionError(f"{where}: module file {module_file.name} not found in {self.folder}")
        package = f"_compose_bench_submission_{self.spec.name.replace('-', '_')}_{self.sha256[:12]}"
        if package not in sys.modules:
            spec = importlib.machinery.ModuleSpec(package, None, is_package=True)
            spec.submodule_search_locations = [str(self.folder)]
            sys.modules[package] = importlib.util.module_from_spec(spec)
        try:
            module = importlib.import_module(f"{package}.{module_name}")
        except Exception as exc:  # the submission's own import error, whatever it is
            raise SubmissionError(f"{where}: import failed: {type(exc).__name__}: {exc}") from exc
        cls = getattr(module, class_name, None)
        if cls is None:
            raise SubmissionError(f"{where}: module has no class {class_name!r}")
        check_intervention_class(cls, self.spec, where)
        return cls

    def instantiate(self) -> Intervention:
        cls = self.load_class()
        try:
            return cls()
        except Exception as exc:
            raise SubmissionError(
                f"{self.folder / SUBMISSION_FILE}: constructing {cls.__name__}() failed: {type(exc).__name__}: {exc}"
            ) from exc


def check_intervention_class(cls: Any, spec: SubmissionSpec, where: str) -> None:
    """The class follows the API: subclass, name and category as in the YAML, an apply method."""
    if not (inspect.isclass(cls) and issubclass(cls, Intervention)):
        raise SubmissionError(f"{where}: {cls!r} is not a subclass of benchmark.api.Intervention")
    if getattr(cls, "name", None) != spec.name:
        raise SubmissionError(
            f"{where}: class name attribute {getattr(cls, 'name', None)!r} != YAML name {spec.name!r} "
            f"(set `name = {spec.name!r}` in class {getattr(cls, '__name__', cls)}, or rename the YAML's `name`)"
        )
    category = getattr(cls, "category", None)
    if category is None or Category(category) != spec.category:
        raise SubmissionError(f"{where}: class category {category!r} != YAML category {spec.category.value!r}")
    apply = getattr(cls, "apply", None)
    if apply is None or apply is Intervention.apply:
        raise SubmissionError(f"{where}: class does not implement apply(model, tokenizer, context)")
    params = list(inspect.signature(apply).parameters)
    if len(params) < 4:
        raise SubmissionError(f"{where}: apply must take (self, model, tokenizer, context), has {params}")


def load_submission(folder: str | Path) -> Submission:
    """Read and check ``folder/submission.yaml`` (schema only; the class is imported lazily)."""
    folder = Path(folder).expanduser().resolve()
    path = folder / SUBMISSION_FILE
    if not folder.is_dir():
        raise SubmissionError(f"{folder}: not a folder")
    if not path.exists() and not path.is_symlink():
        raise SubmissionError(f"{path}: file not found (every submission folder needs one)")
    try:
        raw = read_yaml_bounded(path)
        sha256 = folder_sha256(folder)  # also refuses symlinks out of the folder and special files
    except FolderProblem as exc:
        raise SubmissionError(str(exc)) from None
    if not isinstance(raw, dict):
        raise SubmissionError(f"{path}: must be a mapping of fields, got {type(raw).__name__}")
    try:
        spec = SubmissionSpec.model_validate(raw)
    except ValidationError as exc:
        raise SubmissionError(_format_validation_error(path, exc)) from None
    return Submission(folder=folder, spec=spec, sha256=sha256)


def discover(root: str | Path) -> list[Submission]:
    """Every submission folder directly under ``root`` (sorted by name)."""
    root = Path(root)
    subs = [load_submission(p.parent) for p in sorted(root.glob(f"*/{SUBMISSION_FILE}"))]
    names = [s.name for s in subs]
    dupes = {n for n in names if names.count(n) > 1}
    if dupes:
        raise SubmissionError(f"{root}: duplicate submission names {sorted(dupes)}")
    return sorted(subs, key=lambda s: s.name)
