"""Tests of diffusers interop: the scheduler_config.json we write loads in diffusers with the same
alpha_bar, configs diffusers writes read back, every unsupported value is one InputError, a saved model
carries the config, and a diffusers UNet2DModel driven through ForeignModel by our samplers follows
diffusers' own DDIM and DDPM loops step for step (the UNet sees exactly diffusers' timesteps, t - 1)."""

import json

import diffusers
import pytest
import torch
from torch import nn

from gaussdiff.data import Standardize
from gaussdiff.diffusers_config import (CONFIG_NAME, from_scheduler_config, read_scheduler_config,
                                        to_scheduler_config, write_scheduler_config)
from gaussdiff.errors import InputError
from gaussdiff.nets import MLP
from gaussdiff.nets.adapter import ForeignModel
from gaussdiff.param import as_denoiser
from gaussdiff.samplers import ddim, ddpm, timestep_grid
from gaussdiff.saved import SavedModel
from gaussdiff.schedule import make_schedule

# diffusers' sigma schedulers hand torch tensors to numpy 2, which warns inside diffusers: not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:__array:DeprecationWarning")

SHARED = ["linear", "scaled_linear", "squaredcos_cap_v2", "sigmoid"]  # beta_schedule names diffusers has too
SCHEDULERS = [diffusers.DDPMScheduler, diffusers.DDIMScheduler, diffusers.DPMSolverMultistepScheduler]


def assert_same_alpha_bar(alphas_cumprod, schedule):
    """diffusers computes betas and their cumulative product in float32: each of the T factors 1 - beta
    and products is rounded to 2^-24 relative, so the table is within T * 6e-8 = 6e-5 relative (T = 1000)
    of our float64 one; measured at most 1.3e-5 relative (cosine tail) and 4.4e-7 absolute. 1e-4 relative
    still catches an index shift: neighbouring entries differ by a factor 1 - beta, beta >= 1e-4 at the
    head and >= beta_end = 0.02 (or 0.999 for cosine) at the tail."""
    ours = schedule.alpha_bar[1:]  # diffusers' alphas_cumprod[i] is our alpha_bar[i + 1]
    theirs = alphas_cumprod.double()
    assert theirs.shape == ours.shape
    assert ((theirs - ours).abs() / ours).max() < 1e-4
    assert (theirs - ours).abs().max() < 1e-6


# --- export: diffusers reads our config -------------------------------------------------------------

@pytest.mark.parametrize("T", [1000, 50])
@pytest.mark.parametrize("name", SHARED + ["sigmoid_alpha_bar", "custom"])
@pytest.mark.parametrize("cls", SCHEDULERS, ids=lambda c: c.__name__)
def test_diffusers_loads_our_config_with_the_same_alpha_bar(cls, name, T):
    if name == "custom":
        schedule = make_schedule(trained_betas=torch.linspace(1e-3, 0.05, T) ** 1.5)
    else:
        schedule = make_schedule(name, T)
    config = to_scheduler_config(schedule, "v_prediction", "leading")
    if name == "sigmoid" and cls is not diffusers.DDPMScheduler:
        # diffusers implements beta_schedule 'sigmoid' in DDPMScheduler only; the day another class gains it,
        # this fails and the alpha_bar comparison below should cover it too.
        with pytest.raises(NotImplementedError, match="sigmoid is not implemented"):
            cls.from_config(config)
        return
    ref = cls.from_config(config)
    assert_same_alpha_bar(ref.alphas_cumprod, schedule)
    assert ref.config.num_train_timesteps == T and ref.config.prediction_type == "v_prediction"
    assert ref.config.timestep_spacing == "leading"
    # A schedule diffusers does not name travels as its betas.
    assert (config["trained_betas"] is None) == (name in SHARED)


def test_export_writes_neutral_switches_and_diffusers_field_names():
    config = to_scheduler_config(make_schedule("linear", 1000), "epsilon")
    assert config == {"_class_name": "DDPMScheduler", "num_train_timesteps": 1000, "beta_schedule": "linear",
                      "trained_betas": None, "beta_start": 1e-4, "beta_end": 0.02, "prediction_type": "epsilon",
                      "timestep_spacing": "trailing", "variance_type": "fixed_small", "steps_offset": 0,
                      "clip_sample": False, "thresholding": False, "rescale_betas_zero_snr": False}
    # Every field is one DDPMScheduler takes (diffusers would warn about and drop any other).
    accepted = set(diffusers.DDPMScheduler.from_config(config).config)
    assert set(config) - {"_class_name"} <= accepted


