"""WikiText-2 (raw, v1) test split as one string, for perplexity.

The rows are joined with ``"\\n\\n"``, the convention of the transformers perplexity
guide and of the GPTQ/SparseGPT/Wanda evaluation scripts, so our perplexities are
comparable with the numbers those papers report (at the same window length).
"""

from __future__ import annotations

import json
import os

from benchmark.data.sources import DataSource, choose_source, hub_commit, log_source
from benchmark.tasks import load_task

__all__ = ["load_wikitext_test"]


def load_wikitext_test(
    data_dir: str | os.PathLike | None = None, *, revision: str | None = None
) -> tuple[str, DataSource]:
    """The test split's rows (empty ones included, as the dataset yields them) joined by blank lines.

    Where they come from is ``tasks/wikitext.yaml``.
    """
    task = load_task("wikitext")
    hub = task.source.hub
    assert hub.dataset is not None, "tasks/wikitext.yaml names its Hub dataset"
    source, path = choose_source(
        "WikiText-2",
        local_relpath=task.local_path(),
        hub_name=hub.dataset,
        hub_config=hub.config,
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
                    raise ValueError(f'{path}: line {line_no + 1} is not a {{"text": ...}} row ({exc})') from exc
                if not isinstance(rows[-1], str):
                    raise ValueError(f"{path}: line {line_no + 1}: text is not a string")
    else:
        from datasets import load_dataset

        rows = list(load_dataset(hub.dataset, hub.config, split=hub.split, revision=revision)["text"])
        source = DataSource("hub", hub.dataset, hub_commit(hub.dataset, revision), hub.config)
    log_source("WikiText-2 test", source, len(rows))
    return "\n\n".join(rows), source
