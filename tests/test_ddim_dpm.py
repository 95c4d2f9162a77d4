"""Tests of DDIM (samplers.ddim, samplers.ddim_invert) and DPM-Solver++(2M) (samplers.dpmpp_2m).

Oracle: for Gaussian data N(m, s^2) the exact denoiser is affine in x_t, the probability-flow ODE is
the monotone transport between Gaussians, and both samplers are affine maps x_T -> x_0. So the law
of their output from x_T ~ N(0, 1) follows from two runs (x_T = 0 and x_T = 1) with no Monte Carlo
error, and its exact target is the flow from the true marginal q_T = N(sqrt(abar_T) m, abar_T s^2 +
1 - abar_T) pushed from N(0, 1) instead:
    x_0 = m + (s / s_T) (x_T - sqrt(abar_T) m),   s_T^2 = abar_T s^2 + 1 - abar_T
(mean m - s sqrt(abar_T) m / s_T, sd s / s_T; for the linear schedule, T = 1000, that is 0.0015 off
the data mean). References besides: diffusers' DDIMScheduler and DPMSolverMultistepScheduler, and
the ancestral sampler (DDIM with eta = 1 is DDPM with the posterior variance).
"""

import math

import numpy as np
import pytest
import torch

from gaussdiff.errors import InputError
from gaussdiff.mixture import GaussianMixture
from gaussdiff.param import as_denoiser
from gaussdiff.samplers import SAMPLERS, ddim, ddim_invert, ddpm, dpmpp_2m, generate, timestep_grid
from gaussdiff.schedule import make_schedule

T = 1000
MU, SD = 0.8, 0.3


@pytest.fixture(scope="module")
def linear():
    return make_schedule("linear", T)


@pytest.fixture(scope="module")
def gauss():
    return GaussianMixture([1.0], [[MU]], [[[SD**2]]])


def flow_law(schedule):
    """Mean and sd of the exact probability-flow map applied to x_T ~ N(0, 1) (module doc)."""
    ab_T = schedule.alpha_bar[-1].item()
    s_T = math.sqrt(ab_T * SD**2 + 1 - ab_T)
    return MU - SD * math.sqrt(ab_T) * MU / s_T, SD / s_T


def affine_law(fn, den, schedule, K):
    """(mean, sd) of a deterministic sampler's output for x_T ~ N(0, 1), from its affine map."""
    grid = timestep_grid(schedule, K, "trailing")
    out = fn(den, torch.tensor([[0.0], [1.0]], dtype=torch.float64), schedule, grid)[:, 0]
    return out[0].item(), (out[1] - out[0]).item()


def test_registered():
    assert SAMPLERS["ddim"].fn is ddim and SAMPLERS["dpmpp_2m"].fn is dpmpp_2m


# --- the law of the output for Gaussian data ---------------------------------------------------------

@pytest.mark.parametrize("name,K", [("ddim", 1000), ("dpmpp_2m", 200)])
def test_fine_grid_reproduces_gaussian_data_by_monte_carlo(linear, gauss, name, K):
    """20000 draws through `generate`. SE of the mean sd/sqrt(n) = 0.0021, of the sd sd/sqrt(2n) (0.5%);
    5 SE each, against the exact flow law. The deterministic bias (from the affine-map runs): DDIM at
    1000 steps -0.5% in sd (~1 SE; first order, -2.3% at 200 steps would not fit), DPM-Solver++ at 200
    steps < 1e-3 relative."""
    M, S = flow_law(linear)
    n = 20_000
    x = generate(gauss.denoiser(linear), (n, 1), linear, sampler=name, steps=K, dtype=torch.float64,
                 generator=torch.Generator().manual_seed(11))[:, 0].numpy()
    assert abs(x.mean() - M) <= 5 * S / math.sqrt(n), (x.mean(), M)
    assert abs(x.std(ddof=1) - S) <= 5 * S / math.sqrt(2 * (n - 1)), (x.std(ddof=1), S)


