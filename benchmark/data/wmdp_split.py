"""The fixed split of WMDP questions into an offline forget stand-in, a development part and a scored half.

Offline there is no WMDP forget corpus. Unlearners then train on a stand-in made of WMDP
questions rendered as text, and WMDP is scored only on the other half, so no scored
question was ever unlearned. The non-scored half is cut once more: a quarter of it (an
eighth of all questions) is the *development* part, never rendered as forget text, on
which unlearners' hyperparameters are chosen (WMDP accuracy on questions that were not
unlearned, but whose topics were), so that tuning never looks at the scored half.

The split is a pure function of the question text (bits of a SHA-256), hence identical on
every machine, for every seed and whatever sub-sample a profile draws:

* ``scored``:  first digest byte odd (half of the questions);
* ``dev``:     first byte even and second byte divisible by 4 (about 1/8);
* ``forget``:  the rest (about 3/8): the only questions rendered as forget text.
"""

from __future__ import annotations

import hashlib

SPLIT_SALT = "compose-bench/wmdp-standin/v1"

SCORED, DEV, FORGET = "scored", "dev", "forget"


def standin_role(question: str) -> str:
    """``"scored"``, ``"dev"`` or ``"forget"``: what this question is used for offline."""
    digest = hashlib.sha256(f"{SPLIT_SALT}\n{question.strip()}".encode()).digest()
    if digest[0] % 2 == 1:
        return SCORED
    return DEV if digest[1] % 4 == 0 else FORGET


def is_standin_forget(question: str) -> bool:
    """True when this question is outside the scored half (forget text or development part; never scored offline)."""
    return standin_role(question) != SCORED


def render_question_as_text(question: str, choices: list[str], answer: int) -> str:
    """A WMDP question as plain forget text: the question followed by its correct answer."""
    return f"{question.strip()}\nAnswer: {choices[answer].strip()}"
