"""Tests of gaussdiff.chain: the seed's forward chain, its closed-form marginal and the posterior.

Independent references: the seed's induction (recurrences), a simulation of the chain, direct
Bayes computations (completing the square for a scalar, and a numerical grid with numpy).
"""

import math

import numpy as np
import pytest
import torch
from scipy.stats import norm

from gaussdiff.chain import (forward_step, marginal, marginal_by_recurrence, posterior,
                             posterior_coefficients, posterior_mean, q_sample, simulate_chain)
from gaussdiff.schedule import make_schedule

SCHEDULES = {
    "linear": make_schedule("linear", 1000),
    "cosine": make_schedule("squaredcos_cap_v2", 1000),
    "scaled_linear": make_schedule("scaled_linear", 500, beta_start=0.00085, beta_end=0.012),
    "short": make_schedule("linear", 7, beta_start=0.05, beta_end=0.5),
}


def np_alpha_bar(betas) -> np.ndarray:
    return np.concatenate([[1.0], np.cumprod(1 - np.asarray(betas, dtype=np.float64))])



# --- the seed's induction ------------------------------------------------------------------------

@pytest.mark.parametrize("name", SCHEDULES)
def test_recurrence_equals_closed_form(name):
    s = SCHEDULES[name]
    m, v = marginal_by_recurrence(s)
    ab = np_alpha_bar(s.betas.numpy())
    # mu_t = sqrt(abar_t) x_0 and v_t = 1 - abar_t; T float64 steps accumulate <= ~T u ~ 2e-13.
    np.testing.assert_allclose(m.numpy(), np.sqrt(ab), rtol=0, atol=1e-12)
    np.testing.assert_allclose(v.numpy(), 1 - ab, rtol=0, atol=1e-12)
    assert m[0].item() == 1.0 and v[0].item() == 0.0
    cm, cv = marginal(s, torch.arange(s.T + 1))
    np.testing.assert_allclose(cm.numpy(), np.sqrt(ab), rtol=0, atol=1e-12)
    np.testing.assert_allclose(cv.numpy(), 1 - ab, rtol=0, atol=1e-12)


def test_forward_step_is_the_seed_formula():
    s = SCHEDULES["linear"]
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 3, generator=g, dtype=torch.float64)
    eps = torch.randn(64, 3, generator=g, dtype=torch.float64)
    betas = s.betas.numpy()
    for t in (0, 1, 500, 999):
        expected = math.sqrt(1 - betas[t]) * x.numpy() + math.sqrt(betas[t]) * eps.numpy()
        np.testing.assert_allclose(forward_step(x, t, s, eps).numpy(), expected, rtol=0, atol=1e-15)


def test_simulated_chain_has_the_closed_form_mean_and_variance_at_every_t():
    # The seed's linear schedule on T = 250 steps (betas scaled by 1000/250: the same abar_T).
    s = make_schedule("linear", 250, beta_start=4e-4, beta_end=0.08)
    n = 20_000
    x0 = torch.tensor([1.5, -0.7], dtype=torch.float64).expand(n, 2).contiguous()
    xs = simulate_chain(x0, s, generator=torch.Generator().manual_seed(1))  # (T + 1, n, 2)
    assert xs.shape == (s.T + 1, n, 2)
    assert torch.equal(xs[0], x0)
    ab = np_alpha_bar(s.betas.numpy())[1:, None]
    mu, v = np.sqrt(ab) * x0[0].numpy(), 1 - ab
    mean, var = xs[1:].mean(1).numpy(), xs[1:].var(1).numpy()
    # Each of the 2 T = 500 means is N(mu_t, v_t / n) and each sample variance is ~N(v_t, 2 v_t^2/(n-1)).
    # Bonferroni over 1000 checks: z = 5.5 gives a two-sided 3.8e-8 each, <= 4e-5 for the family
    # (conservative: the checks are positively correlated along a chain).
    z = 5.5
    assert np.all(np.abs(mean - mu) <= z * np.sqrt(v / n)), np.max(np.abs(mean - mu) / np.sqrt(v / n))
    assert np.all(np.abs(var - v) <= z * v * np.sqrt(2 / (n - 1))), np.max(np.abs(var - v) / v / np.sqrt(2 / (n - 1)))
    # The seed: the chain ends near N(0, I) (abar_T = 3.3e-5 here).
    assert ab[-1, 0] < 1e-4


def test_q_sample_at_integer_and_fractional_t():
    s = SCHEDULES["cosine"]
    g = torch.Generator().manual_seed(2)
    x0 = torch.randn(5, 4, generator=g, dtype=torch.float64)
    eps = torch.randn(5, 4, generator=g, dtype=torch.float64)
    log_ab = np.log(np_alpha_bar(s.betas.numpy()))
    t = np.array([0.0, 1.0, 3.7, 512.25, 999.999])
    k = np.minimum(np.floor(t).astype(int), s.T - 1)
    ab = np.exp((1 - (t - k)) * log_ab[k] + (t - k) * log_ab[k + 1])  # log-linear between integers
    expected = np.sqrt(ab)[:, None] * x0.numpy() + np.sqrt(1 - ab)[:, None] * eps.numpy()
    got = q_sample(x0, torch.from_numpy(t), s, eps)  # per-sample t (B,)
    # float64; sqrt(1 - abar) at abar ~ 1 loses ~u/(1 - abar) relative (here <= 1e-11).
    np.testing.assert_allclose(got.numpy(), expected, rtol=0, atol=1e-10)
    for i, ti in enumerate(t):  # and as a scalar t
        np.testing.assert_allclose(q_sample(x0[i:i + 1], float(ti), s, eps[i:i + 1]).numpy(), expected[i:i + 1],
                                   rtol=0, atol=1e-10)
    # dtype follows x0
    assert q_sample(x0.float(), 3.7, s, eps.float()).dtype == torch.float32


