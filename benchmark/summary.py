"""A markdown summary of a run and of `validate` reports: what CI comments on a pull request.

Every value shown comes from the records (scores, status, one-line reasons); text from a
submission (names, reasons) is escaped so that it cannot break the table or ping people.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from benchmark.metrics import per_cell_columns
from benchmark.record_schema import Record


def _cell(text: Any) -> str:
    value = " ".join(str(text).split())
    for ch in "\\|`*_[]<>":
        value = value.replace(ch, "\\" + ch)
    return value.replace("@", "@\u200b")[:300]


def _number(value: Any) -> str:
    if value == "diverged":
        return "diverged"
    return f"{value:.3f}" if isinstance(value, (int, float)) else "-"


def markdown_summary(records: Sequence[Record | Mapping[str, Any]], reports: list[dict], only: set[str]) -> str:
    """Validation results, then one table row per evaluated model (cells with ``only`` names when given)."""
    lines = []
    if reports:
        lines += ["### Validation", ""]
        for rep in reports:
            mark = "passed" if rep.get("ok") else "FAILED"
            lines.append(f"- **{_cell(rep.get('folder', '?'))}**: {mark}")
            lines += [f"  - {_cell(p)}" for p in rep.get("problems", [])]
        lines.append("")
    columns = [(c.key, c.header) for c in per_cell_columns()]  # tasks/criteria.yaml: headline, then descriptive
    typed = [Record.of(r) for r in records]
    shown = [r for r in typed if not only or {s.name for s in r.sequence} & only or not r.sequence]
    failed = [r for r in shown if r.status != "ok"]
    lines += [f"### Smoke grid: {len(shown) - len(failed)} of {len(shown)} cells ok", ""]
    lines.append("| cell | status | " + " | ".join(h for _, h in columns) + " | reason |")
    lines.append("|" + " --- |" * (len(columns) + 3))
    for r in shown:
        row = [_cell(r.label), _cell(r.status)]
        row += [_number(r.score(key)) for key, _ in columns]
        row.append(_cell(r.error or ""))
        lines.append("| " + " | ".join(row) + " |")
    lines += [
        "",
        "WMDP p / MMLU p: the probability on the correct answer, normalised over the choices "
        "(continuous; moves where accuracy sits at chance, docs/MCQ_SIGNAL.md).",
    ]
    lines += [
        "",
        "Scores at smoke sizes are noisy: they show that the submission runs and composes, "
        "not how good it is. The leaderboard's numbers come from the maintainers' `paper` run.",
    ]
    return "\n".join(lines)