@pytest.mark.parametrize("name", SHARED + ["sigmoid_alpha_bar"])
@pytest.mark.parametrize("prediction_type", ["epsilon", "sample", "v_prediction"])
def test_our_config_round_trips(name, prediction_type):
    schedule = make_schedule(name, 100)
    back = from_scheduler_config(to_scheduler_config(schedule, prediction_type, "linspace", "fixed_large"))
    assert torch.equal(back.schedule.betas, schedule.betas)  # JSON floats keep every digit of float64
    assert (back.prediction_type, back.timestep_spacing, back.variance_type) == (prediction_type, "linspace",
                                                                                 "fixed_large")


# --- import: we read what diffusers writes ----------------------------------------------------------

@pytest.mark.parametrize("cls, kwargs", [
    (diffusers.DDPMScheduler, dict(clip_sample=False, beta_schedule="scaled_linear", beta_start=0.00085,
                                   beta_end=0.012, prediction_type="v_prediction", timestep_spacing="trailing")),
    (diffusers.DDPMScheduler, dict(clip_sample=False, beta_schedule="sigmoid", variance_type="fixed_large_log")),
    (diffusers.DDPMScheduler, dict(clip_sample=False, trained_betas=torch.linspace(1e-3, 0.03, 300).tolist(),
                                   num_train_timesteps=300)),
    (diffusers.DDIMScheduler, dict(clip_sample=False, beta_schedule="squaredcos_cap_v2", prediction_type="sample",
                                   num_train_timesteps=500)),
    (diffusers.DDIMScheduler, dict(clip_sample=False, steps_offset=1, timestep_spacing="trailing")),
    (diffusers.PNDMScheduler, dict(set_alpha_to_one=True, skip_prk_steps=True)),
    (diffusers.DPMSolverMultistepScheduler, dict(solver_order=3, use_karras_sigmas=True,
                                                 algorithm_type="sde-dpmsolver++")),
    (diffusers.DPMSolverSinglestepScheduler, dict(beta_schedule="squaredcos_cap_v2")),
    (diffusers.EulerDiscreteScheduler, dict(prediction_type="v_prediction", timestep_spacing="leading")),
    (diffusers.HeunDiscreteScheduler, dict()),
    (diffusers.UniPCMultistepScheduler, dict(beta_schedule="scaled_linear")),
    (diffusers.LMSDiscreteScheduler, dict()),
    (diffusers.DEISMultistepScheduler, dict()),
    (diffusers.EulerAncestralDiscreteScheduler, dict(timestep_spacing="trailing")),
    (diffusers.KDPM2DiscreteScheduler, dict(beta_schedule="scaled_linear")),
    (diffusers.SASolverScheduler, dict(predictor_order=3)),
])
def test_configs_diffusers_writes_are_read(tmp_path, cls, kwargs):
    ref = cls(**kwargs)
    ref.save_config(tmp_path)
    got = read_scheduler_config(tmp_path)  # a folder is read through its scheduler_config.json
    assert_same_alpha_bar(ref.alphas_cumprod, got.schedule)
    assert got.prediction_type == ref.config.prediction_type
    assert got.timestep_spacing == ref.config.get("timestep_spacing", "linspace")
    assert got.variance_type == {"fixed_large_log": "fixed_large"}.get(kwargs.get("variance_type"), "fixed_small")
    # diffusers' own copy of the file goes into DDPMScheduler with the same table (our export target).
    assert_same_alpha_bar(diffusers.DDPMScheduler.from_config(json.loads((tmp_path / CONFIG_NAME).read_text()))
                          .alphas_cumprod, got.schedule)


def test_absent_fields_take_diffusers_defaults():
    """An old hub-style DDPM config without timestep_spacing / prediction_type: DDPMScheduler then uses
    leading and epsilon; its absent clip_sample would be true (refused, saying it is the default)."""
    config = {"_class_name": "DDPMScheduler", "num_train_timesteps": 1000, "beta_schedule": "linear",
              "beta_start": 0.0001, "beta_end": 0.02, "clip_sample": False}
    ref = diffusers.DDPMScheduler.from_config(config)
    got = from_scheduler_config(config)
    assert (got.prediction_type, got.timestep_spacing) == (ref.config.prediction_type, ref.config.timestep_spacing)
    assert_same_alpha_bar(ref.alphas_cumprod, got.schedule)
    config.pop("clip_sample")
    assert diffusers.DDPMScheduler.from_config(config).config.clip_sample is True
    with pytest.raises(InputError, match="clip_sample = true \\(DDPMScheduler's default when absent\\)"):
        from_scheduler_config(config)
    # A DPM-Solver config never has clip_sample and its grid defaults to linspace.
    got = from_scheduler_config({"_class_name": "DPMSolverMultistepScheduler", "num_train_timesteps": 10,
                                 "beta_schedule": "squaredcos_cap_v2"})
    assert got.timestep_spacing == "linspace" and got.schedule.T == 10


