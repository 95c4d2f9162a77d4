"""The image UNet (nets/unet.py): shapes, config round trip, the exact N(0, I) denoiser of a fresh network,
condition checks, live gradients everywhere, and a time index that survives bf16 autocast."""

import json
import math

import pytest
import torch

from gaussdiff.errors import InputError
from gaussdiff.mixture import GaussianMixture
from gaussdiff.nets import UNet, build_network, unet_config
from gaussdiff.param import as_denoiser
from gaussdiff.schedule import make_schedule

T = 1000
# A small net with every kind of layer: two attention levels, middle attention, class embedding, dropout.
FULL = dict(base_channels=16, channel_mult=[1, 2, 2], num_res_blocks=1, attention_resolutions=[8, 4], num_heads=2,
            norm_groups=4, dropout=0.1, num_classes=3)


def _perturbed(net: UNet, seed: int = 0) -> UNet:
    """The net with its zero output layer replaced by random weights, so its output depends on every layer."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.conv_out.parameters():
            p.copy_(0.1 * torch.randn(p.shape, generator=g))
    return net


def _config(shape, learn_variance):
    if shape[1] == 32:  # gpu32's layout (4 levels, attention at 16 and 8), narrowed to keep the test fast
        return unet_config(shape, T, "gpu32", base_channels=32, learn_variance=learn_variance)
    return unet_config(shape, T, "digits", learn_variance=learn_variance)


@pytest.mark.parametrize("learn_variance", [False, True])
@pytest.mark.parametrize("shape", [(1, 8, 8), (3, 8, 8), (3, 32, 32)])
def test_output_shape(shape, learn_variance):
    net = build_network(_config(shape, learn_variance))
    x = torch.randn(2, *shape)
    out = net(x, torch.tensor([1.0, 999.0]))
    C, H, W = shape
    assert out.shape == (2, 2 * C if learn_variance else C, H, W)


def test_config_round_trip_rebuilds_the_same_network():
    net = _perturbed(UNet([3, 8, 8], T, learn_variance=True, **FULL)).eval()
    config = json.loads(json.dumps(net.config))  # JSON-serializable: lists, not tuples
    assert config["kind"] == "unet" and config["cond_keys"] == ["class"] and config["learn_variance"] is True
    rebuilt = build_network(config)
    assert rebuilt.config == net.config
    shapes = lambda m: {k: tuple(v.shape) for k, v in m.state_dict().items()}  # noqa: E731
    assert shapes(rebuilt) == shapes(net)
    rebuilt.load_state_dict(net.state_dict())  # strict: same keys
    rebuilt.eval()  # dropout off in both
    x, t, cond = torch.randn(2, 3, 8, 8), torch.tensor([3.0, 500.0]), {"class": torch.tensor([0, 3])}
    assert torch.equal(rebuilt(x, t, cond), net(x, t, cond))


def test_build_network_checks_declared_cond_keys():
    config = unet_config([1, 8, 8], T)
    with pytest.raises(InputError, match="cond_keys"):
        build_network(dict(config, cond_keys=["class"]))  # declares a key the net (num_classes = 0) does not use


def test_default_constructor_is_the_digits_preset():
    assert UNet([1, 8, 8], T).config == unet_config([1, 8, 8], T, "digits")


def test_fresh_net_is_the_exact_denoiser_of_standard_normal_data():
    """Zero output layer: v = 0, so x0_hat = sqrt(abar) x_t - sqrt(1 - abar) 0, which is E[x_0 | x_t] for
    x_0 ~ N(0, I). Checked against abar = prod_{s<t} (1 - beta_s) and against the Gaussian oracle."""
    schedule = make_schedule("linear", T)
    net = UNet([1, 8, 8], T).double()
    x_t = torch.randn(4, 1, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([0, 1, 500, 1000])
    assert torch.equal(net(x_t, t.double()), torch.zeros_like(x_t))
    x0_hat = as_denoiser(net, schedule, "v_prediction")(x_t, t)
    abar = torch.cat([torch.ones(1, dtype=torch.float64), torch.cumprod(1 - schedule.betas, 0)])[t]
    # 1e-12: exp(log abar) round trip and float64 products, ~1e-15 relative
    torch.testing.assert_close(x0_hat, abar.sqrt()[:, None, None, None] * x_t, rtol=1e-12, atol=0)
    oracle = GaussianMixture([1.0], torch.zeros(1, 64), torch.eye(64)[None]).denoiser(schedule)
    t_frac = torch.tensor([0.5, 17.25, 640.7, 999.9], dtype=torch.float64)
    torch.testing.assert_close(as_denoiser(net, schedule, "v_prediction")(x_t, t_frac),
                               oracle(x_t.flatten(1), t_frac).view_as(x_t), rtol=1e-10, atol=1e-12)


def test_unknown_condition_key_is_an_error():
    net = UNet([1, 8, 8], T, num_classes=10)
    x, t = torch.randn(2, 1, 8, 8), torch.ones(2)
    with pytest.raises(InputError, match=r"does not consume condition key\(s\) mask; it uses: class"):
        net(x, t, {"class": torch.tensor([1, 2]), "mask": torch.ones(2)})
    with pytest.raises(InputError, match="class; it uses: none"):
        UNet([1, 8, 8], T)(x, t, {"class": torch.tensor([1, 2])})


@pytest.mark.parametrize("labels, message", [
    (torch.tensor([0, 11]), r"values must lie in 0\.\.10"),
    (torch.tensor([-1, 3]), r"values must lie in 0\.\.10"),
    (torch.tensor([1.0, 2.0]), "long tensor"),
    (torch.tensor([1, 2], dtype=torch.int32), "long tensor"),
    (torch.tensor([1, 2, 3]), r"shape \(2,\)"),
    ([1, 2], "long tensor"),
])
def test_bad_class_labels_are_errors(labels, message):
    net = UNet([1, 8, 8], T, num_classes=10)
    with pytest.raises(InputError, match=message):
        net(torch.randn(2, 1, 8, 8), torch.ones(2), {"class": labels})


def test_null_class_equals_no_class_key():
    net = _perturbed(UNet([1, 8, 8], T, num_classes=10)).eval()
    x, t = torch.randn(3, 1, 8, 8), torch.tensor([10.0, 400.0, 900.0])
    unconditional = net(x, t)
    assert torch.equal(net(x, t, {"class": torch.full((3,), 10)}), unconditional)
    assert torch.equal(net(x, t, {}), unconditional)
    assert not torch.allclose(net(x, t, {"class": torch.zeros(3, dtype=torch.long)}), unconditional)


def test_image_size_not_divisible_by_the_downsampling():
    with pytest.raises(InputError, match=r"^image size 10x10 is not divisible by 4, the UNet's downsampling "
                                         r"\(3 levels, 2 halvings\); use --image-size 8 or 12$"):
        UNet([1, 10, 10], T, channel_mult=[1, 2, 2], attention_resolutions=[])
    with pytest.raises(InputError, match="image size 6x6 is not divisible by 4.*use --image-size 4 or 8"):
        unet_config([3, 6, 6], T, channel_mult=[1, 2, 2])


@pytest.mark.parametrize("overrides, message", [
    (dict(attention_resolutions=[2]), r"attention at 2x2: the UNet's feature maps are 8, 4 high"),
    (dict(base_channels=20), "norm_groups=8 must divide"),
    (dict(num_heads=3), "num_heads=3 must divide"),
    (dict(dropout=1.0), "dropout"),
    (dict(width=3), "unknown UNet option"),
])
def test_bad_architecture_is_an_error(overrides, message):
    with pytest.raises(InputError, match=message):
        unet_config([1, 8, 8], T, **overrides)


def test_bad_sample_and_time_are_errors():
    net = UNet([1, 8, 8], T)
    with pytest.raises(InputError, match=r"shape \(B, 1, 8, 8\), got \(2, 3, 8, 8\)"):
        net(torch.randn(2, 3, 8, 8), torch.ones(2))
    with pytest.raises(InputError, match="float32 or float64, got torch.bfloat16"):
        net(torch.randn(2, 1, 8, 8), torch.ones(2, dtype=torch.bfloat16))
    with pytest.raises(InputError, match=r"t must be a scalar or of shape \(2,\)"):
        net(torch.randn(2, 1, 8, 8), torch.ones(3))


@pytest.mark.parametrize("learn_variance", [False, True])
def test_every_parameter_gets_a_gradient(learn_variance):
    """With the output layer no longer zero, every weight of every block moves the loss: no block is dead."""
    torch.manual_seed(0)
    net = _perturbed(UNet([3, 8, 8], T, learn_variance=learn_variance, **FULL)).train()
    x, t = torch.randn(4, 3, 8, 8), torch.tensor([1.0, 250.0, 600.0, 1000.0])
    out = net(x, t, {"class": torch.tensor([0, 1, 2, 3])})
    (out - torch.randn_like(out)).square().mean().backward()
    dead = [name for name, p in net.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert dead == []


def test_time_index_survives_bf16_autocast():
    """bf16 has 8 significant bits: t = 999 would round to 1000. The sinusoid must see float32 t."""
    assert torch.tensor(999.0).bfloat16().item() == 1000.0  # the failure this test guards against
    net = UNet([1, 8, 8], T)
    seen = []
    net.time_mlp[0].register_forward_hook(lambda module, inputs, output: seen.append(inputs[0]))
    t = torch.tensor([999.0, 1000.0])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        emb = net.embedding(t, None, 2)
        out = net(torch.randn(2, 1, 8, 8), t)
    assert out.shape == (2, 1, 8, 8) and emb.dtype == torch.bfloat16  # autocast did run the layers in bf16
    assert not torch.equal(emb[0], emb[1])
    # the features of u = t / T: [sin(1000 u w_j), cos(1000 u w_j)], w_j = 10000^(-j / half), in float64;
    # 1e-4: float32 arguments up to 1000 carry a relative error of 6e-8, so the sines are off by <= 1e-4
    half = net.config["base_channels"] // 2
    w = torch.exp(-math.log(10_000.0) * torch.arange(half, dtype=torch.float64) / half)
    args = 1000.0 * t.double()[:, None] / T * w
    expected = torch.cat([torch.sin(args), torch.cos(args)], 1)
    for features in seen:
        torch.testing.assert_close(features.double(), expected, rtol=0, atol=1e-4)
    assert (expected[0] - expected[1]).abs().max() > 0.5  # 999 and 1000 are far apart in these features
