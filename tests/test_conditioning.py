"""Class conditioning through the stack (issue 12): data labels, label dropout, class embeddings, the saved model's
conditioning, and classifier-free guidance checked against the exact mixture oracle."""

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from gaussdiff.data import load_dataset
from gaussdiff.data.toys import BUILTIN, CLASSES, eight_gaussians_params, labeled
from gaussdiff.errors import InputError
from gaussdiff.metrics import sliced_w2
from gaussdiff.mixture import GaussianMixture
from gaussdiff.nets import MLP, UNet, build_network, unet_config
from gaussdiff.param import as_denoiser
from gaussdiff.samplers import generate
from gaussdiff.samplers.guidance import classifier_free
from gaussdiff.saved import SavedModel, class_conditioning, load_model
from gaussdiff.schedule import make_schedule
from gaussdiff.train import TrainConfig, train
from gaussdiff.train.batches import GlobalBatches
from gaussdiff.transforms import Standardize

SCHEDULE = make_schedule("linear", 100, 1e-4, 0.2)  # T = 100 keeps oracle sampling fast


# --- data ------------------------------------------------------------------------------------------

def test_built_in_classes_are_the_generating_components():
    """8gaussians' label k names the component a point was drawn from: the points of label k have component k's mean
    and std (per axis 0.174 in standardized units; about 500 points each, so the mean is within 4 sd = 0.031 and the
    std within 15 %)."""
    x, labels = labeled("8gaussians", 4000, 5)
    _, means, covs = eight_gaussians_params()
    for k in range(8):
        points = x[labels == k].double()
        assert (points.mean(0) - means[k]).abs().max() < 4 * covs[k, 0, 0].sqrt() / math.sqrt(len(points))
        assert (points.std(0) / covs[k].diagonal().sqrt() - 1).abs().max() < 0.15
    assert torch.equal(x, BUILTIN["8gaussians"](4000, 5))  # the same draws as without labels
    assert len(CLASSES["8gaussians"]) == 8 and labeled("swiss_roll", 10)[1] is None


def test_dataset_hands_out_classes_only_when_conditional():
    plain, cond = load_dataset("moons", 500, 1), load_dataset("moons", 500, 1, class_conditional=True)
    rows = torch.tensor([3, 1, 4])
    assert plain.get(rows).cond == {}
    assert torch.equal(cond.get(rows).cond["class"], labeled("moons", 500, 1)[1][rows])
    assert torch.equal(cond.get(rows).x, plain.get(rows).x)
    with pytest.raises(InputError, match="needs class labels"):
        load_dataset("swiss_roll", 100, 0, class_conditional=True)


def _table(tmp_path, header="a,label,b"):
    rng = np.random.default_rng(0)
    rows = np.column_stack([rng.normal(size=60), rng.integers(3, 6, 60), rng.normal(size=60)])
    path = tmp_path / "t.csv"
    path.write_text(header + "\n" + "\n".join(",".join(repr(float(v)) for v in row) for row in rows))
    return path, rows


def test_label_column_by_name_or_number(tmp_path):
    path, rows = _table(tmp_path)
    for column in ("label", "1"):
        data = load_dataset(path, class_conditional=True, label_column=column)
        assert data.classes == ["3", "4", "5"] and data.sample_shape == (2,)
        assert torch.equal(data.labels, torch.from_numpy(rows[:, 1].astype(np.int64) - 3))
        assert torch.allclose(data.transform.inverse(data.get(torch.arange(60)).x.double()),
                              torch.from_numpy(rows[:, [0, 2]]), atol=1e-5)


@pytest.mark.parametrize("column, needle", [("nope", "no label column 'nope' (its columns are a, label, b)"),
                                            ("a", "non-integer values"), ("7", "no label column '7'")])