# --- the posterior q(x_{t-1} | x_t, x_0) ----------------------------------------------------------

def bayes_by_completing_the_square(prior_mean_coef, prior_var, lik_coef, lik_var):
    """x ~ N(a x0, P) prior, y | x ~ N(b x, L): x | y, x0 ~ N(c0 x0 + ct y, V) with V = 1/(1/P + b^2/L),
    c0 = V a / P, ct = V b / L. Works elementwise on numpy arrays."""
    V = 1 / (1 / prior_var + lik_coef**2 / lik_var)
    return V * prior_mean_coef / prior_var, V * lik_coef / lik_var, V


@pytest.mark.parametrize("name", SCHEDULES)
def test_posterior_matches_bayes_by_completing_the_square(name):
    s = SCHEDULES[name]
    betas = s.betas.numpy()
    ab = np_alpha_bar(betas)
    t = np.arange(2, s.T + 1)
    # prior q(x_{t-1} | x_0) = N(sqrt(abar_{t-1}) x_0, 1 - abar_{t-1});
    # likelihood q(x_t | x_{t-1}) = N(sqrt(1 - betas[t-1]) x_{t-1}, betas[t-1]) (the seed's step t-1 -> t)
    c0, ct, V = bayes_by_completing_the_square(np.sqrt(ab[t - 1]), 1 - ab[t - 1], np.sqrt(1 - betas[t - 1]),
                                               betas[t - 1])
    got = posterior(s, torch.from_numpy(t))
    # Two float64 routes to the same numbers; the worst cancellation is 1 - abar_1 = beta_0 >= 1e-4,
    # which amplifies u to ~1e-12 relative. 1e-9 leaves room and is far below any index error (~beta).
    for g_, e_ in zip(got[:3], (c0, ct, V)):
        np.testing.assert_allclose(g_.numpy(), e_, rtol=1e-9, atol=0)
    np.testing.assert_allclose(got[3].numpy(), np.log(V), rtol=0, atol=1e-9)  # clipped log = log for t >= 2


@pytest.mark.parametrize("t", [2, 3, 100, 999, 1000])
def test_posterior_matches_bayes_on_a_grid(t):
    s = SCHEDULES["linear"]
    betas = s.betas.numpy()
    ab = np_alpha_bar(betas)
    x = np.linspace(-5, 5, 400_001)  # x_{t-1}; dx = 2.5e-5, >= 100 points per posterior sd here
    c0, ct, var, _ = posterior(s, t)
    for x0, xt in ((0.3, -0.2), (-1.0, 1.2)):
        log_p = (norm.logpdf(x, math.sqrt(ab[t - 1]) * x0, math.sqrt(1 - ab[t - 1]))
                 + norm.logpdf(xt, math.sqrt(1 - betas[t - 1]) * x, math.sqrt(betas[t - 1])))
        w = np.exp(log_p - log_p.max())
        w /= w.sum()
        mean = (w * x).sum()
        grid_var = (w * (x - mean) ** 2).sum()
        # A Riemann sum of a Gaussian well inside the grid is exact to ~1e-12 relative (spectral
        # accuracy); 1e-8 covers float64 summation over 4e5 points.
        assert abs(mean - (c0 * x0 + ct * xt).item()) <= 1e-8
        assert abs(grid_var / var.item() - 1) <= 1e-8


def test_posterior_at_t_1_is_a_point_mass_at_x0_and_its_log_variance_is_clipped():
    for s in SCHEDULES.values():
        c0, ct, var, log_var = posterior(s, 1)
        assert var.item() == 0.0  # beta_tilde_1 = 0: x_0 is known
        assert abs(c0.item() - 1) <= 1e-12 and abs(ct.item()) <= 1e-12
        betas, ab = s.betas.numpy(), np_alpha_bar(s.betas.numpy())
        _, _, V2 = bayes_by_completing_the_square(math.sqrt(ab[1]), 1 - ab[1], math.sqrt(1 - betas[1]), betas[1])
        assert abs(log_var.item() - math.log(V2)) <= 1e-9  # = log beta_tilde_2 (improved-diffusion)
        g = torch.Generator().manual_seed(3)
        x0, xt = (torch.randn(3, 2, generator=g, dtype=torch.float64) for _ in range(2))
        torch.testing.assert_close(posterior_mean(x0, xt, c0, ct), x0, rtol=0, atol=1e-12)


@pytest.mark.parametrize("t,s_", [(10, 3), (500, 1), (1000, 250), (1000, 0), (7, 6)])
def test_posterior_coefficients_for_non_adjacent_steps_match_bayes(t, s_):
    sched = SCHEDULES["linear"]
    betas = sched.betas.numpy()
    ab = np_alpha_bar(betas)
    # x_t | x_s by composing the seed's steps s -> s+1 -> ... -> t (the recurrences from v = 0):
    m, v = 1.0, 0.0
    for r in range(s_, t):
        m, v = math.sqrt(1 - betas[r]) * m, betas[r] + (1 - betas[r]) * v
    if s_ == 0:  # prior is a point mass at x_0: posterior is x_0 exactly
        c0, ct, V = 1.0, 0.0, 0.0
    else:
        c0, ct, V = bayes_by_completing_the_square(math.sqrt(ab[s_]), 1 - ab[s_], m, v)
    got = posterior_coefficients(torch.tensor(ab[t]), torch.tensor(ab[s_]))
    # float64, the same cancellation bound as above.
    for g_, e_ in zip(got, (c0, ct, V)):
        assert abs(g_.item() - e_) <= 1e-9 * max(1.0, abs(e_)), (g_.item(), e_)
