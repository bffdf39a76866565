"""Composable Interventions Benchmark: the fixed harness.

Submissions import only :mod:`benchmark.api` (and the helpers in
:mod:`benchmark.toolkit`); everything else here is the harness's own business.
"""

__version__ = "0.1.0"