def test_error_decreases_with_steps_at_the_order_of_each_solver(linear, gauss):
    """Relative sd error |sd_K / sd_exact - 1| at K = 5, 10, 20, 40 (trailing grids), exact (no MC).

    Measured: DDIM 0.629, 0.385, 0.209, 0.110 (log-log slope -0.84: first order, pre-asymptotic at
    K = 5); DPM-Solver++(2M) 0.624, 0.354, 0.137, 0.030 (slope -1.44 over 5..40; local slope 20 -> 40
    -2.17, second order once the steps are small; the error changes sign between K = 80 and 160, so
    no fit is taken beyond 40). Thresholds: DDIM slope < -0.7, DPM slope < -1.3 and its local slope
    20 -> 40 < -1.8 while DDIM's stays in (-1.2, -0.8): a first-order bug in the multistep correction
    would give ~ -0.9 there.
    """
    M, S = flow_law(linear)
    Ks = [5, 10, 20, 40]
    den = gauss.denoiser(linear)
    err = {name: [abs(affine_law(fn, den, linear, K)[1] / S - 1) for K in Ks]
           for name, fn in [("ddim", ddim), ("dpmpp_2m", dpmpp_2m)]}
    slope = {k: np.polyfit(np.log(Ks), np.log(v), 1)[0] for k, v in err.items()}
    local = {k: math.log2(v[3] / v[2]) for k, v in err.items()}  # slope from K = 20 to 40
    print("relative sd errors", err, "slopes", slope, "local 20->40", local)
    for v in err.values():
        assert all(a > b for a, b in zip(v, v[1:])), v
    assert slope["ddim"] < -0.7 and -1.2 < local["ddim"] < -0.8
    assert slope["dpmpp_2m"] < -1.3 and local["dpmpp_2m"] < -1.8
    # The mean converges too (its error is 10x smaller than the sd's here): at 40 steps within 1e-3.
    for fn in (ddim, dpmpp_2m):
        assert abs(affine_law(fn, den, linear, 40)[0] - M) < 1e-3


# --- parity with diffusers -----------------------------------------------------------------------------

def fake_eps(x, i):
    """A deterministic 'network' in diffusers' timestep i (0..T-1)."""
    return 0.3 * x + 0.01 * i / 1000


def run_diffusers(ref, x_T, **step_kw):
    x, traj = x_T.clone(), []
    for i in ref.timesteps:
        x = ref.step(fake_eps(x, int(i)), i, x, **step_kw).prev_sample
        traj.append(x)
    return traj


def run_ours(fn, linear, x_T, K):
    den = as_denoiser(lambda x, t: fake_eps(x, (t - 1)[:, None]), linear, "epsilon")  # our t = i + 1
    traj = []
    fn(den, x_T.clone(), linear, timestep_grid(linear, K, "trailing"), callback=lambda i, s, x, x0_hat: traj.append(x))
    return traj


CFG = dict(num_train_timesteps=T, beta_schedule="linear", beta_start=1e-4, beta_end=0.02, prediction_type="epsilon",
           timestep_spacing="trailing")


