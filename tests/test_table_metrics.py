"""Tests of the tables benchmark's scores and baselines (benchmarks/table_metrics.py, table_baselines.py).

Each score is checked where its answer is known: by hand on small arrays (z-RMSE, best-of-K, W1 of a shift, total
variation), by the laws of simulated data (normal 90 % intervals cover 0.9 of fresh values; KS between N(0, 1) and
N(0.5, 1) is 2 Phi(0.25) - 1; the best detection AUC for a mean shift d is Phi(d / sqrt 2)), and at its two ends
(identical sets, fresh rows, copies). Monte Carlo tolerances are stated where used (3 to 4 standard errors).
"""

import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.stats import ks_2samp, norm
from sklearn.impute import KNNImputer, SimpleImputer

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import table_metrics as tm  # noqa: E402
from table_baselines import GaussianCopula, smote, standardized  # noqa: E402

from gaussdiff.imputation import intervals  # noqa: E402
from gaussdiff.transforms import Standardize  # noqa: E402


def test_mcar_mask_removes_the_rate_at_random_and_keeps_a_cell_per_row():
    mask = tm.mcar_mask((500, 6), 0.2, seed=0)
    assert mask.dtype == bool and mask.shape == (500, 6)
    assert mask.sum() == round(0.2 * 500 * 6)
    assert (~mask).any(1).all()  # every row keeps an observed cell
    np.testing.assert_array_equal(mask, tm.mcar_mask((500, 6), 0.2, seed=0))
    assert (mask != tm.mcar_mask((500, 6), 0.2, seed=1)).any()
    # completely at random: each column's share is 0.2 within 4 binomial sd
    assert np.all(np.abs(mask.mean(0) - 0.2) < 4 * math.sqrt(0.2 * 0.8 / 500))
    tight = tm.mcar_mask((50, 2), 0.5, seed=3)  # as many cells as the rows allow: one per row
    assert tight.sum() == 50 and (tight.sum(1) == 1).all()
    with pytest.raises(ValueError):
        tm.mcar_mask((50, 2), 0.6, seed=3)


def test_z_rmse_and_best_of_k_by_hand():
    truth = np.array([[1.0, 10.0], [3.0, 20.0], [5.0, 60.0]])
    scale = tm.column_scale(truth)
    np.testing.assert_allclose(scale, [math.sqrt(8 / 3), math.sqrt(1400 / 3)])  # population sd
    removed = np.array([[True, False], [False, True], [True, True]])
    imputed = np.array([[2.0, 0.0], [0.0, 30.0], [3.0, 40.0]])
    z = [1 / scale[0], 10 / scale[1], -2 / scale[0], -20 / scale[1]]
    assert tm.z_rmse(imputed, truth, removed, scale) == pytest.approx(math.sqrt(np.mean(np.square(z))))
    far = imputed + np.array([5.0, 50.0])  # a second draw, further from every true value but one
    far[2, 0] = 5.0  # exact
    best = [1 / scale[0], 10 / scale[1], 0.0, 20 / scale[1]]
    assert tm.best_of_k(np.stack([imputed, far]), truth, removed, scale) == pytest.approx(
        math.sqrt(np.mean(np.square(best))))
    assert tm.column_scale(np.ones((4, 1)))[0] == 1.0  # a constant column


def test_mean_w1_of_a_shift_is_the_shift_in_z_units():
    rng = np.random.default_rng(0)
    truth = rng.normal(size=(300, 3)) * [1.0, 2.0, 4.0]
    removed = tm.mcar_mask(truth.shape, 0.3, seed=0)
    scale = tm.column_scale(truth)
    draws = np.stack([truth + 0.5, truth + 0.5])  # every draw shifted by 0.5: W1 = 0.5 per column
    assert tm.mean_w1(draws, truth, removed, scale) == pytest.approx(np.mean(0.5 / scale))


def test_coverage_of_exact_normal_intervals_is_the_level():
    rng = np.random.default_rng(1)
    n = 40_000
    mu = rng.normal(size=(n, 1))
    truth = mu + rng.normal(size=(n, 1))
    half = norm.ppf(0.95)
    removed = np.ones((n, 1), dtype=bool)
    band = 4 * math.sqrt(0.9 * 0.1 / n)
    assert abs(tm.coverage(mu - half, mu + half, truth, removed) - 0.9) < band
    assert tm.z_width(mu - half, mu + half, removed, np.array([2.0])) == pytest.approx(half)
    # the rule the benchmark gives IterativeImputer's K = 10 draws (gaussdiff's): t bounds, exact for normal draws
    draws = mu + rng.normal(size=(10, n, 1))
    lower, upper = intervals(torch.from_numpy(draws), 0.9, Standardize.identity(1))
    assert abs(tm.coverage(lower.numpy(), upper.numpy(), truth, removed) - 0.9) < band


