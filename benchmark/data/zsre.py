"""zsRE knowledge-editing records in the MEND format, and the seeded draw of edit sets.

The paper (Composable Interventions, Kolbeinsson et al. 2024) applies batches of zsRE
edits taken from the MEND split. A MEND record holds the question (``src``), the new
answer the edit must install (``alt``), a paraphrase of the question (``rephrase``), an
unrelated Natural Questions prompt (``loc``, "nq question: ...") and its answer
(``loc_ans``). ``record_id`` is the record's index in its file, so an edit set is named
by ids and can be drawn again identically on any machine holding the same file.
"""

from __future__ import annotations

import json
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmark.api import EditRequest
from benchmark.data.sources import DataSource, choose_source, hub_commit, log_source
from benchmark.tasks import load_task

__all__ = [
    "ZsreRecord",
    "ZsreFormatError",
    "load_zsre",
    "parse_zsre_records",
    "sample_edits",
    "is_development_record",
    "DEV_SPLIT",
    "DEFAULT_HUB_DATASET",
    "DEFAULT_HUB_FILE",
    "LOCAL_FILE",
]

# Where the records come from: tasks/zsre.yaml. Online, the MEND evaluation split (19,086
# records) as a JSON file in a public Hub dataset repo: zsRE is not published as a
# `datasets` builder, so the file is downloaded and parsed with the same code as the local
# copy. The arguments of load_zsre override both to use another copy.
_TASK = load_task("zsre")
LOCAL_FILE = _TASK.local_path()
DEFAULT_HUB_DATASET: str = _TASK.source.hub.dataset or ""
DEFAULT_HUB_FILE: str = _TASK.source.hub.file or ""

_FIELDS = ("src", "alt", "rephrase", "loc", "loc_ans", "subject")

DEV_SALT = "compose-bench/zsre-dev/v1"
DEV_SPLIT = "sha256(salt + prompt)[0] % 8 == 0 is development (about 1/8); evaluation never draws it"


def is_development_record(prompt: str) -> bool:
    """True for the fixed development part of zsRE (about 1/8 of the records).

    Editors' hyperparameters for small models are chosen on development edits; evaluation
    edit sets are drawn from the rest only, so tuning never sees a scored edit. The split
    is a pure function of the question text, the same on every machine and seed.
    """
    import hashlib

    return hashlib.sha256(f"{DEV_SALT}\n{prompt.strip()}".encode()).digest()[0] % 8 == 0


class ZsreFormatError(ValueError):
    """A zsRE file or record does not follow the MEND format."""


@dataclass(frozen=True)
class ZsreRecord:
    """One zsRE edit with everything needed to score it.

    Attributes:
        record_id: index of the record in its source file.
        subject: the entity the fact is about.
        prompt: the question the edit targets (MEND ``src``).
        target: the new answer (MEND ``alt``).
        rephrase: a paraphrase of ``prompt`` (generalization).
        loc: an unrelated prompt (locality), kept with its "nq question: " prefix as
            EasyEdit and ROME do.
        loc_ans: the Natural Questions answer to ``loc``.
    """

    record_id: int
    subject: str
    prompt: str
    target: str
    rephrase: str
    loc: str
    loc_ans: str

    def to_edit_request(self) -> EditRequest:
        """The part of the record an editor may see: the edit itself, no scored prompt (rephrase, locality)."""
        return EditRequest(prompt=self.prompt, target=self.target, subject=self.subject, record_id=self.record_id)


def parse_zsre_records(raw: Any, origin: str) -> list[ZsreRecord]:
    """Validate MEND-format records and convert them; errors name ``origin`` and the index.

    Fields are stripped of surrounding whitespace: a few records carry a trailing space,
    which would otherwise double the space the scorer puts between prompt and target.
    """
    if not isinstance(raw, list):
        raise ZsreFormatError(f"{origin}: expected a JSON list of zsRE records, got {type(raw).__name__}")
    records: list[ZsreRecord] = []
    for index, item in enumerate(raw):
        if not isinstance(item, dict):
            raise ZsreFormatError(f"{origin}: record {index} is a {type(item).__name__}, not an object")
        values: dict[str, str] = {}
        for key in _FIELDS:
            value = item.get(key)
            if not isinstance(value, str) or not value.strip():
                problem = "missing" if key not in item else f"not a non-empty string ({value!r})"
                raise ZsreFormatError(f"{origin}: record {index}: field {key!r} is {problem}")
            values[key] = value.strip()
        records.append(
            ZsreRecord(
                record_id=index,
                subject=values["subject"],
                prompt=values["src"],
                target=values["alt"],
                rephrase=values["rephrase"],
                loc=values["loc"],
                loc_ans=values["loc_ans"],
            )
        )
    return records


def _read_json(path: Path) -> Any:
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except json.JSONDecodeError as exc:
        raise ZsreFormatError(f"{path}: not valid JSON ({exc})") from exc


def load_zsre(
    data_dir: str | os.PathLike | None = None,
    *,
    hub_dataset: str = DEFAULT_HUB_DATASET,
    hub_file: str = DEFAULT_HUB_FILE,
    revision: str | None = None,
) -> tuple[list[ZsreRecord], DataSource]:
    """All zsRE records of the Hub copy (online, no data dir) or of ``zsre/zsre_mend_edit.json``.

    The two copies differ (19,086 vs the 1,037-record subset), so record ids only mean
    something together with the returned source.
    """
    source, path = choose_source(
        "zsRE", local_relpath=LOCAL_FILE, hub_name=hub_dataset, revision=revision, data_dir_arg=data_dir
    )
    if path is not None:
        records = parse_zsre_records(_read_json(path), str(path))
    else:
        from huggingface_hub import hf_hub_download

        downloaded = Path(hf_hub_download(hub_dataset, hub_file, repo_type="dataset", revision=revision))
        records = parse_zsre_records(_read_json(downloaded), f"{hub_dataset}/{hub_file}")
        source = DataSource("hub", f"{hub_dataset}/{hub_file}", hub_commit(hub_dataset, revision))
    log_source("zsRE", source, len(records))
    return records, source


def sample_edits(
    records: list[ZsreRecord],
    n: int,
    seed: int,
    exclude_ids: frozenset[int] = frozenset(),
    split: str = "evaluation",
) -> list[ZsreRecord]:
    """Draw ``n`` distinct records of ``split`` with ``random.Random(seed)``, skipping ``exclude_ids``.

    ``split`` is ``"evaluation"`` (the default: every record outside the development part)
    or ``"development"`` (see :func:`is_development_record`).

    The same records, seed and exclusions give the same edits in the same order, which
    is what lets both orders of a pair (and every cell of a grid) share an edit set.
    """
    if n < 0:
        raise ValueError(f"cannot sample a negative number of edits ({n})")
    if split not in ("evaluation", "development"):
        raise ValueError(f"unknown zsRE split {split!r}: use evaluation or development")
    want_dev = split == "development"
    pool = [r for r in records if r.record_id not in exclude_ids and is_development_record(r.prompt) == want_dev]
    if n > len(pool):
        raise ValueError(
            f"asked for {n} zsRE edits but only {len(pool)} {split} records are available "
            f"({len(records)} loaded, {sum(r.record_id in exclude_ids for r in records)} excluded, "
            f"{sum(is_development_record(r.prompt) != want_dev for r in records)} in the other split)"
        )
    return random.Random(seed).sample(pool, n)
