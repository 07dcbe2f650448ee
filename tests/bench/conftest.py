"""The benchmarks are scripts (`python tests/bench/bench_saga.py`), not tests."""

collect_ignore = ["bench_saga.py", "bench_rss.py", "bench_ledger.py"]
