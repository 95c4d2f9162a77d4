"""Data: built-in 2-D datasets, user arrays (.npy, .csv), and the map between user and model units.

Every built-in dataset is standardized per axis with constants kept below, all derived in closed
form, so its samples have mean 0 and std 1 per axis; those standardized coordinates are the
dataset's own units (metrics such as SW2 are reported in them). User data is standardized by a
fitted :class:`Standardize`, whose inverse takes model samples back to the user's units.
"""

from __future__ import annotations

import math
import numbers
import os
from pathlib import Path

import numpy as np
import torch
from sklearn.datasets import make_circles, make_moons, make_swiss_roll

from .atomic import write_atomically
from .errors import InputError, check_int

# ---------------------------------------------------------------------------------------------
# Built-in 2-D datasets. Each raw sampler maps (n, seed) to a float64 array (n, 2).

_S = 1 / math.sqrt(2)
# FFJORD's 8 Gaussians: center = 4 * direction, point = (center + 0.5 * N(0, I)) / 1.414.
_8G_DIRECTIONS = np.array([(1, 0), (-1, 0), (0, 1), (0, -1),
                           (_S, _S), (_S, -_S), (-_S, _S), (-_S, -_S)])
_8G_RADIUS, _8G_STD, _8G_SCALE = 4.0, 0.5, 1.414


def _moons_raw(n: int, seed: int) -> np.ndarray:
    """sklearn's two moons with noise 0.05."""
    return make_moons(n, noise=0.05, random_state=seed)[0]


def _swiss_roll_raw(n: int, seed: int) -> np.ndarray:
    """sklearn's swiss roll with noise 0.5, coordinates (x, z)."""
    return make_swiss_roll(n, noise=0.5, random_state=seed)[0][:, [0, 2]]


def _circles_raw(n: int, seed: int) -> np.ndarray:
    """sklearn's two circles with noise 0.05 and radius ratio 0.5."""
    return make_circles(n, noise=0.05, factor=0.5, random_state=seed)[0]


def _eight_gaussians_raw(n: int, seed: int) -> np.ndarray:
    """FFJORD's 8 Gaussians: (4 * direction_k + 0.5 * N(0, I)) / 1.414, k uniform on 0..7."""
    rng = np.random.default_rng(seed)
    k = rng.integers(8, size=n)
    return (_8G_RADIUS * _8G_DIRECTIONS[k] + _8G_STD * rng.standard_normal((n, 2))) / _8G_SCALE


def _checkerboard_raw(n: int, seed: int) -> np.ndarray:
    """FFJORD's checkerboard: 8 unit squares of a 4 x 4 board on [-2, 2)^2, scaled by 2."""
    rng = np.random.default_rng(seed)
    x1 = rng.uniform(-2, 2, n)
    # x2 in [0, 1) or [-2, -1), shifted up by 1 where floor(x1) is odd.
    x2 = rng.uniform(0, 1, n) - 2 * rng.integers(0, 2, n) + np.floor(x1) % 2
    return 2 * np.stack([x1, x2], axis=1)


def _pinwheel_raw(n: int, seed: int) -> np.ndarray:
    """FFJORD's pinwheel (5 arms, radial std 0.3, tangential std 0.1, rate 0.25), arms balanced."""
    rng = np.random.default_rng(seed)
    arm = rng.permutation(n) % 5
    f = rng.standard_normal((n, 2)) * [0.3, 0.1] + [1.0, 0.0]
    a = 2 * np.pi * arm / 5 + 0.25 * np.exp(f[:, 0])
    # FFJORD's row vector times [[cos a, -sin a], [sin a, cos a]], then times 2.
    return 2 * np.stack([f[:, 0] * np.cos(a) + f[:, 1] * np.sin(a),
                         -f[:, 0] * np.sin(a) + f[:, 1] * np.cos(a)], axis=1)


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


def _check_count_and_seed(n, seed) -> None:
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
        _check_count_and_seed(n, seed)
        return torch.from_numpy((raw(n, seed) - np.array(mean)) / np.array(std)).float()

    sample.__name__ = name
    sample.__doc__ = f"{raw.__doc__[:-1]}, standardized per axis; float32 (n, 2), fixed by seed."
    return sample