@pytest.mark.parametrize("cls, switch", [(diffusers.DDPMScheduler, "clip_sample = true"),
                                         (diffusers.DDIMScheduler, "clip_sample = true"),
                                         (diffusers.PNDMScheduler, "set_alpha_to_one = false")])
def test_diffusers_default_configs_are_read_with_their_sampling_switches_ignored(tmp_path, cls, switch):
    """diffusers' own defaults turn on a switch of its sampling loop: refused by default (one line), read with
    sampling_switches='ignore', which names it; the schedule is diffusers' linear one either way."""
    ref = cls()
    ref.save_config(tmp_path)
    with pytest.raises(InputError) as info:
        read_scheduler_config(tmp_path)
    assert str(info.value).startswith(f"scheduler config {switch} is not supported") and "\n" not in str(info.value)
    got = read_scheduler_config(tmp_path, sampling_switches="ignore")
    assert got.ignored == (switch.split()[0],)
    assert torch.equal(got.schedule.betas, torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64))  # linear, as made
    assert_same_alpha_bar(ref.alphas_cumprod, got.schedule)
    assert (got.prediction_type, got.timestep_spacing, got.variance_type) == ("epsilon", "leading", "fixed_small")


# --- refusals -----------------------------------------------------------------------------------------

BASE = to_scheduler_config(make_schedule("linear", 1000), "epsilon")


@pytest.mark.parametrize("edit, needle", [
    (dict(rescale_betas_zero_snr=True), "rescale_betas_zero_snr = true is not supported; supported: false"),
    (dict(thresholding=True), "thresholding = true is not supported; supported: false"),
    (dict(clip_sample=True), "clip_sample = true is not supported; supported: false"),
    (dict(set_alpha_to_one=False), "set_alpha_to_one = false is not supported; supported: true"),
    (dict(timestep_type="continuous"), "timestep_type = \"continuous\" is not supported"),
    (dict(use_flow_sigmas=True), "use_flow_sigmas = true is not supported"),
    (dict(beta_schedule="laplace"), "beta_schedule = \"laplace\" is not supported; supported: linear, scaled_linear"),
    (dict(beta_schedule="sigmoid_alpha_bar"), "beta_schedule = \"sigmoid_alpha_bar\" is not supported"),
    (dict(steps_offset=1, timestep_spacing="leading"), "steps_offset = 1 with timestep_spacing 'leading'"),
    (dict(timestep_spacing="sideways"), "timestep_spacing = \"sideways\" is not supported; supported: linspace"),
    (dict(prediction_type="flow_prediction"), "unknown prediction_type 'flow_prediction'"),
    (dict(variance_type="learned"), "variance_type = \"learned\" is not supported; supported: fixed_small"),
    (dict(variance_type=["fixed_small"]), "variance_type = [\"fixed_small\"] is not supported"),
    (dict(num_train_timesteps=0), "num_train_timesteps must be an integer >= 1, got 0"),
    (dict(num_train_timesteps=10.5), "num_train_timesteps must be an integer >= 1, got 10.5"),
    (dict(beta_start="0.0001"), "beta_start must be a number, got \"0.0001\""),
    (dict(beta_end=1.5), "every beta must lie in the open interval (0, 1)"),
    (dict(trained_betas=[0.1, 0.2]), "2 trained_betas but num_train_timesteps = 1000"),
    (dict(trained_betas="0.1"), "trained_betas must be a list of numbers or null"),
    (dict(trained_betas=[0.1, None]), "trained_betas must be a list of numbers or null"),
    (dict(sigma_data=0.5, rho=7.0), "unsupported scheduler config field(s) 'rho', 'sigma_data'"),
    (dict(original_inference_steps=50), "unsupported scheduler config field(s) 'original_inference_steps'"),
])
def test_unsupported_values_are_one_clear_error(edit, needle):
    with pytest.raises(InputError) as info:
        from_scheduler_config(BASE | edit)
    message = str(info.value)
    assert needle in message and "\n" not in message, message


