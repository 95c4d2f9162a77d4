"""Issue 11, Python: ``load_model(path).sample(n, ...)`` draws in the data's units exactly what ``gaussdiff sample``
writes with the same settings (same defaults, classes, guidance, sampler options); sample i depends on (seed, i) and
not on the batch size; a conditional model draws the class asked for (the exact per-component denoiser of
8gaussians, by name or index); bad arguments raise the command's InputError."""

import numpy as np
import pytest
import torch
from torch import nn

from gaussdiff.cli import main
from gaussdiff.data import Standardize
from gaussdiff.data.toys import CLASSES, eight_gaussians_params
from gaussdiff.errors import InputError
from gaussdiff.mixture import GaussianMixture
from gaussdiff.nets import MLP
from gaussdiff.saved import SavedModel, class_conditioning, load_model
from gaussdiff.schedule import make_schedule

from test_cli import one_line_error

T = 20


def mlp_model(classes=None, label_dropout=0.2, seed=0) -> SavedModel:
    """A random 3-D MLP model over columns a, b, c of float32 data with a non-trivial standardization, class-conditional
    over ``classes`` if given."""
    torch.manual_seed(seed)
    net = MLP(3, T, width=16, depth=1, emb_dim=8, num_classes=len(classes or []))
    conditioning = class_conditioning(classes, label_dropout) if classes else None
    return SavedModel(net, make_schedule("linear", T), "epsilon", Standardize([10.0, -3.0, 100.0], [5.0, 0.5, 20.0]),
                      "t.csv", conditioning=conditioning, columns=["a", "b", "c"], data_dtype="float32")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("api")
    return {"plain": mlp_model().save(root / "plain"), "classes": mlp_model(["lo", "hi"]).save(root / "classes"),
            "no_dropout": mlp_model(["lo", "hi"], label_dropout=0.0).save(root / "no_dropout")}


# --- the same numbers as the command

@pytest.mark.parametrize("model, kwargs, flags", [
    ("plain", {}, []),  # the defaults: ddpm, min(100, T) trailing steps, seed 0
    ("plain", dict(sampler="ddim", steps=7, eta=0.5, seed=3, batch_size=4),
     ["--sampler", "ddim", "--steps", "7", "--eta", "0.5", "--seed", "3", "--batch-size", "4"]),
    ("plain", dict(sampler="dpmpp_2m", steps=6, spacing="karras", rho=5.0, seed=9),
     ["--sampler", "dpmpp_2m", "--steps", "6", "--spacing", "karras", "--rho", "5", "--seed", "9"]),
    ("plain", dict(sampler="ddpm", steps=5, variance="beta"), ["--steps", "5", "--variance", "beta"]),
    ("classes", dict(classes=["hi", 0], steps=5, seed=1), ["--class", "hi", "0", "--steps", "5", "--seed", "1"]),
    ("classes", dict(classes="lo", guidance=2.5, guidance_rescale=0.5, steps=5),
     ["--class", "lo", "--guidance", "2.5", "--guidance-rescale", "0.5", "--steps", "5"]),
])
def test_sample_returns_what_the_command_writes(models, tmp_path, model, kwargs, flags):
    out = tmp_path / "s.npy"
    assert main(["sample", str(models[model]), "-n", "11", "--out", str(out), *flags]) == 0
    x = load_model(models[model]).sample(11, **kwargs)
    written = np.load(out)
    assert x.dtype == torch.float32 and written.dtype == np.float32
    assert np.array_equal(x.numpy(), written)


def test_the_seed_decides_the_samples(models):
    model = load_model(models["plain"])
    a, b, c = (model.sample(40, steps=5, seed=s) for s in (4, 4, 5))
    assert torch.equal(a, b) and not torch.isclose(a, c).any(dim=1).all()
    assert len(torch.unique(a, dim=0)) == 40


def test_samples_do_not_depend_on_the_batch_size(models):
    """Rows 0..9 of a set of 30 drawn in batches of 7 are the set of 10 drawn at once: sample i's noise is a function
    of (seed, i). The network sees other batch shapes, so the values agree to float32 matmul rounding: 1e-4 in units
    whose scales are 5, 0.5 and 20 (a different noise draw moves a sample by about one scale)."""
    model = load_model(models["classes"])
    whole = model.sample(10, sampler="ddpm", steps=8, seed=2, classes="hi")
    cut = model.sample(30, sampler="ddpm", steps=8, seed=2, classes="hi", batch_size=7)
    torch.testing.assert_close(cut[:10], whole, rtol=0, atol=1e-4)
    assert (cut[10:20] - whole).abs().amax() > 0.1


def test_progress_bar_is_opt_in(models, capsys):
    model = load_model(models["plain"])
    model.sample(3, steps=4)
    assert capsys.readouterr().err == ""
    model.sample(3, steps=4, progress=True)
    assert "sample" in capsys.readouterr().err


