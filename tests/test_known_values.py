"""Tests of sampling with known values (samplers.known, samplers.repaint) and of the sampler contract's project hook
and callback (every registered sampler).

References: the authors' RePaint schedule loop re-implemented here and diffusers' RePaintScheduler; an affine
recurrence written out in numpy for x0-replacement with the exact denoiser of one Gaussian; one RePaint walk's
draws recomputed by hand from the alpha_bar table; counted denoiser calls; generate's samples for an all-unknown
mask. The accuracy of the methods against the exact conditional (GaussianMixture.condition) is tested elsewhere.
"""

import math

import numpy as np
import pytest
import torch

from gaussdiff.errors import InputError
from gaussdiff.mixture import GaussianMixture
from gaussdiff.param import CountingDenoiser
from gaussdiff.samplers import SAMPLERS, SamplerSpec, ddim, ddpm, generate, pf_ode, timestep_grid
from gaussdiff.samplers.known import (METHODS, default_steps, known_nfe, replace_x0, replace_xt,
                                      sample_known)
from gaussdiff.samplers.repaint import repaint, repaint_nfe, repaint_schedule
from gaussdiff.schedule import make_schedule

T = 50
MEAN = torch.tensor([0.5, -1.0], dtype=torch.float64)
COV = torch.tensor([[1.0, 0.8], [0.8, 1.0]], dtype=torch.float64)  # correlated: the known coordinate matters


@pytest.fixture(scope="module")
def schedule():
    return make_schedule("linear", T, beta_start=1e-3, beta_end=0.2)


def gaussian(schedule):
    """The exact denoiser of N(MEAN, COV), float64 in and out."""
    return GaussianMixture([1.0], MEAN[None], COV[None]).denoiser(schedule)


def shrink(schedule):
    """The exact denoiser of N(0, 0.25 I) for any sample shape: x0_hat = sqrt(abar) v / (abar v + 1 - abar) x_t."""
    def den(x, t):
        ab = schedule.alpha_bar_at(t).item()
        return x * (math.sqrt(ab) * 0.25 / (ab * 0.25 + 1 - ab))
    return den


