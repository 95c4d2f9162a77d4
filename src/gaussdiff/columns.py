"""Tables: the kind of each column, and the invertible map between a table's rows and the model's vectors.

A table in the data's units is a float64 array (N, C) in the file's column order: numbers as they are, a categorical
column's cell as the index of its category in ``ColumnSpec.categories``, a constant column's cell as its value (0 if
it is text); NaN marks a missing cell. In model units it is (N, D), each column taking ``width`` entries.
:class:`Table` (transform kind "table") is that map, fitted column by column on the observed cells.
"""

from __future__ import annotations

import functools
import itertools
import math
import numbers
from dataclasses import asdict, dataclass, replace

import numpy as np
import torch

from .errors import InputError

KINDS = ("continuous", "integer", "positive", "bounded", "constant", "categorical")
CONTINUOUS_MAPS = ("standardize", "quantile")  # how a continuous column reaches model units


@dataclass
class ColumnSpec:
    """One column of a table schema (RUN/columns.json, or --schema): its header ``name`` and ``kind`` (KINDS), and
    the kind's options: ``transform`` (continuous: CONTINUOUS_MAPS), ``low``/``high`` (bounded), ``categories``
    (categorical: the distinct cells' text, in code order), ``value`` (constant: the cell's text), ``decimals``
    (continuous, positive, bounded: the places after the decimal point the file's cells show; values the model
    draws are rounded to them, as the data were; None: not rounded)."""

    name: str
    kind: str
    transform: str | None = None
    low: float | None = None
    high: float | None = None
    categories: list[str] | None = None
    value: str | None = None
    decimals: int | None = None


EPS = 1e-6  # a bounded column's u is squeezed into [EPS, 1 - EPS], so its logit is finite at low and high
P_CLIP = 1e-7  # the quantile map's probabilities are clipped to [P_CLIP, 1 - P_CLIP] (scikit-learn's bound)
MAX_KNOTS = 1000  # the quantile map keeps at most this many empirical quantiles
TIE_WIDEN = 0.45  # a repeated value's step in the quantile map reaches this share of a p-spacing past its run's ends
MAX_DECIMALS = 8  # a column whose cells show more places than this is not rounded
OPTIONS = {"continuous": ("transform", "decimals"), "integer": (), "positive": ("decimals",),
           "bounded": ("low", "high", "decimals"), "constant": ("value",), "categorical": ("categories",)}
OPTIONAL = ("decimals",)  # options a saved model or a schema may leave out (older models have none)


def _real(value) -> bool:
    """Whether value is a finite real number (not a bool)."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def check_spec(spec: ColumnSpec) -> ColumnSpec:
    """A copy of spec with its kind's default filled in (continuous: transform standardize); InputError naming the
    column when its kind is unknown, it carries another kind's option, or its own options are missing or wrong."""
    where = f"column {spec.name!r}"
    if not isinstance(spec.name, str):
        raise InputError(f"a column name must be text, got {spec.name!r}")
    if spec.kind not in KINDS:
        raise InputError(f"{where}: unknown kind {spec.kind!r}; known: {', '.join(KINDS)}")
    foreign = [o for o in ("transform", "low", "high", "categories", "value", "decimals")
               if getattr(spec, o) is not None and o not in OPTIONS[spec.kind]]
    if foreign:
        raise InputError(f"{where}: kind {spec.kind} takes no option {', '.join(map(repr, foreign))}")
    spec = replace(spec)
    check_decimals(spec.decimals, where)
    if spec.kind == "continuous":
        spec.transform = spec.transform or CONTINUOUS_MAPS[0]
        if spec.transform not in CONTINUOUS_MAPS:
            raise InputError(f"{where}: unknown transform {spec.transform!r}; known: {', '.join(CONTINUOUS_MAPS)}")
    elif spec.kind == "bounded":
        if not (_real(spec.low) and _real(spec.high) and spec.low < spec.high):
            raise InputError(f"{where}: a bounded column needs numbers low < high, got low={spec.low!r}, "
                             f"high={spec.high!r}")
        spec.low, spec.high = float(spec.low), float(spec.high)
    elif spec.kind == "categorical":
        c = spec.categories
        if not (isinstance(c, (list, tuple)) and c and all(isinstance(s, str) for s in c) and len(set(c)) == len(c)):
            raise InputError(f"{where}: a categorical column needs a non-empty list of distinct category texts, got "
                             f"{c!r}"[:200])
        spec.categories = list(c)
    elif spec.kind == "constant" and not isinstance(spec.value, str):
        raise InputError(f"{where}: a constant column needs its value as text, got {spec.value!r}")
    return spec


