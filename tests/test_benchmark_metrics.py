"""Tests of the issue-4 benchmark's pieces (benchmarks/oracle_problems.py, benchmarks/sampler_methods.py).

The metrics are checked on sample sets whose answer is known: true samples (the std error is then the Monte Carlo
error of a sample std, relative sd 1 / sqrt(2 (n_k - 1)) per mode and axis, so |error| has mean
sqrt(2 / pi) / sqrt(2 (n_k - 1))), the same samples with every mode shrunk by 10 % (error 0.10), and sets built
with known mode counts (TV by hand). The fast diagonal oracle is checked against the package's
GaussianMixture, and the diffusers driver against a hand-written Euler step and the eps conversion.
"""

import math
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from oracle_problems import PROBLEMS, floors, mode_weight_tv, sample_metrics, within_mode_std_error  # noqa: E402
from sampler_methods import DIFFUSERS, Diffusers, oracle_model, steps_for_nfe  # noqa: E402

from gaussdiff.schedule import make_schedule  # noqa: E402

N = 20_000


@pytest.fixture(scope="module", params=list(PROBLEMS))
def problem(request):
    return PROBLEMS[request.param]()


@pytest.fixture(scope="module")
def schedule():
    return make_schedule("squaredcos_cap_v2", 1000)


def true_samples(problem, seed=0):
    return problem.mixture.sample(N, generator=torch.Generator().manual_seed(seed), return_labels=True)


def mc_sd(problem):
    """Relative sd of a sample std per (mode, axis): 1 / sqrt(2 (n_k - 1)), n_k = N w_k, shape (K, D)."""
    n_k = N * problem.weights
    return (1 / torch.sqrt(2 * (n_k - 1)))[:, None].expand_as(problem.stds)


