"""gaussdiff.imputation: K conditional draws of the missing values and what they sum up to, against the exact
conditional of a known Gaussian mixture (``GaussianMixture.condition``) and against rules worked out by hand.

The yardstick: with the mixture's exact denoiser as the model, the best single imputation of a missing cell is
E[x_missing | x_observed] (the conditional's mean); the mean of K exact conditional draws has error
E[(x - mean_K)^2] = E[(x - E[x | obs])^2] (1 + 1/K) (x and the K draws independent given the observed values), so
the imputer's RMSE over the exact mean's is sqrt(1 + 1/K) for a perfect sampler, plus the known-value method's own
error.
"""

import math

import pytest
import torch
from scipy import stats

from gaussdiff.columns import ColumnSpec, Table
from gaussdiff.errors import InputError
from gaussdiff.imputation import (
    Imputation,
    impute_draws,
    interval_rule,
    intervals,
    point_estimate,
)
from gaussdiff.mixture import GaussianMixture
from gaussdiff.samplers.known import sample_known
from gaussdiff.schedule import make_schedule
from gaussdiff.transforms import Standardize


@pytest.fixture(scope="module")
def schedule():
    return make_schedule("linear", 1000, 1e-4, 0.02)


def correlated_mixture(weights=(0.4, 0.6), rho=0.7, scale=0.6) -> GaussianMixture:
    """Two components in 4-D, means +-(1, 1, -1, 0.5), covariances scale^2 ((1 - rho) I + rho 11^T) and half of it:
    the observed coordinates of a row say much about its missing ones."""
    D = 4
    cov = scale**2 * ((1 - rho) * torch.eye(D, dtype=torch.float64) + rho * torch.ones(D, D, dtype=torch.float64))
    means = torch.tensor([[1.0, 1.0, -1.0, 0.5], [-1.0, -1.0, 1.0, -0.5]], dtype=torch.float64)
    return GaussianMixture(torch.tensor(weights, dtype=torch.float64), means[:len(weights)],
                           torch.stack([cov, 0.5 * cov])[:len(weights)])


def mcar(gm: GaussianMixture, n: int, seed: int, share: float = 0.2) -> tuple[torch.Tensor, torch.Tensor]:
    """(n complete rows of the mixture, a mask True where a cell is removed completely at random with prob share)."""
    g = torch.Generator().manual_seed(seed)
    x = gm.sample(n, generator=g)
    return x, torch.rand(x.shape, generator=g, dtype=torch.float64) < share


def exact_conditional(gm: GaussianMixture, x: torch.Tensor, missing: torch.Tensor, draws: int = 0, seed: int = 0):
    """(E[x_missing | x_observed] per row, with x's observed cells; and ``draws`` exact conditional draws (K, N, D)
    with x's observed cells)."""
    mean, sample = x.clone(), x.expand(draws, *x.shape).clone()
    g = torch.Generator().manual_seed(seed)
    for i in missing.any(1).nonzero().flatten().tolist():
        conditional = gm.condition(~missing[i], x[i])
        mean[i, missing[i]] = conditional.weights @ conditional.means
        if draws:
            sample[:, i, missing[i]] = conditional.sample(draws, generator=g)
    return mean, sample


def rmse(estimate, x, missing) -> float:
    return (estimate - x)[missing].pow(2).mean().sqrt().item()


def coverage(lower, upper, x, missing) -> float:
    return ((lower <= x) & (x <= upper))[missing].double().mean().item()


# ---------------------------------------------------------------------------------------------
# The draws.

