"""transformers without scikit-learn: about 1.3 s off the start of every process that loads a model.

transformers imports ``sklearn.metrics`` (and with it SciPy's statistics) at import time
whenever scikit-learn is installed, for one function of assisted generation (a ROC curve
that tunes a draft model's confidence threshold). The harness never uses assisted
generation, but lm-eval depends on scikit-learn, so it is always installed, and every
process that built a model paid for that import: each ``compose-bench run``, each sandbox
zygote, each Ray worker (1.3 s of 6 s for ``from transformers import AutoModelForCausalLM``
on the reference CPU, 2026-12-02). Telling transformers' public availability check that
scikit-learn is absent before ``transformers.generation`` is first imported skips it;
nothing else changes (lm-eval imports scikit-learn itself for the metrics that need it,
none of which the harness uses).

Importing this module applies it: :mod:`benchmark.models` and the CLI import it first, and
the sandbox zygote preloads it before transformers (benchmark/isolation.py). Where
transformers' generation module is already loaded, or transformers is not installed (the
leaderboard's Space), it does nothing. Written by hand: no library setting does this.
"""

from __future__ import annotations

import sys

GENERATION_MODULE = "transformers.generation.candidate_generator"


def _sklearn_absent() -> bool:
    return False


def skip_sklearn_in_transformers() -> bool:
    """Make transformers skip its scikit-learn import; whether it applies (False: too late or no transformers)."""
    if GENERATION_MODULE in sys.modules:
        return False
    try:
        import transformers.utils as hf_utils
    except ImportError:
        return False
    if not hasattr(hf_utils, "is_sklearn_available"):  # a transformers that no longer has the check
        return False
    hf_utils.is_sklearn_available = _sklearn_absent
    return True


skip_sklearn_in_transformers()
