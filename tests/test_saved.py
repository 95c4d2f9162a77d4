"""Tests of gaussdiff.saved: the model folder (config.json + safetensors) round-trips bit-exactly,
holds the EMA weights, refuses every broken folder with one clear InputError, and is never
half-written."""

import json
import os
import shutil

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from gaussdiff import saved
from gaussdiff.data import Standardize
from gaussdiff.errors import InputError
from gaussdiff.nets import MLP
from gaussdiff.saved import FORMAT, FORMAT_VERSION, SavedModel, find_model_dir, load_model
from gaussdiff.schedule import make_schedule
from gaussdiff.train import TrainConfig, train

# Tiny models contend badly for 2 shared cores with torch's default thread count.

STEPS, CKPT_EVERY = 40, 20


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One tiny training run shared by the tests below; its last checkpoint is at the last step."""
    out = tmp_path_factory.mktemp("saved") / "run"
    cfg = TrainConfig(data="moons", out=str(out), n_data=2000, steps=STEPS, batch_size=128, width=32, depth=1,
                      emb_dim=16, num_train_timesteps=50, warmup_steps=5, log_every=10, checkpoint_every=CKPT_EVERY,
                      threads=1)
    return train(cfg, progress=False)


def tiny_model(width=32, depth=2, prediction_type="v_prediction", seed=0):
    """A randomly initialised 3-D model with a non-trivial transform and a cosine schedule."""
    torch.manual_seed(seed)
    net = MLP(3, 50, width=width, depth=depth, emb_dim=16)
    schedule = make_schedule("squaredcos_cap_v2", 50)
    transform = Standardize([1000.0, -2.0, 0.5], [50.0, 0.01, 3.0])
    return SavedModel(net, schedule, prediction_type, transform, "points.npy")


def snapshot(folder):
    """{relative path: bytes} of every file under folder."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def outputs(model, seed=1):
    """Denoiser outputs on fixed inputs at integer and fractional t, including both ends."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(64, *model.sample_shape, generator=g)
    t = torch.cat([torch.tensor([1.0, 50.0, 0.5, 49.75]), torch.rand(60, generator=g) * 50])
    with torch.no_grad():
        return model.denoiser()(x, t)


# --- round trip --------------------------------------------------------------------------------

@pytest.mark.parametrize("prediction_type", ["epsilon", "sample", "v_prediction"])
def test_save_load_round_trip_is_bit_exact(tmp_path, prediction_type):
    model = tiny_model(prediction_type=prediction_type)
    folder = model.save(tmp_path / "model")
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors", "scheduler_config.json"]
    loaded = load_model(folder)
    assert loaded.config() == model.config()
    written = json.loads((folder / "config.json").read_text())
    assert written.pop("checksums").keys() == {"model.safetensors"} and written == model.config()
    assert loaded.prediction_type == prediction_type and loaded.data_name == "points.npy"
    assert torch.equal(loaded.schedule.betas, model.schedule.betas)
    assert torch.equal(loaded.transform.mean, model.transform.mean)
    assert torch.equal(loaded.transform.std, model.transform.std)
    model.network.eval()
    assert torch.equal(outputs(loaded), outputs(model))
    # Not vacuous: a differently initialised network gives other outputs.
    assert not torch.equal(outputs(tiny_model(prediction_type=prediction_type, seed=1)), outputs(model))
    # The loaded network is ready for inference.
    assert not loaded.network.training
    assert not any(p.requires_grad for p in loaded.network.parameters())


def test_config_carries_format_and_version(tmp_path):
    config = json.loads((tiny_model().save(tmp_path / "m") / "config.json").read_text())
    assert config["format"] == FORMAT and config["format_version"] == FORMAT_VERSION
    assert set(config) >= {"network", "scheduler", "prediction_type", "data", "gaussdiff_version"}
    assert config["network"]["kind"] == "mlp" and config["network"]["width"] == 32
    assert config["data"]["transform"] == {"kind": "standardize", "mean": [1000.0, -2.0, 0.5],
                                           "std": [50.0, 0.01, 3.0]}
    assert config["sample_shape"] == [3] and config["network"]["sample_shape"] == [3]


def test_data_columns_and_dtype_round_trip_and_are_optional(tmp_path, run):
    """Optional fields of format 2: the data's column names and dtype; a model without them records neither (older
    folders load as before: no names, float64); a run on a built-in set records x, y and float32, its points' dtype."""
    model = tiny_model()
    model.columns, model.data_dtype = ["a", "b", "c"], "float32"
    config = json.loads((model.save(tmp_path / "m") / "config.json").read_text())
    assert config["data"]["columns"] == ["a", "b", "c"] and config["data"]["dtype"] == "float32"
    loaded = load_model(tmp_path / "m")
    assert loaded.columns == ["a", "b", "c"] and loaded.data_dtype == "float32"
    assert loaded.to_data_units(torch.zeros(2, 3)).dtype == torch.float32
    plain = json.loads((tiny_model().save(tmp_path / "p") / "config.json").read_text())["data"]
    assert set(plain) == {"name", "transform"}
    assert load_model(tmp_path / "p").to_data_units(torch.zeros(2, 3)).dtype == torch.float64
    assert (load_model(run).columns, load_model(run).data_dtype) == (["x", "y"], "float32")