def test_draw_k_of_the_rth_row_with_a_gap_is_row_k_m_plus_r_of_the_seeded_set(schedule):
    """7 rows, 5 with gaps (M = 5), K = 3, cut in batches of 4: the draws are rows k M + r of one seeded call of
    sample_known on the gap rows repeated K times; the observed entries and the complete rows come back bit for bit."""
    gm = correlated_mixture()
    x, _ = mcar(gm, 7, seed=1)
    missing = torch.tensor([[0, 1, 1, 1], [1, 0, 0, 0], [0, 0, 0, 0], [0, 0, 1, 0], [0, 1, 0, 1], [0, 0, 0, 0],
                            [1, 0, 0, 0]], dtype=torch.bool)
    y = torch.where(missing, math.nan, x)
    gaps = torch.tensor([0, 1, 3, 4, 6])
    draws = impute_draws(gm.denoiser(schedule), schedule, y, 3, method="replace_xt", steps=5, seed=3, batch_size=4)
    assert draws.shape == (3, 7, 4) and torch.isfinite(draws).all()
    whole = sample_known(gm.denoiser(schedule), y[gaps].repeat(3, 1), ~missing[gaps].repeat(3, 1), schedule,
                         method="replace_xt", steps=5, seed=3)
    assert torch.allclose(draws[:, gaps], whole.view(3, 5, 4), rtol=0, atol=1e-12)
    assert torch.equal(draws[:, ~missing], x[~missing].expand(3, -1))  # observed, complete rows included
    assert not torch.equal(draws[0][missing], draws[1][missing])  # the draws differ


def test_bad_draw_arguments_are_one_line_errors(schedule):
    gm = correlated_mixture()
    y = torch.tensor([[0.0, math.nan, 1.0, 0.0]], dtype=torch.float64)
    with pytest.raises(InputError, match="draws must be an integer >= 1"):
        impute_draws(gm.denoiser(schedule), schedule, y, 0)
    with pytest.raises(InputError, match=r"\(N, D\)"):
        impute_draws(gm.denoiser(schedule), schedule, y[0], 2)


# ---------------------------------------------------------------------------------------------
# Point estimates and intervals from given draws.

@pytest.fixture(scope="module")
def table():
    """x continuous, k integer, c categorical (a, b, c), z constant FR: model entries x | k | c0 c1 c2."""
    specs = [ColumnSpec("x", "continuous"), ColumnSpec("k", "integer"),
             ColumnSpec("c", "categorical", categories=["a", "b", "c"]), ColumnSpec("z", "constant", value="FR")]
    codes = torch.tensor([[0.0, 1, 0, 0], [1.0, 2, 1, 0], [2.0, 5, 2, 0], [3.0, 3, 1, 0]], dtype=torch.float64)
    return Table.fit(codes, specs)


def one_hot_entries(entries: list[list[float]]) -> torch.Tensor:
    """(K, 3) categorical model entries as given (any numbers: the tie break only averages them)."""
    return torch.tensor(entries, dtype=torch.float64)


def test_point_estimate_rules_by_hand(table):
    """K = 4 draws of 3 rows. x: the mean; k: the rounded mean, half to even (1.75 -> 2, 2.5 -> 2, 3.5 -> 4);
    c: the most frequent code, and between tied codes the one with the largest average entry (row 0: a and b twice
    each, a's entries average 0.2 against b's -0.1 -> a; row 2: the same tie, b ahead, -0.15 against -0.425 -> b),
    while a mode wins over a larger average (row 1: c three times, a's average entry the largest -> c); z: its
    value's code (0, text)."""
    draw_codes = torch.tensor([
        [[1.0, 1, 0, 0], [0.0, 2, 2, 0], [5.0, 3, 1, 0]],
        [[2.0, 2, 1, 0], [0.5, 2, 2, 0], [5.0, 4, 0, 0]],
        [[3.0, 2, 1, 0], [0.5, 3, 2, 0], [5.0, 3, 1, 0]],
        [[6.0, 2, 0, 0], [1.0, 3, 0, 0], [5.0, 4, 0, 0]]], dtype=torch.float64)
    c = {0: one_hot_entries([[0.9, -0.5, -1], [-0.6, 0.4, -1], [-0.3, 0.6, -1], [0.8, -0.9, -1]]),
         1: one_hot_entries([[0.9, -1, 0.1], [0.9, -1, 0.2], [0.9, -1, 0.3], [0.95, -1, -1]]),
         2: one_hot_entries([[-1, 0.9, -1], [0.2, -1, -1], [-1, 0.5, -1], [0.1, -1, -1]])}
    draws_model = torch.zeros(4, 3, 5, dtype=torch.float64)
    for row, entries in c.items():
        draws_model[:, row, 2:5] = entries
    estimate = point_estimate(draw_codes, draws_model, table)
    assert estimate[:, 0].tolist() == [3.0, 0.5, 5.0]
    assert estimate[:, 1].tolist() == [2.0, 2.0, 4.0]
    assert estimate[:, 2].tolist() == [0.0, 2.0, 1.0]
    assert estimate[:, 3].tolist() == [0.0, 0.0, 0.0]


