"""The scores of the tables benchmark (tables.py, issue 13), on plain float64 arrays (N, C), one column per table
column; ``categorical`` lists the columns whose values are labels (codes or numbers) rather than quantities.

Imputation, on the cells removed from a complete table (``removed`` True), in z-units: each column's error divided
by the complete column's standard deviation (population sd, ``column_scale``):
- ``z_rmse``: sqrt(mean over removed cells of ((imputed - true) / sd)^2), pooled over all removed cells;
- ``best_of_k``: the same with, per cell, the draw closest to the true value (min_k |draw_k - true|);
- ``coverage``: the share of removed cells whose true value lies in [lower, upper]; ``z_width``: the mean width;
- ``mean_w1``: per column, W1 between the values imputed for its removed cells (all K draws pooled) and their true
  values (scipy's wasserstein_distance), divided by the column's sd, averaged over the columns with a removed cell.

Synthetic rows, against held-out real rows:
- ``mean_column_distance``: per column the two-sample KS statistic, or for a categorical column the total variation
  1/2 sum_v |p_v - q_v| between the value frequencies, averaged over columns;
- ``mean_corr_diff``: mean |r_ij(a) - r_ij(b)| over column pairs i < j, Pearson on the numbers as given (a column
  constant in one set has correlation 0 there);
- ``detection_auc``: ROC AUC of scikit-learn's HistGradientBoostingClassifier (defaults) telling real from synthetic
  rows, mean over stratified 5-fold cross-validation (0.5: indistinguishable);
- ``utility``: a HistGradientBoosting model at defaults fitted on one set's features and scored on another's target:
  F1-macro (classification) or R^2 (regression);
- ``closer_to_train_share``: the share of synthetic rows nearer (Euclidean, in ``Encoder`` units) to a training row
  than to any held-out row, a tie counting 1/2 (train and held-out sets of equal size: ~0.5 for fresh rows, 1 for
  copies of training rows).
"""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree
from scipy.stats import ks_2samp, wasserstein_distance
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
from sklearn.metrics import f1_score, r2_score
from sklearn.model_selection import StratifiedKFold, cross_val_score

# ---------------------------------------------------------------------------------------------
# Imputation.