BUILTIN = {name: _standardized(name) for name in _RAW}


def eight_gaussians_params() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Weights (8,), means (8, 2), covariances (8, 2, 2) of '8gaussians' in its units, float64."""
    _, mean, std = _RAW["8gaussians"]
    means = (_8G_RADIUS * _8G_DIRECTIONS / _8G_SCALE - np.array(mean)) / np.array(std)
    mode_std = _8G_STD / _8G_SCALE / np.array(std)  # per axis
    covs = np.broadcast_to(np.diag(mode_std**2), (8, 2, 2)).copy()
    weights = torch.full((8,), 1 / 8, dtype=torch.float64)
    return weights, torch.from_numpy(means), torch.from_numpy(covs)


# ---------------------------------------------------------------------------------------------
# User arrays.

_EXTENSIONS = (".npy", ".csv")


def _one_line(error: Exception) -> str:
    """The text of an exception with all whitespace runs collapsed to single spaces."""
    return " ".join(str(error).split())


def _read_npy(path: Path) -> np.ndarray:
    """The array stored in a .npy file (no pickles), as float64."""
    try:
        with open(path, "rb") as f:
            array = np.lib.format.read_array(f, allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
        raise InputError(f"{path}: not a readable .npy file ({_one_line(e)})") from None
    if array.dtype.kind not in "biuf":
        raise InputError(f"{path}: holds {array.dtype} values; expected real numbers")
    return array.astype(np.float64)


def _parse_csv_line(path: Path, number: int, line: str) -> list[float]:
    """The numbers of one comma-separated line; InputError naming the line and cell otherwise."""
    cells = line.split(",")
    try:
        return [float(c) for c in cells]
    except ValueError:
        j = next(j for j, c in enumerate(cells) if not _is_number(c))
        raise InputError(f"{path}: line {number}, column {j + 1}: {cells[j].strip()[:40]!r} "
                         "is not a number") from None


def _is_number(cell: str) -> bool:
    """Whether float() accepts the cell."""
    try:
        float(cell)
    except ValueError:
        return False
    return True


def _read_csv(path: Path) -> np.ndarray:
    """Numbers separated by commas, one row a line; a first line without any number is a header."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"{path}: cannot read as text ({_one_line(e)})") from None
    lines = [(i, line) for i, line in enumerate(text.splitlines(), start=1) if line.strip()]
    if lines and not any(_is_number(c) for c in lines[0][1].split(",")):
        lines = lines[1:]
    rows = [_parse_csv_line(path, i, line) for i, line in lines]
    for (i, _), row in zip(lines, rows):
        if len(row) != len(rows[0]):
            raise InputError(f"{path}: line {i} has {len(row)} values, but line {lines[0][0]} "
                             f"has {len(rows[0])}")
    return np.array(rows, dtype=np.float64).reshape(len(rows), len(rows[0]) if rows else 0)


def _check_path(path: Path) -> None:
    """Raise InputError unless path has a known extension."""
    if path.suffix.lower() not in _EXTENSIONS:
        raise InputError(f"{path}: unknown file type {path.suffix or '(no extension)'!r}; "
                         f"expected one of {', '.join(_EXTENSIONS)}")


