"""Sampling with known values (gaussdiff.samplers.known) against the exact conditional of the mixture oracle.

The model is the exact denoiser of a known mixture (``GaussianMixture.denoiser``), so the only error left is the
known-value method's own, measured against ``GaussianMixture.condition(mask, x_known)`` (checked on its own in
test_mixture_conditional.py). Two problems, coordinate 0 known, coordinate 1 drawn:
- a correlated Gaussian (rho = 0.95): the exact conditional is N(rho x, 1 - rho^2), and every method is linear in x
  there, so its error is a bias of the mean and a wrong variance;
- the ring of 8 Gaussians (radius 2, std 0.1): given x = 2 the exact y is one narrow mode N(0, 0.1^2) (the
  neighbours at x = 1.41 are 5.9 sd away: weight e^-17), given x = 0 two equal modes y = +-2.
Settings are the benchmark's (benchmarks/known_values.py) at fewer rows and samples; linear schedule, T = 1000.
"""

import math
import statistics

import pytest
import torch

from gaussdiff.metrics import sliced_w2
from gaussdiff.mixture import GaussianMixture
from gaussdiff.samplers.known import METHODS, sample_known
from gaussdiff.schedule import make_schedule

RHO = 0.95
MASK = torch.tensor([True, False])  # x known, y drawn


@pytest.fixture(scope="module")
def schedule():
    return make_schedule("linear", 1000, 1e-4, 0.02)


@pytest.fixture(scope="module")
def gaussian():
    cov = torch.tensor([[[1.0, RHO], [RHO, 1.0]]], dtype=torch.float64)
    return GaussianMixture(torch.ones(1, dtype=torch.float64), torch.zeros(1, 2, dtype=torch.float64), cov)


@pytest.fixture(scope="module")
def ring():
    angle = 2 * math.pi * torch.arange(8, dtype=torch.float64) / 8
    means = 2 * torch.stack([angle.cos(), angle.sin()], 1)
    return GaussianMixture(torch.full((8,), 1 / 8, dtype=torch.float64), means, 0.01 * torch.eye(2).repeat(8, 1, 1))


def fill(gm, schedule, x, n, method, sampler="ddpm", steps=100, jump_length=10, jump_n_sample=10, seed=0):
    """n samples for each known x (R,) by ``method``, as (R, n) values of y, the known x checked bit-exact."""
    x_known = torch.stack([x, torch.zeros_like(x)], 1).repeat_interleave(n, 0)
    out = sample_known(gm.denoiser(schedule), x_known, MASK, schedule, method=method, sampler=sampler, steps=steps,
                       jump_length=jump_length, jump_n_sample=jump_n_sample,
                       generator=torch.Generator().manual_seed(seed))
    assert torch.equal(out[:, 0], x_known[:, 0])
    return out[:, 1].reshape(len(x), n)


def test_every_method_returns_the_known_values_and_finite_fills(gaussian, schedule):
    x = torch.tensor([-1.0, 0.5, 2.0], dtype=torch.float64)
    for method in METHODS:
        for sampler in (("ddpm",) if method == "repaint" else ("ddpm", "dpmpp_2m")):
            y = fill(gaussian, schedule, x, 20, method, sampler, steps=20, jump_length=5, jump_n_sample=2)
            assert torch.isfinite(y).all(), (method, sampler)


@pytest.mark.slow
def test_repaint_converges_to_the_gaussian_conditional_and_replacement_does_not(gaussian, schedule):
    """One known value x = 2 (2 sd out, where a method's bias of the conditional mean, linear in x, is largest),
    2,000 samples. Exact: y | x ~ N(1.9, 0.0975) (from ``condition``). Monte Carlo SE of a mean 0.007, of a variance
    3 % (sqrt(2 / n)). Measured (seeded): RePaint's mean error 0.31 at NFE 251 (26 steps, j = 5, r = 10), 0.09 at
    NFE 910 (100 steps, j = 10, r = 10), 0.03 at its default 2,410 (250 steps), variance within 5 %; replacement
    (x_t replaced after each of 100 ddpm steps; 0.44 on all 1,000) 0.47 with 1.8x the variance. Asserted with
    >= 3 SE to spare: RePaint's error falls with its budget and ends below 0.07 (variance within 15 %),
    replacement's stays above 0.3."""
    x = torch.tensor([2.0], dtype=torch.float64)
    exact = gaussian.condition(MASK, torch.tensor([2.0, 0.0], dtype=torch.float64))
    mean, var = exact.means.item(), exact.covs.item()
    n = 2000
    errors = []
    for steps, j, r in ((26, 5, 10), (100, 10, 10), (250, 10, 10)):
        y = fill(gaussian, schedule, x, n, "repaint", steps=steps, jump_length=j, jump_n_sample=r)
        errors.append(abs(y.mean().item() - mean))
    assert errors[0] > errors[1] + 0.1 and errors[1] > errors[2] + 0.03, errors
    assert errors[2] < 0.07 and abs(y.var().item() / var - 1) < 0.15, (errors, y.var().item())
    y = fill(gaussian, schedule, x, n, "replace_xt")
    assert abs(y.mean().item() - mean) > 0.3 and y.var().item() > 1.4 * var


