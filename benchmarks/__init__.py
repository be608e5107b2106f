"""Reproducible figures of what credit_guard costs (``python -m benchmarks.run_all``)."""
