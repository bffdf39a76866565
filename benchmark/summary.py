"""A markdown summary of a run and of `validate` reports: what CI comments on a pull request.

Every value shown comes from the records (scores, status, one-line reasons); text from a
submission (names, reasons) is escaped so that it cannot break the table or ping people.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from benchmark.record_schema import Record

COLUMNS = [
    ("edit_success", "edit"),
    ("locality", "locality"),
    ("wmdp", "WMDP"),
    ("wmdp_prob", "WMDP p"),
    ("mmlu", "MMLU"),
    ("mmlu_prob", "MMLU p"),
    ("perplexity", "ppl"),
    ("avg_bits", "bits"),
]


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
    typed = [Record.of(r) for r in records]
    shown = [r for r in typed if not only or {s.name for s in r.sequence} & only or not r.sequence]
    failed = [r for r in shown if r.status != "ok"]
    lines += [f"### Smoke grid: {len(shown) - len(failed)} of {len(shown)} cells ok", ""]
    lines.append("| cell | status | " + " | ".join(h for _, h in COLUMNS) + " | reason |")
    lines.append("|" + " --- |" * (len(COLUMNS) + 3))
    for r in shown:
        row = [_cell(r.label), _cell(r.status)]
        row += [_number(r.scores.get(key)) for key, _ in COLUMNS]
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