def rows(n=8, seed=0):
    """x_known (n, 2) and a mask knowing coordinate 0 of every row (its coordinate 1 is NaN: ignored)."""
    x = torch.randn(n, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    x[:, 1] = float("nan")
    return x, torch.tensor([True, False]).expand(n, 2)


def images(n=4, seed=0):
    """x_known (n, 1, 4, 4) float32 and a per-image mask (n, 1, 4, 4): top half known, one image all known."""
    x = torch.randn(n, 1, 4, 4, generator=torch.Generator().manual_seed(seed))
    mask = torch.zeros(n, 1, 4, 4, dtype=torch.bool)
    mask[:, :, :2] = True
    mask[-1] = True
    return x, mask


# --- the contract: project and callback on every sampler ---------------------------------------------------------

def run(name, denoiser, x_T, schedule, grid, **kw):
    options = {"eta": 0.5} if name == "ddim" else {"rtol": 1e-3, "atol": 1e-3} if name == "pf_ode" else {}
    return SAMPLERS[name].fn(denoiser, x_T, schedule, grid, generator=torch.Generator().manual_seed(3), **options,
                             **kw)


@pytest.mark.parametrize("name", [n for n in SAMPLERS if SAMPLERS[n].projects])
def test_project_none_equals_an_identity_project_seen_at_each_grid_time(name, schedule):
    """An identity project leaves the samples as project=None does: bit for bit where the state is x, to float64
    rounding for the EDM samplers (y = x / sqrt(abar) goes to x and back: one rounding per step, measured < 1e-15
    relative; 1e-12 allows 20 steps of it). project sees every later grid time in order, with the state the
    callback then sees."""
    grid = timestep_grid(schedule, 10, "karras")
    x_T = torch.randn(16, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    plain = run(name, gaussian(schedule), x_T, schedule, grid)
    projected, seen = [], []
    out = run(name, gaussian(schedule), x_T, schedule, grid,
              project=lambda t, x: projected.append((float(t), x)) or x,
              callback=lambda i, t, x, x0_hat: seen.append((i, float(t), x)))
    assert [t for t, _ in projected] == grid[1:].tolist() == [t for _, t, _ in seen]
    assert [i for i, _, _ in seen] == list(range(10))
    if name in ("euler", "heun"):
        torch.testing.assert_close(out, plain, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(seen[4][2], projected[4][1], rtol=1e-12, atol=1e-12)
    else:
        assert torch.equal(out, plain) and all(torch.equal(a[1], b[2]) for a, b in zip(projected, seen))


@pytest.mark.parametrize("name", [n for n in SAMPLERS if SAMPLERS[n].projects])
def test_the_next_step_starts_from_the_projected_state(name, schedule):
    """A project returning the constant 0.5: every step after the first calls the denoiser first at x_t = 0.5 (the
    EDM samplers via y = x / sqrt(abar): to float64 rounding, 1e-12), and the sample is 0.5."""
    inputs = []

    def recording(x, t):
        inputs.append(x)
        return gaussian(schedule)(x, t)

    x_T = torch.randn(4, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    out = run(name, recording, x_T, schedule, timestep_grid(schedule, 5), project=lambda t, x: torch.full_like(x, 0.5))
    firsts = inputs[2::2] if name == "heun" else inputs[1:]  # Heun: two calls per step, one on the last
    assert len(firsts) == 4
    for x in firsts + [out]:
        torch.testing.assert_close(x, torch.full_like(x, 0.5), rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_the_callback_sees_the_step_index_time_state_and_the_steps_last_denoiser_output(name, schedule):
    """x0_hat is the object the denoiser returned last in that step (Heun: its second call; pf_ode: None at the
    output times between its own steps, the final call's output at t = 0)."""
    grid = timestep_grid(schedule, 6)
    outputs, seen = [], []

    def recording(x, t):
        outputs.append(gaussian(schedule)(x, t))
        return outputs[-1]

    x_T = torch.randn(8, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    out = run(name, recording, x_T, schedule, grid,
              callback=lambda i, t, x, x0_hat: seen.append((i, float(t), x, x0_hat, len(outputs))))
    assert [(i, t) for i, t, *_ in seen] == list(enumerate(grid[1:].tolist()))
    assert torch.equal(seen[-1][2], out)
    for i, t, x, x0_hat, calls in seen:
        if name == "pf_ode" and t > 0:
            assert x0_hat is None
        else:
            assert x0_hat is outputs[calls - 1]
    calls = {"pf_ode": [len(outputs) - 1] * 5 + [len(outputs)],  # the output times are read after the solve
             "heun": [2, 4, 6, 8, 10, 11]}.get(name, [1, 2, 3, 4, 5, 6])
    assert [c for *_, c in seen] == calls


def test_ddpm_with_a_reverse_model_hands_the_callback_its_x0_hat(schedule):
    x0 = torch.full((3, 2), 0.25, dtype=torch.float64)
    model = lambda x, t: (x0, torch.full_like(x, -3.0))  # noqa: E731
    seen = []
    ddpm(model, torch.zeros(3, 2, dtype=torch.float64), schedule, timestep_grid(schedule, 4), variance="learned",
         callback=lambda i, t, x, x0_hat: seen.append(x0_hat))
    assert len(seen) == 4 and all(s is x0 for s in seen)


def test_pf_ode_refuses_a_project_in_one_line(schedule):
    with pytest.raises(InputError, match="^pf_ode cannot apply project between its adaptive steps; give known "
                                         r"values through a denoiser wrapper \(known.replace_x0\) instead$"):
        pf_ode(gaussian(schedule), torch.zeros(2, 2, dtype=torch.float64), schedule, timestep_grid(schedule, 5),
               project=lambda t, x: x)


# --- the two replacements ------------------------------------------------------------------------------------------

def test_replace_xt_draws_the_known_part_from_q_and_is_x_known_at_t0(schedule):
    """Known entries at t: sqrt(abar_t) x_known + sqrt(1 - abar_t) eps, eps the generator's next draw (recomputed
    from the alpha_bar table in float64, 1e-15 against O(1) values); unknown entries untouched; at t = 0 an
    all-known mask gives x_known exactly and draws nothing."""
    x_known, mask = rows()
    x = torch.randn(8, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    g = torch.Generator().manual_seed(9)
    got = replace_xt(schedule, mask, x_known, g)(torch.tensor(20.0, dtype=torch.float64), x)
    eps = torch.randn(8, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(9))
    ab = schedule.alpha_bar[20].item()
    expected = math.sqrt(ab) * x_known[:, 0] + math.sqrt(1 - ab) * eps[:, 0]
    np.testing.assert_allclose(got[:, 0].numpy(), expected.numpy(), rtol=0, atol=1e-15)
    assert torch.equal(got[:, 1], x[:, 1])
    state = g.get_state()
    full = torch.ones(8, 2, dtype=torch.bool)
    x_known[:, 1] = 7.0
    assert torch.equal(replace_xt(schedule, full, x_known, g)(torch.tensor(0.0, dtype=torch.float64), x), x_known)
    assert torch.equal(g.get_state(), state)


def test_replace_x0_on_ddim_is_the_affine_recurrence_of_the_exact_gaussian_denoiser(schedule):
    """With the exact denoiser of N(m, C), x0_hat = m + sqrt(ab) C S^-1 (x - sqrt(ab) m), S = ab C + (1 - ab) I,
    and coordinate 0 replaced by the known a, every DDIM (eta = 0) step is affine in x, so the samples are a
    recurrence written here in numpy (float64, its own route: np.linalg.solve, per-step abar from the table).
    Rounding of two float64 routes over 10 steps of O(1) coefficients: ~1e-14; 1e-10 allows it. Replacing the
    wrong coordinate or at the wrong time moves the result by O(0.1)."""
    x_known, mask = rows(16)
    x_T = torch.randn(16, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    grid = timestep_grid(schedule, 10)
    got = ddim(replace_x0(gaussian(schedule), mask, x_known), x_T, schedule, grid)
    m, C, a = MEAN.numpy(), COV.numpy(), x_known[:, 0].numpy()
    x = x_T.numpy().copy()
    abars = [schedule.alpha_bar[int(t)].item() for t in grid.tolist()]
    for ab_t, ab_s in zip(abars[:-1], abars[1:]):
        S = ab_t * C + (1 - ab_t) * np.eye(2)
        x0 = m + math.sqrt(ab_t) * np.linalg.solve(S, (x - math.sqrt(ab_t) * m).T).T @ C.T
        x0[:, 0] = a
        eps = (x - math.sqrt(ab_t) * x0) / math.sqrt(1 - ab_t)
        x = math.sqrt(ab_s) * x0 + math.sqrt(1 - ab_s) * eps
    np.testing.assert_allclose(got.numpy(), x, rtol=0, atol=1e-10)
    assert np.abs(got.numpy()[:, 1] - ddim(gaussian(schedule), x_T, schedule, grid).numpy()[:, 1]).max() > 0.1


def test_replace_x0_passes_a_reverse_models_log_variance_through():
    x_known, mask = rows(3)
    log_var = torch.full((3, 2), -2.0, dtype=torch.float64)
    x0, lv = replace_x0(lambda x, t: (x, log_var), mask, x_known)(torch.ones(3, 2, dtype=torch.float64), 5.0)
    assert lv is log_var and torch.equal(x0[:, 0], x_known[:, 0]) and (x0[:, 1] == 1).all()


# --- sample_known -------------------------------------------------------------------------------------------------

CASES = [("replace_x0", s) for s in ("ddpm", "ddim", "dpmpp_2m", "heun", "pf_ode")] + \
        [("replace_xt", s) for s in ("ddpm", "ddim", "dpmpp_3m", "euler")] + [("repaint", "ddpm")]


@pytest.mark.parametrize("method,sampler", CASES)
def test_known_entries_come_back_bit_exact(method, sampler, schedule):
    """Images (top half known, one image all known) and rows (NaN at the unknown coordinate): the known entries
    equal x_known bit for bit, the unknown ones are finite draws (not x_known)."""
    options = {"rtol": 1e-3, "atol": 1e-3} if sampler == "pf_ode" else {}
    x_known, mask = images()
    got = sample_known(shrink(schedule), x_known, mask, schedule, method=method, sampler=sampler, steps=8, seed=1,
                       jump_length=2, jump_n_sample=2, **options)
    assert got.dtype == torch.float32 and torch.equal(got[mask], x_known[mask])
    assert torch.isfinite(got).all() and (got[~mask] != x_known[~mask]).all()
    x_known, mask = rows()
    got = sample_known(gaussian(schedule), x_known, mask, schedule, method=method, sampler=sampler, steps=8, seed=1,
                       jump_length=2, jump_n_sample=2, **options)
    assert torch.equal(got[:, 0], x_known[:, 0]) and torch.isfinite(got[:, 1]).all()


def test_the_known_entries_are_set_even_where_a_samplers_last_step_is_not_x0_hat(schedule, monkeypatch):
    """A sampler returning twice DDIM's samples (registered for the test) would double the known entries; the
    result keeps them."""
    def doubled(denoiser, x_T, schedule, grid, *, generator=None, project=None, callback=None):
        return 2 * ddim(denoiser, x_T, schedule, grid, project=project, callback=callback)

    monkeypatch.setitem(SAMPLERS, "doubled", SamplerSpec("doubled", doubled))
    x_known, mask = rows()
    for method in ("replace_x0", "replace_xt"):
        got = sample_known(gaussian(schedule), x_known, mask, schedule, method=method, sampler="doubled", steps=5)
        assert torch.equal(got[:, 0], x_known[:, 0])


@pytest.mark.parametrize("method", METHODS)
def test_seeded_rows_do_not_depend_on_the_batch(method, schedule):
    """With a seed, rows start..start+B-1 of the sample set, as generate: x_T, ancestral and replacement draws."""
    x_known, mask = rows(8)
    kw = dict(method=method, steps=6, seed=3, jump_length=2, jump_n_sample=3)
    whole = sample_known(gaussian(schedule), x_known, mask, schedule, **kw)
    part = sample_known(gaussian(schedule), x_known[3:], mask[3:], schedule, start=3, **kw)
    assert torch.equal(whole[3:], part)


def test_an_all_unknown_mask_is_generate_and_an_all_known_one_calls_nothing(schedule):
    x_known = torch.randn(6, 2, generator=torch.Generator().manual_seed(0))
    for method in METHODS:
        for sampler in (("ddpm",) if method == "repaint" else ("ddpm", "dpmpp_2m")):
            got = sample_known(shrink(schedule), x_known, torch.zeros(2, dtype=torch.bool), schedule, method=method,
                               sampler=sampler, steps=7, seed=4)
            assert torch.equal(got, generate(shrink(schedule), (6, 2), schedule, sampler=sampler, steps=7, seed=4))
        counted = CountingDenoiser(shrink(schedule))
        got = sample_known(counted, x_known, torch.ones(6, 1, dtype=torch.bool), schedule, method=method, seed=4)
        assert counted.calls == 0 and torch.equal(got, x_known)


@pytest.mark.parametrize("kw, message", [
    (dict(mask=torch.ones(3, dtype=torch.bool)), r"^the known-value mask of shape \(3,\) does not broadcast to the "
                                                 r"samples' shape \(4, 2\)$"),
    (dict(mask=torch.ones(4, 2)), r"^the known-value mask must be a bool tensor \(True = known\)$"),
    (dict(x_known=torch.full((4, 2), float("nan"))), "^the known values have a NaN or infinite entry where the mask"),
    (dict(method="inpaint"), "^unknown known-value method 'inpaint'; known: replace_x0, replace_xt, repaint$"),
    (dict(sampler="ddim"), "^repaint runs on the ancestral sampler: sampler must be 'ddpm', got 'ddim'$"),
    (dict(method="replace_xt", sampler="pf_ode"), "^sampler 'pf_ode' cannot replace x_t between its steps"),
    (dict(eta=1.0), r"^sampler 'ddpm' has no option 'eta' \(its options: variance\)$"),
    (dict(seed=0, generator=torch.Generator()), "^sample_known takes a seed or a generator, not both$"),
    (dict(jump_length=0), r"^jump_length must be an integer >= 1, got 0$"),
    (dict(x_known=torch.zeros(2)), r"^the known values must be a batch \(B, \*sample_shape\), got shape \(2,\)$"),
])
def test_bad_input_is_one_line(kw, message, schedule):
    args = dict(x_known=torch.zeros(4, 2), mask=torch.tensor([True, False]))
    args.update(kw)
    x_known, mask = args.pop("x_known"), args.pop("mask")
    with pytest.raises(InputError, match=message):
        sample_known(shrink(schedule), x_known, mask, schedule, steps=5, **args)


# --- RePaint ---------------------------------------------------------------------------------------------------------

def authors_schedule(t_T, jump_length, jump_n_sample):
    """The RePaint authors' get_schedule_jump with its other options at their defaults (n_sample = 1, no second
    or third jump level, resampling everywhere), in their time index: t_T - 1 (the start) down to -1 (the data)."""
    jumps = {j: jump_n_sample - 1 for j in range(0, t_T - jump_length, jump_length)}
    t, ts = t_T, []
    while t >= 1:
        t -= 1
        ts.append(t)
        if jumps.get(t, 0) > 0:
            jumps[t] -= 1
            for _ in range(jump_length):
                t += 1
                ts.append(t)
    return ts + [-1]


def test_repaint_schedule_is_the_authors_and_diffusers(schedule):
    """Grid index k is the authors' t = n - 1 - k; diffusers' RePaintScheduler timesteps (num_train_timesteps = n)
    are the authors' list without its final -1."""
    import diffusers

    for n in range(1, 26):
        for j in range(1, 7):
            for r in range(1, 5):
                theirs = authors_schedule(n, j, r)
                assert repaint_schedule(n, j, r) == [n - 1 - t for t in theirs], (n, j, r)
                assert repaint_nfe(n, j, r) == sum(b < a for a, b in zip(theirs, theirs[1:]))
    ref = diffusers.RePaintScheduler(num_train_timesteps=250)
    ref.set_timesteps(250, jump_length=10, jump_n_sample=10)
    assert repaint_schedule(250) == [249 - t for t in ref.timesteps.tolist()] + [250]
    assert repaint_nfe(250) == known_nfe("repaint", "ddpm", default_steps("repaint", 1000)) == 250 + 9 * 10 * 24


def test_one_repaint_walk_recomputed_by_hand(schedule):
    """n = 2, jump_length 1, jump_n_sample 2: the walk 0 1 0 1 2 (down, up, down, down). Each draw is recomputed
    from the alpha_bar table: a down step is the posterior mean c0 x0_hat + ct x_t plus sqrt(beta_tilde) z (none
    into t = 0), then the known coordinate replaced by sqrt(abar_s) a + sqrt(1 - abar_s) z; the up move is
    sqrt(abar_t / abar_s) x_s + sqrt(1 - abar_t / abar_s) z. float64 by two routes: 1e-12."""
    assert repaint_schedule(2, 1, 2) == [0, 1, 0, 1, 2]
    x_known, mask = rows(5)
    x_T = torch.randn(5, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(7))
    grid = torch.tensor([40.0, 15.0, 0.0], dtype=torch.float64)
    den = gaussian(schedule)
    got = repaint(den, x_T, schedule, grid, generator=torch.Generator().manual_seed(8), jump_length=1,
                  jump_n_sample=2, project=replace_xt(schedule, mask, x_known, torch.Generator().manual_seed(9)))
    z_step, z_known = torch.Generator().manual_seed(8), torch.Generator().manual_seed(9)
    ab = [schedule.alpha_bar[int(t)].item() for t in grid]

    def draw(g):
        return torch.randn(5, 2, dtype=torch.float64, generator=g)

    def down(x, k):
        a_t, a_s = ab[k], ab[k + 1]
        c0 = math.sqrt(a_s) * (1 - a_t / a_s) / (1 - a_t)
        ct = math.sqrt(a_t / a_s) * (1 - a_s) / (1 - a_t)
        x = c0 * den(x, grid[k]) + ct * x
        if a_s < 1:
            x = x + math.sqrt((1 - a_s) / (1 - a_t) * (1 - a_t / a_s)) * draw(z_step)
            x[:, 0] = math.sqrt(a_s) * x_known[:, 0] + math.sqrt(1 - a_s) * draw(z_known)[:, 0]
        else:
            x[:, 0] = x_known[:, 0]
        return x

    x = down(x_T, 0)
    x = math.sqrt(ab[0] / ab[1]) * x + math.sqrt(1 - ab[0] / ab[1]) * draw(z_step)
    expected = down(down(x, 0), 1)
    np.testing.assert_allclose(got.numpy(), expected.numpy(), rtol=0, atol=1e-12)


def test_repaint_without_resampling_is_replace_xt_on_ddpm(schedule):
    """jump_n_sample = 1: no jumps, so the same draws in the same order as x_t-replacement on the ancestral sampler."""
    x_known, mask = images()
    kw = dict(steps=12, seed=5, variance="beta")
    assert torch.equal(sample_known(shrink(schedule), x_known, mask, schedule, method="repaint", jump_n_sample=1, **kw),
                       sample_known(shrink(schedule), x_known, mask, schedule, method="replace_xt", **kw))


@pytest.mark.parametrize("method,sampler", [(m, s) for m in METHODS for s in SAMPLERS
                                            if (m != "repaint" or s == "ddpm")
                                            and (m != "replace_xt" or SAMPLERS[s].projects)])
def test_known_nfe_is_the_denoiser_calls_made(method, sampler, schedule):
    """Counted calls for a mixed mask; None for pf_ode (its tolerance sets them, at least one call per output)."""
    options = {"rtol": 1e-3, "atol": 1e-3} if sampler == "pf_ode" else {}
    x_known, mask = rows(4)
    counted = CountingDenoiser(gaussian(schedule))
    sample_known(counted, x_known, mask, schedule, method=method, sampler=sampler, steps=9, jump_length=3,
                 jump_n_sample=3, seed=0, **options)
    expected = known_nfe(method, sampler, 9, 3, 3)
    assert (counted.calls > 9 and expected is None) if sampler == "pf_ode" else counted.calls == expected


def test_default_steps_are_the_papers_for_repaint_and_generates_otherwise():
    assert [default_steps(m, 1000) for m in METHODS] == [100, 100, 250]
    assert [default_steps(m, 50) for m in METHODS] == [50, 50, 50]
