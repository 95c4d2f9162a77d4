"""Learned variances through the stack: the MLP's variance head, param's reverse model, the saved model's
variance_type, and ancestral sampling with the model's own variance (on integer grids only), in ``gaussdiff sample``,
the sweep and the pictures.

References: Nichol & Dhariwal's learned range written out by hand, the fixed-variance samplers (v = 0 and v = 1
give beta_tilde and beta exactly), and diffusers' DDPMScheduler with variance_type='learned_range'.
"""

import json

import numpy as np
import pytest
import torch

from gaussdiff.cli import main
from gaussdiff.data import BUILTIN, Standardize
from gaussdiff.errors import InputError
from gaussdiff.metrics import sliced_w2
from gaussdiff.mixture import GaussianMixture
from gaussdiff.nets import MLP, build_network
from gaussdiff.param import CountingDenoiser, as_denoiser, as_reverse_model
from gaussdiff.samplers import ddpm, generate, timestep_grid
from gaussdiff.sampling import sampler_inputs
from gaussdiff.saved import SavedModel, load_model, upgrade_v1
from gaussdiff.schedule import make_schedule
from gaussdiff.sweep import sweep

T = 50


@pytest.fixture(scope="module")
def schedule():
    return make_schedule("squaredcos_cap_v2", T)


def head_net(seed=0):
    torch.manual_seed(seed)
    return MLP(2, T, width=16, depth=1, emb_dim=8, learn_variance=True)


def learned_model(schedule, variance_type="learned_range"):
    """A saved-model object (not on disk) around head_net()."""
    model = SavedModel(head_net(), schedule, "epsilon", Standardize.identity(2), "moons", variance_type)
    model.network.eval()
    return model


def test_mlp_variance_head_and_old_configs():
    net = head_net()
    x, t = torch.randn(5, 2), torch.tensor([1.0, 7, 20, 33, 50])
    assert net(x, t).shape == (5, 4) and net.config["learn_variance"] is True
    old = {"kind": "mlp", "dim": 2, "num_train_timesteps": T, "width": 16, "depth": 1, "emb_dim": 8}  # no option
    v1 = {"network": old, "data": {"name": "moons", "transform": {"mean": [0.0, 0.0], "std": [1.0, 1.0]}}}
    plain = build_network(upgrade_v1(v1)["network"])
    assert plain(x, t).shape == (5, 2) and plain.config["learn_variance"] is False


def test_reverse_model_reads_the_learned_range_and_the_denoiser_the_first_channels(schedule):
    net = head_net()
    x = torch.randn(6, 2, generator=torch.Generator().manual_seed(1))
    t = torch.tensor([1, 2, 10, 25, 49, 50])
    out = net(x, t.float())
    x0_hat, log_var = as_reverse_model(net, schedule, "v_prediction", "learned_range")(x, t)
    ab = schedule.alpha_bar[t][:, None]
    np.testing.assert_allclose(x0_hat.detach().numpy(), (ab.sqrt() * x - (1 - ab).sqrt() * out[:, :2]).detach().numpy(),
                               rtol=1e-5, atol=1e-6)  # x_0 = a x_t - s v, float32
    # Nichol & Dhariwal eq. 15 by hand: v = (out + 1) / 2 between log beta_t and log beta_tilde_t (t = 1: beta_tilde_2).
    ab_all, betas = schedule.alpha_bar.numpy(), schedule.betas.numpy()
    bt = np.array([(1 - ab_all[k - 1]) / (1 - ab_all[k]) * betas[k - 1] for k in range(1, T + 1)])
    bt[0] = bt[1]
    v = (out[:, 2:].detach().numpy() + 1) / 2
    tt = t.numpy()[:, None]
    expected = v * np.log(betas[tt - 1]) + (1 - v) * np.log(bt[tt - 1])
    np.testing.assert_allclose(log_var.detach().numpy(), expected, rtol=1e-5)
    # The denoiser of a net with a head is its first D channels: as for the same net without the head's rows, and
    # as the reverse model's x0_hat. float32: the matmuls with 2 and 4 output rows and the two abar routes (table,
    # exp of log) round differently, ~1e-7; 1e-6 still sees a wrong channel (outputs differ by ~0.1).
    plain = MLP(2, T, width=16, depth=1, emb_dim=8)
    plain.load_state_dict({k: (v[:2] if k.startswith("out.2") else v) for k, v in net.state_dict().items()})
    x0_den = as_denoiser(net, schedule, "v_prediction")(x, t.float())
    torch.testing.assert_close(as_denoiser(plain, schedule, "v_prediction")(x, t.float()), x0_den, rtol=0, atol=1e-6)
    torch.testing.assert_close(x0_den, x0_hat, rtol=0, atol=1e-6)
    # Fixed variances ignore the head; learned_range needs it.
    _, small = as_reverse_model(net, schedule, "v_prediction", "fixed_small")(x, t)
    np.testing.assert_allclose(small[:, 0].numpy(), np.log(bt[t.numpy() - 1]), rtol=1e-6)
    with pytest.raises(InputError, match="variance head"):
        as_reverse_model(plain, schedule, "v_prediction", "learned_range")(x, t)
    with pytest.raises(InputError, match="integer t"):
        as_reverse_model(net, schedule, "v_prediction", "learned_range")(x, 2.5)
    with pytest.raises(InputError, match="unknown variance_type"):
        as_reverse_model(net, schedule, "v_prediction", "learned")


