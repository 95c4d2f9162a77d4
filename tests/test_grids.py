"""Tests of the step grids (samplers.timestep_grid) at every K, of every sampler at the extreme step
counts, and of the bad input they reject.

References: the definitions of the spacings (exact squares for `quadratic`, every t at K = T), diffusers'
Karras sigmas (EulerDiscreteScheduler(use_karras_sigmas=True)) and log-SNR-uniform sigmas
(DPMSolverMultistepScheduler(use_lu_lambdas=True)), and the count of denoiser calls.
"""

import math

import numpy as np
import pytest
import torch

from gaussdiff.cli import main
from gaussdiff.data import Standardize
from gaussdiff.errors import InputError
from gaussdiff.mixture import GaussianMixture
from gaussdiff.nets import MLP
from gaussdiff.samplers import SAMPLERS, SPACINGS, check_grid, ddim, generate, get_sampler, timestep_grid
from gaussdiff.samplers.grids import INTEGER_SPACINGS, NOISE_LEVEL_SPACINGS
from gaussdiff.saved import SavedModel
from gaussdiff.schedule import make_schedule

T = 1000
SCHEDULES = ["linear", "squaredcos_cap_v2"]


@pytest.fixture(scope="module", params=SCHEDULES)
def schedule(request):
    return make_schedule(request.param, T)


@pytest.fixture(scope="module")
def linear():
    return make_schedule("linear", T)


# --- every spacing at every K ----------------------------------------------------------------------------

@pytest.mark.parametrize("spacing", SPACINGS)
def test_every_grid_from_1_to_T_steps_is_strictly_decreasing_and_ends_at_0(schedule, spacing):
    """K + 1 finite float64 times, strictly decreasing (no two steps collide), in [0, T], ending at 0; integer
    spacings on integers; noise-level spacings from sigma_max = min(sigma(T), 80) (float64 round trip sigma -> t:
    1e-9) to t = 1 (sigma_min's default)."""
    start = schedule.t_of_sigma(schedule.sigma_at(T).clamp(max=80.0)).item()
    for K in range(1, T + 1):
        grid = timestep_grid(schedule, K, spacing)
        assert grid.dtype == torch.float64 and grid.shape == (K + 1,), (K, grid.shape)
        assert torch.isfinite(grid).all() and grid[-1] == 0 and grid[0] <= T, K
        assert (grid[1:] < grid[:-1]).all(), f"K = {K}: steps collide"
        if spacing in INTEGER_SPACINGS:
            assert torch.equal(grid, grid.round()), K
        else:
            assert abs(grid[0].item() - start) < 1e-9, K
            if K > 1:
                assert abs(grid[-2].item() - 1) < 1e-9, K


@pytest.mark.parametrize("T_small", [1, 2, 3, 10, 37, 100])
def test_integer_grids_at_every_K_for_small_T(T_small):
    s = make_schedule("linear", T_small)
    for spacing in INTEGER_SPACINGS:
        for K in range(1, T_small + 1):
            grid = timestep_grid(s, K, spacing)
            assert grid.shape == (K + 1,) and (grid[1:] < grid[:-1]).all() and grid[0] <= T_small


@pytest.mark.parametrize("spacing", INTEGER_SPACINGS)
def test_integer_grids_at_K_equal_T_visit_every_t(linear, spacing):
    np.testing.assert_array_equal(timestep_grid(linear, T, spacing).numpy(), np.arange(T, -1, -1))


def test_quadratic_grid_is_the_exact_squares_where_they_are_integers(linear):
    """T (i / K)^2 with T = 1000, K = 10 is 10 i^2: no rounding, no floor at i."""
    expected = [10 * i**2 for i in range(10, 0, -1)] + [0]
    np.testing.assert_array_equal(timestep_grid(linear, 10, "quadratic").numpy(), expected)


def test_trailing_keeps_K_steps_where_diffusers_float_arange_overshoots(linear):
    """diffusers' trailing grid is arange(T, 0, -T/K).round() - 1; for T = 1000, K = 61 the float arange has
    62 entries (the last ~1e-13, i.e. timestep -1: a repeated sigma in its Euler scheduler). Ours has K."""
    assert len(np.arange(T, 0, -T / 61)) == 62  # the overshoot, independently of our code
    grid = timestep_grid(linear, 61, "trailing")
    assert grid.shape == (62,) and grid[-2] == round(T / 61)


# --- noise-level grids against diffusers ----------------------------------------------------------------