def test_column_distances_on_identical_fresh_and_shifted_sets():
    rng = np.random.default_rng(2)
    n = 4000
    a, b = rng.normal(size=(n, 3)), rng.normal(size=(n, 3))
    assert tm.column_distances(a, a) == [0.0, 0.0, 0.0]
    assert tm.mean_column_distance(a, b) < 1.63 * math.sqrt(2 / n)  # below the 1 % critical value of KS
    shifted = tm.column_distances(a, b + [0.5, 0, 0])[0]
    assert shifted == pytest.approx(2 * norm.cdf(0.25) - 1, abs=0.03)  # sup |Phi(x) - Phi(x - 0.5)|
    labels = np.array([[0.0]] * 50 + [[1.0]] * 50), np.array([[0.0]] * 80 + [[1.0]] * 20)
    assert tm.column_distances(*labels, categorical=[0]) == [pytest.approx(0.3)]  # total variation
    assert tm.total_variation(np.array([0.0, 1.0]), np.array([2.0, 3.0])) == 1.0


def test_correlation_difference():
    rng = np.random.default_rng(3)
    cov = [[1.0, 0.8], [0.8, 1.0]]
    a = rng.multivariate_normal([0, 0], cov, size=5000)
    independent = rng.normal(size=(5000, 2))
    assert tm.mean_corr_diff(a, a) == 0.0
    assert tm.mean_corr_diff(a, independent) == pytest.approx(0.8, abs=0.05)
    assert tm.mean_corr_diff(np.c_[a, np.ones(5000)], np.c_[a, np.ones(5000)]) == 0.0  # a constant column


def test_detection_auc_is_half_for_the_same_law_and_high_for_a_shift():
    rng = np.random.default_rng(4)
    real, same = rng.normal(size=(500, 3)), rng.normal(size=(500, 3))
    assert abs(tm.detection_auc(real, same, seed=0) - 0.5) < 0.08  # sd of one fold's AUC ~0.04, 5 folds pooled
    shifted = same + [1.5, 0, 0]
    best = norm.cdf(1.5 / math.sqrt(2))  # the Bayes AUC of a unit-variance mean shift of 1.5
    assert best - 0.08 < tm.detection_auc(real, shifted, seed=0) < best + 0.05


def test_utility_scores_a_regression_and_a_classification():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(2000, 2))
    reg = np.c_[x, 2 * x[:, 0] + 0.5 * rng.normal(size=2000)]
    assert tm.utility(reg[:1000], reg[1000:], 2, "regression", 0) == pytest.approx(4 / 4.25, abs=0.04)
    cls = np.c_[x, (x[:, 1] > 0).astype(float)]
    assert tm.utility(cls[:1000], cls[1000:], 2, "classification", 0) > 0.97
    one_class = np.c_[x[:10], np.ones(10)]  # predicts its one class: F1-macro of half right is (0 + 2/3) / 2
    test = np.c_[x[:4], [0.0, 0.0, 1.0, 1.0]]
    assert tm.utility(one_class, test, 2, "classification", 0) == pytest.approx(1 / 3)


def test_closer_to_train_share_is_half_for_fresh_rows_and_one_for_copies():
    rng = np.random.default_rng(6)
    train, held, fresh = (rng.normal(size=(2000, 4)) for _ in range(3))
    encode = tm.Encoder(train)
    assert abs(tm.closer_to_train_share(fresh, train, held, encode) - 0.5) < 4 * math.sqrt(0.25 / 2000)
    assert tm.closer_to_train_share(train[:500], train, held, encode) == 1.0
    assert tm.closer_to_train_share(held[:500], train, held, encode) == 0.0


def test_encoder_standardizes_numbers_and_one_hots_categories():
    ref = np.array([[1.0, 0.0], [3.0, 2.0], [5.0, 2.0]])
    z = tm.Encoder(ref, categorical=[1])(np.array([[3.0, 2.0], [7.0, 5.0]]))
    np.testing.assert_allclose(z, [[0.0, 0.0, 1.0], [4 / math.sqrt(8 / 3), 0.0, 0.0]])


def test_copula_keeps_marginals_and_the_correlation_of_a_gaussian():
    rng = np.random.default_rng(7)
    z = rng.multivariate_normal([0, 0, 0], [[1, 0.6, 0.3], [0.6, 1, 0], [0.3, 0, 1]], size=4000)
    train = np.c_[z[:, 0], np.exp(z[:, 1]), np.round(2 * z[:, 2])]  # normal, log-normal, discrete
    rows = GaussianCopula(train, discrete=[2]).sample(4000, np.random.default_rng(8))
    for j in range(3):
        assert ks_2samp(rows[:, j], train[:, j]).statistic < 0.04
    assert set(np.unique(rows[:, 2])) <= set(np.unique(train[:, 2]))  # the discrete column: observed values
    r = np.corrcoef(np.c_[rows[:, 0], np.log(rows[:, 1])], rowvar=False)[0, 1]
    assert r == pytest.approx(0.6, abs=0.04)  # the Gaussian's correlation, through the log-normal marginal


