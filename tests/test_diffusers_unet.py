"""The diffusers_unet2d network (a diffusers UNet2DModel trained by gaussdiff) and ``gaussdiff export --diffusers``:
the config rebuilds the same network, forward is the UNet2DModel at diffusers' timestep t - 1, a fresh one is the
exact denoiser of N(0, I), a saved model round-trips bit for bit, and the exported folder loads offline in
diffusers.DDPMPipeline, whose unet, scheduler and sampling loop agree with ours."""

import json
import os
import subprocess
import sys

import diffusers
import numpy as np
import pytest
import torch

from gaussdiff import cli
from gaussdiff.cli import export
from gaussdiff.errors import InputError
from gaussdiff.nets import MLP, DiffusersUNet2D, UNet, build_network, diffusers_unet2d_config
from gaussdiff.param import as_denoiser
from gaussdiff.samplers import ddpm, timestep_grid
from gaussdiff.saved import SavedModel, load_model
from gaussdiff.schedule import make_schedule
from gaussdiff.transforms import Pixels, Standardize
from test_diffusers_interop import assert_same_alpha_bar

# diffusers suggests installing accelerate when it loads a model: advice, not our concern.
pytestmark = pytest.mark.filterwarnings("ignore:.*accelerate:UserWarning")

T, K = 1000, 10
TINY = dict(block_out_channels=[8, 16], norm_num_groups=4, attention_head_dim=8)  # 48 k parameters, two levels


def tiny(num_classes=0, learn_variance=False, seed=0):
    """A tiny diffusers_unet2d network with every weight random (its zero output layer too), in eval mode."""
    torch.manual_seed(seed)
    net = build_network(diffusers_unet2d_config([1, 8, 8], T, num_classes=num_classes, learn_variance=learn_variance,
                                                **TINY))
    with torch.no_grad():
        for p in net.unet.conv_out.parameters():
            p.copy_(0.1 * torch.randn_like(p))
    return net.eval()


def inputs(batch=3, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 1, 8, 8, generator=g), torch.tensor([1.0, 500.5, 1000.0])[:batch]


# --- the network ---------------------------------------------------------------------------------------------

def test_config_round_trip_rebuilds_the_same_network():
    net = tiny(num_classes=K, learn_variance=True)
    config = json.loads(json.dumps(net.config))  # as a saved model stores it
    assert config["cond_keys"] == ["class"] and config["unet"]["block_out_channels"] == [8, 16]
    again = build_network(config)
    assert again.config == net.config
    again.load_state_dict(net.state_dict())  # same architecture: every key and shape
    x, t = inputs()
    cond = {"class": torch.tensor([0, 4, K])}
    assert torch.equal(again.eval()(x, t, cond), net(x, t, cond))
    # The gaussdiff fields set the UNet2DModel's own: 2 C outputs for the variance head, K + 1 class embeddings.
    c = net.unet.config
    assert (c.in_channels, c.out_channels, c.num_class_embeds, c.sample_size) == (1, 2, K + 1, 8)
    with pytest.raises(InputError, match="cond_keys"):
        build_network(dict(config, cond_keys=[]))


def test_default_is_the_digits_preset_of_the_size_of_our_unet():
    """The default layout has as many parameters as gaussdiff's "digits" UNet (687,937: both 32/64 channels, no
    attention, scale-shift); the issue asks for a comparable net."""
    net = DiffusersUNet2D([1, 8, 8], T)
    assert net.config == diffusers_unet2d_config([1, 8, 8], T, "digits")
    ours = sum(p.numel() for p in UNet([1, 8, 8], T).parameters())
    theirs = sum(p.numel() for p in net.parameters())
    assert 0.6e6 <= theirs <= 1e6 and abs(theirs - ours) / ours < 0.01
    assert list(net.unet.config.down_block_types) == ["DownBlock2D", "DownBlock2D"] and not net.unet.config.add_attention


