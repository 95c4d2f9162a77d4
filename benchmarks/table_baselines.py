"""The arms the tables benchmark (tables.py, issue 13) runs beside gaussdiff, on float64 arrays (N, C).

Imputation (NaN = missing): scikit-learn's mean, ``KNNImputer(5)``, ``IterativeImputer()`` (BayesianRidge) and
``IterativeImputer(ExtraTreesRegressor(100))``, the usual stand-in for MissForest, each with ``random_state`` = the
benchmark seed where it takes one; multiple imputation: ``IterativeImputer(sample_posterior=True)`` run K times with
K seeds. Each runs as a user runs it (``standardized``): on the columns standardized by their observed cells' mean and
sd (StandardScaler's fit, NaN ignored), its output mapped back. KNNImputer's distances need it (wine, raw columns:
z-RMSE 0.92, dominated by proline's scale; standardized: 0.75); trees do not see it, BayesianRidge barely.

Synthetic rows:
- ``GaussianCopula``: empirical marginals and the correlation of the normal scores z = Phi^-1(rank / (n + 1))
  (average ranks for ties), fitted on the training rows; a draw is z ~ N(0, R), u = Phi(z), x_j = the training
  column's empirical u-quantile (interpolated for a continuous column; an observed value, the inverse of the
  empirical CDF, for a discrete one).
- ``smote``: each row interpolates a random training row x_i with one of its k = 5 nearest neighbours x_j of the same
  class (the ``label`` column; all rows are one class without one), x_i + lambda (x_j - x_i) with lambda ~ U(0, 1);
  a categorical cell comes from x_i or x_j with equal odds, an integer one is rounded. Neighbours by Euclidean
  distance in ``table_metrics.Encoder`` units of the training rows.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree
from scipy.stats import norm, rankdata
from sklearn.ensemble import ExtraTreesRegressor
from sklearn.experimental import enable_iterative_imputer  # noqa: F401 - makes IterativeImputer importable
from sklearn.impute import IterativeImputer, KNNImputer, SimpleImputer
from table_metrics import Encoder

IMPUTERS = {  # name -> imputer for a seed
    "mean": lambda seed: SimpleImputer(strategy="mean"),
    "knn5": lambda seed: KNNImputer(n_neighbors=5),
    "iterative": lambda seed: IterativeImputer(random_state=seed),
    "extra_trees": lambda seed: IterativeImputer(ExtraTreesRegressor(n_estimators=100, random_state=seed),
                                                 random_state=seed),
}


def standardized(imputer, gapped: np.ndarray) -> np.ndarray:
    """``imputer.fit_transform`` of ``gapped`` (NaN = missing) on its columns standardized by their observed cells'
    mean and sd (1 for a constant column), mapped back to the columns' units."""
    mean, sd = np.nanmean(gapped, 0), np.nanstd(gapped, 0)
    sd = np.where(sd > 0, sd, 1.0)
    return imputer.fit_transform((gapped - mean) / sd) * sd + mean


def posterior_draws(gapped: np.ndarray, draws: int, seed: int) -> np.ndarray:
    """(K, N, C): ``IterativeImputer(sample_posterior=True, random_state=1000 seed + k)`` for k < K = ``draws``."""
    return np.stack([standardized(IterativeImputer(sample_posterior=True, random_state=1000 * seed + k), gapped)
                     for k in range(draws)])


class GaussianCopula:
    """Empirical marginals joined by a Gaussian copula (module doc); ``discrete``: the columns drawn among the
    training values."""

    def __init__(self, train: np.ndarray, discrete=()):
        self.train, self.discrete = train, set(discrete)
        z = norm.ppf(rankdata(train, axis=0) / (len(train) + 1))  # normal scores
        with np.errstate(invalid="ignore", divide="ignore"):
            r = np.nan_to_num(np.corrcoef(z, rowvar=False), nan=0.0)  # a constant column: uncorrelated
        np.fill_diagonal(r, 1.0)
        self.corr = r

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        z = rng.multivariate_normal(np.zeros(len(self.corr)), self.corr, size=n, method="eigh")
        u = norm.cdf(z)
        return np.stack([np.quantile(self.train[:, j], u[:, j],
                                     method="inverted_cdf" if j in self.discrete else "linear")
                         for j in range(self.train.shape[1])], axis=1)


def smote(train: np.ndarray, n: int, rng: np.random.Generator, *, label: int | None = None, categorical=(),
          integer=(), k: int = 5) -> np.ndarray:
    """``n`` SMOTE rows from ``train`` (module doc)."""
    points = Encoder(train, categorical)(train)
    groups = np.unique(train[:, label], return_inverse=True)[1] if label is not None else np.zeros(len(train), int)
    base = rng.integers(len(train), size=n)
    other = np.empty(n, dtype=int)
    for g in np.unique(groups[base]):
        members = np.flatnonzero(groups == g)
        kk = min(k, len(members) - 1)
        if kk == 0:  # a class of one row: copies it
            other[groups[base] == g] = members[0]
            continue
        tree = cKDTree(points[members])
        for i in np.flatnonzero(groups[base] == g):
            near = members[tree.query(points[base[i]], k=kk + 1)[1]]
            near = near[near != base[i]][:kk]  # itself left out (a duplicate of it may stay)
            other[i] = near[rng.integers(len(near))]
    lam = rng.random((n, 1))
    rows = train[base] + lam * (train[other] - train[base])
    for j in categorical:
        rows[:, j] = np.where(rng.random(n) < 0.5, train[base, j], train[other, j])
    for j in integer:
        rows[:, j] = np.round(rows[:, j])
    return rows
