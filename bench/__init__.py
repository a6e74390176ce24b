"""Benchmarks: one per front end and store. `make bench` runs them all (`python -m bench`)."""
