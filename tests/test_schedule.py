"""Tests of gaussdiff.schedule: betas, alpha_bar, log-SNR, fractional t and the diffusers index map.

Every expected value is computed independently here (numpy, math, diffusers), never copied from a
run of the code. Tolerances are for float64 algebra unless stated otherwise.
"""

import json
import math

import numpy as np
import pytest
import torch
from torch.overrides import TorchFunctionMode

from gaussdiff.errors import InputError
from gaussdiff.schedule import NoiseSchedule, make_schedule, schedule_from_config

U64 = np.finfo(np.float64).eps  # 2.2e-16
U32 = float(np.finfo(np.float32).eps)  # 1.2e-7

SCHEDULES = [
    dict(beta_schedule="linear", num_train_timesteps=1000),
    dict(beta_schedule="linear", num_train_timesteps=37, beta_start=1e-3, beta_end=0.3),
    dict(beta_schedule="scaled_linear", num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012),
    dict(beta_schedule="squaredcos_cap_v2", num_train_timesteps=1000),
    dict(beta_schedule="squaredcos_cap_v2", num_train_timesteps=50),
    dict(beta_schedule="sigmoid", num_train_timesteps=200),
    dict(beta_schedule="sigmoid_alpha_bar", num_train_timesteps=300),
]
IDS = [f"{c['beta_schedule']}-{c['num_train_timesteps']}" for c in SCHEDULES]


def np_alpha_bar(betas) -> np.ndarray:
    """alpha_bar[t] = prod_{s<t} (1 - betas[s]), t = 0..T, by a plain numpy cumulative product."""
    return np.concatenate([[1.0], np.cumprod(1 - np.asarray(betas, dtype=np.float64))])


# --- the betas -----------------------------------------------------------------------------------

@pytest.mark.parametrize("T", [1, 2, 10, 999, 1000, 4000])
def test_linear_is_numpy_linspace_for_every_T(T):
    s = make_schedule("linear", T, beta_start=1e-4, beta_end=0.02)
    # torch and numpy may place linspace points a few ulp apart (ulp(0.02) = 3.5e-18); 1e-15 is far
    # below the spacing between neighbours (>= 5e-6), so any other definition of `linear` fails.
    np.testing.assert_allclose(s.betas.numpy(), np.linspace(1e-4, 0.02, T), rtol=0, atol=1e-15)


