"""The variational bound and the ODE likelihood on images, against closed forms (issue 9, Part 1).

The oracle: a UNet's output convolution is zero at initialisation, so under v-prediction its denoiser is
x0_hat = a x_t - s * 0 = a x_t (a = sqrt(abar_t), s = sqrt(1 - abar_t)), which is E[x_0 | x_t] for data
y ~ N(0, I) in model units: then x_t = a y + s eps is N(0, I) at every t and Cov(x_0, x_t) = a I. So
- every marginal of the chain, and of the probability-flow ODE, is N(0, I): the model's density of a point y is
  N(y; 0, I) in model units, and behind ``Pixels`` (y = 2 x / (L - 1) - 1) p(x) = N(y; 0, I) (2 / (L - 1))^D;
- the reverse mean is c_0 a x_t + c_t x_t = sqrt(alpha_t) x_t, so every term of the bound is a Gaussian KL (or
  log-density) whose expectation over x_t ~ q(x_t | y) is a quadratic in y (``expected_terms`` below).
The UNets here are the digits preset's two levels at 4 base channels and without attention: only the zero last layer
matters, the rest must run, and the exact trace costs D backward passes through it per call. The library tests use
float64 networks (the closed forms are then met to rounding); the command-line tests save float32 ones, as training
does. The closed forms are derived here, per point y (test_bound.py's are averages over Gaussian data)."""

import json
import math

import numpy as np
import pytest
import torch
from numpy.polynomial.hermite_e import hermegauss
from scipy.special import log_ndtr, ndtr

from gaussdiff.cli import main
from gaussdiff.likelihood import dequantize, elbo, ode_nll, term_at
from gaussdiff.nets import build_network, unet_config
from gaussdiff.param import as_denoiser, as_reverse_model
from gaussdiff.saved import SavedModel, load_model
from gaussdiff.schedule import make_schedule
from gaussdiff.transforms import Pixels

T = 20
LEVELS = 256
SHAPES = [(1, 8, 8), (3, 8, 8)]
VARIANCES = ["fixed_small", "fixed_large"]
SIGMA_MIN = 1e-3  # ode_nll's default start of the ODE
SE_BOUND = 4.5  # per check: Student t with 63 dof exceeds 4.5 in size with probability 3e-5


def schedule():
    """The cosine schedule at T = 20: abar_1 = 0.992, abar_T = 6e-6 (L_T is small but not zero)."""
    return make_schedule("squaredcos_cap_v2", T)


def small_unet(shape):
    """A fresh UNet (zero output convolution) for images of ``shape``."""
    torch.manual_seed(0)
    config = unet_config(shape, T, base_channels=4, norm_groups=4, attention_resolutions=[], mid_attention=False)
    return build_network(config).eval()


@pytest.fixture(scope="module")
def nets():
    """float64 fresh UNets, one per shape, frozen (as ``load_model`` leaves a network)."""
    return {shape: small_unet(shape).double().requires_grad_(False) for shape in SHAPES}


