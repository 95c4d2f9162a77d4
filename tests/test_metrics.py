"""The one SW2 of DESIGN.md, checked against closed forms."""

import math

import numpy as np
import ot
import pytest
import torch

from gaussdiff.errors import InputError
from gaussdiff.metrics import sliced_w2


def test_one_dimension_is_plain_w2_and_agrees_with_pot():
    """In 1-D every direction is +-1: SW2 = W2. For y = x + c (same order) W2 = |c| exactly; POT's projections
    give the same number to rounding."""
    x = torch.randn(3000, 1, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert sliced_w2(x, x + 0.7) == pytest.approx(0.7, abs=1e-12)
    y = torch.randn(3000, 1, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 1.3
    pot = ot.sliced_wasserstein_distance(x.numpy(), y.numpy(), n_projections=500, p=2, seed=0)
    assert sliced_w2(x, y) == pytest.approx(float(pot), rel=1e-9)


def test_a_shift_in_two_dimensions():
    """y = x + v: every projection moves by <v, theta>, so SW2^2 = E[<v, theta>^2] = |v|^2 / 2 for uniform directions
    in 2-D; 500 directions estimate the mean of cos^2 with sd sqrt(1/8 / 500) = 0.016, so 5 % covers it."""
    x = np.random.default_rng(0).normal(size=(2000, 2))
    v = np.array([3.0, -4.0])
    assert sliced_w2(x, x + v) == pytest.approx(5 / math.sqrt(2), rel=0.05)


def test_sets_of_unequal_shape_are_refused():
    with pytest.raises(InputError, match="equal shape"):
        sliced_w2(np.zeros((5, 2)), np.zeros((4, 2)))
