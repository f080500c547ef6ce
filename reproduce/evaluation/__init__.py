"""Scoring episodes as the original `test.py`: the request and its checks, the run folder, what a
run depends on, the feature store, the scoring, and the driver that composes them."""
