"""Prometheus metrics, health and readiness on their own listener (`[metrics] listen`).

`recorder` counts decisions and their latency at the one place every decision passes (the
audit's decision call); `collectors` read the rest (KDF pool, cache, throttle, connections,
RADIUS drops, SIP2 upstream pool and breaker) from the live objects at scrape time, so the hot
paths pay nothing for them; `server` serves `/metrics`, `/healthz` and `/readyz`; `aggregate`
merges the expositions of several worker processes into one.
"""