def test_standardized_imputation_is_blind_to_the_columns_units():
    rng = np.random.default_rng(13)
    x = rng.multivariate_normal([0, 0, 0], [[1, 0.7, 0.2], [0.7, 1, 0.5], [0.2, 0.5, 1]], size=200)
    gapped = np.where(tm.mcar_mask(x.shape, 0.2, seed=0), np.nan, x)
    filled = standardized(SimpleImputer(), gapped)
    np.testing.assert_allclose(filled, np.where(np.isnan(gapped), np.nanmean(gapped, 0), gapped), atol=1e-12)
    units = np.array([1.0, 1000.0, 0.01])  # KNN's distances on raw columns would follow the second column alone
    np.testing.assert_allclose(standardized(KNNImputer(n_neighbors=5), gapped * units) / units,
                               standardized(KNNImputer(n_neighbors=5), gapped), rtol=1e-9, atol=1e-9)


def _on_a_neighbour_segment(row, x, labels, numeric, categorical, k=5) -> bool:
    """Whether ``row`` is x_a + lambda (x_b - x_a), 0 <= lambda <= 1, on its numeric columns, takes x_a's or x_b's
    categorical cells, for some a and one of a's k nearest rows b of the same class (standardized numbers and one-hot
    categories: the documented distance, computed here by brute force)."""
    z = (x[:, numeric] - x[:, numeric].mean(0)) / x[:, numeric].std(0)
    onehot = np.concatenate([x[:, [j]] == np.unique(x[:, j]) for j in categorical], axis=1)
    points = np.c_[z, onehot]
    for a in np.flatnonzero(labels == row[-1]):
        same = np.flatnonzero((labels == labels[a]) & (np.arange(len(x)) != a))
        near = same[np.argsort(((points[same] - points[a]) ** 2).sum(1))[:k]]
        for b in near:
            d = x[b, numeric] - x[a, numeric]
            lam = float(d @ (row[numeric] - x[a, numeric]) / (d @ d))
            on = np.allclose(x[a, numeric] + lam * d, row[numeric], atol=1e-9) and -1e-12 <= lam <= 1 + 1e-12
            if on and all(row[j] in (x[a, j], x[b, j]) for j in categorical):
                return True
    return False


def test_smote_rows_lie_between_neighbours_of_the_same_class():
    rng = np.random.default_rng(9)
    labels = np.repeat([0.0, 1.0], 30)
    x = np.c_[rng.normal(size=(60, 2)) + 3 * labels[:, None], rng.integers(0, 3, 60), labels]
    rows = smote(x, 100, np.random.default_rng(10), label=3, categorical=[2])
    assert rows.shape == (100, 4)
    assert all(_on_a_neighbour_segment(row, x, labels, numeric=[0, 1], categorical=[2]) for row in rows)


def test_smote_rounds_integer_columns_and_treats_all_rows_as_one_class_without_a_label():
    rng = np.random.default_rng(11)
    x = np.c_[rng.normal(size=40), rng.integers(0, 20, 40)]
    rows = smote(x, 200, np.random.default_rng(12), integer=[1])
    np.testing.assert_array_equal(rows[:, 1], np.round(rows[:, 1]))
    assert rows[:, 1].min() >= x[:, 1].min() and rows[:, 1].max() <= x[:, 1].max()


@pytest.mark.parametrize("name", ["iris", "wine", "breast_cancer", "diabetes", "mixed"])
def test_benchmark_tables_round_trip_through_gaussdiffs_csv_and_codes(name, tmp_path):
    """A table written with gaps, read and coded by gaussdiff (its inferred kinds), decoded back: the same values."""
    import tables

    from gaussdiff.data.schema import infer_schema
    from gaussdiff.data.tables import encode, read_table

    table = tables.load(name, with_target=True)
    gapped = np.where(tm.mcar_mask(table.values.shape, 0.2, seed=0), np.nan, table.values)
    table.write_csv(tmp_path / "t.csv", gapped)
    raw = read_table(tmp_path / "t.csv")
    specs = infer_schema(raw)
    assert [s.kind for s in specs] == table.kinds  # the kinds the scores use are the ones gaussdiff infers
    np.testing.assert_array_equal(table.from_codes(encode(raw, specs), specs), gapped)  # NaN where it was


def test_synthetic_codes_are_scored_as_the_csv_writer_writes_them():
    """float32 codes of a rounded column (5.1 held as 5.0999999) are scored as the text ``sample --out`` writes
    (the oracle: gaussdiff.data.tables.decode read back as numbers); float64 codes pass as they are."""
    import tables

    from gaussdiff.columns import ColumnSpec
    from gaussdiff.data.tables import decode

    codes = np.array([[5.1, 0.3], [4.9, 1.7], [np.nan, 2.25]], dtype=np.float32)
    specs = [ColumnSpec("a", "continuous", decimals=1), ColumnSpec("b", "continuous", decimals=2)]
    written = np.array([[float(c) if c else np.nan for c in row] for row in decode(codes, specs)])
    np.testing.assert_array_equal(tables.as_written(codes), written)
    assert tables.as_written(codes)[0, 0] == 5.1 and np.float64(codes[0, 0]) != 5.1
    assert tables.as_written(codes.astype(np.float64)).dtype == np.float64
