"""Markdown summary of a pull request's CI run (validate output + smoke records), for the PR comment.

Reads ``<dir>/validate.txt`` (what ``compose-bench validate`` printed) and
``<dir>/smoke/records.jsonl``; prints Markdown. Record fields are untrusted text (a
submission's error message): they are escaped so a comment cannot inject Markdown or HTML.
"""

from __future__ import annotations

import html
import sys
from pathlib import Path

from benchmark.records import RecordsError, read_records

SCORES = ("edit_success", "wmdp", "mmlu", "perplexity")


def _cell(text: object) -> str:
    return html.escape(str(text)).replace("|", "\\|").replace("\n", " ").replace("`", "'")[:300]


def summary(folder: Path) -> str:
    lines = ["## compose-bench: submission check", ""]
    validate = folder / "validate.txt"
    if validate.exists():
        lines += ["### validate", "", "```text", validate.read_text(errors="replace").replace("```", "'''")[-6000:], "```", ""]
    records_file = folder / "smoke" / "records.jsonl"
    try:
        records = read_records(records_file) if records_file.exists() else []
    except RecordsError as exc:
        records, lines = [], lines + [f"records unreadable: {_cell(exc)}", ""]
    if records:
        failed = sum(r["status"] != "ok" for r in records)
        lines += [f"### smoke grid: {len(records)} cells, {failed} failed", "",
                  "| cell | status | " + " | ".join(SCORES) + " | reason |", "|---" * (len(SCORES) + 3) + "|"]
        for r in records:
            scores = [f"{r['scores'][k]:.3f}" if isinstance(r["scores"].get(k), (int, float)) else "" for k in SCORES]
            lines.append(f"| {_cell(r['label'])} | {r['status']} | " + " | ".join(scores) + f" | {_cell(r.get('error') or '')} |")
    elif not validate.exists():
        lines.append("nothing was run")
    return "\n".join(lines) + "\n"


def main() -> None:  # pragma: no cover - thin wrapper
    print(summary(Path(sys.argv[1] if len(sys.argv) > 1 else "ci-out")))


if __name__ == "__main__":
    main()