def gaussian_images(n, shape, seed):
    """y ~ N(0, I) images (n, *shape) in model units, float64."""
    return torch.randn((n, *shape), generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


# --- closed forms ------------------------------------------------------------------------------------------------

def reverse_coefficients(abar, variance_type):
    """Per t = 1..T from abar_0..abar_T: (abar_t, c_0 of q(x_{t-1} | x_t, x_0), beta_tilde_t, the model's variance
    s2_t). beta_t = 1 - abar_t / abar_{t-1}, c_0 = sqrt(abar_{t-1}) beta_t / (1 - abar_t) (Ho et al. eq. 7; c_0 = 1
    at t = 1), beta_tilde_t = (1 - abar_{t-1}) beta_t / (1 - abar_t) (0 at t = 1); s2_t = beta_tilde_t (fixed_small)
    or beta_t (fixed_large) for t >= 2, and beta_tilde_2 at t = 1 for both (improved-diffusion's clip)."""
    ab_t, ab_prev = abar[1:], abar[:-1]
    beta = 1 - ab_t / ab_prev
    c0 = np.sqrt(ab_prev) * beta / (1 - ab_t)
    bt = (1 - ab_prev) * beta / (1 - ab_t)
    s2 = (bt if variance_type == "fixed_small" else beta).copy()
    s2[0] = bt[1]
    return ab_t, c0, bt, s2


def expected_terms(y2, D, abar, variance_type):
    """E over x_t ~ q(x_t | y) of the bound's term at each t, (N, T), nats, model units; column 0 is L_0 (the
    continuous decoder), column t - 1 is L_{t-1}; y2 = |y|^2 per point (N,).

    With the model mean sqrt(alpha_t) x_t, mu_tilde - mu = c_0 (y - a x_t) = c_0 ((1 - abar_t) y - a s eps), whose
    square has expectation c_0^2 ((1 - abar_t)^2 y^2 + abar_t (1 - abar_t)) per value. Hence, summed over the D values,
        L_{t-1} = D/2 (log(s2 / beta_tilde) + beta_tilde / s2 - 1) + Q_t,
        L_0     = D/2 log(2 pi s2_1) + Q_1   (c_0 = 1 at t = 1: y - a_1 x_1 = y - the mean of p(x_0 | x_1)),
        Q_t     = c_0^2 ((1 - abar_t)^2 |y|^2 + D abar_t (1 - abar_t)) / (2 s2_t)."""
    ab, c0, bt, s2 = reverse_coefficients(abar, variance_type)
    quadratic = c0**2 * ((1 - ab) ** 2 * y2[:, None] + D * ab * (1 - ab)) / (2 * s2)
    with np.errstate(divide="ignore"):  # beta_tilde_1 = 0: column 0 is replaced below
        constant = D / 2 * (np.log(s2 / bt) + bt / s2 - 1)
    constant[0] = D / 2 * math.log(2 * math.pi * s2[0])
    return quadratic + constant


def expected_prior(y2, D, abar_T):
    """L_T = KL(N(sqrt(abar_T) y, (1 - abar_T) I) || N(0, I)) = (abar_T |y|^2 - D abar_T - D log(1 - abar_T)) / 2."""
    return 0.5 * (abar_T * y2 - D * abar_T - D * math.log1p(-abar_T))


def decoder_mean(y, eps, abar):
    """The mean of p(x_0 | x_1) at x_1 = a_1 y + s_1 eps: a_1 x_1 = abar_1 y + sqrt(abar_1 (1 - abar_1)) eps."""
    return abar[1] * y + math.sqrt(abar[1] * (1 - abar[1])) * eps


def bin_nll(y, mean, sd, levels):
    """-log P(bin of y | N(mean, sd^2)) elementwise (numpy): bins of width w = 2 / (levels - 1) around the levels of
    [-1, 1], the end bins open (Ho et al. eq. 13); scipy's normal CDF, a bin right of the mean by its upper tail."""
    w = 2 / (levels - 1)
    lower, upper = (y - w / 2 - mean) / sd, (y + w / 2 - mean) / sd
    right = lower + upper > 0  # P(Z > lower) - P(Z > upper): no cancellation
    inner = np.log(np.where(right, ndtr(-lower) - ndtr(-upper), ndtr(upper) - ndtr(lower)))
    return -np.where(y <= -1 + w / 2, log_ndtr(upper), np.where(y >= 1 - w / 2, log_ndtr(-lower), inner))


def expected_discrete_decoder(y, abar, s2_1, levels, nodes=60):
    """E over eps of the discretized L_0 = sum of ``bin_nll`` at the ``decoder_mean``, per point (N,): Gauss-Hermite
    over each value's own eps (60 nodes; 40 and 120 agree with it to 2e-12 nats)."""
    z, weight = hermegauss(nodes)
    y = y.reshape(len(y), -1).numpy()[..., None]
    nll = bin_nll(y, decoder_mean(y, z, abar), math.sqrt(s2_1), levels)
    return (nll @ (weight / math.sqrt(2 * math.pi))).sum(1)


def ode_closed_form(y, sigma_min):
    """-log p(y) as the ODE computes it, in model units: its flow here is the identity (the drift a (a x - a x) is 0),
    so it is -log N(a0 y; 0, I) - D log a0 with a0 = (1 + sigma_min^2)^(-1/2), the chain's scale where it starts."""
    D = y[0].numel()
    a0_2 = 1 / (1 + sigma_min**2)
    y2 = y.flatten(1).pow(2).sum(1)
    return 0.5 * a0_2 * y2 + 0.5 * D * math.log(2 * math.pi) + 0.5 * D * math.log(1 + sigma_min**2)


def gaussian_nll(y):
    """-log N(y; 0, I) per sample, nats."""
    return 0.5 * y.flatten(1).pow(2).sum(1) + 0.5 * y[0].numel() * math.log(2 * math.pi)


# --- the probability-flow ODE ------------------------------------------------------------------------------------

@pytest.mark.parametrize("shape", SHAPES)
def test_ode_nll_is_the_gaussian_density_in_pixel_units(nets, shape):
    """4 images y ~ N(0, I) as continuous data x = Pixels.inverse(y) (levels 256): NLL(x) = -log N(y; 0, I)
    - D log(2 / 255). The solver's rtol/atol do not enter: the drift is exactly 0 in floating point, so x(s) stays
    a0 y and the divergence a^2 D - a tr(dD/dx) = a^2 D - a a D is exactly 0 along the way. What remains:
    - against the ODE's own closed form (started at sigma_min, ``ode_closed_form``): float64 rounding, asserted
      1e-12 relative (measured: equal);
    - against -log N(y; 0, I): starting at sigma_min instead of 0 moves it by sigma_min^2 (D - |y|^2) / 2 + O(sigma^4),
      asserted within sigma_min^2 (|y|^2 + D) / 2 (about 2e-4 nats; measured 1.2e-5).
    The exact trace (D backward passes per call) runs with adaptive Heun, exact on a zero drift and the fewest calls;
    Hutchinson (4 Rademacher probes) with the default dopri5. With J = 0 every probe's v^T J v is 0: its standard
    error is 0 (asserted <= 1e-12) and its mean must equal the exact trace within 4 SE plus rounding (1e-12
    relative)."""
    D = math.prod(shape)
    transform = Pixels(shape, LEVELS)
    y = gaussian_images(4, shape, seed=1)
    x = transform.inverse(y)
    den = as_denoiser(nets[shape], schedule(), "v_prediction")
    exact = ode_nll(den, x, schedule(), transform=transform, method="adaptive_heun")
    hutch = ode_nll(den, x, schedule(), transform=transform, probes=4, generator=torch.Generator().manual_seed(2))
    log_scale = D * math.log(2 / (LEVELS - 1))  # log |det dy/dx|, per sample
    closed = ode_closed_form(y, SIGMA_MIN) - log_scale
    truth = gaussian_nll(y) - log_scale
    torch.testing.assert_close(exact.nll, closed, rtol=1e-12, atol=0)
    bias = SIGMA_MIN**2 * (y.flatten(1).pow(2).sum(1) + D) / 2
    assert ((exact.nll - truth).abs() <= bias).all(), (exact.nll - truth, bias)
    assert (hutch.probe_se <= 1e-12).all() and torch.equal(exact.probe_se, torch.zeros(4))
    assert ((hutch.nll - exact.nll).abs() <= 4 * hutch.probe_se + 1e-12 * exact.nll.abs()).all()
    assert exact.dim == D and torch.allclose(exact.bits_per_dim, closed / (D * math.log(2)), rtol=1e-12, atol=0)


# --- the variational bound -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("variance_type", VARIANCES)
@pytest.mark.parametrize("shape", SHAPES)
def test_every_term_of_the_bound_is_its_closed_form(nets, shape, variance_type):
    """Exactly, without Monte Carlo: each term is a sum over the D values of a quadratic in that value's eps, so its
    expectation over eps ~ N(0, I) is the mean of the term at eps = +1 and eps = -1 (all values at once: the odd
    parts cancel, eps^2 = 1). ``term_at`` at both nodes, every t, 6 images, against ``expected_terms``: float64
    rounding of terms of 0.15-240 nats (measured 3e-13 nats), asserted 1e-10 relative + 1e-9 absolute."""
    s, D = schedule(), math.prod(shape)
    y = gaussian_images(6, shape, seed=3)
    model = as_reverse_model(nets[shape], s, "v_prediction", variance_type)
    t = torch.arange(1, T + 1).repeat_interleave(len(y))  # t-major: (T, N) after reshape
    ones = torch.ones((T * len(y), *shape), dtype=torch.float64)
    plus, minus = (term_at(model, y.repeat(T, 1, 1, 1), s, t, sign * ones).reshape(T, len(y)).T for sign in (1, -1))
    ours = (plus + minus) / 2
    closed = expected_terms(y.flatten(1).pow(2).sum(1).numpy(), D, s.alpha_bar.numpy(), variance_type)
    np.testing.assert_allclose(ours.numpy(), closed, rtol=1e-10, atol=1e-9)


@pytest.mark.parametrize("shape", SHAPES)
def test_discretized_decoder_term_is_its_closed_form(nets, shape):
    """L_0 with the decoder discretized at 256 levels, at given eps: -sum log P(bin of y | N(a_1 x_1, beta_tilde_2))
    (``bin_nll``). ``term_at`` at t = 1 on 8 images on the levels (and at the open end bins) with one eps draw:
    scipy's CDF and the library's agree to 1e-10 relative (terms of 170-600 nats; measured 1e-15)."""
    s = schedule()
    transform = Pixels(shape, LEVELS)
    k = transform.quantize(transform.inverse(gaussian_images(8, shape, seed=9)))
    y = k.double() * (2 / (LEVELS - 1)) - 1  # on the levels of [-1, 1]
    eps = gaussian_images(8, shape, seed=10)
    model = as_reverse_model(nets[shape], s, "v_prediction", "fixed_small")
    ours = term_at(model, y, s, torch.ones(8, dtype=torch.long), eps, levels=LEVELS)
    abar = s.alpha_bar.numpy()
    sd = math.sqrt(reverse_coefficients(abar, "fixed_small")[3][0])
    closed = bin_nll(y.numpy(), decoder_mean(y.numpy(), eps.numpy(), abar), sd, LEVELS).reshape(8, -1).sum(1)
    assert ((k == 0) | (k == LEVELS - 1)).any() and ((k > 0) & (k < LEVELS - 1)).any()
    np.testing.assert_allclose(ours.numpy(), closed, rtol=1e-10, atol=0)


@pytest.mark.parametrize("variance_type", VARIANCES)
@pytest.mark.parametrize("shape", SHAPES)
def test_elbo_in_pixel_units_matches_the_closed_form_within_its_standard_error(nets, shape, variance_type):
    """``elbo`` (all T terms, one draw of x_t per (point, t)) on 64 images y ~ N(0, I), continuous decoder, in the
    units of x = Pixels.inverse(y): L_0 there is the model-unit L_0 - D log(2 / 255). Per point, the residual
    (bound - its expectation given y) has mean 0; its mean over the points must lie within 4.5 of its standard errors,
    for sum L_{t-1}, L_0 and the total (measured |z| <= 1.2). The SE is 1-3 nats on sums of 150-670 nats, so this
    catches errors of a few % in the sampling and summing; each term's value is pinned exactly by the tests above.
    L_T involves no draw: equal to 1e-12 nats (it is 6e-4, a difference of O(1) values per pixel: D ulp of 1 is
    4e-14)."""
    s, D = schedule(), math.prod(shape)
    transform = Pixels(shape, LEVELS)
    y = gaussian_images(64, shape, seed=4)
    model = as_reverse_model(nets[shape], s, "v_prediction", variance_type)
    ldj = transform.log_abs_det_jacobian(transform.inverse(y))
    bound = elbo(model, y, s, log_det_jacobian=ldj, generator=torch.Generator().manual_seed(5))
    y2, abar = y.flatten(1).pow(2).sum(1).numpy(), s.alpha_bar.numpy()
    terms = expected_terms(y2, D, abar, variance_type)
    expected = {"L_T": expected_prior(y2, D, abar[-1]), "sum L_{t-1}": terms[:, 1:].sum(1),
                "L_0": terms[:, 0] - D * math.log(2 / (LEVELS - 1))}
    np.testing.assert_allclose(bound.prior.numpy(), expected["L_T"], rtol=0, atol=1e-12)
    got = {"sum L_{t-1}": bound.diffusion, "L_0": bound.decoder, "total": bound.total}
    expected["total"] = sum(expected[k] for k in ("L_T", "sum L_{t-1}", "L_0"))
    for name, values in got.items():
        z = t_statistic(values.numpy() - expected[name])
        assert abs(z) <= SE_BOUND, (shape, variance_type, name, z)


def t_statistic(residuals):
    """mean / (sample sd / sqrt(n)) of per-point residuals."""
    return residuals.mean() / (residuals.std(ddof=1) / math.sqrt(len(residuals)))


# --- through the command line ------------------------------------------------------------------------------------

SHAPE_CLI = (3, 8, 8)


@pytest.fixture(scope="module")
def cli_case(tmp_path_factory):
    """A saved model (a fresh float32 UNet, v-prediction, fixed_small, Pixels with 256 levels) and 64 uint8 images
    quantize(Pixels.inverse(y)), y ~ N(0, I): the values beyond [-1, 1] land in the open end bins (0 and 255)."""
    root = tmp_path_factory.mktemp("image_likelihood")
    transform = Pixels(SHAPE_CLI, LEVELS)
    SavedModel(small_unet(SHAPE_CLI), schedule(), "v_prediction", transform, "gauss").save(root / "model")
    images = transform.quantize(transform.inverse(gaussian_images(64, SHAPE_CLI, seed=6))).numpy()
    np.save(root / "images.npy", images)
    return root, torch.from_numpy(images).double()


def test_elbo_command_is_the_discretized_bound(cli_case, capsys):
    """``gaussdiff elbo`` on uint8 images defaults to the discretized decoder at the data's 256 levels. Its total
    must be the library's ``elbo`` on y = 2 x / 255 - 1 with the same seed, batch size and float32 network (the same
    draws: to 1e-12 relative); L_T is deterministic, its closed form to 1e-9 relative. And the library's per-point
    bound (float32 network) must match its expectation given y (``expected_terms`` for t >= 2, Gauss-Hermite for the
    discretized L_0) within 4.5 standard errors of the residuals (measured z = -1.1)."""
    root, x = cli_case
    argv = ["elbo", str(root / "model"), "--data", str(root / "images.npy"), "--seed", "7", "--batch-size", "640",
            "--out", str(root / "elbo")]
    assert main(argv) == 0
    assert "discrete data on 256 levels" in capsys.readouterr().out
    report = json.loads((root / "elbo" / "elbo.json").read_text())
    assert report["levels"] == LEVELS and report["points"] == len(x) and report["log_det_jacobian"] == 0

    s, D = schedule(), math.prod(SHAPE_CLI)
    y = x * (2 / (LEVELS - 1)) - 1
    net32 = as_reverse_model(load_model(root / "model").network, s, "v_prediction")
    bound = elbo(lambda x_t, t: net32(x_t.float(), t), y, s, levels=LEVELS, batch_size=640,
                 generator=torch.Generator().manual_seed(7))
    ours = bound.summary()
    assert report["terms"]["total"]["bits_per_dim"] == pytest.approx(ours["total"]["bits_per_dim"], rel=1e-12)

    y2, abar = y.flatten(1).pow(2).sum(1).numpy(), s.alpha_bar.numpy()
    prior = expected_prior(y2, D, abar[-1])
    assert report["terms"]["L_T"]["nats"] == pytest.approx(prior.mean(), rel=1e-9)
    _, _, _, s2 = reverse_coefficients(abar, "fixed_small")
    expected = (prior + expected_terms(y2, D, abar, "fixed_small")[:, 1:].sum(1)
                + expected_discrete_decoder(y, abar, s2[0], LEVELS))
    z = t_statistic(bound.total.numpy() - expected)
    assert abs(z) <= SE_BOUND, z


def test_nll_command_is_the_gaussian_density_at_the_dequantized_points(cli_case, capsys):
    """``gaussdiff nll`` on the uint8 images: dequantized (x + u, u ~ U(-1/2, 1/2)), then the ODE with 2 Hutchinson
    probes (D = 192 > 64), dopri5 at rtol = atol = 1e-5. The dequantization is the seed's first draw, so
    ``dequantize`` with the same seed gives the points x + u; at each the NLL must be the closed form
    -log N(a0 y; 0, I) - D log a0 - D log(2 / 255), y = 2 (x + u) / 255 - 1. The float32 network makes the drift
    a (a x - D(x)) rounding-small instead of 0 (its Jacobian a (a - a) stays exactly 0 through the casts, so the
    probe SE is 0): measured max error 1.1e-5 nats, asserted 1e-3 (5e-6 per value) per sample; the reported
    bits/dim is the mean NLL / (D log 2)."""
    root, x = cli_case
    argv = ["nll", str(root / "model"), "--data", str(root / "images.npy"), "--seed", "8", "--out", str(root / "nll")]
    assert main(argv) == 0
    assert "dequantization: uniform: integers 0..255" in capsys.readouterr().out
    report = json.loads((root / "nll" / "nll.json").read_text())
    assert report["divergence"] == "Hutchinson, 2 Rademacher probes" and report["n"] == len(x)
    nll = torch.tensor(report["per_sample"]["nll_nats"], dtype=torch.float64)
    D = math.prod(SHAPE_CLI)
    x_deq = dequantize(x, LEVELS, generator=torch.Generator().manual_seed(8))
    closed = ode_closed_form(x_deq * (2 / (LEVELS - 1)) - 1, SIGMA_MIN) - D * math.log(2 / (LEVELS - 1))
    assert torch.isfinite(nll).all() and (nll - closed).abs().max() <= 1e-3, (nll - closed).abs().max()
    assert report["bits_per_dim"]["mean"] == pytest.approx(nll.mean().item() / (D * math.log(2)), rel=1e-12)