def load_array(path: str | os.PathLike) -> np.ndarray:
    """Read a .npy or .csv file of N >= 2 finite rows of D >= 1 numbers into float64 (N, D)."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if path.is_dir():
        raise InputError(f"{path}: is a directory, expected a .npy or .csv file")
    _check_path(path)
    array = _read_npy(path) if path.suffix.lower() == ".npy" else _read_csv(path)
    if array.ndim != 2:
        raise InputError(f"{path}: array of shape {array.shape}; expected shape (N, D), one row "
                         "per data point")
    if array.shape[0] < 2:
        raise InputError(f"{path}: {array.shape[0]} data row(s); need at least 2")
    if array.shape[1] < 1:
        raise InputError(f"{path}: rows have no values; expected shape (N, D) with D >= 1")
    bad = np.flatnonzero(~np.isfinite(array).all(axis=1))
    if bad.size:
        raise InputError(f"{path}: {bad.size} of {array.shape[0]} rows contain NaN or Inf "
                         f"(first: row {bad[0]}, counting from 0)")
    return array


def _write_csv(f, array: np.ndarray) -> None:
    """Write rows as comma-separated shortest round-trip reprs of float64."""
    f.write("".join(",".join(map(repr, row)) + "\n" for row in array.tolist()).encode())


def check_output_path(path: str | os.PathLike) -> Path:
    """Raise InputError unless an array can be written at path (known extension, existing folder)."""
    path = Path(path)
    _check_path(path)
    if not path.parent.is_dir():
        raise InputError(f"{path}: directory {path.parent} does not exist")
    if path.is_dir():
        raise InputError(f"{path}: is a directory")
    return path


def output_folder(path: str | os.PathLike, what: str = "the output folder") -> Path:
    """Create the folder ``path`` (and its parents) for a command's results before any work is done;
    InputError naming it as ``what`` where it cannot be (a file in the way, no permission)."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"cannot use {path} as {what}: {e.strerror or e}") from None
    return path


def save_array(path: str | os.PathLike, array) -> None:
    """Write an (N, D) array to .npy or .csv atomically: path ends up old or new, never half."""
    path = check_output_path(path)
    array = np.asarray(array.detach().cpu() if torch.is_tensor(array) else array, dtype=np.float64)
    if array.ndim != 2:
        raise InputError(f"{path}: cannot save an array of shape {array.shape}; expected (N, D)")
    is_npy = path.suffix.lower() == ".npy"
    try:
        write_atomically(path, lambda f: np.save(f, array) if is_npy else _write_csv(f, array))
    except OSError as e:
        raise InputError(f"{path}: cannot write ({_one_line(e)})") from None


# ---------------------------------------------------------------------------------------------
# The map between user units and model units.


def _as_float(x) -> torch.Tensor:
    """x as a floating tensor (float64 unless it already is floating)."""
    x = torch.as_tensor(x)
    return x if x.is_floating_point() else x.double()


class Standardize:
    """The per-feature affine map y = (x - mean) / std from user units x to model units y."""

    def __init__(self, mean, std):
        """Keep mean and std as float64 (D,); std must be finite and positive."""
        self.mean = torch.as_tensor(mean, dtype=torch.float64).clone()
        self.std = torch.as_tensor(std, dtype=torch.float64).clone()
        if self.mean.ndim != 1 or self.mean.shape != self.std.shape or self.mean.numel() == 0:
            raise InputError(f"mean and std must be non-empty lists of equal length, got shapes "
                             f"{tuple(self.mean.shape)} and {tuple(self.std.shape)}")
        if not (torch.isfinite(self.mean).all() and torch.isfinite(self.std).all()):
            raise InputError("mean and std must be finite")
        if not (self.std > 0).all():
            raise InputError(f"every std must be positive, got {self.std.tolist()}")

    @property
    def dim(self) -> int:
        """The number of features D."""
        return self.mean.numel()

    @classmethod
    def identity(cls, dim: int) -> Standardize:
        """The identity map on dim features (mean 0, std 1)."""
        check_int("dim", dim, 1)
        return cls(torch.zeros(dim), torch.ones(dim))

    @classmethod
    def fit(cls, x) -> Standardize:
        """Per-feature mean and population std of x (N >= 2, D); a constant feature gets std 1."""
        x = torch.as_tensor(x, dtype=torch.float64)
        if x.ndim != 2 or x.shape[0] < 2 or x.shape[1] < 1:
            raise InputError(f"cannot fit a standardization to shape {tuple(x.shape)}; expected "
                             "(N, D) with N >= 2 and D >= 1")
        if not torch.isfinite(x).all():
            raise InputError("cannot fit a standardization to data containing NaN or Inf")
        constant = (x == x[0]).all(dim=0)
        std = torch.where(constant, 1.0, x.std(dim=0, correction=0))
        return cls(x.mean(dim=0), std)

    def _check_features(self, x: torch.Tensor) -> None:
        """Raise InputError unless the last axis of x has D entries."""
        if x.ndim == 0 or x.shape[-1] != self.dim:
            raise InputError(f"expected {self.dim} features on the last axis, "
                             f"got shape {tuple(x.shape)}")

    def forward(self, x) -> torch.Tensor:
        """y = (x - mean) / std, in x's floating dtype and device."""
        x = _as_float(x)
        self._check_features(x)
        return (x - self.mean.to(x)) / self.std.to(x)

    def inverse(self, y) -> torch.Tensor:
        """x = y * std + mean, in y's floating dtype and device."""
        y = _as_float(y)
        self._check_features(y)
        return y * self.std.to(y) + self.mean.to(y)

    def log_abs_det_jacobian(self) -> float:
        """log |det d forward / dx| = -sum_i log std_i (the same at every x)."""
        return -torch.log(self.std).sum().item()

    def to_dict(self) -> dict:
        """{'mean': [...], 'std': [...]} as plain floats, for JSON."""
        return {"mean": self.mean.tolist(), "std": self.std.tolist()}

    @classmethod
    def from_dict(cls, d) -> Standardize:
        """The inverse of to_dict; InputError on missing or extra keys and non-numeric values."""
        if not isinstance(d, dict) or set(d) != {"mean", "std"}:
            keys = sorted(d) if isinstance(d, dict) else type(d).__name__
            raise InputError(f"a standardization must be a dict with keys 'mean' and 'std', "
                             f"got {keys}")
        for key in ("mean", "std"):
            v = d[key]
            if not isinstance(v, (list, tuple)) or not all(
                    isinstance(a, numbers.Real) and not isinstance(a, bool) for a in v):
                raise InputError(f"standardization {key!r} must be a list of numbers, "
                                 f"got {v!r}"[:200])
        return cls(d["mean"], d["std"])

    def __repr__(self) -> str:
        return f"Standardize(mean={self.mean.tolist()}, std={self.std.tolist()})"


