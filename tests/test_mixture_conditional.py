"""Tests of the conditioning oracles of gaussdiff.mixture: ``component(k)``, ``marginal_over(mask)`` and
``condition(mask, x_known)``.

References: the joint density on a fine grid, normalized numerically (trapezoid); scipy.stats.multivariate_normal
on sub-blocks of the joint (a Gaussian's marginal is its sub-block, so p(x_u | x_o) = p(x) / p_o(x_o) needs no
conditioning formula); Monte Carlo moments; the component's exact denoiser run through a sampler.
"""

import numpy as np
import pytest
import torch
from scipy.integrate import trapezoid
from scipy.special import logsumexp
from scipy.stats import multivariate_normal
from test_mixture import mc_mean_cov_check, random_mixture, scipy_log_prob

from gaussdiff.errors import InputError
from gaussdiff.metrics import sliced_w2
from gaussdiff.mixture import GaussianMixture
from gaussdiff.samplers import generate
from gaussdiff.schedule import make_schedule


@pytest.fixture(scope="module")
def mix2d():
    return random_mixture(3, 2, seed=0)


@pytest.fixture(scope="module")
def mix4d():
    return random_mixture(3, 4, seed=7)


# --- condition ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("x0", [-2.0, -0.5, 0.3, 1.9, 3.5])
def test_condition_is_the_joint_on_a_grid_normalized(mix2d, x0):
    """p(y | x = x0) = p(x0, y) / int p(x0, y') dy'. The joint's y-sections are Gaussians of sd >= 0.2 in y
    (the narrowest conditional sd of this mixture), sampled every 0.002 on [-20, 20] (> 8 sd beyond every
    conditional mean): the trapezoid rule is spectrally accurate there, its error far below float64 summation
    error (~1e-13 relative over 2e4 points), so 1e-9 relative bounds the difference with room."""
    w, m, C = mix2d
    y = np.linspace(-20, 20, 20_001)
    joint = np.exp(scipy_log_prob(w, m, C, np.stack([np.full_like(y, x0), y], 1))[0])
    expected = joint / trapezoid(joint, y)
    x_known = torch.tensor([x0, np.nan], dtype=torch.float64)  # float64: a float32 x0 would be x0 rounded
    cond = GaussianMixture(w, m, C).condition(torch.tensor([True, False]), x_known)
    assert cond.dim == 1
    got = torch.exp(cond.log_prob(torch.from_numpy(y[:, None]))).numpy()
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-9 * expected.max())


def blocks_log_prob(w, m, C, x, known):
    """log p(x) - log p_o(x_o) by scipy: the joint and the known block's marginal (the sub-blocks)."""
    o = np.flatnonzero(known)
    log_p = scipy_log_prob(w, m, C, x)[0]
    log_po = logsumexp(np.stack([np.log(w[k]) + multivariate_normal(m[k, o], C[k][np.ix_(o, o)]).logpdf(x[:, o])
                                 for k in range(len(w))], 1), axis=1)
    return log_p - log_po, log_po


@pytest.mark.parametrize("known", [[1, 0, 0, 0], [0, 1, 1, 0], [1, 0, 1, 1], [0, 0, 0, 1]])
def test_condition_log_prob_is_joint_over_marginal_4d(mix4d, known):
    """For fixed x_o (one per row of a test set), log p(x_u | x_o) from the oracle equals log p(x) - log p_o(x_o)
    from scipy: two float64 evaluations of O(10)-sized log densities, agreeing to ~1e-12; 1e-9 leaves room."""
    w, m, C = mix4d
    gm = GaussianMixture(w, m, C)
    known = np.array(known, dtype=bool)
    x = np.random.default_rng(3).normal(0, 2, (12, 4))
    expected, log_po = blocks_log_prob(w, m, C, x, known)
    got = [gm.condition(torch.from_numpy(known), torch.from_numpy(row)).log_prob(torch.from_numpy(row[~known][None]))
           for row in x]
    np.testing.assert_allclose(torch.cat(got).numpy(), expected, rtol=0, atol=1e-9)
    marginal = gm.marginal_over(torch.from_numpy(known))
    np.testing.assert_allclose(marginal.log_prob(torch.from_numpy(x[:, known])).numpy(), log_po, rtol=0, atol=1e-9)


def test_condition_far_from_every_component_stays_finite(mix4d):
    """Known values 60 units out (every w_k N(x_o; ...) underflows in float64): the weights, computed in log
    space, still follow scipy's log densities, softmax(log w_k + logpdf_k(x_o)) to 1e-9."""
    w, m, C = mix4d
    known = np.array([True, True, False, False])
    row = np.array([60.0, -45.0, 0.0, 0.0])
    cond = GaussianMixture(w, m, C).condition(torch.from_numpy(known), torch.from_numpy(row))
    log_joint = np.array([np.log(w[k]) + multivariate_normal(m[k, :2], C[k, :2, :2]).logpdf(row[:2]) for k in range(3)])
    assert np.all(np.exp(log_joint) == 0)  # the naive product underflows
    np.testing.assert_allclose(cond.weights.numpy(), np.exp(log_joint - logsumexp(log_joint)), rtol=0, atol=1e-9)
    assert torch.isfinite(cond.means).all() and torch.isfinite(cond.covs).all()