@pytest.mark.parametrize("alpha_bar", [1.0 - 1e-6, 0.5, 1e-3, 2.4e-9])
def test_fast_oracle_is_the_mixture_posterior_mean(problem, alpha_bar):
    """Same formula, different algebra (products of (N, D) and (D, K) instead of per-sample Cholesky): agree to
    float64 rounding, 1e-10 on values of order 1 (measured <= 1e-14)."""
    x = torch.randn(500, problem.dim, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    ref = problem.mixture.posterior_x0_mean(x, torch.tensor(alpha_bar, dtype=torch.float64))
    assert (problem.posterior_x0_mean(x, alpha_bar) - ref).abs().max().item() <= 1e-10


def test_assignment_is_argmax_of_the_mixture_responsibilities(problem):
    x, labels = true_samples(problem)
    assigned = problem.assign(x)
    assert torch.equal(assigned, problem.mixture.responsibilities(x).argmax(1))
    # The modes are well apart (half the distance between any two means is >= 7 stds along that line):
    # assignment recovers the labels.
    assert (assigned != labels).sum().item() <= 2


def test_true_samples_give_the_monte_carlo_error(problem):
    """|error| per (mode, axis) is half-normal with scale sd = mc_sd: mean sqrt(2/pi) sd, spread sqrt(1 - 2/pi) sd;
    the mean over M = K D cells is within 4 of its standard errors (and the signed mean within 4 sd / sqrt(M))."""
    x, _ = true_samples(problem)
    err, bias = within_mode_std_error(problem, x, problem.assign(x))
    sd = mc_sd(problem)
    M = sd.numel()
    expected = math.sqrt(2 / math.pi) * sd.mean().item()
    assert abs(err - expected) <= 4 * math.sqrt(1 - 2 / math.pi) * sd.pow(2).mean().sqrt().item() / math.sqrt(M)
    assert abs(bias) <= 4 * sd.pow(2).mean().sqrt().item() / math.sqrt(M)


def test_modes_shrunk_by_ten_percent_give_error_ten_percent(problem):
    """x -> m_k + 0.9 (x - m_k): each std is 0.9 (1 + e), e the MC error above, so the relative error is
    -0.1 + 0.9 e (never folded: |e| << 0.1); its mean over cells is -0.1 within 4 x 0.9 sd / sqrt(M)."""
    x, labels = true_samples(problem)
    shrunk = problem.means[labels] + 0.9 * (x - problem.means[labels])
    err, bias = within_mode_std_error(problem, shrunk, problem.assign(shrunk))
    tol = 4 * 0.9 * mc_sd(problem).pow(2).mean().sqrt().item() / math.sqrt(problem.stds.numel())
    assert abs(err - 0.10) <= tol and abs(bias + 0.10) <= tol


def test_mode_weight_tv_of_known_counts():
    """ring8 (weights 1/8): counts 250, 125 x 6, 0 of 1000 points placed on the means -> frequencies 0.25, 0.125,
    0: TV = (|0.25 - 0.125| + |0 - 0.125|) / 2 = 0.125. A mode left empty has std error 1 (std 0)."""
    problem = PROBLEMS["ring8"]()
    counts = torch.tensor([250, 125, 125, 125, 125, 125, 125, 0])
    x = problem.means.repeat_interleave(counts, dim=0)
    labels = problem.assign(x)
    assert mode_weight_tv(problem, labels) == pytest.approx(0.125, abs=1e-12)
    assert sample_metrics(problem, x)["tv"] == pytest.approx(0.125, abs=1e-12)
    # spread the points; the empty mode 7 counts as std 0, relative error 1 on each of its 2 axes
    x = x + 0.1 * torch.randn(x.shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    by_hand = [(x[labels == k].std(0) / 0.1 - 1).abs().sum().item() for k in range(7)] + [2.0]
    assert within_mode_std_error(problem, x, labels)[0] == pytest.approx(sum(by_hand) / 16, abs=1e-12)


def test_tv_floor_is_the_multinomial_error():
    """E TV of multinomial frequencies ~ 1/2 sum_k sqrt(2 w_k (1 - w_k) / (pi n)) (normal approximation); the
    floor's mean over 10 draws (sd ~ 0.003 / sqrt(10) for mix16) is within 25 % of it."""
    problem = PROBLEMS["mix16"]()
    w = problem.weights
    expected = 0.5 * torch.sqrt(2 * w * (1 - w) / (math.pi * N)).sum().item()
    fl = floors(problem, N, draws=10)
    assert fl["tv"]["mean"] == pytest.approx(expected, rel=0.25)
    assert fl["std_err"]["mean"] == pytest.approx(math.sqrt(2 / math.pi) * mc_sd(problem).mean().item(), rel=0.25)


# --- the diffusers driver ------------------------------------------------------------------------------

def test_diffusers_euler_through_the_oracle_is_the_euler_step_in_sigma(problem):
    """Two trailing steps on the linear schedule (timesteps 999, 499 = our t 1000, 500), by hand in EDM variables
    with diffusers' own float32 sigmas: y_0 = x_T sqrt(1 + s_0^2),
    y_1 = y_0 + (s_1 - s_0) (y_0 - D(y_0 / sqrt(1 + s_0^2), 1000)) / s_0, and the last step, to sigma 0, returns
    D(y_1 / sqrt(1 + s_1^2), 500). diffusers steps in float32 with y_0 up to ~600 (s_0 = 157): measured 4e-5;
    asserted 3e-4, while calling the oracle one timestep off (t = i instead of i + 1) is 4e-3 or more."""
    schedule = make_schedule("linear", 1000)
    method = next(m for m in DIFFUSERS if m.label == "Euler")
    den = problem.denoiser(schedule)
    x_T = torch.randn(256, problem.dim, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    sch = method.scheduler(schedule)
    sch.set_timesteps(2)
    s0, s1 = sch.sigmas[0].double(), sch.sigmas[1].double()
    y0 = x_T * torch.sqrt(1 + s0**2)
    y1 = y0 + (s1 - s0) * (y0 - den(y0 / torch.sqrt(1 + s0**2), 1000.0)) / s0
    expected = den(y1 / torch.sqrt(1 + s1**2), 500.0)
    assert (method.run(den, x_T, schedule, 2) - expected).abs().max().item() <= 3e-4


def test_eps_answering_model_is_equivalent_to_sample_answering(problem):
    """DDIM driven by eps = (x - sqrt(abar) x0) / sqrt(1 - abar) (what PNDM gets) and by x0 directly, linear
    schedule: diffusers turns eps back into x0 with its float32 alpha_bar (1e-7 relative), which the division by
    sqrt(abar_T) = 0.006 amplifies ~160x on |x| <= 4: <= 1e-4 (measured 1.6e-5 at 1 step, 3e-6 at 10); a wrong
    conversion is off by O(1). Then the conversion itself, at one point, to float64 rounding."""
    schedule = make_schedule("linear", 1000)
    den = problem.denoiser(schedule)
    x_T = torch.randn(256, problem.dim, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    ddim = next(m for m in DIFFUSERS if m.label == "DDIM")
    eps_ddim = Diffusers("DDIM eps", "DDIMScheduler", {**ddim.options, "prediction_type": "epsilon"})
    for steps in (1, 10):
        assert (ddim.run(den, x_T, schedule, steps) - eps_ddim.run(den, x_T, schedule, steps)).abs().max() <= 1e-4
    model = oracle_model(den, schedule, "epsilon")
    x = x_T[:4]
    t = torch.tensor(499)  # our t = 500
    ab = schedule.alpha_bar_at(500.0)
    assert torch.allclose(model(x, t), (x - ab.sqrt() * den(x, 500.0)) / (1 - ab).sqrt(), atol=1e-12)


@pytest.mark.parametrize("label,nfe,steps", [("Heun", 10, 5), ("Heun", 1000, 500), ("PNDM (PLMS)", 10, 9),
                                             ("DDIM", 20, 20)])
def test_steps_for_nfe_counts_real_calls(schedule, label, nfe, steps):
    """Heun makes 2K - 1 calls for K steps, PNDM (PLMS) K + 1 (its first step is two), DDIM K."""
    method = next(m for m in DIFFUSERS if m.label == label)
    assert steps_for_nfe(method, schedule, nfe) == steps
