"""Tuning: search spaces, held-out studies and ``method="auto"``."""

from mlmm.tune.auto import fit_auto, leaderboard  # noqa: F401
