"""Run profiles: named grid sizes, fixed as YAML in ``tasks/profiles/``.

A profile says which model, which interventions at which levels, how large each
evaluation sub-sample is, and the protocol settings. Everything that changes a number
is here, and every record carries the profile's name and its settings.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from benchmark.paths import tasks_dir


class ProfileError(ValueError):
    """A profile that cannot be used; the message names the file and field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class InterventionChoice(_Strict):
    levels: list[float | int | str] | None = None  # None: the submission's default level
    hyperparameters: dict[str, Any] | None = None  # overrides of the submission's family block


class EvaluationSettings(_Strict):
    prompt_format: Literal["cloze", "lettered"] = "cloze"
    batch_size: int = Field(default=32, ge=1)  # MCQ: most requests per batch
    mcq_batch_tokens: int = Field(default=2048, ge=64)  # MCQ: most padded tokens per batch
    n_edits: int = Field(default=50, ge=1)
    zsre_batch_size: int = Field(default=16, ge=1)
    mmlu_n: int | None = Field(default=None, ge=1)  # None: every question
    wmdp_n_per_subset: int | None = Field(default=None, ge=1)
    # MCQ questions longer than this (question + choices, characters) are left out of the
    # sampling pool: the CPU profiles' cost bound (benchmark.data.mcq.within_length). None: all.
    mcq_max_chars: int | None = Field(default=None, ge=100)
    perplexity_seq_len: int = Field(default=512, ge=16)
    perplexity_windows: int | None = Field(default=32, ge=1)
    perplexity_batch_size: int = Field(default=4, ge=1)


class CorporaSettings(_Strict):
    forget_n: int | None = Field(default=256, ge=1)
    retain_n: int | None = Field(default=256, ge=1)
    calibration_n: int | None = Field(default=128, ge=1)
    bio_forget_path: str | None = None


class ProtocolSettings(_Strict):
    # paper: re-compress at the end when a compressor came first, for the compressors whose
    # submission.yaml says reapply_when_first (the paper did it for GPTQ/SparseGPT/Wanda, not AWQ);
    # always / never override that per-submission flag.
    recompress_when_first: Literal["paper", "always", "never"] = "paper"
    pairs: Literal["cross_category"] = "cross_category"


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

    def settings(self) -> dict[str, Any]:
        """The profile as plain data, for records and cell ids."""
        return self.model_dump(mode="json")


def profiles_dir() -> Path:
    return tasks_dir() / "profiles"


def available_profiles() -> list[str]:
    return sorted(p.stem for p in profiles_dir().glob("*.yaml"))


def load_profile(name_or_path: str) -> Profile:
    """A profile by name (``tasks/profiles/<name>.yaml``) or by path to a YAML file."""
    path = Path(name_or_path)
    if not path.suffix:
        path = profiles_dir() / f"{name_or_path}.yaml"
    if not path.exists():
        raise ProfileError(f"profile {name_or_path!r} not found (known: {', '.join(available_profiles())})")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ProfileError(f"{path}: not valid YAML: {exc}") from None
    if isinstance(raw, dict) and isinstance(raw.get("interventions"), dict):
        raw["interventions"] = {k: (v or {}) for k, v in raw["interventions"].items()}
    try:
        return Profile.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"field '{'.'.join(str(p) for p in e['loc'])}': {e['msg']}" for e in exc.errors()
        )
        raise ProfileError(f"{path}: {problems}") from None