# K divides T: diffusers' DDIM steps from timestep i to i - T // K, which on a trailing grid with K not
# dividing T (e.g. K = 7: 999, 856, ...; 999 - 142 = 857) is not the next timestep it evaluates; ours
# always steps to the next grid time. With K | T the two grids coincide, including the final step to
# abar = 1 (set_alpha_to_one=True is our t = 0, abar_0 = 1).
@pytest.mark.parametrize("K", [1, 2, 10, 50, 1000])
def test_ddim_matches_diffusers(linear, K):
    import diffusers

    ref = diffusers.DDIMScheduler(clip_sample=False, set_alpha_to_one=True, **CFG)
    # diffusers keeps alphas_cumprod in float32 (1e-7 relative; the fake model's x0 reaches ~350 at
    # abar_T = 4e-5, so that alone gives 2.5e-5 absolute): hand it our float64 table so the comparison
    # checks the algorithm. Its DDIM step then runs in float64; measured max difference 3e-13.
    ref.alphas_cumprod = linear.alpha_bar[1:].clone()
    ref.set_timesteps(K)
    assert np.array_equal(ref.timesteps.numpy() + 1, timestep_grid(linear, K, "trailing")[:-1].numpy())
    x_T = torch.randn(64, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    theirs, ours = run_diffusers(ref, x_T, eta=0.0), run_ours(ddim, linear, x_T, K)
    assert len(theirs) == len(ours) == K
    diff = max((a - b).abs().max().item() for a, b in zip(theirs, ours))
    assert diff <= 1e-5, diff


@pytest.mark.parametrize("K", [1, 2, 5, 7, 20, 50, 1000])
def test_dpmpp_2m_matches_diffusers(linear, K):
    """diffusers' DPMSolverMultistepScheduler(dpmsolver++, order 2, midpoint) with final_sigmas_type='zero':
    its last step is first order (lower_order_final), x_0 = x0_hat, as ours. Its step casts the
    sample and its sigmas to float32 whatever the input dtype, so the comparison is at float32 level:
    max |difference| <= 1e-5 x max(1, max |x|) (states reach ~350 here; measured <= 2e-6 relative,
    the worst at K = 1000 where 1000 float32 roundings add up)."""
    import diffusers

    ref = diffusers.DPMSolverMultistepScheduler(algorithm_type="dpmsolver++", solver_order=2, final_sigmas_type="zero",
                                                **CFG)
    ref.alphas_cumprod = linear.alpha_bar[1:].clone()  # float64 table, as for DDIM
    ref.set_timesteps(K)
    assert np.array_equal(ref.timesteps.numpy() + 1, timestep_grid(linear, K, "trailing")[:-1].numpy())
    x_T = torch.randn(64, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    theirs, ours = run_diffusers(ref, x_T), run_ours(dpmpp_2m, linear, x_T, K)
    assert len(theirs) == len(ours) == K
    for a, b in zip(theirs, ours):
        assert (a - b).abs().max().item() <= 1e-5 * max(1.0, a.abs().max().item())


# --- inversion -----------------------------------------------------------------------------------------

def test_ddim_inversion_round_trip(linear, gauss):
    """Data -> x_T -> data on the Gaussian oracle, 2000 points, float64.

    Plain inversion evaluates eps_hat at the known x_s (not at the unknown x_t), an O(h^2) error per
    step, O(1/K) in all: measured max round-trip error 0.078 at K = 100 and 0.040 at K = 200; asserted
    <= 0.1 and a ratio in (1.7, 2.3). With 3 fixed-point refinements per step the inversion solves the
    implicit step: measured 1.1e-5 at K = 100, asserted <= 1e-4."""
    den = gauss.denoiser(linear)
    x0 = gauss.sample(2000, generator=torch.Generator().manual_seed(5))
    errs = []
    for K in (100, 200):
        grid = timestep_grid(linear, K, "trailing")
        x_T = ddim_invert(den, x0, linear, grid)
        assert torch.equal(x_T, ddim_invert(den, x0, linear, grid))  # deterministic
        errs.append((ddim(den, x_T, linear, grid) - x0).abs().max().item())
    assert errs[0] <= 0.1 and 1.7 < errs[0] / errs[1] < 2.3, errs
    grid = timestep_grid(linear, 100, "trailing")
    back = ddim(den, ddim_invert(den, x0, linear, grid, fixed_point_iters=3), linear, grid)
    assert (back - x0).abs().max().item() <= 1e-4


# --- stochastic DDIM, bad input, edge grids ----------------------------------------------------------

def test_ddim_eta_one_is_ddpm_with_posterior_variance(linear, gauss):
    """sqrt(abar_s) x0 + sqrt(1 - abar_s - beta_tilde) eps_hat = c_0 x0 + c_t x_t (algebra), and the noise
    is drawn in the same order, so with one seed the two samplers agree to float64 rounding (1e-10)."""
    den = gauss.denoiser(linear)
    x_T = torch.randn(100, 1, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    grid = timestep_grid(linear, 20, "trailing")
    a = ddim(den, x_T, linear, grid, eta=1.0, generator=torch.Generator().manual_seed(2))
    b = ddpm(den, x_T, linear, grid, variance="beta_tilde", generator=torch.Generator().manual_seed(2))
    assert (a - b).abs().max().item() <= 1e-10


def test_bad_input_is_rejected(linear):
    den = lambda x, t: x  # noqa: E731
    x = torch.zeros(2, 1)
    for eta in (-0.1, math.nan, math.inf, "1"):
        with pytest.raises(InputError):
            ddim(den, x, linear, timestep_grid(linear, 10), eta=eta)
    for fn in (ddim, dpmpp_2m, ddim_invert):
        with pytest.raises(InputError):
            fn(den, x, linear, [10, 10, 0])
    with pytest.raises(InputError):
        ddim_invert(den, x, linear, timestep_grid(linear, 10), fixed_point_iters=-1)


@pytest.mark.parametrize("beta_schedule", ["linear", "squaredcos_cap_v2"])
@pytest.mark.parametrize("K", [1, T])
def test_no_nan_at_one_step_and_at_every_step(gauss, beta_schedule, K):
    """The x0 oracle (no eps -> x0 division at abar_T ~ 0) through every sampler and the inversion; the
    cosine schedule has abar_T ~ 1e-9 and its first beta near 4e-5. K = 1 returns x0_hat(x_T, T)."""
    s = make_schedule(beta_schedule, T)
    den = gauss.denoiser(s)
    x_T = torch.randn(256, 1, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    grid = timestep_grid(s, K, "trailing")
    outs = [ddim(den, x_T, s, grid), dpmpp_2m(den, x_T, s, grid),
            ddim(den, x_T, s, grid, eta=0.5, generator=torch.Generator().manual_seed(4)),
            ddim_invert(den, gauss.sample(256, generator=torch.Generator().manual_seed(6)), s, grid)]
    for out in outs:
        assert torch.isfinite(out).all()
    if K == 1:
        expected = den(x_T, torch.tensor(float(T), dtype=torch.float64))
        for out in outs[:3]:
            assert torch.equal(out, expected)
    else:  # the full grid ends near the data law; loose (MC SE 0.02 on 256 points; bias < 0.01)
        for out in outs[:2]:
            assert abs(out.std().item() - SD) < 0.1 and abs(out.mean().item() - MU) < 0.1