@pytest.mark.parametrize("K", [2, 3, 10, 50, 999, 1000])
def test_karras_and_log_snr_sigmas_match_diffusers(schedule, K):
    """diffusers builds the same sigmas (Karras rho = 7 and log-sigma-uniform, both between sigma(T) and the
    sigma at our t = 1) and stores them in float32: relative difference <= 2^-23 (one float32 rounding is
    2^-24 = 6e-8; measured <= 5.9e-8). We hand it our float64 alpha_bar table so only that rounding remains.
    Its Karras timesteps interpolate log sigma linearly between integer t where ours interpolate log abar;
    both are monotone between the same integer knots, so they lie within one step (measured <= 0.098).
    K = 1 is left out: diffusers' linspace of one point is timestep 0, so its one-step Karras grid is sigma(1)."""
    import diffusers

    name = schedule.config["beta_schedule"]
    for cls, kw, spacing in [(diffusers.EulerDiscreteScheduler, dict(use_karras_sigmas=True), "karras"),
                             (diffusers.DPMSolverMultistepScheduler, dict(use_lu_lambdas=True), "log_snr")]:
        ref = cls(num_train_timesteps=T, beta_schedule=name, timestep_spacing="linspace", **kw)
        ref.alphas_cumprod = schedule.alpha_bar[1:].clone()
        ref.set_timesteps(K)
        grid = timestep_grid(schedule, K, spacing, sigma_max=schedule.sigma_at(T).item())  # diffusers': sigma(T)
        ours = schedule.sigma_at(grid[:-1])
        theirs = ref.sigmas[:-1].double()
        assert ref.sigmas[-1] == 0 and theirs.shape == ours.shape
        assert ((theirs - ours).abs() / ours).max().item() <= 2.0**-23, spacing
        if spacing == "karras":
            assert (ref.timesteps.double() + 1 - grid[:-1]).abs().max().item() < 1


def test_rho_bends_the_karras_grid(linear):
    """rho -> the sigma ramp: rho = 1 is linear in sigma (so its midpoint is the mean of the ends); larger rho
    puts more steps at low noise (a later midpoint in t)."""
    sig = linear.sigma_at(timestep_grid(linear, 3, "karras", rho=1.0)[:-1])
    assert abs(sig[1].item() - (sig[0].item() + sig[2].item()) / 2) < 1e-9 * sig[0].item()
    mids = [timestep_grid(linear, 3, "karras", rho=r)[1].item() for r in (1.0, 3.0, 7.0, 20.0)]
    assert all(a > b for a, b in zip(mids, mids[1:])), mids


def test_sigma_min_sets_the_last_noise_level(linear):
    for spacing in NOISE_LEVEL_SPACINGS:
        grid = timestep_grid(linear, 20, spacing, sigma_min=0.1)
        assert abs(linear.sigma_at(grid[-2]).item() - 0.1) < 1e-12


# --- every sampler at the extreme step counts ---------------------------------------------------------------

@pytest.fixture(scope="module")
def gauss():
    return GaussianMixture([0.5, 0.5], [[-1.0, 0.5], [1.0, -0.5]], 0.09 * torch.eye(2).expand(2, 2, 2))


def counting(den):
    calls = []

    def wrapped(x, t):
        calls.append(float(t))
        return den(x, t)

    return wrapped, calls


NATURAL_SPACING = {"ddpm": "trailing", "ddim": "trailing", "dpmpp_2m": "trailing", "dpmpp_3m": "karras",
                   "euler": "karras", "heun": "karras"}


