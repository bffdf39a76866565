"""Text corpora handed to interventions: forget/retain (unlearning) and calibration (compression).

Online the forget corpus is ``cais/wmdp-corpora`` (cyber-forget is public; bio-forget is
gated, so a local JSONL path can be given), retain text is WikiText-2 *train*, and
calibration text is C4. Offline:

- forget: a stand-in made of the WMDP questions of the fixed forget part
  (:mod:`benchmark.data.wmdp_split`), rendered as text; WMDP is then scored on the other
  half only, and a development part of the non-scored half is never rendered (it is for
  choosing hyperparameters). Every record names the stand-in.
- retain: the Wikipedia extract in ``calibration/exllamav2_wiki.utf8``. Not WikiText-2
  test, which is where perplexity is measured.
- calibration: ``calibration/exllamav2_c4.utf8`` (C4-style web documents).

Sampling is seeded and the same for every cell of a grid.
"""

from __future__ import annotations

import json
import logging
import random
import re
from dataclasses import dataclass
from pathlib import Path

from benchmark.data.sources import DataSource, DataUnavailableError, file_sha256
from benchmark.data.wmdp_split import DEV, FORGET, render_question_as_text, standin_role
from benchmark.hub import hub_reachable
from benchmark.paths import ENV_DATA_DIR
from benchmark.paths import data_dir as resolve_data_dir

log = logging.getLogger(__name__)

STANDIN_NAME = "standin:wmdp-questions-forget-part"


@dataclass(frozen=True)
class Corpus:
    """A list of texts and where they came from (recorded with every result)."""

    name: str
    texts: tuple[str, ...]
    source: DataSource

    def describe(self) -> dict:
        """Provenance for records: the corpus name stays ``name``; the origin is ``source``/``location``."""
        origin = self.source.describe()
        return {
            "name": self.name,
            "n_texts": len(self.texts),
            "source": origin["source"],
            "location": origin["name"],
            "revision": origin["revision"],
        }


def _sample(texts: list[str], n: int | None, seed: int) -> tuple[str, ...]:
    texts = [t for t in texts if t.strip()]
    if n is None or n >= len(texts):
        return tuple(texts)
    rng = random.Random(seed)
    return tuple(texts[i] for i in sorted(rng.sample(range(len(texts)), n)))


def _need_local(explicit: str | Path | None, what: str) -> Path:
    folder = resolve_data_dir(explicit)
    if folder is None:
        raise DataUnavailableError(
            f"{what}: the Hub is not reachable and no local data directory was given (--data-dir or ${ENV_DATA_DIR})"
        )
    return folder


def _hub_mode(explicit_data_dir: str | Path | None) -> bool:
    return explicit_data_dir is None and resolve_data_dir(None) is None and hub_reachable()


def load_forget_corpus(
    n: int | None,
    seed: int,
    data_dir: str | Path | None = None,
    bio_forget_path: str | Path | None = None,
) -> Corpus:
    """Forget texts for unlearning: WMDP corpora online, the question stand-in offline."""
    if bio_forget_path is not None or _hub_mode(data_dir):
        from datasets import load_dataset

        texts: list[str] = []
        parts = []
        cyber = load_dataset("cais/wmdp-corpora", "cyber-forget-corpus", split="train")
        texts += [row["text"] for row in cyber]
        parts.append("cais/wmdp-corpora:cyber-forget-corpus")
        if bio_forget_path is not None:
            with open(bio_forget_path, encoding="utf-8") as fh:
                for lineno, line in enumerate(fh, 1):
                    if line.strip():
                        try:
                            texts.append(json.loads(line)["text"])
                        except (json.JSONDecodeError, KeyError):
                            raise DataUnavailableError(
                                f"{bio_forget_path}:{lineno}: expected JSON with a 'text' field"
                            ) from None
            parts.append(f"bio-forget:{bio_forget_path}")
        source = DataSource("hub", "+".join(parts), None)
        log.info("forget corpus: %s", source.name)
        return Corpus("wmdp-corpora", _sample(texts, n, seed), source)

    from benchmark.data.mcq import load_wmdp

    folder = _need_local(data_dir, "forget corpus")
    texts = []
    for subset in ("bio", "cyber"):
        items, _ = load_wmdp(subset, folder)
        texts += [
            render_question_as_text(it.question, list(it.choices), it.answer)
            for it in items
            if standin_role(it.question) == FORGET
        ]
    log.info("forget corpus: offline stand-in from the forget part of the WMDP questions (%d texts)", len(texts))
    return Corpus(
        STANDIN_NAME,
        _sample(texts, n, seed),
        DataSource("local", str(folder / "wmdp"), f"sha256:{file_sha256(folder / 'wmdp')}"),
    )


