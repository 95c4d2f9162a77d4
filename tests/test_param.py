"""Tests of gaussdiff.param (eps / x0 / v and the score) and gaussdiff.losses (the simplified loss).

References: the definitions x_t = a x_0 + s eps, v = a eps - s x_0 (a = sqrt(abar), s = sqrt(1 - abar))
written out in numpy, autograd of the Gaussian log-density, and Monte Carlo with stated tolerances.
"""

import math

import numpy as np
import pytest
import torch

from gaussdiff.errors import InputError
from gaussdiff.losses import sample_t, simple_loss
from gaussdiff.param import (PREDICTION_TYPES, as_denoiser, check_prediction_type, eps_from_x0,
                             score_from_x0, to_x0, training_target)
from gaussdiff.schedule import make_schedule


@pytest.fixture
def draws():
    """x_0, eps (64, 3) and a per-sample abar in [1e-3, 0.999], float64, with x_t built in numpy."""
    rng = np.random.default_rng(0)
    x0, eps = rng.standard_normal((64, 3)), rng.standard_normal((64, 3))
    ab = rng.uniform(1e-3, 0.999, 64)
    a, s = np.sqrt(ab)[:, None], np.sqrt(1 - ab)[:, None]
    xt = a * x0 + s * eps
    v = a * eps - s * x0  # Salimans & Ho (2022)
    t = torch.from_numpy
    return t(x0), t(eps), t(ab), t(xt), t(v)


# Dividing by a = sqrt(abar) >= 0.03 (or s >= 0.03) amplifies float64 rounding of |x_t| <= ~5 to
# at most ~5e-14 absolute; 1e-12 cannot hide a wrong coefficient (changes of order 1e-2 or more).
TOL = 1e-12


def test_round_trips_eps_x0_v(draws):
    x0, eps, ab, xt, v = draws
    np.testing.assert_allclose(eps_from_x0(x0, xt, ab).numpy(), eps.numpy(), rtol=0, atol=TOL)
    np.testing.assert_allclose(to_x0("epsilon", eps, xt, ab).numpy(), x0.numpy(), rtol=0, atol=TOL)
    np.testing.assert_allclose(to_x0("v_prediction", v, xt, ab).numpy(), x0.numpy(), rtol=0, atol=TOL)
    np.testing.assert_allclose(to_x0("sample", x0, xt, ab).numpy(), x0.numpy(), rtol=0, atol=0)
    np.testing.assert_allclose(training_target("v_prediction", x0, eps, ab).numpy(), v.numpy(), rtol=0, atol=TOL)
    # eps from v: eps = s x_t + a v
    a, s = ab.sqrt()[:, None], (1 - ab).sqrt()[:, None]
    np.testing.assert_allclose((s * xt + a * v).numpy(), eps.numpy(), rtol=0, atol=TOL)


@pytest.mark.parametrize("prediction_type", PREDICTION_TYPES)
def test_training_target_and_to_x0_are_consistent(draws, prediction_type):
    x0, eps, ab, xt, _ = draws
    target = training_target(prediction_type, x0, eps, ab)
    expected_target = {"epsilon": eps, "sample": x0, "v_prediction": draws[4]}[prediction_type]
    np.testing.assert_allclose(target.numpy(), expected_target.numpy(), rtol=0, atol=TOL)
    np.testing.assert_allclose(to_x0(prediction_type, target, xt, ab).numpy(), x0.numpy(), rtol=0, atol=TOL)
    # A scalar abar broadcasts like a per-sample one.
    ab0 = ab[7]
    xt7 = ab0.sqrt() * x0 + (1 - ab0).sqrt() * eps
    np.testing.assert_allclose(to_x0(prediction_type, training_target(prediction_type, x0, eps, ab0), xt7, ab0).numpy(),
                               x0.numpy(), rtol=0, atol=TOL)