def test_saved_model_keeps_its_variance_type(tmp_path, schedule):
    model = SavedModel(head_net(), schedule, "epsilon", Standardize([1.0, 2.0], [3.0, 4.0]), "x.npy", "learned_range")
    folder = model.save(tmp_path / "m")
    assert json.loads((folder / "config.json").read_text())["variance_type"] == "learned_range"
    loaded = load_model(folder)
    assert loaded.variance_type == "learned_range"
    x, t = torch.randn(4, 2), torch.tensor([1, 5, 30, 50])
    model.network.eval()
    for a, b in zip(loaded.reverse_model()(x, t), model.reverse_model()(x, t)):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    # A file from before the field: fixed_small.
    config = json.loads((folder / "config.json").read_text())
    config.pop("variance_type")
    config.pop("checksums")  # the weights below are another model's: a file from before checksums too
    config["network"]["learn_variance"] = False
    plain = tmp_path / "old"
    SavedModel(MLP(2, T, width=16, depth=1, emb_dim=8), schedule, "epsilon", Standardize.identity(2), "x").save(plain)
    (plain / "config.json").write_text(json.dumps(config))
    assert load_model(plain).variance_type == "fixed_small"
    # learned_range without a head, or an unknown type: one clear error.
    config["variance_type"] = "learned_range"
    (plain / "config.json").write_text(json.dumps(config))
    with pytest.raises(InputError, match="variance head"):
        load_model(plain)
    config["variance_type"] = "learnt"
    (plain / "config.json").write_text(json.dumps(config))
    with pytest.raises(InputError, match="unknown variance_type 'learnt'"):
        load_model(plain)


@pytest.mark.parametrize("steps", [T, 10])
@pytest.mark.parametrize("out_value, fixed", [(-1.0, "beta_tilde"), (1.0, "beta")])
def test_ancestral_sampling_with_the_learned_range_at_its_ends_is_the_fixed_variance(schedule, steps, out_value,
                                                                                       fixed):
    """v = 0 (out = -1) is beta_tilde and v = 1 (out = +1) is beta, on the full grid and on a respaced one (where
    the learned range is taken to the step's own beta_tilde(t, s) and 1 - abar_t / abar_s)."""
    oracle = GaussianMixture([0.5, 0.5], [[-1.0, 0.0], [1.0, 0.5]], 0.05 * torch.eye(2).expand(2, 2, 2))
    den = oracle.denoiser(schedule)
    net = lambda x, t: torch.cat([torch.zeros_like(x), torch.full_like(x, out_value)], 1)  # noqa: E731
    variance_channels = as_reverse_model(net, schedule, "sample", "learned_range")
    reverse = lambda x, t: (den(x, t), variance_channels(x, t)[1])  # noqa: E731 (oracle mean, learned variance)
    grid = timestep_grid(schedule, steps, "leading")
    x_T = torch.randn(500, 2, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    ours = ddpm(reverse, x_T, schedule, grid, generator=torch.Generator().manual_seed(3), variance="learned")
    ref = ddpm(den, x_T, schedule, grid, generator=torch.Generator().manual_seed(3), variance=fixed)
    # Same noise; the variance differs by exp(log(.)) rounding (1e-16 relative), summed over <= 50 steps.
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-12)


