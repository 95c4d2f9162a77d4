"""Built-in 2-D datasets, each standardized per axis with constants kept below, all derived in closed form, so its
samples have mean 0 and std 1 per axis; those standardized coordinates are the dataset's own units (metrics such as
SW2 are reported in them)."""

from __future__ import annotations

import math

import numpy as np
import torch
from sklearn.datasets import make_circles, make_moons, make_swiss_roll

from ..errors import check_int

# ---------------------------------------------------------------------------------------------
# Built-in 2-D datasets. Each raw sampler maps (n, seed) to a float64 array (n, 2) and the points' classes (n,) where
# the data set has them (None where not); CLASSES names them.

_S = 1 / math.sqrt(2)
# FFJORD's 8 Gaussians: center = 4 * direction, point = (center + 0.5 * N(0, I)) / 1.414.
_8G_DIRECTIONS = np.array([(1, 0), (-1, 0), (0, 1), (0, -1),
                           (_S, _S), (_S, -_S), (-_S, _S), (-_S, -_S)])
_8G_RADIUS, _8G_STD, _8G_SCALE = 4.0, 0.5, 1.414
CLASSES = {"moons": ["upper", "lower"], "circles": ["outer", "inner"],
           "8gaussians": ["E", "W", "N", "S", "NE", "SE", "NW", "SW"],  # as _8G_DIRECTIONS
           "pinwheel": [f"arm{k}" for k in range(5)]}


def _moons_raw(n: int, seed: int) -> np.ndarray:
    """sklearn's two moons with noise 0.05 (classes: the upper and the lower moon)."""
    return make_moons(n, noise=0.05, random_state=seed)


def _swiss_roll_raw(n: int, seed: int) -> np.ndarray:
    """sklearn's swiss roll with noise 0.5, coordinates (x, z)."""
    return make_swiss_roll(n, noise=0.5, random_state=seed)[0][:, [0, 2]], None


def _circles_raw(n: int, seed: int) -> np.ndarray:
    """sklearn's two circles with noise 0.05 and radius ratio 0.5 (classes: the outer and the inner circle)."""
    return make_circles(n, noise=0.05, factor=0.5, random_state=seed)


def _eight_gaussians_raw(n: int, seed: int) -> np.ndarray:
    """FFJORD's 8 Gaussians: (4 * direction_k + 0.5 * N(0, I)) / 1.414, k uniform on 0..7 (the classes)."""
    rng = np.random.default_rng(seed)
    k = rng.integers(8, size=n)
    return (_8G_RADIUS * _8G_DIRECTIONS[k] + _8G_STD * rng.standard_normal((n, 2))) / _8G_SCALE, k


def _checkerboard_raw(n: int, seed: int) -> np.ndarray:
    """FFJORD's checkerboard: 8 unit squares of a 4 x 4 board on [-2, 2)^2, scaled by 2."""
    rng = np.random.default_rng(seed)
    x1 = rng.uniform(-2, 2, n)
    # x2 in [0, 1) or [-2, -1), shifted up by 1 where floor(x1) is odd.
    x2 = rng.uniform(0, 1, n) - 2 * rng.integers(0, 2, n) + np.floor(x1) % 2
    return 2 * np.stack([x1, x2], axis=1), None


def _pinwheel_raw(n: int, seed: int) -> np.ndarray:
    """FFJORD's pinwheel (5 arms, radial std 0.3, tangential std 0.1, rate 0.25), arms balanced (the classes)."""
    rng = np.random.default_rng(seed)
    arm = rng.permutation(n) % 5
    f = rng.standard_normal((n, 2)) * [0.3, 0.1] + [1.0, 0.0]
    a = 2 * np.pi * arm / 5 + 0.25 * np.exp(f[:, 0])
    # FFJORD's row vector times [[cos a, -sin a], [sin a, cos a]], then times 2.
    return 2 * np.stack([f[:, 0] * np.cos(a) + f[:, 1] * np.sin(a),
                         -f[:, 0] * np.sin(a) + f[:, 1] * np.cos(a)], axis=1), arm