def check_decimals(d, where: str) -> None:
    """InputError unless d is None or a whole number 0..MAX_DECIMALS."""
    if d is not None and not (isinstance(d, int) and not isinstance(d, bool) and 0 <= d <= MAX_DECIMALS):
        raise InputError(f"{where}: decimals must be a whole number from 0 to {MAX_DECIMALS}, got {d!r}"[:200])


def constant_code(value: str) -> float:
    """A constant column's cell in codes: float(value) if the text is a finite number, else 0."""
    try:
        code = float(value)
    except ValueError:
        return 0.0
    return code if math.isfinite(code) else 0.0


def _observed(spec: ColumnSpec, x: torch.Tensor) -> torch.Tensor:
    """The observed (non-NaN) cells of a column; InputError unless there are at least 2 distinct values to fit."""
    v = x[~torch.isnan(x)]
    if len(v) < 2 or (v == v[0]).all():
        seen = "no observed value" if len(v) == 0 else f"only the value {v[0].item():g}"
        raise InputError(f"column {spec.name!r} ({spec.kind}) has {seen}: a {spec.kind} column needs at least 2 "
                         "distinct observed values to fit (give a column with one value the kind constant)")
    return v


def _mean_std(v: torch.Tensor) -> tuple[float, float]:
    """Mean and population std of v, as floats."""
    return v.mean().item(), v.std(correction=0).item()


class _Column:
    """One column's map between its codes x (n,) float64 and its model entries y (n, width). Subclasses set ``width``,
    ``density`` (whether the column enters the density, through ``log_slope``), ``fitted`` (the names of the fitted
    numbers, the keyword arguments of their constructor and fields of ``to_dict``)."""

    width = 1
    density = True
    fitted: tuple[str, ...] = ()

    def __init__(self, spec: ColumnSpec):
        self.spec = spec

    @classmethod
    def fit(cls, spec: ColumnSpec, x: torch.Tensor) -> _Column:
        """The column's map fitted on its observed codes x; a map with no fitted numbers needs only the spec."""
        return cls(spec)

    def to_dict(self) -> dict:
        """The spec's fields that are set, then the fitted numbers: plain JSON."""
        spec = {k: v for k, v in asdict(self.spec).items() if v is not None}
        return spec | {k: _plain(getattr(self, k)) for k in self.fitted}

    def _number(self, key: str, value, positive: bool = False) -> float:
        """A fitted number as a float; InputError naming the column and field unless finite (and > 0 if positive)."""
        if not _real(value) or (positive and value <= 0):
            raise InputError(f"table transform, column {self.spec.name!r}: {key!r} must be a finite number"
                             f"{' > 0' if positive else ''}, got {value!r}"[:200])
        return float(value)


def _plain(value):
    """A fitted number or tensor of numbers as plain JSON (float or list of floats)."""
    return value.tolist() if isinstance(value, torch.Tensor) else value


