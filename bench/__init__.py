"""Benchmarks of chatdoc. Run `python -m bench.core --help`; see bench/README.md."""