def _paragraphs(text: str, min_chars: int) -> list[str]:
    return [p.strip() for p in re.split(r"\n\s*\n|\n", text) if len(p.strip()) >= min_chars]


def load_retain_corpus(n: int | None, seed: int, data_dir: str | Path | None = None) -> Corpus:
    """Retain texts: WikiText-2 train online; a Wikipedia extract offline (never the perplexity test set)."""
    if _hub_mode(data_dir):
        from datasets import load_dataset

        rows = load_dataset("wikitext", "wikitext-2-raw-v1", split="train")
        texts = [r["text"] for r in rows if len(r["text"].strip()) >= 200]
        return Corpus(
            "wikitext-2-train", _sample(texts, n, seed), DataSource("hub", "wikitext/wikitext-2-raw-v1:train", None)
        )
    folder = _need_local(data_dir, "retain corpus")
    path = folder / "calibration" / "exllamav2_wiki.utf8"
    if not path.exists():
        raise DataUnavailableError(f"retain corpus: {path} not found in the data directory")
    raw = re.sub(r"</?doc[^>]*>", "\n", path.read_text(encoding="utf-8"))
    texts = _paragraphs(raw, min_chars=200)
    log.info("retain corpus: %s (%d paragraphs)", path, len(texts))
    return Corpus(
        "wikipedia-extract", _sample(texts, n, seed), DataSource("local", str(path), f"sha256:{file_sha256(path)}")
    )


def load_calibration_corpus(n: int | None, seed: int, data_dir: str | Path | None = None) -> Corpus:
    """Calibration texts for compression: C4 online, the local C4-style documents offline."""
    if _hub_mode(data_dir):
        from datasets import load_dataset

        rows = load_dataset(
            "allenai/c4", data_files={"validation": "en/c4-validation.00000-of-00008.json.gz"}, split="validation"
        )
        texts = [r["text"] for r in rows.select(range(min(len(rows), 5000)))]
        return Corpus("c4", _sample(texts, n, seed), DataSource("hub", "allenai/c4:en/validation-00000", None))
    folder = _need_local(data_dir, "calibration corpus")
    path = folder / "calibration" / "exllamav2_c4.utf8"
    if not path.exists():
        raise DataUnavailableError(f"calibration corpus: {path} not found in the data directory")
    texts = [t for t in path.read_text(encoding="utf-8").split("\n") if len(t.strip()) >= 200]
    log.info("calibration corpus: %s (%d documents)", path, len(texts))
    return Corpus("c4-local", _sample(texts, n, seed), DataSource("local", str(path), f"sha256:{file_sha256(path)}"))


def load_wmdp_dev_questions(data_dir: str | Path | None = None) -> dict[str, list]:
    """The development part of the WMDP questions per subset (never scored, never unlearned offline).

    Unlearners' hyperparameters for small models are chosen by WMDP accuracy on these.
    """
    from benchmark.data.mcq import load_wmdp

    folder = _need_local(data_dir, "WMDP development questions")
    out = {}
    for subset in ("bio", "cyber"):
        items, _ = load_wmdp(subset, folder)
        out[subset] = [it for it in items if standin_role(it.question) == DEV]
    return out
