"""Tests of gaussdiff.mixture: the Gaussian-mixture oracle (density, sampling, marginal, exact denoiser).

References: scipy.stats.multivariate_normal, Monte Carlo with stated tolerances, numerical
integration on a grid with numpy, and finite differences.
"""

import math

import numpy as np
import pytest
import torch
from scipy.special import logsumexp
from scipy.stats import multivariate_normal, norm

from gaussdiff.chain import q_sample
from gaussdiff.errors import InputError
from gaussdiff.mixture import GaussianMixture
from gaussdiff.schedule import make_schedule


def random_mixture(K, D, seed):
    rng = np.random.default_rng(seed)
    w = rng.dirichlet(np.full(K, 2.0))
    means = rng.normal(0, 1.5, (K, D))
    A = rng.normal(0, 0.5, (K, D, D))
    covs = A @ A.transpose(0, 2, 1) + 0.05 * np.eye(D)  # full, positive definite
    return w, means, covs


def scipy_log_prob(w, means, covs, x):
    comp = np.stack([np.log(w[k]) + multivariate_normal(means[k], covs[k]).logpdf(x) for k in range(len(w))], 1)
    return logsumexp(comp, axis=1), comp


@pytest.fixture(scope="module")
def mix2d():
    return random_mixture(3, 2, seed=0)


@pytest.fixture(scope="module")
def mix1d():
    # well-separated, unequal weights and widths: a posterior mean far from linear
    return np.array([0.2, 0.5, 0.3]), np.array([[-2.0], [0.5], [2.5]]), np.array([[[0.09]], [[0.25]], [[0.04]]])


