"""Two-step prefixes of sequences of three: computed once, shared by the triples that start with them.

The runner already computes the state after a first intervention once per group of cells
(:meth:`benchmark.runner.Runner._run_group`). A sequence of three ``A -> B -> C`` also shares
its first two steps with the pair ``A -> B`` and with every other triple ``A -> B -> C'``
(another level of the third category). :class:`PrefixKeeper` holds the state after ``A -> B``
(before any re-applied compression, which belongs to the cell, not to the prefix) from the
moment one cell of the group computes it until a cell with another prefix comes, so each
prefix is applied once per group. The plan orders cells so that a pair is followed by the
triples that start with it (:func:`benchmark.plan.build_plan`), which keeps one prefix in
memory at a time: one model state (0.5 GB in float32 for the 135M default model).

It lives in memory only: a killed run recomputes the prefix of its unfinished triples (the
state cache of ``benchmark.caches`` still turns that into a lookup when caches are on).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from benchmark.plan import Cell, Step

PREFIX_LENGTH = 2


def prefix_of(cell: Cell) -> tuple[Step, ...] | None:
    """The two-step prefix a cell can share, or None for cells shorter than that."""
    return cell.steps[:PREFIX_LENGTH] if len(cell.steps) >= PREFIX_LENGTH else None


@dataclass
class PrefixKeeper:
    """The state after the first two steps, kept while the cells that need it run.

    ``wanted`` is every prefix that at least one triple of the group starts with; a pair whose
    steps are such a prefix offers its state before any re-application, and a triple takes it.
    """

    wanted: set[tuple[Step, ...]]
    _steps: tuple[Step, ...] | None = None
    _state: dict[str, torch.Tensor] | None = None
    _entries: list[dict] = field(default_factory=list)
    computed: int = 0  # prefixes applied (each one once per group)
    served: int = 0  # triples that started from a kept prefix

    @classmethod
    def for_group(cls, cells: list[Cell]) -> PrefixKeeper:
        """A keeper for one group of cells (those with the same first step)."""
        return cls({p for c in cells if len(c.steps) > PREFIX_LENGTH and (p := prefix_of(c)) is not None})

    def take(self, cell: Cell) -> tuple[dict[str, torch.Tensor], list[dict]] | None:
        """The kept state and the prefix's timing entries (marked reused) when ``cell`` extends the kept prefix."""
        if len(cell.steps) <= PREFIX_LENGTH or self._state is None or prefix_of(cell) != self._steps:
            return None
        self.served += 1
        return self._state, [dict(e, reused_prefix=True) for e in self._entries]

    def wants(self, cell: Cell, applied: int) -> bool:
        """Whether the model of ``cell`` after ``applied`` of its steps is a prefix worth keeping now."""
        return applied == PREFIX_LENGTH and prefix_of(cell) in self.wanted and prefix_of(cell) != self._steps

    def keep(self, cell: Cell, model: torch.nn.Module, entries: list[dict]) -> None:
        """Keep ``model``'s state (a copy: the cell goes on changing the model) as the prefix of ``cell``."""
        self._steps = prefix_of(cell)
        self._state = {k: v.detach().to("cpu").clone() for k, v in model.state_dict().items()}
        self._entries = [dict(e) for e in entries[:PREFIX_LENGTH]]
        self.computed += 1

    def drop(self) -> None:
        """Free the kept state (the group is done)."""
        self._steps, self._state, self._entries = None, None, []
