"""Persistent backends for state the core keeps between restarts (throttle counters)."""