def test_fresh_net_is_the_exact_denoiser_of_standard_normal_data():
    """Zero output layer: v = 0, so x0_hat = sqrt(abar) x_t, E[x_0 | x_t] for x_0 ~ N(0, I); abar computed here as
    prod_{s<t} (1 - beta_s)."""
    schedule = make_schedule("linear", T)
    net = build_network(diffusers_unet2d_config([1, 8, 8], T, **TINY)).double()
    x_t = torch.randn(4, 1, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([0, 1, 500, 1000])
    assert torch.equal(net(x_t, t.double()), torch.zeros_like(x_t))
    abar = torch.cat([torch.ones(1, dtype=torch.float64), torch.cumprod(1 - schedule.betas, 0)])[t]
    # 1e-12: exp(log abar) round trip and float64 products, ~1e-15 relative
    torch.testing.assert_close(as_denoiser(net, schedule, "v_prediction")(x_t, t),
                               abar.sqrt()[:, None, None, None] * x_t, rtol=1e-12, atol=0)


def test_forward_is_the_unet2dmodel_at_diffusers_timestep_t_minus_1():
    """A UNet2DModel built here with diffusers' own arguments takes the wrapped one's weights (strict: the same
    architecture) and gives the same output at timestep t - 1, with class K (no class) when cond has none."""
    net = tiny(num_classes=K)
    ref = diffusers.UNet2DModel(sample_size=8, in_channels=1, out_channels=1, num_class_embeds=K + 1,
                                layers_per_block=1, down_block_types=("DownBlock2D", "DownBlock2D"),
                                up_block_types=("UpBlock2D", "UpBlock2D"), resnet_time_scale_shift="scale_shift",
                                add_attention=False, **TINY).eval()
    ref.load_state_dict(net.unet.state_dict())
    x, t = inputs()
    labels = torch.tensor([3, 0, 7])
    with torch.no_grad():
        assert torch.equal(net(x, t, {"class": labels}), ref(x, t - 1, class_labels=labels).sample)
        assert torch.equal(net(x, t), ref(x, t - 1, class_labels=torch.full((3,), K)).sample)
        assert not torch.equal(net(x, t), ref(x, t, class_labels=torch.full((3,), K)).sample)  # t - 1 matters


def test_time_index_stays_float32_under_bf16_autocast():
    """bf16 rounds 999 to 1000; the UNet2DModel's sinusoid must receive t - 1 = 998, 999 exactly in float32."""
    assert torch.tensor(999.0).bfloat16().item() == 1000.0
    net = tiny()
    seen = []
    net.unet.time_proj.register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        net(torch.randn(2, 1, 8, 8), torch.tensor([999.0, 1000.0]))
    assert seen[0].dtype == torch.float32 and seen[0].tolist() == [998.0, 999.0]


@pytest.mark.parametrize("call, message", [
    (lambda net, x, t: net(x, t, {"mask": torch.ones(3)}), r"does not consume condition key\(s\) mask; it uses: class"),
    (lambda net, x, t: net(x, t, {"class": torch.tensor([0, 11, 2])}), r"values must lie in 0\.\.10"),
    (lambda net, x, t: net(x, t.bfloat16()), "float32 or float64, got torch.bfloat16"),
    (lambda net, x, t: net(x, t.long()), "float32 or float64, got torch.int64"),
    (lambda net, x, t: net(x, t[:2]), r"t must be a scalar or of shape \(3,\)"),
    (lambda net, x, t: net(x[:, :, :4], t), r"takes x of shape \(B, 1, 8, 8\)"),
])
def test_bad_inputs_are_one_line_errors(call, message):
    x, t = inputs()
    with pytest.raises(InputError, match=message):
        call(tiny(num_classes=K), x, t)
    with pytest.raises(InputError, match="class; it uses: none"):
        tiny()(x, t, {"class": torch.zeros(3, dtype=torch.long)})


@pytest.mark.parametrize("shape, overrides, message", [
    ([1, 8, 8], dict(in_channels=3), "in_channels are set by gaussdiff"),
    ([1, 8, 8], dict(num_class_embeds=5), "num_class_embeds are set by gaussdiff"),
    ([1, 8, 8], dict(time_embedding_type="fourier"), "time_embedding_type='fourier' is not supported"),
    ([1, 8, 8], dict(class_embed_type="timestep"), "class_embed_type='timestep' is not supported"),
    ([1, 8, 8], dict(blocks=3), "bad UNet2DModel config .*unexpected keyword argument 'blocks'"),
    ([1, 8, 8], dict(norm_num_groups=3), r"num_channels \(8\) must be divisible by num_groups \(3\)"),
    ([1, 8, 8], dict(down_block_types=["DownBlock2D", "Nope"]), "Nope does not exist"),
    ([1, 9, 9], {}, "image size 9x9 is not divisible by 2, the UNet's downsampling .*use --image-size 8 or 10"),
    ([64], {}, r"takes sample_shape \[C, H, W\]"),
])
def test_bad_configs_are_one_line_errors(shape, overrides, message):
    with pytest.raises(InputError, match=message) as info:
        diffusers_unet2d_config(shape, T, **(TINY | overrides))
    assert "\n" not in str(info.value)


def test_unknown_preset_and_bad_unet_section():
    with pytest.raises(InputError, match="unknown diffusers_unet2d preset 'huge'; known: digits, gpu32"):
        diffusers_unet2d_config([1, 8, 8], T, "huge")
    with pytest.raises(InputError, match="'unet' must be an object"):
        build_network(dict(kind="diffusers_unet2d", sample_shape=[1, 8, 8], num_train_timesteps=T, unet=[8, 16]))


@pytest.mark.process  # a fresh interpreter imports torch and the whole command line: ~7 s on a busy 2-core machine
def test_gaussdiff_works_without_diffusers():
    """In a fresh interpreter where diffusers cannot be imported: gaussdiff, its networks, saved models and command
    line import (none imports diffusers), and building this kind is one InputError line saying what to install."""
    code = """if True:
        import sys
        sys.modules["diffusers"] = None  # import diffusers now raises ImportError
        import gaussdiff.cli, gaussdiff.cli.export, gaussdiff.saved
        from gaussdiff.errors import InputError
        from gaussdiff.nets import DiffusersUNet2D
        try:
            DiffusersUNet2D([1, 8, 8], 1000)
        except InputError as e:
            print(e)
    """
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "network kind diffusers_unet2d needs diffusers: pip install 'gaussdiff[diffusers]'\n"


# --- saving and exporting -------------------------------------------------------------------------------------

def saved(tmp_path, net, name="model", prediction_type="v_prediction", online=None):
    """A model folder holding ``net`` (EMA weights) on the digits' pixels, linear schedule."""
    model = SavedModel(net, make_schedule("linear", T), prediction_type, Pixels((1, 8, 8), 17), "digits")
    return model.save(tmp_path / name, online=online)


def test_saved_model_round_trips_bit_for_bit(tmp_path):
    net = tiny(num_classes=K)
    loaded = load_model(saved(tmp_path, net))
    assert loaded.network.config == net.config
    ours, theirs = net.state_dict(), loaded.network.state_dict()
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    x, t = inputs()
    cond = {"class": torch.tensor([1, 2, 3])}
    assert torch.equal(loaded.network(x, t, cond), net(x, t, cond))


@pytest.fixture
def main(monkeypatch):
    """cli.main with the export command registered (as cli/__init__ does once it lists it)."""
    monkeypatch.setitem(cli.MODULES, "export", export)
    monkeypatch.setitem(cli.COMMANDS, "export", export.run)
    return cli.main


def load_pipeline(folder):
    pipe = diffusers.DDPMPipeline.from_pretrained(folder)  # HF_HUB_OFFLINE=1 (conftest): nothing is fetched
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_export_loads_in_ddpm_pipeline_and_samples_like_our_ddpm(main, tmp_path, capsys):
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    net, other = tiny(seed=0), tiny(seed=1)
    model_dir = saved(tmp_path, net, online=other)
    out = tmp_path / "pipe"
    assert main(["export", str(model_dir), "--diffusers", str(out)]) == 0
    assert "wrote" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["model_index.json", "scheduler", "unet"]
    assert sorted(p.name for p in (out / "unet").iterdir()) == ["config.json", "diffusion_pytorch_model.safetensors"]
    pipe = load_pipeline(out)
    assert isinstance(pipe.unet, diffusers.UNet2DModel) and isinstance(pipe.scheduler, diffusers.DDPMScheduler)
    schedule = make_schedule("linear", T)
    assert_same_alpha_bar(pipe.scheduler.alphas_cumprod, schedule)
    assert pipe.scheduler.config.prediction_type == "v_prediction"
    x, t = inputs()
    with torch.no_grad():  # the EMA weights, at diffusers' timestep i = t - 1
        assert torch.equal(pipe.unet(x, t - 1).sample, net(x, t))
    # DDPMPipeline, 3 trailing steps, against our ddpm on the same grid with the same generator: both draw x_T, then
    # one noise per step but the last, from it. float32 throughout, diffusers' alpha table float32 (within 4.4e-7 of
    # ours): measured 4.8e-7 on the [0, 1] image scale; 1e-5 bounds it and is far below a change of noise (> 0.1).
    images = pipe(batch_size=4, num_inference_steps=3, generator=torch.Generator().manual_seed(0),
                  output_type="np").images
    g = torch.Generator().manual_seed(0)
    x_T = torch.randn(4, 1, 8, 8, generator=g)
    with torch.no_grad():
        x0 = ddpm(as_denoiser(net, schedule, "v_prediction"), x_T, schedule, timestep_grid(schedule, 3, "trailing"),
                  generator=g)
    ours = (x0 / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).numpy()  # the pipeline's [-1, 1] -> [0, 1], NHWC
    assert np.abs(ours - images).max() < 1e-5
    other_seed = pipe(batch_size=4, num_inference_steps=3, generator=torch.Generator().manual_seed(1),
                      output_type="np").images
    assert np.abs(other_seed - images).max() > 0.1
    # --weights online exports the raw weights.
    assert main(["export", str(model_dir), "--diffusers", str(out), "--weights", "online", "--overwrite"]) == 0
    with torch.no_grad():
        assert torch.equal(load_pipeline(out).unet(x, t - 1).sample, other(x, t))


def test_class_conditional_model_is_exported_with_a_warning(main, tmp_path):
    net = tiny(num_classes=K, learn_variance=True)
    out = tmp_path / "pipe"
    with pytest.warns(UserWarning, match=r"class-conditional \(10 classes\): DDPMPipeline passes no class_labels"):
        assert main(["export", str(saved(tmp_path, net)), "--diffusers", str(out)]) == 0
    pipe = load_pipeline(out)
    assert pipe.scheduler.config.variance_type == "fixed_small"
    x, t = inputs()
    labels = torch.tensor([2, K, 5])
    with torch.no_grad():
        assert torch.equal(pipe.unet(x, t - 1, class_labels=labels).sample, net(x, t, {"class": labels}))


OUR_NETWORKS = {  # gaussdiff's own networks, tiny, with the data transform of their sample shape
    "mlp": lambda: (MLP(64, T, width=8, depth=1, emb_dim=8), Standardize.identity(64)),
    "unet": lambda: (UNet([1, 8, 8], T, base_channels=8, norm_groups=4, num_heads=2), Pixels((1, 8, 8), 17)),
}


@pytest.mark.parametrize("kind", OUR_NETWORKS)
def test_export_of_our_own_networks_is_refused_in_one_line(main, tmp_path, capsys, kind):
    network, transform = OUR_NETWORKS[kind]()
    folder = SavedModel(network, make_schedule("linear", T), "epsilon", transform, "digits").save(tmp_path / "model")
    out = tmp_path / "pipe"
    assert main(["export", str(folder), "--diffusers", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "export to diffusers needs network kind diffusers_unet2d" in err
    assert f"is '{kind}'" in err and not out.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["model"]  # no temporary folder left behind


def test_existing_folder_is_refused_without_overwrite_and_left_as_it_was(main, tmp_path, capsys):
    model_dir = saved(tmp_path, tiny())
    out = tmp_path / "pipe"
    out.mkdir()
    (out / "mine.txt").write_text("keep me")
    assert main(["export", str(model_dir), "--diffusers", str(out)]) == 2
    assert "pipe exists; pass --overwrite to replace it" in capsys.readouterr().err
    assert [p.name for p in out.iterdir()] == ["mine.txt"] and (out / "mine.txt").read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model", "pipe"]
    # Exporting onto the model itself (or a folder holding it) is refused even with --overwrite.
    for target in (model_dir, tmp_path):
        assert main(["export", str(model_dir), "--diffusers", str(target), "--overwrite"]) == 2
        assert "would replace the model it exports" in capsys.readouterr().err
    assert load_model(model_dir).network.config["kind"] == "diffusers_unet2d"
    assert main(["export", str(model_dir), "--diffusers", str(out), "--overwrite"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["model_index.json", "scheduler", "unet"]