class _Affine(_Column):
    """y = (g(x) - mean) / std for an increasing g, with mean and std those of g over the observed cells:
    log|dy/dx| = log g'(x) - log std. Here g is the identity (continuous columns with transform standardize)."""

    fitted = ("mean", "std")

    def __init__(self, spec: ColumnSpec, mean, std):
        super().__init__(spec)
        self.mean, self.std = self._number("mean", mean), self._number("std", std, positive=True)

    @classmethod
    def fit(cls, spec: ColumnSpec, x: torch.Tensor) -> _Affine:
        return cls(spec, *_mean_std(cls.g(spec, _observed(spec, x))))

    @staticmethod
    def g(spec: ColumnSpec, x: torch.Tensor) -> torch.Tensor:
        return x

    def g_inv(self, v: torch.Tensor) -> torch.Tensor:
        return v

    def log_g_prime(self, x: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return ((self.g(self.spec, x) - self.mean) / self.std)[:, None]

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        return self.g_inv(y[:, 0] * self.std + self.mean)

    def log_slope(self, x: torch.Tensor) -> torch.Tensor:
        return self.log_g_prime(x) - math.log(self.std)


class _Positive(_Affine):
    """g(x) = log x (x > 0): y = (log x - mean) / std, log|dy/dx| = -log x - log std."""

    @staticmethod
    def g(spec, x):
        return torch.log(x)

    def g_inv(self, v):
        return torch.exp(v)

    def log_g_prime(self, x):
        return -torch.log(x)


class _Bounded(_Affine):
    """g(x) = logit u, u = EPS + (1 - 2 EPS) (x - low) / (high - low) squeezes [low, high] into [EPS, 1 - EPS]:
    log|dy/dx| = log(1 - 2 EPS) - log(high - low) - log u - log(1 - u) - log std; the inverse clamps to [low, high]."""

    @staticmethod
    def _u(spec, x):
        return EPS + (1 - 2 * EPS) * (x - spec.low) / (spec.high - spec.low)

    @staticmethod
    def g(spec, x):
        u = _Bounded._u(spec, x)
        return torch.log(u) - torch.log1p(-u)  # logit u

    def g_inv(self, v):
        low, high = self.spec.low, self.spec.high
        return (low + (torch.sigmoid(v) - EPS) / (1 - 2 * EPS) * (high - low)).clamp(low, high)

    def log_g_prime(self, x):
        u = self._u(self.spec, x)
        return math.log((1 - 2 * EPS) / (self.spec.high - self.spec.low)) - torch.log(u) - torch.log1p(-u)


class _Integer(_Affine):
    """Dequantized integers k + u - 1/2, u ~ U[0, 1): y = (x - mean) / std with mean = mean(k) and
    std = sqrt(var(k) + 1/12) (the variance of the dequantized values); the inverse rounds and clamps to the observed
    [min, max], k = floor(x + 1/2), so every x in [k - 1/2, k + 1/2) decodes to k. One observed value is enough
    (std = sqrt(1/12))."""

    fitted = ("mean", "std", "min", "max")

    def __init__(self, spec, mean, std, min, max):  # named as the JSON fields
        super().__init__(spec, mean, std)
        self.min, self.max = self._number("min", min), self._number("max", max)
        if not (self.min == round(self.min) and self.max == round(self.max) and self.min <= self.max):
            raise InputError(f"table transform, column {spec.name!r}: 'min' and 'max' must be integers with min <= "
                             f"max, got {min!r} and {max!r}")

    @classmethod
    def fit(cls, spec, x):
        v = x[~torch.isnan(x)]
        if len(v) == 0:
            raise InputError(f"column {spec.name!r} (integer) has no observed value to fit")
        if (v != v.round()).any():
            i = int(((x != x.round()) & ~torch.isnan(x)).nonzero()[0])
            raise InputError(f"column {spec.name!r} (integer): row {i + 1} holds {x[i].item():g}, not an integer "
                             "(give the column kind continuous)")
        mean, std = _mean_std(v)
        return cls(spec, mean, math.sqrt(std ** 2 + 1 / 12), v.min().item(), v.max().item())

    def inverse(self, y):
        return torch.floor(super().inverse(y) + 0.5).clamp(self.min, self.max)


class _Quantile(_Column):
    """The quantile map to N(0, 1) (TabDDPM's quantile transform): y is piecewise linear through the knots
    (x_k, z_k), x_k the empirical quantiles at p_k = k / (n_q - 1), z_k = Phi^-1(p_k) with p_k clipped to
    [P_CLIP, 1 - P_CLIP], and linear with slope 1 / std beyond the end knots; log|dy/dx| = log of the slope of x's
    segment (at a knot, the segment on its right). A value the data repeat (a run of equal x_k, k = a..b) keeps two
    knots (u, Phi^-1(p_a - w s)) and (u, Phi^-1(p_b + w s)), s = 1 / (n_q - 1) the spacing of the p_k, w = TIE_WIDEN:
    the inverse is flat there, so u keeps about its share of the rows as a point mass (rounded measurements, computed
    values on a grid, zero-inflated columns) instead of spreading onto the ramps beside it; u itself maps to the middle
    of its mass, Phi^-1((p_lo + p_hi) / 2). Between two repeated values a ramp of (1 - 2 w) s is left, so the map
    stays invertible and its slope finite. A repeated value is a point mass, which has no density in the data's
    units: a column with one is left out of the density (``density``), as a categorical column is."""

    fitted = ("knots", "scores", "std")

    def __init__(self, spec, knots, scores, std):
        super().__init__(spec)
        self.knots, self.scores = self._knots(knots), self._increasing("scores", scores)
        if len(self.knots) != len(self.scores):
            raise InputError(f"table transform, column {spec.name!r}: 'knots' and 'scores' must have equal lengths, "
                             f"got {len(self.knots)} and {len(self.scores)}")
        self.std = self._number("std", std, positive=True)
        tied = torch.zeros(len(self.knots), dtype=torch.bool)
        tied[1:] = self.knots[1:] == self.knots[:-1]
        p = torch.special.ndtr(self.scores)
        self.tied, self.middles = tied, torch.special.ndtri((p + p.roll(1)) / 2)  # used where tied: k >= 1
        self.density = not bool(tied.any())  # a repeated value is a point mass: no density in the data's units

    @staticmethod
    def _floats(values) -> torch.Tensor | None:
        """values as float64 (>= 2,) if a list of finite numbers, else None."""
        ok = isinstance(values, (list, tuple)) and len(values) >= 2 and all(_real(v) for v in values)
        return torch.tensor(values, dtype=torch.float64) if ok else None

    def _increasing(self, key: str, values) -> torch.Tensor:
        """values as float64; InputError naming the field unless at least 2 strictly increasing finite numbers."""
        t = self._floats(values)
        if t is None or not (t[1:] > t[:-1]).all():
            raise InputError(f"table transform, column {self.spec.name!r}: {key!r} must be a list of at least 2 "
                             f"strictly increasing finite numbers")
        return t

    def _knots(self, values) -> torch.Tensor:
        """The knots as float64; InputError unless finite, non-decreasing, no value three times, two distinct."""
        t = self._floats(values)
        if t is None or not ((t[1:] >= t[:-1]).all() and (t[2:] > t[:-2]).all() and t[-1] > t[0]):
            raise InputError(f"table transform, column {self.spec.name!r}: 'knots' must be a list of finite "
                             f"non-decreasing numbers, at least 2 distinct, none repeated more than twice")
        return t

    @classmethod
    def fit(cls, spec, x):
        v = _observed(spec, x).numpy()
        p = np.linspace(0.0, 1.0, min(MAX_KNOTS, len(v)))
        q = np.quantile(v, p)
        first, last = np.r_[True, q[1:] != q[:-1]], np.r_[q[1:] != q[:-1], True]  # of a run of equal quantiles
        widen = TIE_WIDEN / max(len(p) - 1, 1) * (last.astype(float) - first) * ~(first & last)
        z = torch.special.ndtri(torch.from_numpy(np.clip(p + widen, P_CLIP, 1 - P_CLIP))).numpy()
        return cls(spec, q[first | last].tolist(), z[first | last].tolist(), float(v.std()))

    def forward(self, x):
        knots = self.knots.to(x.device)
        y = _piecewise_linear(x, knots, self.scores.to(x.device), 1 / self.std)[0]
        k = (torch.searchsorted(knots, x.detach().contiguous(), right=True) - 1).clamp(min=0)  # the last knot <= x
        at_tie = (x == knots[k]) & self.tied.to(x.device)[k]  # tied[0] is False: x below every knot is no tie
        return torch.where(at_tie, self.middles.to(x.device)[k], y)[:, None]

    def inverse(self, y):
        return _piecewise_linear(y[:, 0], self.scores.to(y.device), self.knots.to(y.device), self.std)[0]

    def log_slope(self, x):
        return torch.log(_piecewise_linear(x, self.knots.to(x.device), self.scores.to(x.device), 1 / self.std)[1])


def _piecewise_linear(v, a, b, tail: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The map through the knots (a_k, b_k) (both non-decreasing, one of them strictly), linear between them and with
    slope ``tail`` beyond the ends, at v, and its slope there (at a knot: the segment on its right; a flat segment,
    b_k = b_k+1, has slope 0). Its inverse swaps a and b."""
    k = (torch.searchsorted(a, v.detach().contiguous(), right=True) - 1).clamp(0, len(a) - 2)
    gap = a[k + 1] - a[k]  # 0 only for v below a tied first knot: a tail
    slope = (b[k + 1] - b[k]) / torch.where(gap > 0, gap, 1.0)
    tails = (v < a[0]) | (v >= a[-1])
    k = torch.where(v >= a[-1], len(a) - 1, k)  # beyond the last knot, measure from it
    slope = torch.where(tails, tail, slope)
    return b[k] + slope * (v - a[k]), slope  # y = b_k + slope (v - a_k)


class _Categorical(_Column):
    """K entries 2 onehot(x) - 1 (+1 for the cell's category, -1 elsewhere); the inverse takes the argmax.
    Not part of the density."""

    density = False

    def __init__(self, spec):
        super().__init__(spec)
        self.width = len(spec.categories)

    def forward(self, x):
        return 2 * torch.nn.functional.one_hot(x.long(), self.width).to(x.dtype) - 1

    def inverse(self, y):
        return y.argmax(dim=1).double()


class _Constant(_Column):
    """No model entries; the inverse fills the column with its code (``constant_code``). Not part of the density."""

    width = 0
    density = False

    def __init__(self, spec):
        super().__init__(spec)
        self.code = constant_code(spec.value)

    def forward(self, x):
        return x.new_zeros((len(x), 0))

    def inverse(self, y):
        return torch.full((len(y),), self.code, dtype=torch.float64, device=y.device)


_COLUMNS = {"standardize": _Affine, "quantile": _Quantile, "integer": _Integer, "positive": _Positive,
            "bounded": _Bounded, "categorical": _Categorical, "constant": _Constant}


def _column_class(spec: ColumnSpec) -> type[_Column]:
    """The class of a checked spec's column (a continuous column's by its transform)."""
    return _COLUMNS[spec.transform if spec.kind == "continuous" else spec.kind]


class Table:
    """The invertible map between a table's codes (N, C) (module doc) and model units (N, D), column by column:
    continuous (standardize or quantile), integer (dequantized), positive (log), bounded (logit) columns take one
    entry, a categorical column K (2 onehot - 1), a constant column none. A missing (NaN) cell gives NaN in all its
    column's entries. The density (``log_abs_det_jacobian``) covers the continuous, integer, positive and bounded
    columns (``density_columns``); categorical and constant ones are left out of it."""

    kind = "table"
    levels = None  # no quantize step: inverse itself decodes integers and categories
    model_range = None  # unbounded

    def __init__(self, columns: list[_Column]):
        names = [c.spec.name for c in columns]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise InputError(f"table transform: column names must be distinct; repeated: {', '.join(map(repr, twice))}")
        if sum(c.width for c in columns) == 0:
            raise InputError("a table needs a column that is not constant: there is nothing to model")
        self.columns = tuple(columns)
        ends = np.cumsum([0] + [c.width for c in columns]).tolist()
        self.model_slices = [slice(a, b) for a, b in itertools.pairwise(ends)]  # column j's model entries

    @classmethod
    def fit(cls, codes, specs: list[ColumnSpec]) -> Table:
        """Each column's map fitted on its observed (non-NaN) codes; InputError naming a column that cannot be fitted
        (wrong options for its kind, a cell its kind refuses, too few distinct values)."""
        specs = [check_spec(s) for s in specs]
        x = _as_table(codes, len(specs))
        for j, spec in enumerate(specs):
            check_cells(spec, x[:, j])
        return cls([_column_class(spec).fit(spec, x[:, j]) for j, spec in enumerate(specs)])

    @classmethod
    def from_dict(cls, d: dict) -> Table:
        """The inverse of to_dict; InputError (one line, naming the column and field) for anything else."""
        if not isinstance(d, dict) or set(d) != {"kind", "columns"} or d["kind"] != cls.kind:
            got = sorted(d) if isinstance(d, dict) else type(d).__name__
            raise InputError(f"a table transform must have the fields kind ('table') and columns, got {got}")
        if not (isinstance(d["columns"], list) and d["columns"]):
            raise InputError("a table transform's 'columns' must be a non-empty list")
        return cls([_column_from_dict(c, i) for i, c in enumerate(d["columns"])])

    def to_dict(self) -> dict:
        """{'kind': 'table', 'columns': [each column's spec fields and fitted numbers]}: plain JSON."""
        return {"kind": self.kind, "columns": [c.to_dict() for c in self.columns]}

    @property
    def specs(self) -> list[ColumnSpec]:
        """The columns' specs (defaults filled in), in the table's order."""
        return [replace(c.spec) for c in self.columns]

    @property
    def sample_shape(self) -> tuple[int]:
        """(D,): the model entries of a row."""
        return (self.model_slices[-1].stop,)

    @property
    def entry_names(self) -> list[str]:
        """A name per model entry: the column's, a categorical column's entries as ``name=category``."""
        return [name for c in self.columns for name in
                ([f"{c.spec.name}={k}" for k in c.spec.categories] if c.spec.kind == "categorical" else
                 [c.spec.name] * c.width)]

    @property
    def integer_columns(self) -> torch.Tensor:
        """Which columns are integer (and are dequantized in training): bool (C,)."""
        return torch.tensor([c.spec.kind == "integer" for c in self.columns])

    @property
    def density_columns(self) -> list[str]:
        """The names of the columns whose density log_abs_det_jacobian covers (not categorical, not constant)."""
        return [c.spec.name for c in self.columns if c.density]

    def forward(self, codes) -> torch.Tensor:
        """Codes (N, C) (numpy or torch) -> model units (N, D), NaN in every entry of a missing cell's column.
        Computed in float64; the result is float32 for float32 codes, float64 otherwise."""
        codes = _tensor(codes)
        x = _as_table(codes, len(self.columns))
        parts = []
        for j, col in enumerate(self.columns):
            check_cells(col.spec, x[:, j])
            seen = ~torch.isnan(x[:, j])
            part = x.new_full((len(x), col.width), math.nan)
            part[seen] = col.forward(x[seen, j])
            parts.append(part)
        return torch.cat(parts, dim=1).to(torch.float32 if codes.dtype == torch.float32 else torch.float64)

    def inverse(self, y) -> torch.Tensor:
        """Model units (N, D) -> decoded codes (N, C) float64: integers rounded and clamped to their observed range,
        categories by argmax, bounded cells clamped to [low, high], numbers with ``decimals`` rounded to them,
        constants filled in (no NaN for finite y)."""
        y = _tensor(y).to(torch.float64)
        if y.ndim != 2 or y.shape[1] != self.sample_shape[0]:
            raise InputError(f"expected model units of shape (N, {self.sample_shape[0]}), got {tuple(y.shape)}")
        return torch.stack([rounded(c.spec, c.inverse(y[:, s])) for c, s in zip(self.columns, self.model_slices)],
                           dim=1)

    def log_abs_det_jacobian(self, codes) -> torch.Tensor:
        """log |det d forward / dx| over the density columns (the others are left out), per row: float64 (N,), the
        sum of each column's log |dy/dx|. InputError if a density column has a missing cell."""
        x = _as_table(codes, len(self.columns))
        total = x.new_zeros(len(x))
        for j, col in enumerate(self.columns):
            if col.density:
                if torch.isnan(x[:, j]).any():
                    i = int(torch.isnan(x[:, j]).nonzero()[0])
                    raise InputError(f"column {col.spec.name!r}: row {i + 1} is missing; the density needs every cell "
                                     f"of the columns {', '.join(self.density_columns)}")
                check_cells(col.spec, x[:, j])
                total = total + col.log_slope(x[:, j])
        return total

    def dequantize(self, codes, u) -> torch.Tensor:
        """codes + (u - 1/2) on the integer columns (u (N, C) ~ U[0, 1), drawn by the caller), float64."""
        x = _as_table(codes, len(self.columns))
        u = _tensor(u).to(x.device, torch.float64)
        if u.shape != x.shape:
            raise InputError(f"dequantization noise must have the codes' shape {tuple(x.shape)}, got {tuple(u.shape)}")
        return x + torch.where(self.integer_columns.to(x.device), u - 0.5, 0.0)

    def dequantization_shift(self, u) -> torch.Tensor:
        """(N, D) float64: what dequantizing by u (N, C) ~ U[0, 1) adds to the model entries. An integer column's map
        is affine, y = (x - mean) / std, so y(k + u - 1/2) = y(k) + (u - 1/2) / std: forward(dequantize(codes, u))
        is forward(codes) + this, up to float rounding, without mapping every column again at every step."""
        u = _tensor(u).to(torch.float64)
        if u.ndim != 2 or u.shape[1] != len(self.columns):
            raise InputError(f"dequantization noise must be (N, {len(self.columns)}), got {tuple(u.shape)}")
        columns, entries, scale = self._integer_layout
        shift = u.new_zeros((len(u), self.sample_shape[0]))
        shift[:, entries] = (u[:, columns] - 0.5) * scale.to(u.device)
        return shift

    @functools.cached_property
    def _integer_layout(self) -> tuple[list[int], list[int], torch.Tensor]:
        """(the integer columns, their model entries, 1 / their std), found once: dequantization_shift runs at every
        training step."""
        columns = [j for j, c in enumerate(self.columns) if c.spec.kind == "integer"]
        entries = [self.model_slices[j].start for j in columns]
        return columns, entries, torch.tensor([1 / self.columns[j].std for j in columns], dtype=torch.float64)

    def __repr__(self) -> str:
        return f"Table({', '.join(f'{c.spec.name}: {c.spec.kind}' for c in self.columns)})"


def _tensor(a) -> torch.Tensor:
    """a tensor as it is; an array or nested lists as a tensor (lists of floats become float64, not float32)."""
    return a if isinstance(a, torch.Tensor) else torch.as_tensor(np.asarray(a))


def _as_table(codes, width: int) -> torch.Tensor:
    """codes as float64 (N, width); InputError otherwise."""
    x = _tensor(codes)
    if x.ndim != 2 or x.shape[1] != width:
        raise InputError(f"expected a table of {width} columns (N, {width}), got shape {tuple(x.shape)}")
    return x.to(torch.float64)


def rounded(spec: ColumnSpec, x: torch.Tensor) -> torch.Tensor:
    """x rounded to the column's decimals (as is without), kept within a bounded column's [low, high] and a positive
    column's (0, inf)."""
    if spec.decimals is None:
        return x
    x = torch.round(x, decimals=spec.decimals)
    if spec.kind == "positive":  # kept > 0: the smallest value the places can show
        return x.clamp_min(10.0 ** -spec.decimals)
    return x.clamp(spec.low, spec.high) if spec.kind == "bounded" else x


def check_cells(spec: ColumnSpec, x: torch.Tensor) -> None:
    """InputError naming the column and row (counted from 1) of the first observed (non-NaN) cell of x (n,) that the
    spec's kind refuses: not finite; positive: not > 0; bounded: outside [low, high]; categorical: not a code
    0..K-1. A constant column's cells are not looked at."""
    if spec.kind == "constant":
        return
    rule, ok = "not a finite number", torch.isfinite(x)
    if spec.kind == "positive":
        rule, ok = "not > 0 (a positive column's cells must be > 0)", x > 0
    elif spec.kind == "bounded":
        rule, ok = f"outside the column's bounds [{spec.low:g}, {spec.high:g}]", (spec.low <= x) & (x <= spec.high)
    elif spec.kind == "categorical":
        rule = f"not a category code 0..{len(spec.categories) - 1}"
        ok = (x == x.round()) & (0 <= x) & (x < len(spec.categories))
    bad = ~torch.isnan(x) & ~ok
    if bad.any():
        i = int(bad.nonzero()[0])
        raise InputError(f"column {spec.name!r} ({spec.kind}): row {i + 1} holds {x[i].item():g}, {rule}")


def _column_from_dict(d, i: int) -> _Column:
    """Column i of a table transform's dict: its spec fields and fitted numbers, exactly."""
    if not (isinstance(d, dict) and isinstance(d.get("name"), str)):
        raise InputError(f"table transform, column {i}: expected an object with a 'name' (text), got {d!r}"[:200])
    if d.get("kind") not in KINDS:
        raise InputError(f"table transform, column {d['name']!r}: unknown kind {d.get('kind')!r}; known: "
                         f"{', '.join(KINDS)}"[:200])
    if d["kind"] == "continuous" and d.get("transform") not in CONTINUOUS_MAPS:
        raise InputError(f"table transform, column {d['name']!r}: 'transform' must be one of "
                         f"{', '.join(CONTINUOUS_MAPS)}, got {d.get('transform')!r}")
    options = OPTIONS[d["kind"]]
    kind = _column_class(ColumnSpec(d["name"], d["kind"], transform=d.get("transform")))
    fields = {"name", "kind", *options, *kind.fitted} - set(OPTIONAL)
    if not fields <= set(d) <= fields | set(OPTIONAL) & set(options):
        raise InputError(f"table transform, column {d['name']!r} ({d['kind']}): expected the fields "
                         f"{', '.join(sorted(fields))}, got {', '.join(sorted(d))}")
    spec = check_spec(ColumnSpec(d["name"], d["kind"], **{o: d.get(o) for o in options}))
    return kind(spec, **{k: d[k] for k in kind.fitted})
