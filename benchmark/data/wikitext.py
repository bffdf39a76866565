"""WikiText-2 (raw, v1) test split as one string, for perplexity.

The rows are joined with ``"\\n\\n"``, the convention of the transformers perplexity
guide and of the GPTQ/SparseGPT/Wanda evaluation scripts, so our perplexities are
comparable with the numbers those papers report (at the same window length).
"""

from __future__ import annotations

import json
import os

from benchmark.data.sources import DataSource, choose_source, hub_commit, log_source

__all__ = ["load_wikitext_test", "WIKITEXT_HUB", "WIKITEXT_CONFIG"]

# "wikitext" on the Hub now redirects here; the canonical id resolves without a redirect.
WIKITEXT_HUB = "Salesforce/wikitext"
WIKITEXT_CONFIG = "wikitext-2-raw-v1"
LOCAL_FILE = "wikitext-2-raw/wikitext-2-raw-v1_test_rows.jsonl"


def load_wikitext_test(
    data_dir: str | os.PathLike | None = None, *, revision: str | None = None
) -> tuple[str, DataSource]:
    """The test split's rows (empty ones included, as the dataset yields them) joined by blank lines."""
    source, path = choose_source(
        "WikiText-2",
        local_relpath=LOCAL_FILE,
        hub_name=WIKITEXT_HUB,
        hub_config=WIKITEXT_CONFIG,
        revision=revision,
        data_dir_arg=data_dir,
    )
    if path is not None:
        rows: list[str] = []
        with open(path, encoding="utf-8") as fh:
            for line_no, line in enumerate(fh):
                try:
                    row = json.loads(line)
                    rows.append(row["text"])
                except (json.JSONDecodeError, KeyError, TypeError) as exc:
                    raise ValueError(f"{path}: line {line_no + 1} is not a {{\"text\": ...}} row ({exc})") from exc
                if not isinstance(rows[-1], str):
                    raise ValueError(f"{path}: line {line_no + 1}: text is not a string")
    else:
        from datasets import load_dataset

        rows = list(load_dataset(WIKITEXT_HUB, WIKITEXT_CONFIG, split="test", revision=revision)["text"])
        source = DataSource("hub", WIKITEXT_HUB, hub_commit(WIKITEXT_HUB, revision), WIKITEXT_CONFIG)
    log_source("WikiText-2 test", source, len(rows))
    return "\n\n".join(rows), source