def test_bad_label_column_is_one_line(tmp_path, column, needle):
    path, _ = _table(tmp_path)
    with pytest.raises(InputError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        load_dataset(path, class_conditional=True, label_column=column)


def test_label_dropout_draws_are_bernoulli_and_leave_the_stream_alone():
    """Dropped labels are Bernoulli(p): over 20 steps x 512 draws the share is within 4 sd of p (sd =
    sqrt(p (1 - p) / n) = 0.0030); t and eps are what a run without dropout draws."""
    b = GlobalBatches(1000, 512, 1, seed=4)
    drops = torch.cat([b.t_and_noise(s, 50, (2,), label_dropout=0.2)[3] for s in range(20)]).double()
    assert abs(drops.mean().item() - 0.2) < 4 * math.sqrt(0.2 * 0.8 / drops.numel())
    with_drop, without = b.t_and_noise(7, 50, (2,), label_dropout=0.2), b.t_and_noise(7, 50, (2,))
    assert all(torch.equal(u, v) for u, v in zip(with_drop[:3], without[:3])) and without[3] is None


# --- networks --------------------------------------------------------------------------------------

@pytest.mark.parametrize("make", [lambda K: MLP(2, 100, width=16, depth=1, emb_dim=8, num_classes=K),
                                  lambda K: UNet(**{k: v for k, v in unet_config([1, 8, 8], 100, num_classes=K).items()
                                                    if k not in ("kind", "cond_keys")})])
def test_class_embedding_null_label_and_refusals(make):
    torch.manual_seed(0)
    net = make(3)
    for p in net.parameters():  # the UNet's output layer starts at zero: make every layer matter
        nn.init.normal_(p, std=0.3)
    shape = (4, *net.config["sample_shape"])
    x, t = torch.randn(shape), torch.full((4,), 30.0)
    out = {k: net(x, t, {"class": torch.full((4,), k)}) for k in range(4)}
    assert torch.equal(net(x, t), out[3])  # no class = the null label K
    assert not torch.allclose(out[0], out[1])
    assert net.config["cond_keys"] == ["class"] and build_network(net.config).config == net.config
    with pytest.raises(InputError, match="values must lie in 0..3"):
        net(x, t, {"class": torch.full((4,), 4)})
    with pytest.raises(InputError, match=r"does not consume condition key\(s\) mask"):
        net(x, t, {"mask": x})
    with pytest.raises(InputError, match=r"does not consume condition key\(s\) class; it uses: none"):
        make(0)(x, t, {"class": torch.zeros(4, dtype=torch.long)})


# --- classifier-free guidance on the exact oracle ----------------------------------------------------

class OracleNet(nn.Module):
    """A 'network' predicting x_0 exactly: for label k < K the denoiser of component k of the mixture, for the null
    label K the whole mixture's. With prediction_type 'sample' it is the exact class-conditional model."""

    def __init__(self, mixture: GaussianMixture, schedule=SCHEDULE):
        super().__init__()
        self.mixture, self.schedule = mixture, schedule
        K = len(mixture.weights)
        self.config = dict(kind="oracle", sample_shape=[mixture.dim], num_classes=K, cond_keys=["class"])
        self.parts = [mixture.component(k) for k in range(K)] + [mixture]

    def forward(self, x, t, cond=None):
        labels = cond["class"] if cond else torch.full((len(x),), len(self.parts) - 1)
        ab = self.schedule.alpha_bar_at(t.double())
        out = torch.empty_like(x, dtype=torch.float64)
        for k in labels.unique().tolist():
            rows = labels == k
            out[rows] = self.parts[k].posterior_x0_mean(x[rows].double(), ab[rows])
        return out.to(x)


def _ring():
    return GaussianMixture(*eight_gaussians_params())


def _conditional(net):
    return lambda cond: as_denoiser(net, SCHEDULE, "sample", cond=cond)


def test_guidance_at_1_and_0_is_the_conditional_and_the_unconditional_model():
    """s = 1 gives the conditional denoiser, s = 0 the unconditional one; the oracle computes in float64, so the
    batched call equals two calls to float64 rounding (1e-12)."""
    net, x, t = OracleNet(_ring()), torch.randn(6, 2, dtype=torch.float64), 40.0
    labels = torch.tensor([0, 1, 2, 3, 4, 5])
    cond, uncond = _conditional(net)({"class": labels})(x, t), _conditional(net)(None)(x, t)
    for s, expected in ((1.0, cond), (0.0, uncond), (2.5, uncond + 2.5 * (cond - uncond))):
        got = classifier_free(_conditional(net), labels, 8, s, SCHEDULE)(x, t)
        assert torch.allclose(got, expected, atol=1e-12, rtol=0), s


def test_batched_guidance_equals_two_calls_of_a_trained_size_network():
    """The one batched forward of a real MLP equals the two separate ones to float32 rounding: outputs of order 1
    after three layers, so 1e-5 absolute (float32 epsilon 1.2e-7 times the few hundred terms of a dot product)."""
    torch.manual_seed(1)
    net = MLP(2, 100, width=64, depth=3, emb_dim=32, num_classes=4)
    for p in net.parameters():
        nn.init.normal_(p, std=0.2)
    x, labels = torch.randn(16, 2), torch.randint(0, 4, (16,))
    cond = as_denoiser(net, SCHEDULE, "v_prediction", cond={"class": labels})(x, 50.0)
    uncond = as_denoiser(net, SCHEDULE, "v_prediction")(x, 50.0)
    guided = classifier_free(lambda c: as_denoiser(net, SCHEDULE, "v_prediction", cond=c), labels, 4, 3.0,
                             SCHEDULE)(x, 50.0)
    assert torch.allclose(guided, uncond + 3 * (cond - uncond), atol=1e-5, rtol=0)


def test_guidance_interval_and_rescale():
    """Outside (lo, hi] the conditional model alone is used; rescale with phi = 1 gives each sample the conditional
    estimate's std, phi = 0 is plain guidance."""
    net, x, labels = OracleNet(_ring()), torch.randn(5, 2, dtype=torch.float64) * 3, torch.arange(5)
    sigma = lambda t: math.sqrt(1 / SCHEDULE.alpha_bar_at(torch.tensor(float(t))).item() - 1)
    inside, outside = 60, 5  # sigma(60) ~ 1.8, sigma(5) ~ 0.1
    window = (0.5, 10.0)
    assert window[0] < sigma(inside) <= window[1] and sigma(outside) <= window[0]
    guided = classifier_free(_conditional(net), labels, 8, 4.0, SCHEDULE, interval=window)
    plain = classifier_free(_conditional(net), labels, 8, 4.0, SCHEDULE)
    cond = _conditional(net)({"class": labels})
    assert torch.equal(guided(x, outside), cond(x, outside))
    assert torch.equal(guided(x, inside), plain(x, inside))
    t_window = classifier_free(_conditional(net), labels, 8, 4.0, SCHEDULE, interval=(10, 100), unit="t")
    assert torch.equal(t_window(x, outside), cond(x, outside)) and torch.equal(t_window(x, inside), plain(x, inside))
    full = classifier_free(_conditional(net), labels, 8, 4.0, SCHEDULE, rescale=1.0)(x, inside)
    assert torch.allclose(full.std(1), cond(x, inside).std(1), rtol=1e-12)
    none = classifier_free(_conditional(net), labels, 8, 4.0, SCHEDULE, rescale=0.0)(x, inside)
    assert torch.equal(none, plain(x, inside))


def _blobs():
    """Three 2-D components with full covariances, wide enough (std >= 0.45) that ancestral sampling on 250 steps
    with the exact denoiser is near the floor (1.0-1.3x here; on 8gaussians' std-0.17 components it is 2.6x at 100
    steps, the sampler's own error)."""
    covs = [[[0.5, 0.2], [0.2, 0.3]], [[0.3, -0.1], [-0.1, 0.4]], [[0.6, 0.0], [0.0, 0.2]]]
    return GaussianMixture([0.3, 0.3, 0.4], [[-2.0, 0.0], [2.0, 1.0], [0.0, -2.0]], covs)


@pytest.mark.slow
def test_conditional_sampling_reproduces_the_component():
    """Sampling class k through the conditional path (cond dict -> network -> denoiser -> ddpm, 250 steps) gives
    component k: SW2 to fresh draws of component k within 1.5x the floor (two fresh sets of 2,000; mean over 10)."""
    mixture, n, schedule = _blobs(), 2000, make_schedule("linear", 1000, 1e-4, 0.02)
    net = OracleNet(mixture, schedule)
    for k in range(3):
        truth = mixture.component(k)
        denoiser = as_denoiser(net, schedule, "sample", cond={"class": torch.full((n,), k)})
        x = generate(denoiser, (n, 2), schedule, steps=250, seed=k, dtype=torch.float64)
        fresh = [truth.sample(n, torch.Generator().manual_seed(100 + i)) for i in range(22)]
        floor = np.mean([sliced_w2(fresh[2 * i], fresh[2 * i + 1]) for i in range(10)])
        assert sliced_w2(x, fresh[-1]) < 1.5 * floor, (k, sliced_w2(x, fresh[-1]), floor)


# --- saved models ------------------------------------------------------------------------------------

def _saved(tmp_path, dropout=0.1):
    net = MLP(2, 100, width=16, depth=1, emb_dim=8, num_classes=3)
    model = SavedModel(net, SCHEDULE, "v_prediction", Standardize.identity(2), "toy",
                       conditioning=class_conditioning(["cat", "dog", "owl"], dropout))
    return model.save(tmp_path / "m")


def test_saved_conditioning_round_trips_and_names_classes(tmp_path):
    model = load_model(_saved(tmp_path))
    assert model.conditioning == class_conditioning(["cat", "dog", "owl"], 0.1)
    assert [model.class_index(c) for c in ("dog", "0", "2")] == [1, 0, 2]
    for bad in ("3", "horse", "-1"):
        with pytest.raises(InputError, match="this model knows 3 classes, 0..2 = cat, dog, owl"):
            model.class_index(bad)


def test_conditioning_that_disagrees_with_the_network_is_refused(tmp_path):
    folder = _saved(tmp_path)
    config = json.loads((folder / "config.json").read_text())
    config["conditioning"]["num_classes"] = 5
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(InputError, match=r"config.json: the model's conditioning \(5 classes"):
        load_model(folder)


# --- training -------------------------------------------------------------------------------------

@pytest.mark.slow
def test_class_conditional_training_learns_each_component(tmp_path):
    """A small MLP trained 1,500 steps on 8gaussians with its components as classes: samples asked for class k fall
    in component k (the mixture's own responsibilities) at least 90 % of the time, where an unconditional model
    would reach 1/8; samples of the null label spread over all components (each 12.5 % +- 6 %)."""
    cfg = TrainConfig(data="8gaussians", out=str(tmp_path / "run"), steps=1500, n_data=20_000, width=64, depth=2,
                      num_train_timesteps=100, batch_size=256, class_conditional=True, label_dropout=0.2, threads=1)
    model = load_model(train(cfg, progress=False))
    assert model.classes == CLASSES["8gaussians"] and model.conditioning["label_dropout"] == 0.2
    mixture, n = _ring(), 400
    for k in (0, 4, 7):
        x = generate(model.denoiser({"class": torch.full((n,), k)}), (n, 2), model.schedule, seed=k)
        share = (mixture.responsibilities(model.to_data_units(x)).argmax(1) == k).double().mean().item()
        assert share > 0.9, (k, share)
    x = generate(model.denoiser(), (2000, 2), model.schedule, seed=9)
    shares = torch.bincount(mixture.responsibilities(model.to_data_units(x)).argmax(1), minlength=8) / 2000
    assert (shares - 1 / 8).abs().max() < 0.06, shares


def test_conditional_run_with_label_dropout_resumes_byte_exactly(tmp_path):
    """The dropout draws are a function of (seed, step): a run resumed from its step-3 checkpoint ends with the
    weights of an uninterrupted one (a constant learning rate, so the budget does not shape the schedule)."""
    common = dict(data="8gaussians", n_data=500, width=16, depth=1, emb_dim=8, num_train_timesteps=50,
                  batch_size=64, class_conditional=True, label_dropout=0.3, checkpoint_every=3, threads=1,
                  lr_schedule="constant")
    whole = train(TrainConfig(out=str(tmp_path / "whole"), steps=6, **common), progress=False)
    part = train(TrainConfig(out=str(tmp_path / "part"), steps=3, **common), progress=False)
    train(TrainConfig(out=str(part), steps=6, **common), resume=True, progress=False)
    assert (whole / "model" / "online.safetensors").read_bytes() == (part / "model" / "online.safetensors").read_bytes()
    assert (whole / "model" / "model.safetensors").read_bytes() == (part / "model" / "model.safetensors").read_bytes()


def _class_folder(root):
    for name, value in (("a", 0), ("b", 255)):
        (root / name).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(np.full((4, 4), value, dtype=np.uint8)).save(root / name / f"{i}.png")
    return root


def test_image_sub_folders_are_classes_named_by_classes_json(tmp_path):
    folder = _class_folder(tmp_path / "pics")
    assert load_dataset(folder, class_conditional=True).classes == ["a", "b"]
    (folder / "classes.json").write_text('{"b": "white"}')
    data = load_dataset(folder, class_conditional=True)
    assert data.classes == ["a", "white"] and data.labels.tolist() == [0, 0, 0, 1, 1, 1]
    for text, needle in (('{"c": "x"}', "names c, which are not class sub-folders"), ('["x"]', "must map"),
                         ('{"a": "b", "b": "b"}', "the same name"), ("{", "not readable JSON")):
        (folder / "classes.json").write_text(text)
        with pytest.raises(InputError, match=needle):
            load_dataset(folder, class_conditional=True)
