"""The public intervention API: the one module a submission imports.

A submission is a class that subclasses :class:`Intervention`, sets ``name`` and
``category``, declares its hyperparameters as a :class:`Hyperparameters` model (typed
fields with ranges, defaults and one-line descriptions) and implements
:meth:`Intervention.apply`. The harness checks every block of ``submission.yaml`` (and a
profile's overrides) against that model before any model loads, so a wrong type or an
out-of-range value is one line from ``compose-bench validate``, not a failed cell. It builds an
:class:`InterventionContext` holding exactly what the category needs (edit
requests, forget/retain texts, calibration texts) plus the seed, device, dtype
and the hyperparameters read from the submission's YAML. ``apply`` returns the
model it leaves behind (usually the same object, changed in place).

Nothing else in ``benchmark`` is part of the submitter's contract; keep this file
small and stable.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, ClassVar, Mapping, Self, Sequence

import torch
from pydantic import BaseModel, ConfigDict, ValidationError

__all__ = [
    "Category",
    "EditRequest",
    "Hyperparameters",
    "InterventionContext",
    "Intervention",
    "InterventionError",
]


class Category(str, enum.Enum):
    """The kind of change an intervention makes; decides what its context holds."""

    EDITING = "editing"
    UNLEARNING = "unlearning"
    COMPRESSION = "compression"
    MULTI = "multi"


@dataclass(frozen=True)
class EditRequest:
    """One zsRE edit: make ``prompt`` continue with ``target``.

    ``subject`` is the entity the fact is about (editors such as MEMIT locate
    its last token); ``record_id`` names the edit in error messages. That is all
    an editor gets: the paraphrase that scores generalization and the locality
    prompts stay with the harness, since a method that saw them could fit the
    score instead of the fact.
    """

    prompt: str
    target: str
    subject: str
    record_id: int = -1


class InterventionError(RuntimeError):
    """Raised by an intervention to fail its cell with a readable reason."""


class Hyperparameters(BaseModel):
    """Base of an intervention's declared hyperparameters: subclass it, one typed field per knob.

    Write each knob as ``name: type = Field(default, ge=..., le=..., description="...")``;
    a knob without a default is required (e.g. the grid level ``sparsity``, which the
    harness merges in from ``levels``). The model is strict (``5.0`` is not an integer,
    ``"1e-3"`` is not a number, ``true`` is not a number), rejects names it does not
    declare (a typo is an error, not a silently ignored setting) and refuses NaN and
    infinity. The harness validates ``submission.yaml`` against it in ``validate`` and
    before a run loads its model; ``apply`` reads the typed values with
    :meth:`from_context`. ``compose-bench list interventions`` prints the fields.
    """

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False)

    @classmethod
    def from_context(cls, context: "InterventionContext") -> Self:
        """The context's hyperparameters as this model (defaults filled in); a bad value fails the cell in one line."""
        try:
            return cls.model_validate(dict(context.hyperparameters))
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc'])}: {e['msg'].removeprefix('Value error, ')}, got {e.get('input')!r}"
                for e in exc.errors()
            )
            raise InterventionError(f"hyperparameters of {cls.__name__}: {problems}") from None


@dataclass
class InterventionContext:
    """Everything an intervention may use. Fields not meant for its category are empty.

    Attributes:
        hyperparameters: values from ``submission.yaml`` for this model family,
            merged with the level of this grid cell (e.g. ``{"sparsity": 0.25}``).
        edits: edit requests, all applied at once (editing, multi): prompt, subject and
            target only, never a prompt that is scored.
        forget_texts / retain_texts: unlearning corpora (unlearning, multi).
        calibration_texts: plain text samples (compression).
        reference_texts: generic encyclopaedic text that scores no criterion (the retain
            corpus, whole), for statistics such as MEMIT's key second moments (editing,
            multi). A step cannot read the data folder, so this is where such text comes from.
        forget_corpus_name: which forget corpus this is (Hub name or stand-in).
        seed: set before ``apply`` is called; use it for any extra randomness.
        device / dtype: where the model lives and the dtype it was given in.
        model_family: key of the hyperparameter block that was chosen.
        max_seq_len: longest token sequence the harness expects to be used.
    """

    hyperparameters: Mapping[str, Any]
    seed: int
    device: torch.device
    dtype: torch.dtype
    model_family: str
    edits: Sequence[EditRequest] = field(default_factory=tuple)
    forget_texts: Sequence[str] = field(default_factory=tuple)
    retain_texts: Sequence[str] = field(default_factory=tuple)
    calibration_texts: Sequence[str] = field(default_factory=tuple)
    reference_texts: Sequence[str] = field(default_factory=tuple)
    forget_corpus_name: str = ""
    max_seq_len: int = 512

    def hp(self, key: str, default: Any = None) -> Any:
        """A hyperparameter, or ``default`` when the YAML does not set it."""
        return self.hyperparameters.get(key, default)


class Intervention:
    """Base class of every intervention.

    Subclasses set the class attributes ``name``, ``category`` and ``Hyperparameters``
    (their :class:`Hyperparameters` subclass; the base declares no knob, so a submission
    without one may set none) and implement :meth:`apply`. The harness constructs the
    class with no arguments. Quantizers may also implement :meth:`weight_bits` so the
    record can say how many bits the weights hold on average.
    """

    name: ClassVar[str] = ""
    category: ClassVar[Category]
    Hyperparameters: ClassVar[type[Hyperparameters]] = Hyperparameters

    def apply(
        self,
        model: torch.nn.Module,
        tokenizer: Any,
        context: InterventionContext,
    ) -> torch.nn.Module:
        """Change ``model`` and return the model it leaves behind."""
        raise NotImplementedError

    def weight_bits(self, context: InterventionContext) -> float | None:
        """Bits per weight this intervention stores its quantized weights in, or None.

        Quantizers return their bit width; the harness adds the paper's 0.25 bit of
        scale overhead when it reports average bits. Pruners and non-compressors
        return None (average bits is then derived from measured sparsity).
        """
        return None
