"""Benchmarking and tuning against the real perf_analyzer (imported as modelrepo.perf)."""
