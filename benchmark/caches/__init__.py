"""Nothing computed twice: a content-addressed evaluation cache and a state cache for trusted steps.

- :mod:`benchmark.caches.store`: a folder of self-checking entries (atomic writes, LRU eviction, statistics).
- :mod:`benchmark.caches.keys`: what a key depends on (code, libraries, device, tokenizer).
- :mod:`benchmark.caches.evaluations` / :mod:`benchmark.caches.states`: the two caches.
- :mod:`benchmark.caches.run`: how the runner uses them, and what a hit puts in a record.

Both live under ``$COMPOSE_BENCH_RESULTS_CACHE`` (default ``<cache_dir>/results``), apart
from the converted models in ``<cache_dir>/models``; ``compose-bench cache`` shows and clears them.
"""