def test_score_is_the_gradient_of_the_gaussian_log_density_for_a_point_mass(draws):
    x0, _, ab, xt, _ = draws
    x = xt.clone().requires_grad_(True)
    var = (1 - ab)[:, None]
    log_q = (-0.5 * (x - ab.sqrt()[:, None] * x0) ** 2 / var - 0.5 * torch.log(2 * math.pi * var)).sum()
    (grad,) = torch.autograd.grad(log_q, x)
    # Both are (a x0 - x_t)/(1 - abar) up to rounding; 1/(1 - abar) <= 1000 scales u to ~1e-12 relative.
    np.testing.assert_allclose(score_from_x0(x0, xt, ab).numpy(), grad.numpy(), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("prediction_type", PREDICTION_TYPES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_as_denoiser_wraps_a_net_for_a_point_mass(prediction_type, dtype):
    """Data = point mass at x*: the exact net of each type must turn into denoiser(x_t, t) = x*."""
    s = make_schedule("squaredcos_cap_v2", 100)
    ab_table = np.concatenate([[1.0], np.cumprod(1 - s.betas.numpy())])
    x_star = torch.tensor([0.5, -1.0, 2.0], dtype=dtype)
    seen = {}

    def net(x_t, t, *, scale):
        seen.update(t=t.clone(), scale=scale)
        ab = torch.from_numpy(ab_table[t.double().round().long().numpy()])[:, None].to(dtype)
        a, sd = ab.sqrt(), (1 - ab).sqrt()
        eps = (x_t - a * x_star) / sd
        return {"epsilon": eps, "sample": x_star.expand_as(x_t), "v_prediction": a * eps - sd * x_star}[prediction_type]

    den = as_denoiser(net, s, prediction_type, scale=3)
    x_t = torch.randn(6, 3, generator=torch.Generator().manual_seed(1), dtype=dtype)
    # float32: the eps and v routes divide by sqrt(abar) >= sqrt(abar_95) ~ 0.08: ~1e-5 absolute.
    tol = 1e-12 if dtype == torch.float64 else 1e-4
    for t in (5, 5.0, torch.tensor(50.0), torch.tensor([1.0, 2, 10, 50, 90, 95])):
        out = den(x_t, t)
        assert out.dtype == dtype and out.shape == x_t.shape
        np.testing.assert_allclose(out.double().numpy(), x_star.double().expand_as(x_t).numpy(), rtol=0, atol=tol)
        assert seen["t"].shape == (6,) and seen["t"].dtype == dtype and seen["scale"] == 3
        np.testing.assert_array_equal(seen["t"].numpy(), torch.as_tensor(t, dtype=dtype).expand(6).numpy())


def test_unknown_prediction_type_is_rejected(draws):
    x0, eps, ab, xt, _ = draws
    for bad in ("eps", "v", "x0", "", "EPSILON"):
        with pytest.raises(InputError):
            check_prediction_type(bad)
        with pytest.raises(InputError):
            as_denoiser(lambda x, t: x, make_schedule(), bad)
        with pytest.raises(InputError):
            training_target(bad, x0, eps, ab)
        with pytest.raises(InputError):
            to_x0(bad, eps, xt, ab)


# --- losses ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("prediction_type", PREDICTION_TYPES)
def test_simple_loss_is_zero_for_the_true_target(prediction_type):
    s = make_schedule("linear", 1000)
    g = torch.Generator().manual_seed(2)
    x0 = torch.randn(32, 4, generator=g, dtype=torch.float64)
    eps = torch.randn(32, 4, generator=g, dtype=torch.float64)
    t = torch.randint(1, 1001, (32,), generator=g)
    ab = np.concatenate([[1.0], np.cumprod(1 - s.betas.numpy())])[t.numpy()][:, None]
    xt_np = np.sqrt(ab) * x0.numpy() + np.sqrt(1 - ab) * eps.numpy()
    target = {"epsilon": eps.numpy(), "sample": x0.numpy(),
              "v_prediction": np.sqrt(ab) * eps.numpy() - np.sqrt(1 - ab) * x0.numpy()}[prediction_type]

    def net(x_t, t_in):
        # the loss must feed the net x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps and our t
        np.testing.assert_allclose(x_t.numpy(), xt_np, rtol=0, atol=1e-14)
        np.testing.assert_array_equal(t_in.numpy(), t.numpy())
        return torch.from_numpy(target)

    loss = simple_loss(net, x0, s, prediction_type, t=t, eps=eps)
    assert loss.shape == (32,)
    assert loss.max().item() <= 1e-28  # target computed by two float64 routes: (1e-15)^2 at most


def test_simple_loss_of_a_zero_net_is_one_for_epsilon():
    s = make_schedule("linear", 1000)
    g = torch.Generator().manual_seed(3)
    B, D = 20_000, 4
    x0 = torch.randn(B, D, generator=g, dtype=torch.float64) * 3 + 1
    loss = simple_loss(lambda x, t: torch.zeros_like(x), x0, s, "epsilon", generator=g)
    # Per sample: mean of D squared N(0, 1) = chi2_D / D, mean 1, variance 2/D. Over B samples the
    # mean has SE sqrt(2 / (D B)) = 0.005; 5 SE (two-sided 6e-7).
    assert abs(loss.mean().item() - 1) <= 5 * math.sqrt(2 / (D * B))
    # ... and its per-sample variance is 2 / D (SE of a sample variance of chi2_4/4, whose kurtosis
    # is 3 + 12/D: sd(var_hat) = var sqrt((kurt - 1)/B) = 0.5 sqrt(5/B) = 0.0079; 5 SE).
    assert abs(loss.var().item() - 2 / D) <= 5 * (2 / D) * math.sqrt((2 + 12 / D) / B)


def test_sample_t_is_uniform_on_1_to_T():
    s = make_schedule("linear", 4, beta_start=0.1, beta_end=0.2)
    t = sample_t(40_000, s, torch.Generator().manual_seed(4))
    assert t.dtype == torch.long and t.min().item() == 1 and t.max().item() == 4
    freq = torch.bincount(t, minlength=5).double().numpy() / t.numel()
    assert freq[0] == 0
    # multinomial: SE = sqrt(p (1 - p) / n) = 0.0022; 5 SE each (4 checks, family 2.3e-6).
    np.testing.assert_allclose(freq[1:], 0.25, rtol=0, atol=5 * math.sqrt(0.25 * 0.75 / t.numel()))
