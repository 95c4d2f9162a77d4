"""Held-out data: which rows of a file a run keeps out of training, and the points a run was not trained on.

A built-in 2-D set has no fixed rows: its held-out points are a fresh draw under :func:`heldout_seed`, never the
training draw. 'digits' has its fixed 297-image test split. A file of rows or images keeps ``holdout`` of its rows
out of training, chosen by :func:`split_rows` from the run's seed, so every command can find them again from the
run's config.json alone.
"""

from __future__ import annotations

import math
import numpy as np

SEEDS = 2**32  # seeds live in [0, 2^32), numpy's and scikit-learn's range


def heldout_seed(seed: int) -> int:
    """The seed of a built-in set's held-out draw for a run trained under ``seed``: half the seed range away, so it
    is never the training seed."""
    return (seed + SEEDS // 2) % SEEDS


def heldout_count(n: int, fraction: float) -> int:
    """How many of ``n`` rows a ``fraction`` holds out: round(fraction n), at least 1 when fraction > 0, and at
    most n - 1 (training keeps a row)."""
    if fraction <= 0 or n < 2:
        return 0
    return min(max(1, math.floor(fraction * n + 0.5)), n - 1)


def split_rows(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(training rows, held-out rows) of a file of ``n`` rows, each sorted (file order kept): a permutation under
    ``seed`` puts its first :func:`heldout_count` rows out of training."""
    order = np.random.default_rng([seed, 0x5EED]).permutation(n)  # its own stream, not the batches' draws
    k = heldout_count(n, fraction)
    return np.sort(order[k:]), np.sort(order[:k])

