"""The fixed split of WMDP questions into an offline forget stand-in and a scored half.

Offline there is no WMDP forget corpus. Unlearners then train on a stand-in made of
half of the WMDP questions rendered as text, and WMDP is scored only on the other
half, so no scored question was ever unlearned. The split is a pure function of the
question text (a SHA-256 bit), hence identical on every machine, for every seed and
whatever sub-sample a profile draws.
"""

from __future__ import annotations

import hashlib

SPLIT_SALT = "compose-bench/wmdp-standin/v1"


def is_standin_forget(question: str) -> bool:
    """True when this question belongs to the forget stand-in (never scored offline)."""
    digest = hashlib.sha256(f"{SPLIT_SALT}\n{question.strip()}".encode()).digest()
    return digest[0] % 2 == 0


def render_question_as_text(question: str, choices: list[str], answer: int) -> str:
    """A WMDP question as plain forget text: the question followed by its correct answer."""
    return f"{question.strip()}\nAnswer: {choices[answer].strip()}"
