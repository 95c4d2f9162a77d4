"""Parity of DPM-Solver++(3M), Euler and Heun with diffusers' schedulers: the same model, x_T and grid give
the same trajectory.

The 'model' is a deterministic function of the noise level, eps(x, sigma) = 0.3 x + 0.01 log sigma, so that
both sides see the same network whatever timestep they pass with it: on Karras grids diffusers' timesteps
interpolate log sigma between integer t where ours interpolate log abar (both exact at integers;
test_grids.py compares the two). diffusers gets our float64 alpha_bar table, so its sigmas are ours up to
its float32 storage (2^-24 relative; test_grids.py).

What matches at which precision, and why:
- Heun (HeunDiscreteScheduler, trailing and Karras): its step does its arithmetic in the sample's dtype, so
  with our float64 sigmas handed to it (after checking its own float32 ones against them) the trajectories
  agree in float64: max |difference| <= 1e-5 asserted, measured <= 1e-9 (states up to ~8000 in y units).
- Euler (EulerDiscreteScheduler): its step casts the sample to float32 whatever its dtype, so the agreement is
  at float32 level: <= 1e-5 x max(1, max |y|), measured <= 1.8e-6 relative (K = 1000: 1000 roundings). In
  float64 Euler is checked against DDIM instead: the two updates are the same map (docs/samplers.md), and
  DDIM matches diffusers in float64 (test_ddim_dpm.py).
- DPM-Solver++(3M) (DPMSolverMultistepScheduler, solver_order=3): its step also casts to float32, so float32
  level as above. Its warm-up steps (orders 1, 2) and its final first-order step are ours exactly (K <= 3 uses
  nothing else). Its third-order step weights D2 by 1/2 - phi2/h, half the weight 1 - 2 phi2/h that
  integrates a quadratic exactly; with that half added back (ExactD2 below) it is ours at every K, and the
  unpatched scheduler converges at second order only (last test).
"""

import math

import diffusers  # a dev dependency; schedulers are built from config, nothing is downloaded
import numpy as np
import pytest
import torch

from gaussdiff.mixture import GaussianMixture
from gaussdiff.param import as_denoiser
from gaussdiff.samplers import ddim, dpmpp_3m, euler, heun, timestep_grid
from gaussdiff.schedule import make_schedule

T = 1000
CFG = dict(num_train_timesteps=T, beta_schedule="linear", beta_start=1e-4, beta_end=0.02, prediction_type="epsilon")


@pytest.fixture(scope="module")
def linear():
    return make_schedule("linear", T)


def fake_eps(x, sigma):
    return 0.3 * x + 0.01 * torch.log(torch.as_tensor(sigma, dtype=x.dtype))


def ours(fn, schedule, grid, x_T, scale_to_y):
    """Our trajectory (states after each step); in y = x / sqrt(abar) units for the EDM samplers."""
    den = as_denoiser(lambda x, t: fake_eps(x, schedule.sigma_at(t)[:, None]), schedule, "epsilon")
    traj = []
    to_y = (lambda t: schedule.alpha_bar_at(t).sqrt()) if scale_to_y else (lambda t: 1.0)
    fn(den, x_T.clone(), schedule, grid, callback=lambda i, t, x, x0_hat: traj.append(x / to_y(t)))
    return traj


def diffusers_edm(ref, x_T):
    """Euler / Heun schedulers: y_T = x_T sqrt(1 + sigma_0^2); the model sees scale_model_input(y) = x."""
    y, traj = x_T * torch.sqrt(1 + ref.sigmas[0].double() ** 2), []
    for i, t in enumerate(ref.timesteps):
        y = ref.step(fake_eps(ref.scale_model_input(y, t), ref.sigmas[i].double()), t, y).prev_sample
        traj.append(y)
    return traj


def diffusers_dpm(ref, x_T):
    x, traj = x_T.clone(), []
    for i, t in enumerate(ref.timesteps):
        x = ref.step(fake_eps(x, ref.sigmas[i].double()), t, x).prev_sample
        traj.append(x)
    return traj


def diffusers_grid(schedule, K, karras):
    """Our grid for diffusers' use_karras_sigmas (its ramp starts at sigma(T), not at our default min(sigma(T), 80))
    or its trailing spacing."""
    if karras:
        return timestep_grid(schedule, K, "karras", sigma_max=schedule.sigma_at(schedule.T).item())
    return timestep_grid(schedule, K, "trailing")


def edm_reference(cls, schedule, K, karras):
    ref = cls(use_karras_sigmas=karras, timestep_spacing="linspace" if karras else "trailing", **CFG)
    ref.alphas_cumprod = schedule.alpha_bar[1:].clone()
    ref.set_timesteps(K)
    return ref, diffusers_grid(schedule, K, karras)