@pytest.mark.parametrize("name", sorted(NATURAL_SPACING))
def test_every_sampler_is_finite_at_1_2_3_999_and_1000_steps(gauss, schedule, name):
    """The exact oracle on 4 points through every sampler: finite output and the expected number of calls
    (K; Heun 2K - 1, its last step to 0 being Euler), at K = 1, 2, 3 on every spacing and at K = 999 and
    1000 on the sampler's natural one (the cosine schedule has abar_T ~ 2e-9, sigma(T) ~ 2e4)."""
    fn = get_sampler(name).fn
    x_T = torch.randn(4, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    cases = [(K, spacing) for K in (1, 2, 3) for spacing in SPACINGS] + [(K, NATURAL_SPACING[name]) for K in (999, T)]
    for K, spacing in cases:
        den, calls = counting(gauss.denoiser(schedule))
        out = fn(den, x_T, schedule, timestep_grid(schedule, K, spacing), generator=torch.Generator().manual_seed(1))
        assert out.shape == x_T.shape and torch.isfinite(out).all(), (K, spacing)
        assert len(calls) == (2 * K - 1 if name == "heun" else K), (K, spacing, len(calls))


# --- bad input -------------------------------------------------------------------------------------------------

def test_unknown_spacing_and_sampler_list_the_known_ones(linear):
    with pytest.raises(InputError, match="unknown timestep spacing 'uniform'; known: linspace, .*karras"):
        timestep_grid(linear, 10, "uniform")
    with pytest.raises(InputError, match="unknown sampler 'dpm\\+\\+'; known: ddpm, .*heun"):
        get_sampler("dpm++")


@pytest.mark.parametrize("spacing", SPACINGS)
def test_bad_step_counts_are_rejected(linear, spacing):
    bad = [0, -1, 2.0, True, None, "10", T + 1]  # issue 4: steps < 1 or > T is bad input, fractional grids too
    for steps in bad:
        with pytest.raises(InputError, match="steps must be an integer"):
            timestep_grid(linear, steps, spacing)


def test_bad_grid_options_are_rejected(linear):
    sigma_T = linear.sigma_at(T).item()
    for rho in (0.0, -1.0, math.nan, math.inf, "7", True):
        with pytest.raises(InputError, match="rho must be"):
            timestep_grid(linear, 10, "karras", rho=rho)
    for spacing in NOISE_LEVEL_SPACINGS:
        for sigma_min in (0.0, -0.1, 80.0, 2 * sigma_T, math.nan, "0.1", True):  # 80: the default sigma_max
            with pytest.raises(InputError, match="sigma_min must be"):
                timestep_grid(linear, 10, spacing, sigma_min=sigma_min)
        for sigma_max in (0.0, -0.1, 1.01 * sigma_T, math.nan, "80", True):
            with pytest.raises(InputError, match="sigma_max must be"):
                timestep_grid(linear, 10, spacing, sigma_max=sigma_max)
    with pytest.raises(InputError, match="rho applies to the karras spacing only"):
        timestep_grid(linear, 10, "log_snr", rho=7.0)
    for option in ("sigma_min", "sigma_max"):
        with pytest.raises(InputError, match="sigma_min and sigma_max apply to the log_snr and karras spacings only"):
            timestep_grid(linear, 10, "trailing", **{option: 1.0})
    with pytest.raises(InputError, match="rho applies"):  # through generate, as the command line calls it
        generate(lambda x, t: x, (2, 1), linear, steps=10, grid_options={"rho": 7.0})


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_every_sampler_rejects_a_grid_that_is_not_strictly_decreasing(linear, name):
    for grid in ([10, 10, 0], [5, 7, 0], [10.5, 10.25, 10.25, 0]):
        with pytest.raises(InputError, match="strictly decreasing"):
            get_sampler(name).fn(lambda x, t: x, torch.zeros(2, 1), linear, grid)


def test_ddim_rejects_negative_eta(linear):
    with pytest.raises(InputError, match="eta must be a finite number >= 0, got -0.5"):
        ddim(lambda x, t: x, torch.zeros(2, 1), linear, timestep_grid(linear, 10), eta=-0.5)


def test_check_grid_accepts_a_karras_grid_as_given(linear):
    grid = timestep_grid(linear, 7, "karras")
    assert torch.equal(check_grid(grid.tolist(), T), grid)


def test_sigma_max_starts_the_noise_level_grids_and_reaches_the_command_line(linear, tmp_path):
    """The first step of a noise-level grid sits at sigma_max; `gaussdiff sample --sigma-max` passes it on
    (a run from a given x_T then differs from the default's)."""
    for spacing in NOISE_LEVEL_SPACINGS:
        grid = timestep_grid(linear, 10, spacing, sigma_max=5.0)
        assert abs(linear.sigma_at(grid[0]).item() - 5.0) < 1e-9
    torch.manual_seed(0)
    folder = SavedModel(MLP(2, T, 16, 1, 16), linear, "v_prediction", Standardize.identity(2), "moons").save(
        tmp_path / "m")
    outs = []
    for flags in (["--spacing", "log_snr"], ["--spacing", "log_snr", "--sigma-max", "5"]):
        assert main(["sample", str(folder), "-n", "20", "--out", str(tmp_path / f"{len(outs)}.npy"), *flags]) == 0
        outs.append(np.load(tmp_path / f"{len(outs)}.npy"))
    assert not np.array_equal(*outs)
