"""multibot's benchmark suite (``python bench/run.py``); not part of the test suite.

Every scenario measures the product next to a floor or a peer in the same run, because the
machines it runs on are shared and noisy; see ``bench/run.py`` and BENCHMARKS.md.
"""