# ---------------------------------------------------------------------------------------------


def _is_builtin(name_or_path) -> bool:
    """Whether the argument names a built-in dataset; InputError if it is neither one nor an existing file."""
    if isinstance(name_or_path, str) and name_or_path in BUILTIN:
        return True
    if not Path(name_or_path).exists():
        raise InputError(f"unknown dataset {str(name_or_path)!r}: neither a built-in name "
                         f"({', '.join(BUILTIN)}) nor an existing file")
    return False


def load_dataset(name_or_path: str | os.PathLike, n: int = 100_000,
                 seed: int = 0) -> tuple[torch.Tensor, Standardize, str]:
    """(x in model units, float32 (N, D); the map from user units; a description) of a dataset.

    A built-in name gives n fresh points under seed, already in their own units (identity map);
    any other argument is a .npy or .csv file, standardized per feature (n and seed unused).
    """
    if _is_builtin(name_or_path):
        x = BUILTIN[name_or_path](n, seed)
        description = f"built-in {name_or_path!r}: {n} points, seed {seed}, standardized units"
        return x, Standardize.identity(2), description
    path = Path(name_or_path)
    array = load_array(path)
    transform = Standardize.fit(array)
    x = transform.forward(torch.from_numpy(array)).float()
    return x, transform, f"{path}: {array.shape[0]} rows x {array.shape[1]} features, standardized"


def load_points(name_or_path: str | os.PathLike, n: int | None, seed: int) -> tuple[torch.Tensor, str]:
    """(float64 (N, D) in the data's own units, a description): the points a command evaluates.

    A built-in name gives n fresh points under seed. A .npy or .csv file gives n of its rows drawn
    without replacement under seed (kept in file order), or all its rows when n is None or >= its rows.
    """
    if n is not None:
        _check_count_and_seed(n, seed)
    if _is_builtin(name_or_path):
        return BUILTIN[name_or_path](n, seed).double(), f"built-in {name_or_path!r}: {n} points, seed {seed}"
    rows = torch.from_numpy(load_array(name_or_path))
    total = len(rows)
    if n is None or n >= total:
        return rows, f"{name_or_path}: all {total} rows"
    keep = torch.randperm(total, generator=torch.Generator().manual_seed(seed))[:n].sort().values
    return rows[keep], f"{name_or_path}: {n} of {total} rows, drawn under seed {seed}"