def test_a_point_estimate_keeps_the_places_of_its_column():
    """The mean of draws 1.1, 1.2, 1.4 (1.2333...) is written as 1.2 where the column shows one place, as the mean
    itself where it has no decimals; a bounded column's rounded mean stays within its bounds (0.97 -> 1.0 > 0.96)."""
    specs = [ColumnSpec("x", "continuous", decimals=1), ColumnSpec("y", "continuous"),
             ColumnSpec("b", "bounded", low=0.0, high=0.96, decimals=1)]
    table = Table.fit(torch.tensor([[1.0, 1.0, 0.5], [2.0, 2.0, 0.9]], dtype=torch.float64), specs)
    draws = torch.tensor([[[1.1, 1.1, 0.96]], [[1.2, 1.2, 0.96]], [[1.4, 1.4, 0.99]]], dtype=torch.float64)
    estimate = point_estimate(draws, torch.zeros(3, 1, 3), table)
    assert estimate[0, 0].item() == 1.2 and estimate[0, 1].item() == pytest.approx(3.7 / 3, abs=1e-15)
    assert estimate[0, 2].item() == 0.96


def test_interval_rule_and_bounds_by_hand():
    """i = floor((K + 1)(1 - l) / 2): 0 for K = 10 at 0.9 (no pair of order statistics covers 90 %: at best 9/11),
    1 for K = 19 ([min, max], 18/20), 2 for K = 39 (36/40) and 2 for K = 50 (47/51 >= 0.9). K = 10: mean +-
    t_{9, 0.95} s sqrt(1.1), t from scipy."""
    assert [interval_rule(k, 0.9) for k in (10, 18, 19, 39, 50)] == [0, 0, 1, 2, 2]
    assert interval_rule(99, 0.5) == 25
    identity = Standardize.identity(1)
    y = torch.arange(39, dtype=torch.float64).flip(0)[torch.randperm(39, generator=torch.Generator().manual_seed(0))]
    lower, upper = intervals(y.view(39, 1, 1), 0.9, identity)
    assert (lower.item(), upper.item()) == (1.0, 37.0)
    y = torch.tensor([0.3, -1.2, 2.0, 0.7, 0.1, -0.4, 1.5, 0.9, -0.8, 0.2], dtype=torch.float64)
    half = stats.t.ppf(0.95, 9) * math.sqrt(1.1) * y.std().item()
    lower, upper = intervals(y.view(10, 1, 1), 0.9, identity)
    assert math.isclose(lower.item(), y.mean().item() - half, rel_tol=1e-12)
    assert math.isclose(upper.item(), y.mean().item() + half, rel_tol=1e-12)
    for bad in (0, 1, 1.5, "0.9"):
        with pytest.raises(InputError, match="level must be a number between 0 and 1"):
            interval_rule(10, bad)
    with pytest.raises(InputError, match="at least 2 draws"):
        interval_rule(1, 0.9)


def test_intervals_are_bounds_mapped_through_the_columns(table):
    """A table's interval is taken in model units and mapped back by each column's increasing map: x's bounds are
    the model-unit bounds unstandardized, k's are rounded integers, c and z (not numeric) get none."""
    g = torch.Generator().manual_seed(0)
    y = torch.randn(19, 2, 5, generator=g, dtype=torch.float64)
    lower, upper = intervals(y, 0.9, table)
    low_model, high_model = y.min(0).values, y.max(0).values
    assert torch.equal(lower[:, :2], table.inverse(low_model)[:, :2])
    assert torch.equal(upper[:, :2], table.inverse(high_model)[:, :2])
    assert torch.isnan(lower[:, 2:]).all() and torch.isnan(upper[:, 2:]).all()
    assert (lower[:, 1] == lower[:, 1].round()).all() and (lower[:, 0] < upper[:, 0]).all()


