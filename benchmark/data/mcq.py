"""Multiple-choice questions (MMLU, WMDP) and their seeded, stratified sub-samples.

Both datasets become one plain type, :class:`McqItem`, so the evaluation code does not
care where a question came from. ``item_id`` is stable across sources (``mmlu/<subject>/
<index within subject>``, ``wmdp_<subset>/<index>``): the Hub's ``cais/mmlu`` ``all``
config lists subjects alphabetically, exactly as the local per-subject files sort.
Sub-samples are stratified by subject so a small profile still covers every subject,
and are a pure function of (items, n, seed) so every cell of a grid scores the same
questions.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import random
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from benchmark.data.sources import DataSource, choose_source, hub_commit, log_source
from benchmark.tasks import load_task

__all__ = [
    "McqItem",
    "McqFormatError",
    "WMDP_SUBSETS",
    "load_mmlu",
    "load_wmdp",
    "stratified_sample",
    "items_sha256",
]

WMDP_SUBSETS = tuple(load_task("wmdp").subsets)  # tasks/wmdp.yaml: bio, cyber, chem
_MMLU_HEADER = ["question", "choice0", "choice1", "choice2", "choice3", "answer"]


class McqFormatError(ValueError):
    """A question file or record is malformed; the message names the file and the row."""


@dataclass(frozen=True)
class McqItem:
    """One multiple-choice question; ``answer`` indexes ``choices``."""

    item_id: str
    question: str
    choices: tuple[str, ...]
    answer: int
    subject: str


def _make_item(item_id: str, question: Any, choices: Any, answer: Any, subject: str, where: str) -> McqItem:
    """Validate one question; ``where`` names file and row for the error message."""
    if not isinstance(question, str) or not question.strip():
        raise McqFormatError(f"{where}: question is missing or empty")
    if not isinstance(choices, (list, tuple)) or len(choices) < 2 or not all(isinstance(c, str) for c in choices):
        raise McqFormatError(f"{where}: choices must be a list of at least two strings, got {choices!r}")
    try:
        index = int(answer)
    except (TypeError, ValueError):
        raise McqFormatError(f"{where}: answer {answer!r} is not an integer") from None
    if isinstance(answer, float) and not answer.is_integer() or not 0 <= index < len(choices):
        raise McqFormatError(f"{where}: answer {answer!r} is not an index into {len(choices)} choices")
    return McqItem(item_id, question, tuple(choices), index, subject)


def _read_mmlu_csv(path: Path, subject: str) -> list[McqItem]:
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if header != _MMLU_HEADER:
            raise McqFormatError(f"{path}: header is {header!r}, expected {','.join(_MMLU_HEADER)}")
        items = []
        for row_no, row in enumerate(reader):
            where = f"{path}: row {row_no}"
            if len(row) != len(_MMLU_HEADER):
                raise McqFormatError(f"{where}: {len(row)} columns, expected {len(_MMLU_HEADER)}")
            items.append(_make_item(f"mmlu/{subject}/{row_no}", row[0], row[1:5], row[5], subject, where))
    return items


def _mmlu_local(folder: Path) -> list[McqItem]:
    files = sorted(folder.glob("*_test.csv"))
    if not files:
        raise McqFormatError(f"{folder}: no <subject>_test.csv files")
    items: list[McqItem] = []
    for path in files:
        items.extend(_read_mmlu_csv(path, path.name[: -len("_test.csv")]))
    return items


def _from_rows(
    rows: Iterable[dict[str, Any]],
    prefix: Callable[[str], str],
    subject_of: Callable[[dict[str, Any]], str],
    origin: str,
) -> list[McqItem]:
    """Convert ``{question, choices, answer[, subject]}`` rows; ids count per subject."""
    counters: dict[str, int] = defaultdict(int)
    items = []
    for index, row in enumerate(rows):
        where = f"{origin}: record {index}"
        if not isinstance(row, dict):
            raise McqFormatError(f"{where}: not an object")
        subject = subject_of(row)
        item_id = f"{prefix(subject)}/{counters[subject]}"
        counters[subject] += 1
        items.append(_make_item(item_id, row.get("question"), row.get("choices"), row.get("answer"), subject, where))
    return items


def load_mmlu(
    data_dir: str | os.PathLike | None = None, *, revision: str | None = None
) -> tuple[list[McqItem], DataSource]:
    """All 14,042 MMLU test questions, from where ``tasks/mmlu.yaml`` says (``cais/mmlu`` ``all`` test, or ``mmlu/test``)."""
    task = load_task("mmlu")
    hub = task.source.hub
    assert hub.dataset is not None, "tasks/mmlu.yaml names its Hub dataset"
    source, path = choose_source(
        "MMLU",
        local_relpath=task.local_path(),
        hub_name=hub.dataset,
        hub_config=hub.config,
        revision=revision,
        data_dir_arg=data_dir,
    )
    if path is not None:
        items = _mmlu_local(path)
    else:
        from datasets import load_dataset

        rows = load_dataset(hub.dataset, hub.config, split=hub.split, revision=revision)
        items = _from_rows(
            rows, lambda s: f"mmlu/{s}", lambda r: r["subject"], f"{hub.dataset} ({hub.config}, {hub.split})"
        )
        source = DataSource("hub", hub.dataset, hub_commit(hub.dataset, revision), hub.config)
    log_source("MMLU", source, len(items))
    return items, source


def load_wmdp(
    subset: str, data_dir: str | os.PathLike | None = None, *, revision: str | None = None
) -> tuple[list[McqItem], DataSource]:
    """WMDP questions of one subset (``bio``, ``cyber`` or ``chem``); subject ``wmdp_<subset>``."""
    if subset not in WMDP_SUBSETS:
        raise ValueError(f"unknown WMDP subset {subset!r}; use one of {list(WMDP_SUBSETS)}")
    subject = f"wmdp_{subset}"
    task = load_task("wmdp")
    hub, config = task.source.hub, task.hub_config(subset)
    assert hub.dataset is not None, "tasks/wmdp.yaml names its Hub dataset"
    source, path = choose_source(
        f"WMDP {subset}",
        local_relpath=task.local_path(subset),
        hub_name=hub.dataset,
        hub_config=config,
        revision=revision,
        data_dir_arg=data_dir,
    )
    if path is not None:
        try:
            with open(path, encoding="utf-8") as fh:
                rows = json.load(fh)
        except json.JSONDecodeError as exc:
            raise McqFormatError(f"{path}: not valid JSON ({exc})") from exc
        if not isinstance(rows, list):
            raise McqFormatError(f"{path}: expected a JSON list of questions")
        origin = str(path)
    else:
        from datasets import load_dataset

        rows = load_dataset(hub.dataset, config, split=hub.split, revision=revision)
        origin = f"{hub.dataset} ({config}, {hub.split})"
        source = DataSource("hub", hub.dataset, hub_commit(hub.dataset, revision), config)
    items = _from_rows(rows, lambda s: s, lambda r: subject, origin)
    log_source(f"WMDP {subset}", source, len(items))
    return items, source


def _allocate(capacity: dict[str, int], n: int, rng: random.Random) -> dict[str, int]:
    """Split ``n`` over subjects as equally as their sizes allow (water-filling).

    Subjects smaller than the equal share give all they have and the rest is shared
    again; the last few leftover items go to subjects drawn with ``rng``.
    """
    quota = {s: 0 for s in capacity}
    open_subjects = sorted(capacity)
    left = n
    while open_subjects and left > 0:
        share = left // len(open_subjects)
        small = [s for s in open_subjects if capacity[s] <= share]
        if not small:
            for s in open_subjects:
                quota[s] = share
            extra = left - share * len(open_subjects)
            for s in rng.sample(open_subjects, extra):
                quota[s] += 1
            break
        for s in small:
            quota[s] = capacity[s]
            left -= capacity[s]
        open_subjects = [s for s in open_subjects if s not in small]
    return quota


def within_length(items: Sequence[McqItem], max_chars: int | None) -> list[McqItem]:
    """The items whose question and choices together hold at most ``max_chars`` characters (``None``: all).

    Why characters, not tokens: the pool must be the same whichever model (tokenizer) is
    evaluated. Why a cap at all: a few WMDP-cyber questions carry kilobytes of code, and on
    a CPU the scored tokens are the evaluation's cost; 27% of WMDP-cyber, 12% of MMLU and
    under 1% of WMDP-bio exceed 1,000 characters, and they held 60% of the default
    sample's tokens.
    """
    if max_chars is None:
        return list(items)
    return [it for it in items if len(it.question) + sum(len(c) for c in it.choices) <= max_chars]


def stratified_sample(items: Sequence[McqItem], n: int | None, seed: int) -> list[McqItem]:
    """``n`` items spread as evenly as possible over subjects; ``None`` means all items.

    Within a subject the items come from a permutation seeded by (seed, subject), so
    raising a subject's quota only adds items. The result keeps the input order, so
    identical input gives identical output.
    """
    if n is None:
        return list(items)
    if n < 0:
        raise ValueError(f"sample size must be >= 0, got {n}")
    if n > len(items):
        raise ValueError(f"asked for {n} questions but only {len(items)} are available")
    positions: dict[str, list[int]] = defaultdict(list)
    for pos, item in enumerate(items):
        positions[item.subject].append(pos)
    quota = _allocate({s: len(p) for s, p in positions.items()}, n, random.Random(seed))
    chosen: list[int] = []
    for subject in sorted(positions):
        pool = positions[subject]
        order = random.Random(f"{seed}/{subject}").sample(range(len(pool)), len(pool))
        chosen.extend(pool[i] for i in order[: quota[subject]])
    return [items[pos] for pos in sorted(chosen)]


def items_sha256(items: Iterable[McqItem]) -> str:
    """A fingerprint of exactly which questions (text, choices, answer) were scored, in order."""
    h = hashlib.sha256()
    for item in items:
        h.update(json.dumps(asdict(item), sort_keys=True, ensure_ascii=False).encode())
        h.update(b"\n")
    return h.hexdigest()