def test_ignored_fields_do_not_matter():
    """Solver fields and the settings of refused switches change nothing we read."""
    solver = dict(solver_order=3, use_karras_sigmas=True, final_sigmas_type="sigma", clip_sample_range=2.0,
                  sample_max_value=5.0, lower_order_final=False, _diffusers_version="0.0.1", _use_default_values=["x"],
                  steps_offset=1)  # steps_offset only shifts the leading grid; BASE is trailing
    a, b = from_scheduler_config(BASE), from_scheduler_config(BASE | solver)
    assert torch.equal(a.schedule.betas, b.schedule.betas) and a[1:] == b[1:]


def test_ignoring_sampling_switches_names_each_and_still_refuses_the_models():
    on = BASE | dict(clip_sample=True, thresholding=True, set_alpha_to_one=False, steps_offset=1,
                     timestep_spacing="leading")
    assert from_scheduler_config(on, "ignore").ignored == ("clip_sample", "thresholding", "set_alpha_to_one",
                                                           "steps_offset")
    assert from_scheduler_config(BASE, "ignore").ignored == from_scheduler_config(BASE).ignored == ()
    for switch in (dict(rescale_betas_zero_snr=True), dict(timestep_type="continuous"), dict(use_flow_sigmas=True)):
        with pytest.raises(InputError, match=f"{next(iter(switch))} = .* is not supported"):
            from_scheduler_config(on | switch, "ignore")
    with pytest.raises(InputError, match="unknown sampling_switches 'warn'; known: refuse, ignore"):
        from_scheduler_config(BASE, "warn")


@pytest.mark.parametrize("content, needle", [
    (None, "does not exist"),
    ("{not json", "is not readable JSON"),
    ("[1, 2]", "holds a JSON list, not a scheduler config object"),
    ("\"linear\"", "holds a JSON str, not a scheduler config object"),
])
def test_read_refuses_missing_and_malformed_files(tmp_path, content, needle):
    path = tmp_path / CONFIG_NAME
    if content is not None:
        path.write_text(content)
    with pytest.raises(InputError, match=needle):
        read_scheduler_config(path)


def test_write_is_atomic_and_checks_its_folder(tmp_path):
    schedule = make_schedule("squaredcos_cap_v2", 100)
    path = write_scheduler_config(tmp_path, schedule, "v_prediction")
    assert path == tmp_path / CONFIG_NAME
    assert json.loads(path.read_text()) == to_scheduler_config(schedule, "v_prediction")
    before = path.read_bytes()
    with pytest.raises(InputError, match="unknown prediction_type"):
        write_scheduler_config(path, schedule, "noise")
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == [CONFIG_NAME]
    with pytest.raises(InputError, match="is not a directory"):
        write_scheduler_config(tmp_path / "missing" / CONFIG_NAME, schedule, "epsilon")


def test_saved_model_folder_carries_a_diffusers_scheduler_config(tmp_path):
    schedule = make_schedule("squaredcos_cap_v2", 50)
    model = SavedModel(MLP(2, 50, width=16, depth=1, emb_dim=8), schedule, "v_prediction",
                       Standardize.identity(2), "moons")
    folder = model.save(tmp_path / "model")
    ref = diffusers.DDPMScheduler.from_pretrained(folder)  # what a diffusers user would call (offline)
    assert_same_alpha_bar(ref.alphas_cumprod, schedule)
    assert ref.config.prediction_type == "v_prediction"
    got = read_scheduler_config(folder)
    assert torch.equal(got.schedule.betas, schedule.betas) and got.prediction_type == "v_prediction"


# --- a diffusers UNet driven by our samplers -------------------------------------------------------------

T, K = 1000, 10


@pytest.fixture(scope="module")
def unet():
    """A tiny UNet2DModel with random weights in float64 (8x8, one channel, two levels)."""
    torch.manual_seed(0)
    return diffusers.UNet2DModel(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 16),
                                 layers_per_block=1, norm_num_groups=8, down_block_types=("DownBlock2D",) * 2,
                                 up_block_types=("UpBlock2D",) * 2).double().eval()


def recording(unet):
    """A forward pre-hook that records the timestep each UNet call receives; returns (list, handle)."""
    seen = []
    return seen, unet.register_forward_pre_hook(lambda module, args: seen.append(args[1].clone()))