# --- density -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("K,D", [(1, 1), (3, 2), (5, 3)])
def test_log_prob_and_responsibilities_match_scipy(K, D):
    w, m, C = random_mixture(K, D, seed=K + D)
    gm = GaussianMixture(w, m, C)
    x = np.random.default_rng(1).normal(0, 2, (200, D))
    ref, comp = scipy_log_prob(w, m, C, x)
    # float64 Cholesky vs scipy's eigendecomposition: agreement to ~1e-13 relative of |log p| <= ~100.
    np.testing.assert_allclose(gm.log_prob(torch.from_numpy(x)).numpy(), ref, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(gm.component_log_prob(torch.from_numpy(x)).numpy(), comp, rtol=1e-10, atol=1e-10)
    resp = np.exp(comp - ref[:, None])
    np.testing.assert_allclose(gm.responsibilities(torch.from_numpy(x)).numpy(), resp, rtol=0, atol=1e-10)


def test_bad_mixtures_are_rejected():
    w, m, C = random_mixture(3, 2, seed=0)
    for args in ((w[:2], m, C), (w, m, C[:, :1]), (w * 2, m, C), (np.array([1.5, -0.5, 0.0]), m, C)):
        with pytest.raises(InputError):
            GaussianMixture(*args)
    with pytest.raises(Exception):  # not positive definite
        GaussianMixture(w, m, -C)


def mc_mean_cov_check(x, mean, cov, z=5.5):
    """Assert that the sample mean and covariance of x (n, D) match (mean, cov).

    SE of a mean entry: sqrt(cov_ii / n). SE of a covariance entry: sqrt(Var[(x_i - m_i)(x_j - m_j)] / n),
    estimated from the sample. Bonferroni over D + D (D + 1) / 2 <= 9 checks: z = 5.5 (two-sided 3.8e-8
    each, < 4e-7 in all).
    """
    n, D = x.shape
    mean_hat = x.mean(0)
    assert np.all(np.abs(mean_hat - mean) <= z * np.sqrt(np.diag(cov) / n)), (mean_hat, mean)
    c = x - mean
    prods = c[:, :, None] * c[:, None, :]
    cov_hat = prods.mean(0)  # known mean: no bias correction needed
    se = prods.std(0) / math.sqrt(n)
    assert np.all(np.abs(cov_hat - cov) <= z * se), (cov_hat, cov, se)


def mixture_moments(w, m, C):
    mean = (w[:, None] * m).sum(0)
    second = (w[:, None, None] * (C + m[:, :, None] * m[:, None, :])).sum(0)
    return mean, second - np.outer(mean, mean)


def test_sample_matches_weights_means_and_covariances(mix2d):
    w, m, C = mix2d
    gm = GaussianMixture(w, m, C)
    n = 200_000
    x, labels = gm.sample(n, generator=torch.Generator().manual_seed(2), return_labels=True)
    assert x.shape == (n, 2) and x.dtype == torch.float64
    x, labels = x.numpy(), labels.numpy()
    freq = np.bincount(labels, minlength=3) / n
    # multinomial SE sqrt(w (1 - w) / n) <= 0.0011; 5.5 SE per weight.
    assert np.all(np.abs(freq - w) <= 5.5 * np.sqrt(w * (1 - w) / n))
    mc_mean_cov_check(x, *mixture_moments(w, m, C))
    for k in range(3):  # each component on its own
        mc_mean_cov_check(x[labels == k], m[k], C[k])


@pytest.mark.parametrize("ab", [0.999, 0.5, 0.02])
def test_marginal_matches_q_sample_of_mixture_samples(mix2d, ab):
    w, m, C = mix2d
    gm = GaussianMixture(w, m, C)
    marg = gm.marginal(ab)
    g = torch.Generator().manual_seed(3)
    n = 200_000
    x0 = gm.sample(n, generator=g)
    s = make_schedule("linear", 1000)
    t = s.t_of_log_alpha_bar(math.log(ab))  # the t at which abar_t = ab
    xt = q_sample(x0, t, s, torch.randn(n, 2, generator=g, dtype=torch.float64)).numpy()
    assert abs(s.alpha_bar_at(t).item() - ab) <= 1e-10
    mean, cov = mixture_moments(marg.weights.numpy(), marg.means.numpy(), marg.covs.numpy())
    mc_mean_cov_check(xt, mean, cov)
    # ... and the marginal is the mixture with means sqrt(ab) m_k, covs ab C_k + (1 - ab) I (the same
    # moments derived by hand from the mixture of x_0):
    mean0, cov0 = mixture_moments(w, m, C)
    np.testing.assert_allclose(mean, math.sqrt(ab) * mean0, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(cov, ab * cov0 + (1 - ab) * np.eye(2), rtol=1e-12, atol=1e-12)


# Grid integration in x_0. The integrands are Gaussians (widths >= 0.2 in 1-D, >= ~0.15 in 2-D
# at the abar used) sampled far below their width and far inside the grid, where a Riemann sum is
# spectrally accurate: the quadrature error is far below float64 summation error (~1e-13 over
# 1e5-1e6 points), so 1e-9 (1-D, 1.6e5 points) and 1e-10 (2-D) bound it with room.

@pytest.mark.parametrize("ab", [0.98, 0.7, 0.2, 0.01])
def test_marginal_density_is_the_convolution_on_a_grid_1d(mix1d, ab):
    w, m, C = mix1d
    gm = GaussianMixture(w, m, C)
    x0 = np.linspace(-8, 8, 160_001)
    dx = x0[1] - x0[0]
    p0 = sum(w[k] * norm.pdf(x0, m[k, 0], math.sqrt(C[k, 0, 0])) for k in range(3))
    xt = np.array([-2.1, -0.3, 0.0, 0.9, 2.4])
    # q_t(x_t) = int p_0(x_0) N(x_t; sqrt(ab) x_0, 1 - ab) dx_0
    dens = np.array([(p0 * norm.pdf(y, math.sqrt(ab) * x0, math.sqrt(1 - ab))).sum() * dx for y in xt])
    got = gm.marginal(ab).log_prob(torch.from_numpy(xt[:, None])).numpy()
    np.testing.assert_allclose(got, np.log(dens), rtol=0, atol=1e-9)


@pytest.mark.parametrize("ab", [0.98, 0.7, 0.2, 0.01])
def test_posterior_x0_mean_is_bayes_on_a_grid_1d(mix1d, ab):
    w, m, C = mix1d
    gm = GaussianMixture(w, m, C)
    x0 = np.linspace(-8, 8, 160_001)
    p0 = sum(w[k] * norm.pdf(x0, m[k, 0], math.sqrt(C[k, 0, 0])) for k in range(3))
    xt = np.array([-2.1, -0.3, 0.0, 0.9, 2.4])
    expected = []
    for y in xt:
        post = p0 * norm.pdf(y, math.sqrt(ab) * x0, math.sqrt(1 - ab))
        expected.append((post * x0).sum() / post.sum())
    got = gm.posterior_x0_mean(torch.from_numpy(xt[:, None]), torch.tensor(ab, dtype=torch.float64)).numpy()[:, 0]
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-9)


@pytest.fixture(scope="module")
def grid2d(mix2d):
    """The 2-D prior density on a grid: spacing 0.04 against widths >= ~0.2 (the narrowest component
    sd 0.29, the likelihood's sqrt(1 - ab) / sqrt(ab) >= 0.23); the widest component (sd 1.37, mean
    within 2.5 of 0) ends > 8 sd inside the edge, so the truncated mass is < 1e-15."""
    g1 = np.linspace(-14, 14, 701)
    X, Y = np.meshgrid(g1, g1, indexing="ij")
    pts = np.stack([X.ravel(), Y.ravel()], 1)
    return pts, np.exp(scipy_log_prob(*mix2d, pts)[0])


@pytest.mark.parametrize("ab", [0.95, 0.5, 0.05])
def test_posterior_x0_mean_is_bayes_on_a_grid_2d(mix2d, grid2d, ab):
    gm = GaussianMixture(*mix2d)
    pts, p0 = grid2d
    xt = np.array([[0.3, -0.4], [-1.5, 2.0], [2.2, 0.1]])
    a, var = math.sqrt(ab), 1 - ab
    expected = []
    for y in xt:
        lik = np.exp(-0.5 * ((y - a * pts) ** 2).sum(1) / var)
        post = p0 * lik
        expected.append((post[:, None] * pts).sum(0) / post.sum())
    got = gm.posterior_x0_mean(torch.from_numpy(xt), torch.full((3,), ab, dtype=torch.float64)).numpy()
    np.testing.assert_allclose(got, np.array(expected), rtol=0, atol=1e-10)
    # eps: E[eps | x_t] = (x_t - sqrt(ab) E[x_0 | x_t]) / sqrt(1 - ab), the same grid posterior
    eps_ref = (xt - a * np.array(expected)) / math.sqrt(var)
    got_eps = gm.eps(torch.from_numpy(xt), torch.tensor(ab, dtype=torch.float64)).numpy()
    np.testing.assert_allclose(got_eps, eps_ref, rtol=0, atol=1e-10 * a / math.sqrt(var) + 1e-12)


@pytest.mark.parametrize("ab", [0.99, 0.5, 0.01])
def test_score_is_the_gradient_of_the_marginal_log_density(mix2d, ab):
    w, m, C = mix2d
    gm = GaussianMixture(w, m, C)
    x = torch.from_numpy(np.random.default_rng(4).normal(0, 1.5, (20, 2)))
    h = 1e-5
    fd = torch.stack([(gm.marginal(ab).log_prob(x + h * e) - gm.marginal(ab).log_prob(x - h * e)) / (2 * h)
                      for e in torch.eye(2, dtype=torch.float64)], 1)
    # Central differences: truncation h^2 |f'''| / 6 <~ 1e-10 * 100, rounding u |log p| / h ~ 1e-10.
    score = gm.score(x, torch.tensor(ab, dtype=torch.float64))
    np.testing.assert_allclose(score.numpy(), fd.numpy(), rtol=1e-6, atol=1e-6)


# --- the denoiser contract -------------------------------------------------------------------------

def test_denoiser_at_abar_one_returns_x(mix2d):
    gm = GaussianMixture(*mix2d)
    x = torch.from_numpy(np.random.default_rng(5).normal(0, 2, (50, 2)))
    den = gm.denoiser(make_schedule("linear", 1000))
    # abar_0 = 1: the posterior of x_0 given x_0 is a point mass; C S^{-1} = I up to rounding.
    np.testing.assert_allclose(den(x, 0).numpy(), x.numpy(), rtol=0, atol=1e-12)
    np.testing.assert_allclose(gm.posterior_x0_mean(x, torch.tensor(1.0)).numpy(), x.numpy(), rtol=0, atol=1e-12)


def test_denoiser_respects_the_contract(mix2d):
    gm = GaussianMixture(*mix2d)
    s = make_schedule("squaredcos_cap_v2", 1000)
    den = gm.denoiser(s)
    g = torch.Generator().manual_seed(6)
    x = torch.randn(8, 2, generator=g, dtype=torch.float64) * 2
    ts = torch.tensor([1.0, 10.0, 100.0, 250.5, 500.0, 700.25, 900.0, 999.0], dtype=torch.float64)
    ab_table = np.concatenate([[1.0], np.cumprod(1 - s.betas.numpy())])
    log_ab = np.log(ab_table)
    k = np.floor(ts.numpy()).astype(int)
    ab = np.exp(log_ab[k] + (ts.numpy() - k) * (log_ab[k + 1] - log_ab[k]))  # our log-linear abar(t)
    rows = [gm.posterior_x0_mean(x[i:i + 1], torch.tensor(ab[i])) for i in range(8)]
    expected = torch.cat(rows).numpy()
    out = den(x, ts)  # t as (B,), one noise level per row
    assert out.dtype == torch.float64 and out.shape == x.shape
    np.testing.assert_allclose(out.numpy(), expected, rtol=0, atol=1e-10)
    for t in (250.5, torch.tensor(250.5), torch.tensor([250.5])):  # t as a scalar: one level for all
        out = den(x, t)
        np.testing.assert_allclose(out.numpy(), gm.posterior_x0_mean(x, torch.tensor(ab[3])).numpy(), rtol=0,
                                   atol=1e-10)
    out32 = den(x.float(), ts.float())
    assert out32.dtype == torch.float32
    # float32 input and t (t = 250.5 and 700.25 are exact in float32): float32 rounding of the output.
    np.testing.assert_allclose(out32.double().numpy(), expected, rtol=0, atol=1e-5)