@pytest.mark.parametrize("edit, message", [
    (lambda d: d.update(dtype="float16"), "unknown data dtype 'float16'; known: float32, float64"),
    (lambda d: d.update(columns=["a", "b"]), "the data columns ['a', 'b'] must be 3 names"),
    (lambda d: d.update(columns="abc"), "the data columns 'abc' must be 3 names"),
    (lambda d: d.update(columns=["a", "b,c", "d"]), "without commas or line breaks"),
    (lambda d: d.update(columns=["a", 2, "c"]), "must be 3 names"),
])
def test_bad_data_columns_or_dtype_are_refused(model_dir, edit, message):
    edit_config(model_dir, lambda c: edit(c["data"]))
    with pytest.raises(InputError) as error:
        load_model(model_dir)
    assert str(error.value).startswith(f"{model_dir / 'config.json'}: ") and message in str(error.value)


def test_model_file_holds_ema_weights_and_online_file_the_raw_ones(run):
    ckpt = torch.load(run / "checkpoints" / f"step_{STEPS:08d}.pt", weights_only=True)
    assert ckpt["step"] == STEPS
    ema = load_file(run / "model" / "model.safetensors")
    online = load_file(run / "model" / "online.safetensors")
    assert set(ema) == set(online) == set(ckpt["model"])
    for k in ema:
        assert torch.equal(ema[k], ckpt["ema"][f"ema_model.{k}"]), k
        assert torch.equal(online[k], ckpt["model"][k]), k
    assert any(not torch.equal(ema[k], online[k]) for k in ema), "EMA and raw weights should differ after training"
    # load_model picks the file asked for.
    for weights, state in (("ema", ema), ("online", online)):
        net_state = load_model(run, weights=weights).network.state_dict()
        assert all(torch.equal(net_state[k], state[k]) for k in state)


def test_find_model_dir_accepts_run_folder_and_model_folder(run):
    assert find_model_dir(run) == run / "model"
    assert find_model_dir(run / "model") == run / "model"
    a, b = load_model(run), load_model(run / "model")
    assert a.config() == b.config()
    assert torch.equal(outputs(a), outputs(b))


def test_saved_files_are_not_private(tmp_path):
    """Like every other file gaussdiff writes (atomic.py keeps 0644), the exported model is readable by others."""
    old = os.umask(0o022)
    try:
        folder = tiny_model().save(tmp_path / "m", online=tiny_model(seed=1).network)
    finally:
        os.umask(old)
    assert folder.stat().st_mode & 0o755 == 0o755
    for p in folder.iterdir():
        assert p.stat().st_mode & 0o644 == 0o644, p.name


# --- refusals ----------------------------------------------------------------------------------

@pytest.fixture
def model_dir(tmp_path):
    return tiny_model().save(tmp_path / "model")


def edit_config(folder, edit):
    config = json.loads((folder / "config.json").read_text())
    edit(config)
    (folder / "config.json").write_text(json.dumps(config))