def diffusers_loop(unet, scheduler, x_T, **step_kw):
    """diffusers' sampling loop: model output at each timestep, then scheduler.step."""
    x = x_T.clone()
    for i in scheduler.timesteps:
        x = scheduler.step(unet(x, i).sample, i, x, **step_kw).prev_sample
    return x


def reference(cls, schedule, prediction_type):
    """A diffusers scheduler from our exported config, with our float64 alpha_bar table: diffusers'
    float32 table alone differs by up to 4e-7 (above), which the 1/sqrt(abar_T) = 158 of the first eps
    step amplifies (measured 5e-5 after DDIM with epsilon, 7e-7 with v); with the same table the
    comparison checks the algorithm."""
    ref = cls.from_config(to_scheduler_config(schedule, prediction_type, "trailing"))
    ref.alphas_cumprod = schedule.alpha_bar[1:].clone()
    ref.set_timesteps(K)
    return ref


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_ddim_drives_a_unet_like_diffusers(unet, prediction_type):
    """Same UNet, same x_T, DDIM (eta = 0) on the trailing grid: measured max difference 2e-13 (epsilon:
    x0_hat = (x - s eps) / a with a = 0.006 at T) and 2e-15 (v), float64; 1e-5 is the issue's bar."""
    schedule = make_schedule("linear", T)
    x_T = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    ref = reference(diffusers.DDIMScheduler, schedule, prediction_type)
    theirs_t, hook = recording(unet)
    with torch.no_grad():
        theirs = diffusers_loop(unet, ref, x_T)
        hook.remove()
        ours_t, hook = recording(unet)
        ours = ddim(as_denoiser(ForeignModel(unet), schedule, prediction_type), x_T, schedule,
                    timestep_grid(schedule, K, "trailing"))
        hook.remove()
    assert (ours - theirs).abs().max() <= 1e-5
    assert theirs.std() > 0.1  # not a degenerate output
    # The t - 1 convention: the UNet receives exactly diffusers' timesteps (999, 899, ..., 99), each sample.
    assert [int(i) for i in theirs_t] == list(range(999, 0, -100))
    assert len(ours_t) == K
    for i, t in zip(theirs_t, ours_t):
        assert torch.equal(t, torch.full((4,), float(i), dtype=torch.float64))


def test_ddpm_drives_a_unet_like_diffusers(unet):
    """Ancestral DDPM (fixed_small = beta_tilde) with the same generator seed: both draw the same noise
    in the same order (one randn of x's shape and dtype per step with noise). The last step's variance is
    0; diffusers clamps it to 1e-20 and still adds 1e-10 x noise, ours adds none: measured 3e-10."""
    schedule = make_schedule("linear", T)
    x_T = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    ref = reference(diffusers.DDPMScheduler, schedule, "epsilon")
    with torch.no_grad():
        theirs = diffusers_loop(unet, ref, x_T, generator=torch.Generator().manual_seed(3))
        ours = ddpm(as_denoiser(ForeignModel(unet), schedule, "epsilon"), x_T, schedule,
                    timestep_grid(schedule, K, "trailing"), generator=torch.Generator().manual_seed(3))
        other_noise = ddpm(as_denoiser(ForeignModel(unet), schedule, "epsilon"), x_T, schedule,
                           timestep_grid(schedule, K, "trailing"), generator=torch.Generator().manual_seed(4))
    assert (ours - theirs).abs().max() <= 1e-5
    assert (other_noise - theirs).abs().max() > 0.1  # the noise matters: the match is not vacuous


class Doubler(nn.Module):
    """A plain module returning a tensor; it records what it is called with."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def forward(self, x, timestep, **kwargs):
        self.calls.append((timestep, kwargs))
        return 2 * x


def test_plain_module_and_conditioning():
    inner = Doubler()
    net = ForeignModel(inner, cond_kwarg="class_labels")
    x, t = torch.ones(3, 2), torch.tensor([1.0, 2.5, 1000.0])
    assert torch.equal(net(x, t), 2 * x)
    assert torch.equal(inner.calls[0][0], t - 1) and inner.calls[0][1] == {}
    labels = torch.tensor([0, 1, 2])
    net(x, t, cond=labels)
    assert inner.calls[1][1] == {"class_labels": labels}
    with pytest.raises(InputError, match="takes no conditioning"):
        ForeignModel(inner)(x, t, cond=labels)