def test_condition_with_nothing_known_is_the_mixture_and_bad_masks_are_refused(mix4d):
    gm = GaussianMixture(*mix4d)
    same = gm.condition(torch.zeros(4, dtype=torch.bool), torch.zeros(4))
    for a, b in ((same.weights, gm.weights), (same.means, gm.means), (same.covs, gm.covs)):
        assert torch.equal(a, b)
    bad = [(torch.ones(4, dtype=torch.bool), torch.zeros(4)),  # all known: nothing to condition
           (torch.ones(3, dtype=torch.bool), torch.zeros(4)),  # wrong mask shape
           (torch.tensor([0, 2, 1, 0]), torch.zeros(4)),  # not binary
           (torch.tensor([True, False, False, False]), torch.zeros(3)),  # wrong x_known shape
           (torch.tensor([True, False, False, False]), torch.tensor([np.nan, 0, 0, 0]))]  # NaN where known
    for mask, x_known in bad:
        with pytest.raises(InputError):
            gm.condition(mask, x_known)
    with pytest.raises(InputError):
        gm.marginal_over(torch.zeros(4, dtype=torch.bool))
    # NaN where unknown is ignored, and a 0/1 mask means the same as a boolean one
    a = gm.condition(torch.tensor([1, 0, 0, 1]), torch.tensor([0.5, np.nan, np.nan, -1.0]))
    b = gm.condition(torch.tensor([True, False, False, True]), torch.tensor([0.5, 9.0, 9.0, -1.0]))
    assert torch.equal(a.means, b.means) and torch.equal(a.weights, b.weights)


# --- component ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("k", [0, 1, 2])
def test_component_samples_have_the_component_moments(mix2d, k):
    """Mean and covariance of 100,000 draws within 5.5 Monte Carlo SE of (m_k, C_k) (mc_mean_cov_check)."""
    w, m, C = mix2d
    comp = GaussianMixture(w, m, C).component(k)
    assert comp.weights.tolist() == [1.0]
    mc_mean_cov_check(comp.sample(100_000, generator=torch.Generator().manual_seed(k)).numpy(), m[k], C[k])


def test_component_index_out_of_range_is_refused(mix2d):
    gm = GaussianMixture(*mix2d)
    for k in (-1, 3, 1.0, True):
        with pytest.raises(InputError):
            gm.component(k)


@pytest.mark.slow
def test_component_denoiser_through_a_sampler_reproduces_the_component(mix2d):
    """The exact denoiser of component(k) run through dpmpp_2m (100 steps, fine enough that its bias is below
    the Monte Carlo error here) reproduces component k:
    - mean and covariance of 2,000 samples within 5.5 Monte Carlo SE (mc_mean_cov_check), per component;
    - SW2 of the first 500 to a fresh draw of component k, averaged over the 3 components, within 1.5x the floor
      (mean over 10 draws of SW2 between two fresh sets of 500). One draw's SW2 / floor has sd ~0.25 (the
      floors' sd / mean here: 0.14-0.26), so the average of three has sd ~0.15 and 1.5 sits > 3 sd above 1;
    - the whole mixture, as a wrong answer, is > 10x the floor (~50-100x), so the check can fail."""
    w, m, C = mix2d
    gm = GaussianMixture(w, m, C)
    schedule = make_schedule("linear", 1000)
    n, n_sw2, ratios = 2000, 500, []
    for k in range(3):
        comp = gm.component(k)
        x = generate(comp.denoiser(schedule), (n, 2), schedule, sampler="dpmpp_2m", steps=100, seed=10 + k,
                     dtype=torch.float64)
        mc_mean_cov_check(x.numpy(), m[k], C[k])
        floor = np.mean([sliced_w2(comp.sample(n_sw2, generator=torch.Generator().manual_seed(100 + i)),
                                   comp.sample(n_sw2, generator=torch.Generator().manual_seed(200 + i)))
                         for i in range(10)])
        truth = comp.sample(n_sw2, generator=torch.Generator().manual_seed(300 + k))
        ratios.append(sliced_w2(x[:n_sw2], truth) / floor)
        assert sliced_w2(gm.sample(n_sw2, generator=torch.Generator().manual_seed(400 + k)), truth) > 10 * floor
    assert np.mean(ratios) < 1.5, ratios