def test_missing_folder_is_refused(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        load_model(tmp_path / "nowhere")


def test_folder_without_config_is_refused(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="neither a gaussdiff run folder nor a model folder"):
        load_model(tmp_path / "empty")


@pytest.mark.parametrize("content", [b"{not json", b"\xff\xfe\x00garbage", b""])
def test_corrupt_config_is_refused(model_dir, content):
    (model_dir / "config.json").write_bytes(content)
    with pytest.raises(InputError, match="config.json is not readable JSON"):
        load_model(model_dir)


@pytest.mark.parametrize("edit, message", [
    (lambda c: c.update(format="diffusers"), "not a gaussdiff model config"),
    (lambda c: c.pop("format"), "not a gaussdiff model config"),
    (lambda c: c.update(format_version=FORMAT_VERSION + 1), f"format version {FORMAT_VERSION + 1}"),
    (lambda c: c.pop("format_version"), "format version None"),
    (lambda c: c.update(format_version=0), "format version 0"),
])
def test_other_format_or_version_is_refused(model_dir, edit, message):
    edit_config(model_dir, edit)
    with pytest.raises(InputError, match=message):
        load_model(model_dir)


def test_config_that_is_not_an_object_is_refused(model_dir):
    (model_dir / "config.json").write_text("[1, 2, 3]")
    with pytest.raises(InputError, match="not a gaussdiff model config"):
        load_model(model_dir)


@pytest.mark.parametrize("edit, field", [
    (lambda c: c.pop("network"), "network"),
    (lambda c: c.pop("scheduler"), "scheduler"),
    (lambda c: c.pop("prediction_type"), "prediction_type"),
    (lambda c: c.pop("data"), "data"),
    (lambda c: c["data"].pop("transform"), "transform"),
    (lambda c: c["data"].pop("name"), "name"),
])
def test_config_missing_a_field_is_refused(model_dir, edit, field):
    edit_config(model_dir, edit)
    with pytest.raises(InputError, match=f"lacks or mistypes field '{field}'"):
        load_model(model_dir)


def test_network_config_missing_sample_shape_is_refused(model_dir):
    edit_config(model_dir, lambda c: c["network"].pop("sample_shape"))
    with pytest.raises(InputError, match="bad network config"):
        load_model(model_dir)


def test_unknown_network_kind_is_refused(model_dir):
    edit_config(model_dir, lambda c: c["network"].update(kind="unet9000"))
    with pytest.raises(InputError, match="unknown network kind 'unet9000'"):
        load_model(model_dir)


def test_unknown_prediction_type_is_refused(model_dir):
    edit_config(model_dir, lambda c: c.update(prediction_type="noise"))
    with pytest.raises(InputError, match="unknown prediction_type 'noise'"):
        load_model(model_dir)


def test_transform_of_other_dimension_is_refused(model_dir):
    edit_config(model_dir, lambda c: c["data"].update(transform={"mean": [0.0, 0.0], "std": [1.0, 1.0]}))
    with pytest.raises(InputError, match=r"sample shapes disagree: the config \[3\], the network \[3\], "
                                         r"the data transform \[2\]"):
        load_model(model_dir)


def test_schedule_of_other_length_than_the_network_is_refused(model_dir):
    edit_config(model_dir, lambda c: c["scheduler"].update(num_train_timesteps=10))
    with pytest.raises(InputError, match="built for 50 timesteps, the schedule has T = 10"):
        load_model(model_dir)


def test_unknown_transform_kind_is_refused(model_dir):
    edit_config(model_dir, lambda c: c["data"]["transform"].update(kind="fourier"))
    with pytest.raises(InputError, match="unknown transform kind 'fourier'"):
        load_model(model_dir)


# --- format 1, as the release before images wrote it ----------------------------------------------

V1 = Path(__file__).parent / "fixtures" / "v1_model"


def test_version_1_folder_loads_with_its_weights_and_transform():
    """tests/fixtures/v1_model was written by gaussdiff 0.1.0 (format 1: an MLP with 'dim', a standardization
    without 'kind'); reference.json holds what that release's denoiser and reverse model returned at fixed inputs."""
    ref = json.loads((V1 / "reference.json").read_text())
    model = load_model(V1)
    assert model.sample_shape == (3,) and model.network.config["sample_shape"] == [3]
    assert model.variance_type == "learned_range" and model.network.config["learn_variance"] is True
    assert model.transform.mean.tolist() == ref["user_mean"] and model.transform.std.tolist() == ref["user_std"]
    x, t = torch.tensor(ref["x_t"]), torch.tensor(ref["t"])
    with torch.no_grad():
        x0_hat = model.denoiser()(x, t)
        log_var = model.reverse_model()(x, t.long())[1]
    # The same float32 network on the same inputs: equal up to the last bits of a different summation order.
    torch.testing.assert_close(x0_hat, torch.tensor(ref["x0_hat"]), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(log_var, torch.tensor(ref["log_var"], dtype=log_var.dtype), rtol=1e-6, atol=1e-6)


def test_version_1_folder_samples_from_the_command_line(tmp_path):
    from gaussdiff.cli import main
    out = tmp_path / "s.npy"
    assert main(["sample", str(V1), "-n", "50", "--out", str(out)]) == 0
    x = np.load(out)
    assert x.shape == (50, 3) and np.isfinite(x).all()
    # In the data's own units (column means 10, -3, 100, sds 5, 0.5, 20 in the CSV it was trained on): an
    # untrained 40-step model is far from the data, but its samples are mapped back through the saved transform.
    assert abs(np.median(x[:, 2]) - 100) < 5 * 20


def test_saving_a_version_1_model_writes_version_2(tmp_path):
    model = load_model(V1)
    config = json.loads((model.save(tmp_path / "m") / "config.json").read_text())
    assert config["format_version"] == 2 and config["sample_shape"] == [3]
    assert config["data"]["transform"]["kind"] == "standardize" and "dim" not in config["network"]
    torch.testing.assert_close(outputs(load_model(tmp_path / "m")), outputs(model), rtol=0, atol=0)


@pytest.mark.parametrize("corrupt", [
    lambda b: b[: len(b) // 2],  # truncated in the tensor data
    lambda b: b[:20],  # truncated in the header
    lambda b: b"",  # empty
    lambda b: b"\x08\x00\x00\x00\x00\x00\x00\x00not json",  # a header that is not JSON
    lambda b: bytes(range(256)) * 4,  # garbage
])
def test_corrupt_weights_are_refused(model_dir, corrupt):
    edit_config(model_dir, lambda c: c.pop("checksums"))  # as written before checksums: the reader's own checks
    file = model_dir / "model.safetensors"
    file.write_bytes(corrupt(file.read_bytes()))
    with pytest.raises(InputError, match="model.safetensors is not a readable safetensors file"):
        load_model(model_dir)


def test_missing_weights_are_refused(model_dir):
    (model_dir / "model.safetensors").unlink()
    with pytest.raises(InputError, match="model.safetensors is missing"):
        load_model(model_dir)
    with pytest.raises(InputError, match="online.safetensors is missing"):
        load_model(model_dir, weights="online")


def test_unknown_weights_name_is_refused(model_dir):
    with pytest.raises(InputError, match="unknown weights 'best'; known: ema, online"):
        load_model(model_dir, weights="best")


@pytest.mark.parametrize("other, detail", [(dict(width=16), "wrong shape"), (dict(depth=3), "unexpected"),
                                           (dict(depth=1), "missing")])
def test_checkpoint_from_another_model_is_refused(tmp_path, model_dir, other, detail):
    edit_config(model_dir, lambda c: c.pop("checksums"))  # as written before checksums: the reader's own checks
    other_dir = tiny_model(**other).save(tmp_path / "other")
    shutil.copy(other_dir / "model.safetensors", model_dir / "model.safetensors")
    with pytest.raises(InputError, match=f"does not match the network in config.json \\({detail}"):
        load_model(model_dir)


def test_weights_with_a_renamed_tensor_are_refused(model_dir):
    edit_config(model_dir, lambda c: c.pop("checksums"))  # as written before checksums: the reader's own checks
    state = load_file(model_dir / "model.safetensors")
    state["inp.weight_renamed"] = state.pop("inp.weight")
    save_file(state, model_dir / "model.safetensors")
    with pytest.raises(InputError, match="missing: inp.weight; unexpected: inp.weight_renamed"):
        load_model(model_dir)


# --- never half-written ------------------------------------------------------------------------

@pytest.mark.parametrize("fail_on_call", [1, 2])
def test_failed_save_leaves_old_folder_intact(tmp_path, monkeypatch, fail_on_call):
    folder = tiny_model().save(tmp_path / "model", online=tiny_model(seed=2).network)
    before = snapshot(folder)
    calls = []

    def failing_save_file(*args, **kwargs):
        calls.append(1)
        if len(calls) == fail_on_call:
            raise OSError("No space left on device")
        return save_file(*args, **kwargs)

    monkeypatch.setattr(saved, "save_file", failing_save_file)
    with pytest.raises(OSError, match="No space left"):
        tiny_model(seed=3).save(folder, online=tiny_model(seed=4).network)
    assert len(calls) == fail_on_call
    assert snapshot(folder) == before
    # No temporary folder is left beside it.
    assert [p.name for p in tmp_path.iterdir()] == ["model"]


def test_save_replaces_the_whole_folder(tmp_path):
    folder = tiny_model(seed=0).save(tmp_path / "model", online=tiny_model(seed=1).network)
    (folder / "stray.txt").write_text("from before")
    new = tiny_model(seed=5)
    new.save(folder)
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors", "scheduler_config.json"]
    assert torch.equal(outputs(load_model(folder)), outputs(new))
    assert [p.name for p in tmp_path.iterdir()] == ["model"]


def test_save_into_missing_parent_is_refused(tmp_path):
    with pytest.raises(InputError, match="is not a directory"):
        tiny_model().save(tmp_path / "missing" / "model")
    assert list(tmp_path.iterdir()) == []
