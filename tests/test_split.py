"""Held-out rows: disjoint, complete, reproducible, and the counts the docstring promises."""

import numpy as np
import pytest

from gaussdiff.data.split import SEEDS, heldout_count, heldout_seed, split_rows


@pytest.mark.parametrize("n, fraction", [(150, 0.1), (7, 0.5), (1000, 0.05), (2, 0.99), (10, 0.0)])
def test_split_partitions_rows(n, fraction):
    train, held = split_rows(n, fraction, seed=3)
    assert np.array_equal(np.sort(np.concatenate([train, held])), np.arange(n))  # disjoint and complete
    assert len(held) == heldout_count(n, fraction)
    assert np.all(np.diff(train) > 0) and np.all(np.diff(held) > 0)  # file order kept
    again = split_rows(n, fraction, seed=3)
    assert np.array_equal(again[1], held)


def test_heldout_count_rounds_and_keeps_a_training_row():
    assert heldout_count(150, 0.1) == 15
    assert heldout_count(5, 0.01) == 1  # a positive fraction holds out at least one row
    assert heldout_count(3, 0.99) == 2  # and never every row
    assert heldout_count(1, 0.5) == 0 and heldout_count(100, 0.0) == 0


def test_split_depends_on_seed():
    assert not np.array_equal(split_rows(1000, 0.1, 0)[1], split_rows(1000, 0.1, 1)[1])


@pytest.mark.parametrize("seed", [0, 1, SEEDS // 2, SEEDS - 1])
def test_heldout_seed_differs_and_stays_in_range(seed):
    other = heldout_seed(seed)
    assert other != seed and 0 <= other < SEEDS