def test_device_cpu_gives_the_default_numbers(models):
    model = load_model(models["plain"])
    assert torch.equal(model.sample(6, steps=4, device="cpu"), model.sample(6, steps=4))


# --- conditional sampling: the exact class-conditional model

class ComponentOracle(nn.Module):
    """The exact x0 estimate of 8gaussians' component cond["class"] for each row: the network of a model that predicts
    x0 ("sample") and knows each class's distribution exactly."""

    def __init__(self, schedule):
        super().__init__()
        self.mixture, self.schedule = GaussianMixture(*eight_gaussians_params()), schedule
        self.anchor = nn.Parameter(torch.zeros(()))  # where the model lives (its device)
        self.config = {"kind": "oracle", "sample_shape": [2], "num_classes": 8, "cond_keys": ["class"]}

    def forward(self, x_t, t, cond=None):
        out = torch.empty_like(x_t)
        for k in cond["class"].unique().tolist():
            rows = cond["class"] == k
            out[rows] = self.mixture.component(k).denoiser(self.schedule)(x_t[rows].double(), t[rows]).to(x_t.dtype)
        return out


def test_a_conditional_model_draws_the_class_asked_for():
    """200 samples of each class by name and 200 by index, from the exact per-component denoiser: the nearest of the 8
    means is the class's. Adjacent means lie 3.06 mode std apart from their midline, so even exact samples of a mode
    land nearer a neighbour with probability 2 P(Z > 3.06) = 0.22 %: 200 draws err about 0.4 times; >= 98 % correct
    leaves room for the sampler's error (100 ddpm steps) and a 4-sigma binomial fluctuation."""
    schedule = make_schedule("linear", 1000)
    names = CLASSES["8gaussians"]
    model = SavedModel(ComponentOracle(schedule), schedule, "sample", Standardize.identity(2), "8gaussians",
                       conditioning=class_conditioning(names, 0.0), columns=["x", "y"], data_dtype="float32")
    means = eight_gaussians_params()[1].float()
    for k, name in enumerate(names):
        for which in (name, k):
            x = model.sample(200, classes=which, seed=k)
            nearest = torch.cdist(x, means).argmin(dim=1)
            assert (nearest == k).float().mean() >= 0.98, (name, which)
    both = model.sample(50, classes=["N", "S"], seed=1)  # n per class, class after class
    assert both.shape == (100, 2)
    assert torch.cdist(both[:50], means).argmin(1).eq(2).all() and torch.cdist(both[50:], means).argmin(1).eq(3).all()


# --- errors: the command's messages

@pytest.mark.parametrize("model, kwargs, flags", [
    ("plain", dict(sampler="nope"), ["--sampler", "nope"]),
    ("plain", dict(sampler="ddpm", eta=0.5), ["--eta", "0.5"]),
    ("plain", dict(classes="lo"), ["--class", "lo"]),
    ("plain", dict(guidance=2.0), ["--guidance", "2"]),
    ("plain", dict(clip_x0=True), ["--clip-x0"]),
    ("plain", dict(spacing="cubic"), ["--spacing", "cubic"]),
    ("plain", dict(seed=2**32), ["--seed", str(2**32)]),
    ("classes", dict(classes=["lo", "middle"]), ["--class", "lo", "middle"]),
    ("classes", dict(classes=2), ["--class", "2"]),
    ("classes", dict(guidance=3.0), ["--guidance", "3"]),
    ("classes", dict(classes="hi", guidance_rescale=2.0), ["--class", "hi", "--guidance-rescale", "2"]),
    ("no_dropout", dict(classes="hi", guidance=3.0), ["--class", "hi", "--guidance", "3"]),
])
def test_bad_arguments_raise_the_commands_message(models, tmp_path, capsys, model, kwargs, flags):
    line = one_line_error(capsys, ["sample", models[model], "-n", "3", "--steps", "2", "--out", tmp_path / "s.npy",
                                   *flags])
    with pytest.raises(InputError) as error:
        load_model(models[model]).sample(3, steps=2, **kwargs)
    assert str(error.value) == line.removeprefix("gaussdiff sample: error: ")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("kwargs, message", [
    (dict(n=0), "n must be an integer >= 1, got 0"),
    (dict(n=2.5), "n must be an integer >= 1, got 2.5"),
    (dict(steps=0), "steps must be an integer >= 1, got 0"),
    (dict(batch_size=True), "batch_size must be an integer >= 1, got True"),
    (dict(seed=-1), "the seed must be an integer in [0, 4294967295], got -1"),
])
def test_bad_numbers_name_the_keyword(models, kwargs, message):
    model = load_model(models["plain"])
    with pytest.raises(InputError) as error:
        model.sample(**({"n": 3} | kwargs))
    assert str(error.value) == message