def max_relative(theirs, mine):
    assert len(theirs) == len(mine)
    return max(((a - b).abs().max() / max(1.0, b.abs().max().item())).item() for a, b in zip(theirs, mine))


X_T = torch.randn(64, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
# K = 1 with Karras sigmas is left out: diffusers' one-point linspace is timestep 0 (sigma at our t = 1).
EDM_CASES = [(K, False) for K in (1, 2, 5, 7, 20, 50, 1000)] + [(K, True) for K in (2, 5, 7, 20, 50, 1000)]


@pytest.mark.parametrize("K,karras", EDM_CASES)
def test_heun_matches_diffusers_in_float64(linear, K, karras):
    ref, grid = edm_reference(diffusers.HeunDiscreteScheduler, linear, K, karras)
    sigmas = linear.sigma_at(grid)
    theirs_f32 = torch.cat([ref.sigmas[:1], ref.sigmas[1::2]]).double()  # it repeats each inner sigma
    assert ((theirs_f32[:-1] - sigmas[:-1]).abs() / sigmas[:-1]).max().item() <= 2.0**-23
    if not karras:  # integer grids: the same timesteps
        assert np.array_equal(ref.timesteps[::2].numpy() + 1, grid[:-1].numpy())
    ref.sigmas = torch.cat([sigmas[:1], sigmas[1:-1].repeat_interleave(2), sigmas[-1:]])  # float64
    theirs = diffusers_edm(ref, X_T)
    assert len(theirs) == 2 * K - 1  # NFE
    theirs = theirs[1::2] + theirs[-1:]  # its odd calls complete a step; its last is the Euler step to 0
    mine = ours(heun, linear, grid, X_T, scale_to_y=True)
    diff = max((a - b).abs().max().item() for a, b in zip(theirs, mine))
    assert len(theirs) == len(mine) == K and diff <= 1e-5, diff


@pytest.mark.parametrize("K,karras", EDM_CASES)
def test_euler_matches_diffusers_at_float32_level(linear, K, karras):
    ref, grid = edm_reference(diffusers.EulerDiscreteScheduler, linear, K, karras)
    if not karras:
        assert np.array_equal(ref.timesteps.numpy() + 1, grid[:-1].numpy())
    rel = max_relative(diffusers_edm(ref, X_T), ours(euler, linear, grid, X_T, scale_to_y=True))
    assert rel <= 1e-5, rel


@pytest.mark.parametrize("spacing", ["trailing", "karras", "quadratic"])
@pytest.mark.parametrize("beta_schedule", ["linear", "squaredcos_cap_v2"])
def test_euler_is_ddim_in_float64(spacing, beta_schedule):
    """y_s = y + (sigma_s - sigma_t)(y - D) / sigma_t is, in x = y sqrt(abar), DDIM's sqrt(abar_s) D +
    sqrt(1 - abar_s) eps_hat: the same map. Two routes in float64 through states up to ~2e4 (the cosine
    schedule, fake model): 1e-9 absolute asserted, measured <= 2.2e-11."""
    s = make_schedule(beta_schedule, T)
    gauss = GaussianMixture([0.5, 0.5], [[-1.0], [1.0]], [[[0.09]], [[0.09]]])
    grid = timestep_grid(s, 25, spacing)
    a = ours(euler, s, grid, X_T[:, :1], scale_to_y=False)
    b = ours(ddim, s, grid, X_T[:, :1], scale_to_y=False)
    assert max((u - v).abs().max().item() for u, v in zip(a, b)) <= 1e-9
    out_e = euler(gauss.denoiser(s), X_T[:, :1], s, grid)
    out_d = ddim(gauss.denoiser(s), X_T[:, :1], s, grid)
    assert (out_e - out_d).abs().max().item() <= 1e-9


class ExactD2(diffusers.DPMSolverMultistepScheduler):
    """diffusers' 3M plus the missing half of its D2 term, alpha_t (1/2 - phi2/h) D2, with its own D2 =
    ((m0 - m1)/r0 - (m1 - m2)/r1) / (r0 + r1): the D2 weight becomes 1 - 2 phi2/h, the exact integral."""

    def multistep_dpm_solver_third_order_update(self, model_output_list, *args, sample=None, noise=None, **kw):
        x = super().multistep_dpm_solver_third_order_update(model_output_list, sample=sample, noise=noise)
        i = self.step_index
        lam = []
        for j in (i + 1, i, i - 1, i - 2):
            alpha, sigma = self._sigma_to_alpha_sigma_t(self.sigmas[j])
            lam.append(torch.log(alpha) - torch.log(sigma))
        h = lam[0] - lam[1]
        r0, r1 = (lam[1] - lam[2]) / h, (lam[2] - lam[3]) / h
        m0, m1, m2 = model_output_list[-1], model_output_list[-2], model_output_list[-3]
        D2 = ((m0 - m1) / r0 - (m1 - m2) / r1) / (r0 + r1)
        phi2 = 1 - (1 - torch.exp(-h)) / h
        alpha_t, _ = self._sigma_to_alpha_sigma_t(self.sigmas[i + 1])
        return x + alpha_t * (0.5 - phi2 / h) * D2


def dpm_reference(cls, schedule, K, karras, **kw):
    ref = cls(algorithm_type="dpmsolver++", solver_order=3, final_sigmas_type="zero", lower_order_final=False,
              use_karras_sigmas=karras, timestep_spacing="trailing", **CFG, **kw)
    ref.alphas_cumprod = schedule.alpha_bar[1:].clone()
    ref.set_timesteps(K)
    return ref


@pytest.mark.parametrize("karras", [False, True])
@pytest.mark.parametrize("K", [1, 2, 3])
def test_dpmpp_3m_warm_up_matches_diffusers(linear, K, karras):
    """K <= 3: first order, second order, then the final first-order step to 0: no third-order step.
    Measured <= 1.9e-7 relative."""
    ref = dpm_reference(diffusers.DPMSolverMultistepScheduler, linear, K, karras)
    grid = diffusers_grid(linear, K, karras)
    rel = max_relative(diffusers_dpm(ref, X_T), ours(dpmpp_3m, linear, grid, X_T, scale_to_y=False))
    assert rel <= 1e-5, rel


@pytest.mark.parametrize("karras", [False, True])
@pytest.mark.parametrize("K", [4, 5, 7, 20, 50, 1000])
def test_dpmpp_3m_matches_diffusers_with_the_exact_d2_weight(linear, K, karras):
    """With ExactD2 the whole trajectory agrees at float32 level (measured <= 2.9e-6 relative); without it,
    the first third-order step already differs (K = 5 Karras: 40% of the state)."""
    grid = diffusers_grid(linear, K, karras)
    mine = ours(dpmpp_3m, linear, grid, X_T, scale_to_y=False)
    rel = max_relative(diffusers_dpm(dpm_reference(ExactD2, linear, K, karras), X_T), mine)
    assert rel <= 1e-5, rel
    if K <= 50:  # the unpatched scheduler differs by far more than float32 rounding
        assert max_relative(diffusers_dpm(dpm_reference(diffusers.DPMSolverMultistepScheduler, linear, K, karras),
                                          X_T), mine) > 1e-4


def test_diffusers_3m_is_second_order_and_the_exact_d2_weight_third():
    """Both schedulers on the Gaussian oracle (eps exact at each sigma), log-SNR-uniform grid (use_lu_lambdas),
    relative sd error at the last sigma > 0 against the exact flow (as in test_samplers_order.py), K = 20, 40,
    80, 160. Measured: diffusers 8.8e-3, 1.5e-3, 3.3e-4, 7.6e-5 (slope -2.27, local -2.11 at the end);
    ExactD2 3.5e-3, 2.2e-4, 1.3e-5, 1.5e-6 (slope -3.75, float32 noise ~1e-7 below). Asserted: the local
    slope 80 -> 160 in (-2.4, -1.7) for diffusers, < -2.7 for ExactD2."""
    s = make_schedule("linear", T)
    sd = 0.3
    gauss = GaussianMixture([1.0], [[0.8]], [[[sd**2]]])
    flow_sd = lambda ab: math.sqrt(ab * sd**2 + 1 - ab)  # noqa: E731 (module doc of test_samplers_order.py)
    local = {}
    for cls in (diffusers.DPMSolverMultistepScheduler, ExactD2):
        errs = []
        for K in (20, 40, 80, 160):
            ref = dpm_reference(cls, s, K, False, use_lu_lambdas=True)
            x, states = torch.tensor([[0.0], [1.0]], dtype=torch.float64), []
            ab = 1 / (1 + ref.sigmas.double() ** 2)
            for i, t in enumerate(ref.timesteps):
                x = ref.step(gauss.eps(x, ab[i]), t, x).prev_sample
                states.append(x[:, 0])
            x_min = states[-2]
            errs.append((x_min[1] - x_min[0]).item() / (flow_sd(ab[-2].item()) / flow_sd(ab[0].item())) - 1)
        print(cls.__name__, errs)
        local[cls] = math.log2(abs(errs[3] / errs[2]))
    assert -2.4 < local[diffusers.DPMSolverMultistepScheduler] < -1.7
    assert local[ExactD2] < -2.7