@pytest.mark.parametrize("T", [1000, 250, 10])
def test_cosine_alpha_bar_is_nichol_dhariwal_where_betas_are_not_clipped(T):
    s = make_schedule("squaredcos_cap_v2", T)
    f = lambda t: math.cos((t / T + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731 (paper, eq. 17)
    expected = np.array([f(t) / f(0) for t in range(T + 1)])
    betas = s.betas.numpy()
    assert (betas <= 0.999).all()
    # Unclipped where the formula's own beta, 1 - f(t+1)/f(t), is below the cap; alpha_bar[t] is
    # exact up to the first clipped step. Relative float64 error of a product of t factors <= few t u.
    raw = 1 - expected[1:] / expected[:-1]
    first_clipped = int(np.argmax(raw > 0.999)) if (raw > 0.999).any() else T
    assert first_clipped >= T - 1  # only the last step is clipped (f(T) = cos(pi/2)^2 = 0)
    t = np.arange(first_clipped + 1)
    np.testing.assert_allclose(s.alpha_bar.numpy()[t], expected[t], rtol=20 * T * U64, atol=0)
    if first_clipped < T:  # the clipped step uses exactly the cap
        assert betas[first_clipped] == 0.999


@pytest.mark.parametrize("cfg", SCHEDULES, ids=IDS)
def test_alpha_bar_shape_start_and_monotone(cfg):
    s = make_schedule(**cfg)
    T = cfg["num_train_timesteps"]
    assert s.T == T and s.betas.shape == (T,) and s.alpha_bar.shape == (T + 1,)
    assert s.betas.dtype == s.alpha_bar.dtype == torch.float64
    assert s.alpha_bar[0].item() == 1.0
    assert (s.alpha_bar[1:] < s.alpha_bar[:-1]).all()
    assert ((s.betas > 0) & (s.betas < 1)).all()
    # alpha_bar agrees with a numpy cumulative product; relative error of T float64 products is
    # at most ~T u, so 4 T u (< 1e-12 for T = 1000) cannot hide a wrong index or a missing factor.
    np.testing.assert_allclose(s.alpha_bar.numpy(), np_alpha_bar(s.betas.numpy()), rtol=4 * T * U64)


@pytest.mark.parametrize("cfg", SCHEDULES, ids=IDS)
def test_log_snr_is_log_of_alpha_bar_over_one_minus_alpha_bar(cfg):
    s = make_schedule(**cfg)
    ab = np_alpha_bar(s.betas.numpy())
    assert s.log_snr[0].item() == math.inf
    expected = np.log(ab[1:] / (1 - ab[1:]))
    # 1 - ab cancels when ab ~ 1 (t = 1: 1 - ab = beta_0 >= ~1e-5), amplifying u by 1/(1 - ab)
    # <= 1e5, so the relative difference of two float64 evaluations is <= ~1e-10 of |log snr| + 1.
    np.testing.assert_allclose(s.log_snr.numpy()[1:], expected, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(s.snr.numpy()[1:], np.exp(expected), rtol=1e-9)


# --- fractional t ---------------------------------------------------------------------------------

@pytest.mark.parametrize("cfg", SCHEDULES, ids=IDS)
def test_alpha_bar_at_is_exact_at_integers_and_log_linear_between(cfg):
    s = make_schedule(**cfg)
    T = s.T
    ints = torch.arange(T + 1, dtype=torch.float64)
    assert torch.equal(s.alpha_bar_at(ints), s.alpha_bar)  # bitwise exact at integers
    assert torch.equal(s.log_alpha_bar_at(ints), s.log_alpha_bar)
    rng = np.random.default_rng(0)
    t = rng.uniform(0, T, 500)
    log_ab = np.log(np_alpha_bar(s.betas.numpy()))
    k = np.minimum(np.floor(t).astype(int), T - 1)
    f = t - k
    expected = (1 - f) * log_ab[k] + f * log_ab[k + 1]  # linear in t between integers
    # |log abar| <= ~60 here; two float64 evaluations differ by a few u * 60 ~ 1e-14 absolute.
    np.testing.assert_allclose(s.log_alpha_bar_at(torch.from_numpy(t)).numpy(), expected, rtol=0, atol=1e-11)
    np.testing.assert_allclose(s.alpha_bar_at(torch.from_numpy(t)).numpy(), np.exp(expected), rtol=1e-11)


@pytest.mark.parametrize("cfg", SCHEDULES, ids=IDS)
def test_t_of_log_alpha_bar_inverts_log_alpha_bar_at(cfg):
    s = make_schedule(**cfg)
    rng = np.random.default_rng(1)
    t = torch.from_numpy(np.concatenate([rng.uniform(0, s.T, 1000), np.arange(s.T + 1)]))
    back = s.t_of_log_alpha_bar(s.log_alpha_bar_at(t))
    # The slope of log abar in t is log(1 - beta) (|.| >= ~1e-5 here), so a float64 error of
    # ~1e-14 in log abar moves t by <= ~1e-9; a wrong segment or slope moves it by O(1).
    np.testing.assert_allclose(back.numpy(), t.numpy(), rtol=0, atol=1e-8)


@pytest.mark.parametrize("cfg", SCHEDULES, ids=IDS)
def test_sigma_at_and_t_of_sigma_round_trip(cfg):
    s = make_schedule(**cfg)
    ab = np_alpha_bar(s.betas.numpy())
    ints = torch.arange(s.T + 1, dtype=torch.float64)
    # sigma = sqrt((1 - abar) / abar), the EDM noise level; relative float64 error ~1e-10 after
    # the cancellation in 1 - abar near t = 0 (see the log-SNR test).
    np.testing.assert_allclose(s.sigma_at(ints).numpy(), np.sqrt((1 - ab) / ab), rtol=1e-9, atol=0)
    rng = np.random.default_rng(2)
    t = torch.from_numpy(rng.uniform(0, s.T, 1000))
    # Same bound as for t_of_log_alpha_bar (sigma -> log abar loses nothing beyond a few u).
    np.testing.assert_allclose(s.t_of_sigma(s.sigma_at(t)).numpy(), t.numpy(), rtol=0, atol=1e-8)


class DeviceLog(TorchFunctionMode):
    """Records the devices of the non-scalar tensors each torch function is given."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        tensors = [a for a in (*args, *(kwargs or {}).values()) if isinstance(a, torch.Tensor) and a.ndim > 0]
        self.calls.append((getattr(func, "__name__", str(func)), {a.device.type for a in tensors}))
        return func(*args, **(kwargs or {}))


def test_t_of_sigma_computes_on_the_device_of_its_input():
    """The ODE sampler and likelihood pass sigma on the data's device (CUDA): the lookup table must go there, as in
    log_alpha_bar_at, or searchsorted and the indexing mix devices. 'meta' stands for another device on a CPU host
    (torch lets a meta op take a CPU table, so the devices of every call are checked, not only the result's)."""
    s = make_schedule("linear", 10)
    sigma = torch.ones(3, dtype=torch.float64, device="meta")
    with DeviceLog() as log:
        t = s.t_of_sigma(sigma)
    assert t.device.type == "meta"
    mixed = [(name, devices) for name, devices in log.calls if len(devices) > 1]
    assert not mixed, mixed


def test_fractional_t_outside_the_chain_is_rejected():
    s = make_schedule("linear", 10)
    for bad in (-0.5, 10.5, math.nan, math.inf):
        with pytest.raises(InputError):
            s.alpha_bar_at(bad)


# --- diffusers index map --------------------------------------------------------------------------

DIFFUSERS_CASES = [
    ("linear", 1000, 1e-4, 0.02),
    ("linear", 50, 1e-3, 0.2),
    ("scaled_linear", 1000, 0.00085, 0.012),
    ("squaredcos_cap_v2", 1000, 1e-4, 0.02),
    ("squaredcos_cap_v2", 64, 1e-4, 0.02),
]


@pytest.mark.parametrize("name,T,b0,b1", DIFFUSERS_CASES)
def test_our_alpha_bar_i_plus_1_is_diffusers_alphas_cumprod_i(name, T, b0, b1):
    import diffusers  # a dev dependency; schedulers are built from config, nothing is downloaded

    ref = diffusers.DDPMScheduler(num_train_timesteps=T, beta_schedule=name, beta_start=b0, beta_end=b1)
    s = make_schedule(name, T, beta_start=b0, beta_end=b1)
    betas_ref = ref.betas.double().numpy()
    # diffusers keeps float32: each beta is rounded (relative u32), and its cumulative product
    # rounds once per factor. A factor 1 - beta carries relative error u32 (1 + beta / (1 - beta)),
    # so alphas_cumprod[i] is within 2 u32 sum_{s<=i} (1 + beta_s / (1 - beta_s)) of the exact value.
    np.testing.assert_allclose(s.betas.numpy(), betas_ref, rtol=2 * U32, atol=0)
    bound = 2 * U32 * np.cumsum(1 + betas_ref / (1 - betas_ref))
    ours = s.alpha_bar.numpy()[1:]  # our t = i + 1
    theirs = ref.alphas_cumprod.double().numpy()
    assert theirs.shape == (T,)
    assert (np.abs(ours - theirs) <= bound * theirs).all(), np.max(np.abs(ours - theirs) / theirs / bound)


# --- bad input --------------------------------------------------------------------------------------

@pytest.mark.parametrize("betas", [[], [[0.1, 0.2]], [0.1, math.nan], [0.1, math.inf], [0.1, 0.0],
                                   [0.1, 1.0], [0.1, -0.01], [0.1, 1.5]],
                         ids=["empty", "2d", "nan", "inf", "zero", "one", "negative", "above-one"])
def test_bad_betas_are_rejected(betas):
    with pytest.raises(InputError):
        NoiseSchedule(betas)
    with pytest.raises(InputError):
        make_schedule(trained_betas=betas)


@pytest.mark.parametrize("T", [0, -3, 2.5, True, "1000", None])
def test_bad_T_is_rejected(T):
    with pytest.raises(InputError):
        make_schedule("linear", T)


def test_unknown_schedule_name_is_rejected():
    for name in ("cosine", "sqrt", "", "Linear"):
        with pytest.raises(InputError):
            make_schedule(name, 100)
    with pytest.raises(InputError):
        schedule_from_config({"beta_schedule": "linear", "num_train_timesteps": 10, "bogus": 1})


# --- config round trip ------------------------------------------------------------------------------

@pytest.mark.parametrize("cfg", SCHEDULES, ids=IDS)
def test_schedule_from_config_reproduces_the_schedule(cfg):
    s = make_schedule(**cfg)
    again = schedule_from_config(json.loads(json.dumps(s.config)))  # what a saved model stores
    assert torch.equal(again.betas, s.betas) and torch.equal(again.alpha_bar, s.alpha_bar)


def test_custom_betas_round_trip_through_config():
    betas = np.random.default_rng(3).uniform(1e-4, 0.05, 17)
    s = NoiseSchedule(betas)
    again = schedule_from_config(json.loads(json.dumps(s.config)))
    # float -> JSON -> float is exact for Python's shortest repr.
    assert torch.equal(again.betas, torch.from_numpy(betas))
    np.testing.assert_allclose(again.alpha_bar.numpy(), np_alpha_bar(betas), rtol=1e-14)