_PI2 = math.pi**2
# name: (raw sampler, per-axis mean, per-axis std of the raw data), all in closed form:
_RAW = {
    # Arcs (cos s, sin s) and (1 - cos s, 1/2 - sin s) with weight 1/2 each, s ~ U[0, pi] (the
    # limit of sklearn's evenly spaced s), plus N(0, 0.05^2 I): E = (1/2, 1/4),
    # Var x = 3/4 + 0.05^2, Var y = 9/16 - 1/pi + 0.05^2.
    "moons": (_moons_raw, (0.5, 0.25),
              (math.sqrt(0.75 + 0.05**2), math.sqrt(9 / 16 - 1 / math.pi + 0.05**2))),
    # (t cos t, t sin t) + N(0, 0.5^2 I), t ~ U[3pi/2, 9pi/2]: E = (2, 2/(3 pi)),
    # E[t^2 cos^2 t] = 39 pi^2/8 - 1/4, E[t^2 sin^2 t] = 39 pi^2/8 + 1/4 (integration by parts).
    "swiss_roll": (_swiss_roll_raw, (2.0, 2 / (3 * math.pi)),
                   (math.sqrt(4.875 * _PI2 - 4), math.sqrt(4.875 * _PI2 + 0.5 - 4 / (9 * _PI2)))),
    # Centers at 8 equally spaced angles: E = 0, Var = (0.5^2 + 4^2 / 2) / 1.414^2 per axis.
    "8gaussians": (_eight_gaussians_raw, (0.0, 0.0), (math.sqrt(8.25) / 1.414,) * 2),
    # Each axis is uniform on [-4, 4): E = 0, Var = 8^2 / 12.
    "checkerboard": (_checkerboard_raw, (0.0, 0.0), (4 / math.sqrt(3),) * 2),
    # Unit circle and circle of radius 1/2, weight 1/2 each, plus N(0, 0.05^2 I): E = 0,
    # Var = (1/2 + 1/8) / 2 + 0.05^2 per axis.
    "circles": (_circles_raw, (0.0, 0.0), (math.sqrt(5 / 16 + 0.05**2),) * 2),
    # 5-fold rotational symmetry: E = 0 and isotropic, Var = E|x|^2 / 2 = 4 (1 + 0.3^2 + 0.1^2) / 2.
    "pinwheel": (_pinwheel_raw, (0.0, 0.0), (math.sqrt(2.2),) * 2),
}


def check_count_and_seed(n, seed) -> None:
    """Raise InputError unless n is a positive integer and seed an integer in [0, 2^32)."""
    check_int("the number of points", n, 1)
    check_seed(seed)


def check_seed(seed) -> int:
    """seed as an int; InputError unless it is an integer in [0, 2^32) (what numpy and torch both take)."""
    return check_int("the seed", seed, 0, 2**32 - 1)


def _standardized(name: str):
    """The sampler (n, seed=0) -> float32 (n, 2) of built-in `name`, in its standardized units."""
    raw, mean, std = _RAW[name]

    def sample(n: int, seed: int = 0) -> torch.Tensor:
        return labeled(name, n, seed)[0]

    sample.__name__ = name
    sample.__doc__ = f"{raw.__doc__[:-1]}, standardized per axis; float32 (n, 2), fixed by seed."
    return sample


BUILTIN = {name: _standardized(name) for name in _RAW}


def labeled(name: str, n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(float32 (n, 2) points of built-in ``name`` in its standardized units, their classes as indices into
    CLASSES[name], long (n,), or None for a data set without classes), fixed by seed."""
    check_count_and_seed(n, seed)
    raw, mean, std = _RAW[name]
    x, labels = raw(n, seed)
    return (torch.from_numpy((x - np.array(mean)) / np.array(std)).float(),
            None if labels is None else torch.from_numpy(np.asarray(labels)).long())


def standardization(name: str) -> tuple[np.ndarray, np.ndarray]:
    """(per-axis mean, per-axis std) of built-in ``name``'s raw data, which its points are standardized by."""
    _, mean, std = _RAW[name]
    return np.array(mean), np.array(std)


def eight_gaussians_params() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Weights (8,), means (8, 2), covariances (8, 2, 2) of '8gaussians' in its units, float64."""
    mean, std = standardization("8gaussians")
    means = (_8G_RADIUS * _8G_DIRECTIONS / _8G_SCALE - mean) / std
    mode_std = _8G_STD / _8G_SCALE / std  # per axis
    covs = np.broadcast_to(np.diag(mode_std**2), (8, 2, 2)).copy()
    weights = torch.full((8,), 1 / 8, dtype=torch.float64)
    return weights, torch.from_numpy(means), torch.from_numpy(covs)


