"""The benchmark is a script (`python tests/bench/bench_saga.py`), not a test."""

collect_ignore = ["bench_saga.py"]