@pytest.mark.parametrize("steps", [T, 10])
def test_ancestral_sampling_with_learned_variance_matches_diffusers(schedule, steps):
    import diffusers

    def fake(x, i):
        """A deterministic 'network' with a variance head in diffusers' timestep i: (eps, v values in [-1, 1])."""
        i = torch.as_tensor(i, dtype=x.dtype).reshape(-1, 1)
        return torch.cat([0.3 * x + 0.01 * i / T, torch.tanh(x + i / T - 0.5)], 1)

    ref = diffusers.DDPMScheduler(num_train_timesteps=T, beta_schedule="squaredcos_cap_v2",
                                  variance_type="learned_range", clip_sample=False, prediction_type="epsilon",
                                  timestep_spacing="leading")
    ref.alphas_cumprod = schedule.alpha_bar[1:].clone()  # diffusers keeps float32; compare the algorithm in float64
    ref.set_timesteps(steps)
    x_T = torch.randn(64, 2, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    g = torch.Generator().manual_seed(5)
    x = x_T.clone()
    for i in ref.timesteps:
        x = ref.step(fake(x, int(i)), i, x, generator=g).prev_sample
    reverse = as_reverse_model(lambda x, t: fake(x, t - 1), schedule, "epsilon", "learned_range")  # our t = i + 1
    ours = ddpm(reverse, x_T, schedule, timestep_grid(schedule, steps, "leading"),
                generator=torch.Generator().manual_seed(5), variance="learned")
    # float64 on both sides; the eps route divides by sqrt(abar_T) ~ 0.03: 1e-10 absolute.
    torch.testing.assert_close(ours, x, rtol=0, atol=1e-10)


def test_learned_sampling_needs_a_reverse_model(schedule):
    den = GaussianMixture([1.0], [[0.0, 0.0]], torch.eye(2)[None]).denoiser(schedule)
    with pytest.raises(InputError, match="needs a reverse model"):
        ddpm(den, torch.zeros(3, 2, dtype=torch.float64), schedule, timestep_grid(schedule, T), variance="learned")
    with pytest.raises(InputError, match="needs an integer grid"):
        reverse = as_reverse_model(head_net(), schedule, "epsilon", "learned_range")
        ddpm(reverse, torch.zeros(3, 2), schedule, [T, 24.5, 0], variance="learned")


@pytest.mark.parametrize("spacing", ["karras", "log_snr"])
def test_learned_variance_on_a_noise_level_grid_is_refused_before_any_call(schedule, spacing):
    reverse = CountingDenoiser(as_reverse_model(head_net(), schedule, "epsilon", "learned_range"))
    with pytest.raises(InputError) as info:
        ddpm(reverse, torch.zeros(3, 2), schedule, timestep_grid(schedule, 5, spacing), variance="learned")
    assert "needs an integer grid, as the spacings linspace, leading, trailing, quadratic give" in str(info.value)
    assert reverse.calls == 0


def test_sample_command_refuses_learned_variance_on_a_noise_level_grid(schedule, tmp_path, capsys):
    folder = learned_model(schedule).save(tmp_path / "model")
    out = tmp_path / "s.npy"
    code = main(["sample", str(folder), "-n", "5", "--sampler", "ddpm", "--steps", "4", "--spacing", "karras",
                 "--out", str(out)])
    err = capsys.readouterr().err.splitlines()
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith("gaussdiff sample: error: variance 'learned' needs an integer grid"), err
    assert "linspace, leading, trailing, quadratic" in err[0]
    assert not out.exists()


# --- the model's own variance wherever a model is sampled -----------------------------------------------------

@pytest.mark.parametrize("variance_type, variance", [("fixed_small", "beta_tilde"), ("fixed_large", "beta"),
                                                     ("learned_range", "learned")])
def test_saved_model_names_its_ddpm_variance_and_what_the_sampler_calls(schedule, variance_type, variance):
    model = learned_model(schedule, variance_type)
    assert model.ddpm_variance == variance
    x, t = torch.randn(4, 2, generator=torch.Generator().manual_seed(6)), torch.tensor([1, 5, 30, 50])
    called, options = sampler_inputs(model, "ddpm")
    assert options == {"variance": variance}
    got = called(x, t)
    if variance == "learned":  # the reverse model's (x0_hat, log_var): the same function of the same weights
        for a, b in zip(got, model.reverse_model()(x, t), strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
    else:
        torch.testing.assert_close(got, model.denoiser()(x, t), rtol=0, atol=0)


def drawn(model, variance, steps=10, n=200, seed=4):
    """``generate``'s ddpm draw (x_T, then the noise, rows of the sample set seeded by ``seed``) with the given
    variance."""
    with torch.no_grad():
        return generate(model.reverse_model() if variance == "learned" else model.denoiser(), (n, 2), model.schedule,
                        sampler="ddpm", steps=steps, spacing="trailing", seed=seed, variance=variance)


def test_sweep_samples_a_learned_range_model_with_its_learned_variance(schedule):
    """The sweep's ddpm cell is the SW2 of ddpm with variance 'learned' from the sweep's seed, as ``gaussdiff sample``
    draws by default; with beta_tilde (what the sweep ran before) the cell would differ."""
    model = learned_model(schedule)
    reference = BUILTIN["moons"](200, 1).double()
    fresh = [BUILTIN["moons"](200, seed).double() for seed in (2, 3)]
    [row] = sweep(model, reference, fresh, ["ddpm"], [10], seed=4).rows
    learned, beta_tilde = (sliced_w2(drawn(model, v).double(), reference) for v in ("learned", "beta_tilde"))
    assert row.nfe == 10 and row.sw2 == learned, (row.sw2, learned)  # the same computation: bit for bit
    assert abs(beta_tilde - learned) > 1e-3, (learned, beta_tilde)  # the test can tell the two variances apart
