"""Run profiles: named grid sizes, fixed as YAML in ``tasks/profiles/``.

A profile says which model, which interventions at which levels, how large each
evaluation sub-sample is, and the protocol settings. Everything that changes a number
is here, and every record carries the profile's name and its settings.

Profiles do not copy each other: ``extends: <profile>`` starts from another profile's
YAML (after its own ``extends``) and the file says only what differs, in the way
lm-evaluation-harness task files ``include:`` a shared template. The Python defaults
below are the *standard* size tier (the default model, the sizes of ``all-baselines``,
``editing`` and ``unlearning``), so a profile of that tier names its interventions and
little else; ``smoke`` is the small tier that CI-sized profiles extend.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator

from benchmark.paths import tasks_dir


class ProfileError(ValueError):
    """A profile that cannot be used; the message names the file and field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class InterventionChoice(_Strict):
    levels: list[float | int | str] | None = None  # None: the submission's default level
    hyperparameters: dict[str, Any] | None = None  # overrides of the submission's family block


class ProbeSettings(_Strict):
    """Which robustness probes score WMDP again on a copy of every evaluated model (benchmark.probes).

    Part of the evaluation settings, so the evaluation cache key and the cell ids include it.
    """

    run: list[Literal["rtn4", "rtn8", "relearn"]] = Field(default_factory=list)  # empty: no probe
    # the probes score the first n of the suite's WMDP sample per subset (None: all of it); each
    # probe costs about one WMDP evaluation of that size, plus its attack
    wmdp_n_per_subset: int | None = Field(default=20, ge=1)
    group_size: int = Field(default=64, ge=8)  # rtn: input columns per quantization group (576 = 9 x 64)
    relearn_texts: int = Field(default=16, ge=1)  # the fixed corpus: paragraphs of WikiText-2 test
    relearn_steps: int = Field(default=4, ge=1)
    relearn_lr: float = Field(default=5e-5, gt=0)
    relearn_batch_size: int = Field(default=4, ge=1)
    relearn_seq_len: int = Field(default=128, ge=16)

    @field_validator("run")
    @classmethod
    def _distinct(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError(f"each probe at most once, got {value}")
        return value


class EvaluationSettings(_Strict):
    prompt_format: Literal["cloze", "lettered"] = "cloze"
    batch_size: int = Field(default=32, ge=1)  # MCQ: most requests per batch
    mcq_batch_tokens: int = Field(default=2048, ge=64)  # MCQ: most padded tokens per batch
    n_edits: int = Field(default=50, ge=1)
    zsre_batch_size: int = Field(default=25, ge=1)
    mmlu_n: int | None = Field(default=171, ge=1)  # 3 per subject; None: every question
    wmdp_n_per_subset: int | None = Field(default=60, ge=1)
    # MCQ questions longer than this (question + choices, characters) are left out of the
    # sampling pool: the CPU profiles' cost bound (benchmark.data.mcq.within_length). None: all.
    mcq_max_chars: int | None = Field(default=None, ge=100)
    perplexity_seq_len: int = Field(default=512, ge=16)
    perplexity_windows: int | None = Field(default=8, ge=1)
    perplexity_batch_size: int = Field(default=4, ge=1)
    # left out of the dump (cell ids, cache keys, records) while no probe runs, so that profiles
    # without probes keep the ids and cache keys they had before probes existed
    probes: ProbeSettings = Field(default_factory=ProbeSettings, exclude_if=lambda p: not p.run)


class CorporaSettings(_Strict):
    forget_n: int | None = Field(default=128, ge=1)
    retain_n: int | None = Field(default=128, ge=1)
    calibration_n: int | None = Field(default=32, ge=1)
    bio_forget_path: str | None = None


class ProtocolSettings(_Strict):
    # paper: re-compress at the end when a compressor came first, for the compressors whose
    # submission.yaml says reapply_when_first (the paper did it for GPTQ/SparseGPT/Wanda, not AWQ);
    # always / never override that per-submission flag.
    recompress_when_first: Literal["paper", "always", "never"] = "paper"
    pairs: Literal["cross_category"] = "cross_category"
    # 3: the plan adds sequences of three (one intervention from each category, all six orders;
    # docs/SEQUENCES.md). Left out of settings() at 2 so that pair-only profiles keep the cell
    # ids, records and resolved settings they had before the field existed.
    sequence_length: Literal[2, 3] = Field(default=2, exclude_if=lambda v: v == 2)


class TaskResources(_Strict):
    """What one task of the Ray executor (a first step, or a cell's steps and evaluation) asks the cluster for.

    Scheduling only: never part of a result, so left out of :meth:`Profile.settings`.
    """

    num_cpus: float | None = Field(default=None, gt=0)  # None: the run's torch threads (same numerics as local)
    num_gpus: float = Field(default=0, ge=0)
    memory_gb: float | None = Field(default=None, gt=0)


class Profile(_Strict):
    name: str
    description: str = ""
    model: str = "HuggingFaceTB/SmolLM2-135M-Instruct"
    # auto: bfloat16 where this machine runs it fast, float32 otherwise (benchmark/numerics.py)
    dtype: Literal["auto", "bfloat16", "float32", "float16"] = "auto"
    device: str | None = None
    seed: int = 0
    threads: int | None = Field(default=None, ge=1)
    cache_states: bool = True
    interventions: dict[str, InterventionChoice] = Field(default_factory=dict)
    evaluation: EvaluationSettings = Field(default_factory=EvaluationSettings)
    corpora: CorporaSettings = Field(default_factory=CorporaSettings)
    protocol: ProtocolSettings = Field(default_factory=ProtocolSettings)
    resources: TaskResources = Field(
        default_factory=TaskResources, exclude=True
    )  # per Ray task (benchmark.ray_executor)
    _source: str = PrivateAttr(default="")  # the YAML file it was read from, for error lines (never in a record)

    @property
    def source(self) -> str:
        """The file this profile was read from ('' when built in code)."""
        return self._source

    def settings(self) -> dict[str, Any]:
        """The profile as plain data, for records and cell ids."""
        return self.model_dump(mode="json")


def profiles_dir() -> Path:
    return tasks_dir() / "profiles"


def available_profiles() -> list[str]:
    return sorted(p.stem for p in profiles_dir().glob("*.yaml"))


NOT_INHERITED = ("name", "description")  # each profile says who it is
REPLACED_WHOLE = ("interventions",)  # a grid's interventions are its own list, never a union with the parent's
MAX_EXTENDS_DEPTH = 8


def _profile_path(name_or_path: str, relative_to: Path | None = None) -> Path:
    path = Path(name_or_path)
    if not path.suffix:
        return profiles_dir() / f"{name_or_path}.yaml"
    if not path.is_absolute() and relative_to is not None:
        return relative_to / path
    return path


def _merge(parent: dict[str, Any], child: dict[str, Any]) -> dict[str, Any]:
    """``child`` over ``parent``: mappings merge key by key, anything else (lists, null) replaces."""
    out = dict(parent)
    for key, value in child.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and key not in REPLACED_WHOLE:
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _read_raw(path: Path, chain: tuple[Path, ...] = ()) -> dict[str, Any]:
    """The profile's YAML with its ``extends:`` chain resolved (parent first, this file over it)."""
    if not path.exists():
        raise ProfileError(f"profile {str(path)!r} not found (known: {', '.join(available_profiles())})")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ProfileError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ProfileError(f"{path}: must be a mapping of fields, got {type(raw).__name__}")
    if isinstance(raw.get("interventions"), dict):
        raw["interventions"] = {k: (v or {}) for k, v in raw["interventions"].items()}
    parent_name = raw.pop("extends", None)
    if parent_name is None:
        return raw
    if not isinstance(parent_name, str) or not parent_name:
        raise ProfileError(f"{path}: field 'extends': must name one profile, got {parent_name!r}")
    parent_path = _profile_path(parent_name, path.parent).resolve()
    if parent_path in chain or parent_path == path.resolve():
        raise ProfileError(f"{path}: field 'extends': {parent_name!r} extends this profile again (a cycle)")
    if len(chain) >= MAX_EXTENDS_DEPTH:
        raise ProfileError(f"{path}: field 'extends': more than {MAX_EXTENDS_DEPTH} levels of extends")
    if not parent_path.exists():
        raise ProfileError(
            f"{path}: field 'extends': profile {parent_name!r} not found (known: {', '.join(available_profiles())})"
        )
    parent = _read_raw(parent_path, chain + (path.resolve(),))
    for key in NOT_INHERITED:
        parent.pop(key, None)
    return _merge(parent, raw)


def load_profile(name_or_path: str) -> Profile:
    """A profile by name (``tasks/profiles/<name>.yaml``) or by path to a YAML file, its ``extends:`` resolved."""
    path = _profile_path(name_or_path)
    if not path.exists():
        raise ProfileError(f"profile {name_or_path!r} not found (known: {', '.join(available_profiles())})")
    raw = _read_raw(path)
    try:
        profile = Profile.model_validate(raw)
        profile._source = str(path)
        return profile
    except ValidationError as exc:
        problems = "; ".join(f"field '{'.'.join(str(p) for p in e['loc'])}': {e['msg']}" for e in exc.errors())
        raise ProfileError(f"{path}: {problems}") from None
