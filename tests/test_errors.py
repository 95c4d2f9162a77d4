"""Tests of the checks of plain numeric arguments in gaussdiff.errors: what passes comes back as a plain int or
float, everything else is one InputError line naming the argument and what is accepted."""

import math

import numpy as np
import pytest

from gaussdiff.errors import InputError, check_int, check_positive


@pytest.mark.parametrize("value, low, high", [(0, 0, None), (7, 1, None), (np.int64(3), 1, 3), (5, 5, 5)])
def test_check_int_returns_the_integer(value, low, high):
    got = check_int("steps", value, low, high)
    assert got == value and type(got) is int


@pytest.mark.parametrize("value, low, high, needle", [
    (0, 1, None, "steps must be an integer >= 1, got 0"),
    (-1, 0, None, "steps must be an integer >= 0, got -1"),
    (4, 1, 3, "steps must be an integer in [1, 3], got 4"),
    (0, 1, 3, "steps must be an integer in [1, 3], got 0"),
    (2.0, 1, None, "steps must be an integer >= 1, got 2.0"),  # a float, even a whole one, is not an integer
    (True, 0, None, "steps must be an integer >= 0, got True"),  # nor is a bool
    ("3", 1, None, "steps must be an integer >= 1, got '3'"),
    (None, 1, None, "steps must be an integer >= 1, got None"),
])
def test_check_int_refuses_in_one_line(value, low, high, needle):
    with pytest.raises(InputError) as info:
        check_int("steps", value, low, high)
    assert str(info.value) == needle


@pytest.mark.parametrize("value", [1, 1e-300, 2.5, np.float32(0.5)])
def test_check_positive_returns_a_float(value):
    got = check_positive("rtol", value)
    assert got == float(value) and type(got) is float


@pytest.mark.parametrize("value", [0, 0.0, -1e-9, math.nan, math.inf, -math.inf, True, "1", None])
def test_check_positive_refuses_in_one_line(value):
    with pytest.raises(InputError) as info:
        check_positive("rtol", value)
    assert str(info.value) == f"rtol must be a finite number > 0, got {value!r}"