@pytest.mark.slow
def test_sw2_to_the_exact_conditional_over_rows_against_its_floor(gaussian, schedule):
    """The issue's protocol at test size: 3 known values drawn from the Gaussian, 500 samples each, SW2 (in 1-D the
    plain W2) to a fresh exact conditional set per row, averaged over rows (never pooled); floor: the same between
    two fresh exact sets, mean over 10 draws. Measured (seeded): RePaint at its default budget 1.04x the floor,
    replace_xt 6.3x, replace_x0 7.1x (ddpm, 100 steps). The floor's draw-to-draw sd is 13 % of its mean and a
    method's own row average scatters as much, so 1.5x (the issue's target) leaves > 2.5 sd for RePaint, and
    replacement is asserted > 3x (> 10 sd above the floor)."""
    n = 500
    rows = gaussian.sample(3, generator=torch.Generator().manual_seed(1))
    conditionals = [gaussian.condition(MASK, row) for row in rows]
    g = torch.Generator().manual_seed(2)
    truth = [c.sample(n, generator=g) for c in conditionals]
    floor = statistics.mean(statistics.mean(sliced_w2(c.sample(n, generator=g), c.sample(n, generator=g))
                                            for c in conditionals) for _ in range(10))

    def ratio(method, **options):
        y = fill(gaussian, schedule, rows[:, 0], n, method, **options)
        return statistics.mean(sliced_w2(yr[:, None], t) for yr, t in zip(y, truth)) / floor

    assert ratio("repaint", steps=250) < 1.5
    assert ratio("replace_xt") > 3 and ratio("replace_x0") > 3


@pytest.mark.slow
def test_on_the_ring_replacement_picks_modes_the_known_value_rules_out(ring, schedule):
    """x = 2: the exact y is N(0, 0.1^2), P(|y| > 0.7) = 3e-12. Replacement (ddpm, 100 steps) puts about half the
    samples on the neighbouring modes y = +-1.41 (measured 0.52 for x0, 0.55 for x_t replacement), RePaint at
    100 steps, j = 10, r = 10 (NFE 910) about 0.30; 500 samples: binomial SE <= 0.022, so > 0.35 and a gap of
    0.1 between RePaint and x_t replacement (SE of the gap <= 0.032) hold with >= 4 SE to spare. x = 0: two modes
    y = +-2 of weight 1/2, the neighbours 14 sd away in x: every method's share of y > 0 within 5 SE (0.11) of 1/2,
    and at most 2 % of the samples farther than 0.6 (6 sd) from both modes (measured: at most 0.2 %, replacement's
    strays between modes)."""
    n = 500
    x = torch.tensor([2.0, 0.0], dtype=torch.float64)
    exact = ring.condition(MASK, torch.tensor([2.0, 0.0], dtype=torch.float64))
    assert exact.weights.max().item() > 1 - 1e-6 and abs(exact.means[exact.weights.argmax()].item()) < 1e-12
    wrong = {}
    for method, steps in (("replace_x0", 100), ("replace_xt", 100), ("repaint", 100)):
        y = fill(ring, schedule, x, n, method, steps=steps)
        wrong[method] = (y[0].abs() > 0.7).double().mean().item()
        assert abs((y[1] > 0).double().mean().item() - 0.5) < 5 * math.sqrt(0.25 / n), method
        assert ((y[1].abs() - 2).abs() > 0.6).double().mean().item() < 0.02, method
    assert wrong["replace_x0"] > 0.35 and wrong["replace_xt"] > 0.35, wrong
    assert wrong["repaint"] < wrong["replace_xt"] - 0.1, wrong