def test_interval_coverage_on_exact_conditional_draws():
    """Exact conditional draws of 20 % MCAR cells. A Gaussian (one component), K = 10: the Gaussian prediction
    bounds cover a further draw with probability exactly 0.9; the mixture, K = 19: [min, max] covers with exactly
    18/20 = 0.9, whatever the law. The true value is such a further draw. About 600 cells each: binomial SE 0.012;
    asserted within 0.05 (4 SE). Where the order statistics of 10 draws would give at most 9/11 = 0.82 (the
    empirical 5 % and 95 % quantiles, interpolated, about 0.74), the Gaussian bounds are asserted above 0.85."""
    identity = Standardize.identity(4)
    for gm, K in ((correlated_mixture(weights=(1.0,)), 10), (correlated_mixture(), 19)):
        x, missing = mcar(gm, 750, seed=2)
        _, draws = exact_conditional(gm, x, missing, K, seed=3)
        result = Imputation(draws.mean(0), draws, missing, draws, identity)
        lower, upper = result.intervals(0.9)
        assert torch.isnan(lower[~missing]).all()
        assert abs(coverage(lower, upper, x, missing) - 0.9) < 0.05, (K, coverage(lower, upper, x, missing))
        if K == 10:
            q = torch.quantile(draws, torch.tensor([0.05, 0.95], dtype=torch.float64), dim=0)
            assert coverage(q[0], q[1], x, missing) < 0.8 and coverage(lower, upper, x, missing) > 0.85


# ---------------------------------------------------------------------------------------------
# The yardstick: the exact conditional mean.

@pytest.mark.slow
def test_point_estimate_error_against_the_exact_conditional_mean(schedule):
    """300 rows of the correlated mixture, 20 % of the cells removed at random (237 cells in 176 rows), K = 10 draws
    with the mixture's exact denoiser as the model. The RMSE of the draws' mean over that of E[x_missing | x_observed]
    is sqrt(1.1) = 1.049 for a perfect sampler (module doc; 1.053 measured with exact conditional draws on these rows);
    what is left is the known-value method's own error. Measured (seeded): RePaint on 100 steps, j = 10, r = 10
    (NFE 910) 1.13 (on 1,000 rows 1.31, at its default 2,410 NFE 1.35); x_t replacement on 100 ddpm steps 1.46
    (1.61: it draws the missing values without letting them agree with the observed ones); imputing the mixture's
    mean, which ignores the observed cells, 2.8. Asserted: RePaint within 1.3 (25 % above the perfect sampler's
    1.049), replacement above it. The 90 % intervals of RePaint's draws (Gaussian bounds at K = 10) cover 0.890 of
    the removed values (exact draws 0.93); asserted within 0.06 (3 binomial SE at 237 cells) of 0.9."""
    gm = correlated_mixture()
    x, missing = mcar(gm, 300, seed=0)
    exact, _ = exact_conditional(gm, x, missing)
    y = torch.where(missing, math.nan, x)
    floor = rmse(exact, x, missing)
    assert rmse((gm.weights @ gm.means).expand_as(x), x, missing) > 2.5 * floor  # the observed cells matter
    denoiser = gm.denoiser(schedule)
    draws = impute_draws(denoiser, schedule, y, 10, method="repaint", steps=100, jump_length=10, jump_n_sample=10)
    assert torch.equal(draws[:, ~missing], x[~missing].expand(10, -1))
    assert rmse(draws.mean(0), x, missing) < 1.3 * floor
    lower, upper = Imputation(draws.mean(0), draws, missing, draws, Standardize.identity(4)).intervals(0.9)
    assert abs(coverage(lower, upper, x, missing) - 0.9) < 0.06
    replaced = impute_draws(denoiser, schedule, y, 10, method="replace_xt", steps=100)
    assert rmse(replaced.mean(0), x, missing) > 1.3 * floor