def mcar_mask(shape: tuple[int, int], rate: float, seed: int) -> np.ndarray:
    """(N, C) bool, True = removed: round(rate N C) cells chosen uniformly at random (missing completely at random),
    skipping a cell that would leave its row with no observed cell (an all-missing row has nothing to condition on,
    and gaussdiff refuses one). Depends on the shape, rate and seed alone."""
    n, c = shape
    target = round(rate * n * c)
    if target > n * (c - 1):
        raise ValueError(f"cannot remove {target} cells of a {n} x {c} table and keep a cell in every row")
    removed = np.zeros(n * c, dtype=bool)
    per_row = np.zeros(n, dtype=int)
    count = 0
    for cell in np.random.default_rng(seed).permutation(n * c):
        if count == target:
            break
        if per_row[cell // c] < c - 1:
            removed[cell] = True
            per_row[cell // c] += 1
            count += 1
    return removed.reshape(n, c)


def column_scale(complete: np.ndarray) -> np.ndarray:
    """(C,) each complete column's population sd (1 for a constant column): the z-unit of its errors."""
    sd = complete.std(0)
    return np.where(sd > 0, sd, 1.0)


def z_rmse(imputed: np.ndarray, truth: np.ndarray, removed: np.ndarray, scale: np.ndarray) -> float:
    """sqrt(mean over removed cells of ((imputed - truth) / scale)^2)."""
    z = (imputed - truth) / scale
    return float(np.sqrt(np.mean(z[removed] ** 2)))


def best_of_k(draws: np.ndarray, truth: np.ndarray, removed: np.ndarray, scale: np.ndarray) -> float:
    """z_rmse of, per removed cell, the one of the K draws (K, N, C) closest to the true value."""
    nearest = np.abs(draws - truth).min(0)
    return z_rmse(nearest, 0.0, removed, scale)


def coverage(lower: np.ndarray, upper: np.ndarray, truth: np.ndarray, removed: np.ndarray) -> float:
    """The share of removed cells whose true value lies in [lower, upper]."""
    inside = (lower <= truth) & (truth <= upper)
    return float(inside[removed].mean())


def z_width(lower: np.ndarray, upper: np.ndarray, removed: np.ndarray, scale: np.ndarray) -> float:
    """The mean width (upper - lower) / scale of the removed cells' intervals."""
    return float((((upper - lower) / scale)[removed]).mean())


def mean_w1(draws: np.ndarray, truth: np.ndarray, removed: np.ndarray, scale: np.ndarray) -> float:
    """Mean over columns with a removed cell of W1(imputed values of its removed cells, K draws pooled; their true
    values) / the column's scale."""
    w = [wasserstein_distance(draws[:, removed[:, j], j].ravel(), truth[removed[:, j], j]) / scale[j]
         for j in range(truth.shape[1]) if removed[:, j].any()]
    return float(np.mean(w))


# ---------------------------------------------------------------------------------------------
# Synthetic rows.

def total_variation(a: np.ndarray, b: np.ndarray) -> float:
    """1/2 sum_v |P_a(v) - P_b(v)| between the value frequencies of two 1-D samples."""
    values = np.union1d(a, b)
    pa = (a[:, None] == values).mean(0)
    pb = (b[:, None] == values).mean(0)
    return float(0.5 * np.abs(pa - pb).sum())


def column_distances(a: np.ndarray, b: np.ndarray, categorical=()) -> list[float]:
    """Per column: total variation for a categorical column, else the two-sample KS statistic."""
    return [total_variation(a[:, j], b[:, j]) if j in categorical else float(ks_2samp(a[:, j], b[:, j]).statistic)
            for j in range(a.shape[1])]


def mean_column_distance(a: np.ndarray, b: np.ndarray, categorical=()) -> float:
    return float(np.mean(column_distances(a, b, categorical)))


def correlations(x: np.ndarray) -> np.ndarray:
    """Pearson correlation matrix of the columns; 0 off the diagonal for a constant column."""
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.corrcoef(x, rowvar=False)
    return np.nan_to_num(r, nan=0.0)


def mean_corr_diff(a: np.ndarray, b: np.ndarray) -> float:
    """Mean |r_ij(a) - r_ij(b)| over column pairs i < j."""
    i, j = np.triu_indices(a.shape[1], 1)
    return float(np.abs(correlations(a)[i, j] - correlations(b)[i, j]).mean())


def detection_auc(real: np.ndarray, synthetic: np.ndarray, seed: int, folds: int = 5) -> float:
    """Mean cross-validated ROC AUC of HistGradientBoostingClassifier (defaults) on real (0) vs synthetic (1)."""
    x = np.concatenate([real, synthetic])
    y = np.r_[np.zeros(len(real)), np.ones(len(synthetic))]
    split = StratifiedKFold(folds, shuffle=True, random_state=seed)
    model = HistGradientBoostingClassifier(random_state=seed)
    return float(cross_val_score(model, x, y, cv=split, scoring="roc_auc").mean())


def utility(train: np.ndarray, test: np.ndarray, target: int, task: str, seed: int) -> float:
    """HistGradientBoosting{Classifier,Regressor} at defaults fitted on ``train``'s other columns to its column
    ``target``, scored on ``test``: F1-macro (task "classification") or R^2 ("regression"). A training set with a
    single class predicts it everywhere."""
    features = [j for j in range(train.shape[1]) if j != target]
    x, y = train[:, features], train[:, target]
    x_test, y_test = test[:, features], test[:, target]
    if task == "regression":
        return float(r2_score(y_test, HistGradientBoostingRegressor(random_state=seed).fit(x, y).predict(x_test)))
    if len(np.unique(y)) == 1:
        predicted = np.full(len(y_test), y[0])
    else:
        predicted = HistGradientBoostingClassifier(random_state=seed).fit(x, y).predict(x_test)
    return float(f1_score(y_test, predicted, average="macro"))


class Encoder:
    """Rows as points for nearest-neighbour distances, fitted on reference rows: a numeric column standardized
    (x - mean) / sd, a categorical column one-hot over the reference's values (a value it lacks: all zeros)."""

    def __init__(self, reference: np.ndarray, categorical=()):
        self.categorical = sorted(categorical)
        self.numeric = [j for j in range(reference.shape[1]) if j not in categorical]
        self.mean = reference[:, self.numeric].mean(0)
        self.scale = column_scale(reference[:, self.numeric])
        self.levels = {j: np.unique(reference[:, j]) for j in self.categorical}

    def __call__(self, x: np.ndarray) -> np.ndarray:
        parts = [(x[:, self.numeric] - self.mean) / self.scale]
        parts += [(x[:, [j]] == self.levels[j]).astype(float) for j in self.categorical]
        return np.concatenate(parts, axis=1)


def closer_to_train_share(synthetic: np.ndarray, train: np.ndarray, held_out: np.ndarray, encode: Encoder) -> float:
    """The share of synthetic rows whose nearest training row is nearer than their nearest held-out row (ties 1/2)."""
    s = encode(synthetic)
    d_train = cKDTree(encode(train)).query(s)[0]
    d_held = cKDTree(encode(held_out)).query(s)[0]
    return float(np.mean((d_train < d_held) + 0.5 * (d_train == d_held)))
