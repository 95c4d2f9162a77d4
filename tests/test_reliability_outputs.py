"""Issue 10, models and outputs: nothing lost, nothing silent. Exported models carry the sha256 of their weight files
and a damaged file is refused; non-finite weights are refused at load; a sampler that returns NaN writes nothing; a
run without its model says how to continue it; every command that writes a result refuses an existing target without
--overwrite; an --out that cannot be written is one line; samples stream to their file batch by batch, the same
samples as drawn at once, and an output that cannot fit on the disk is refused before any work."""

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from gaussdiff.cli import main
from gaussdiff.cli import sample as sample_cli
from gaussdiff.data import Pixels, Standardize
from gaussdiff.errors import InputError
from gaussdiff.nets import MLP, UNet
from gaussdiff.outputs import MAX_GRID, Target, check_target, write_samples
from gaussdiff.samplers import DEFAULT_SPACING, generate
from gaussdiff.samplers.guidance import clip_x0
from gaussdiff.sampling import sampler_inputs
from gaussdiff.saved import SavedModel, class_conditioning, load_model
from gaussdiff.schedule import make_schedule

from test_cli import one_line_error, snapshot

T = 20
V1 = Path(__file__).parent / "fixtures" / "v1_model"


def vector_model(scale=1.0, seed=0) -> SavedModel:
    """A random 3-D MLP model with a non-trivial standardization; ``scale`` multiplies every weight."""
    torch.manual_seed(seed)
    net = MLP(3, T, width=8, depth=1, emb_dim=8)
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(scale)
    return SavedModel(net, make_schedule("linear", T), "epsilon", Standardize([10.0, -3.0, 100.0], [5.0, 0.5, 20.0]),
                      "points.npy")


def image_model(classes=None) -> SavedModel:
    """A random 1 x 8 x 8 UNet model of 17 levels, class-conditional over ``classes`` if given."""
    torch.manual_seed(0)
    net = UNet([1, 8, 8], T, base_channels=8, norm_groups=4, num_heads=2, num_classes=len(classes or []))
    torch.nn.init.normal_(net.conv_out.weight, std=0.1)  # not the exact zero of a fresh UNet: samples vary
    conditioning = class_conditioning(classes, 0.1) if classes else None
    return SavedModel(net, make_schedule("linear", T), "epsilon", Pixels((1, 8, 8), 17), "digits",
                      conditioning=conditioning)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    return {"vectors": vector_model().save(root / "vectors", online=vector_model(seed=1).network),
            "images": image_model().save(root / "images"),
            "classes": image_model(["a", "b"]).save(root / "classes")}


def damage(file: Path, offset_from_end=4) -> None:
    """Change one byte of a tensor's data: the file stays a readable safetensors file of the same size."""
    data = bytearray(file.read_bytes())
    data[-offset_from_end] ^= 0x01
    file.write_bytes(bytes(data))


def sample(run, out, *flags):
    return main(["sample", str(run), "--steps", "3", "--out", str(out), *map(str, flags)])


# --- 1. checksums of the exported weights --------------------------------------------------------

def test_config_records_the_sha256_of_each_weight_file(models):
    folder = models["vectors"]
    config = json.loads((folder / "config.json").read_text())
    assert config["format_version"] == 2
    assert config["checksums"] == {name: hashlib.sha256((folder / name).read_bytes()).hexdigest()
                                   for name in ("model.safetensors", "online.safetensors")}


@pytest.mark.parametrize("weights, file", [("ema", "model.safetensors"), ("online", "online.safetensors")])
def test_a_damaged_weight_file_is_refused_in_one_line(models, tmp_path, capsys, weights, file):
    folder = vector_model().save(tmp_path / "model", online=vector_model(seed=1).network)
    damage(folder / file)
    load_file(folder / file)  # still a readable safetensors file: only the checksum can tell
    with pytest.raises(InputError, match=f"{file} does not match the checksum in config.json: the file is damaged"):
        load_model(folder, weights=weights)
    load_model(folder, weights="online" if weights == "ema" else "ema")  # the other file is intact
    out = tmp_path / "s.npy"
    one_line_error(capsys, ["sample", str(folder), "--weights", weights, "--out", str(out)], "the file is damaged")
    assert not out.exists()


def test_models_written_before_checksums_still_load(models, tmp_path):
    assert "checksums" not in json.loads((V1 / "config.json").read_text())
    load_model(V1)
    folder = vector_model().save(tmp_path / "model")
    config = json.loads((folder / "config.json").read_text())
    del config["checksums"]
    (folder / "config.json").write_text(json.dumps(config))
    assert torch.equal(load_model(folder).network.inp.weight, vector_model().network.inp.weight)


# --- 2. non-finite weights -------------------------------------------------------------------------

def test_a_model_with_non_finite_weights_is_refused_naming_the_tensor(tmp_path, capsys):
    model = vector_model()
    with torch.no_grad():
        model.network.inp.weight[0, :2] = float("nan")
        model.network.inp.weight[1, 0] = float("inf")
    folder = model.save(tmp_path / "model")
    with pytest.raises(InputError, match=r"model.safetensors: tensor 'inp.weight' holds 3 non-finite value\(s\) "
                                         r"\(NaN or Inf\) of \d+: the model cannot be used"):
        load_model(folder)
    # As the issue found it: bytes damaged into NaN in a folder without checksums.
    config = json.loads((folder / "config.json").read_text())
    del config["checksums"]
    (folder / "config.json").write_text(json.dumps(config))
    one_line_error(capsys, ["sample", str(folder), "--out", str(tmp_path / "s.npy")], "'inp.weight'", "3 non-finite")
    assert not (tmp_path / "s.npy").exists()


# --- 3. a sampler that returns NaN writes nothing ----------------------------------------------------

@pytest.fixture(scope="module")
def exploding(tmp_path_factory):
    """Finite weights of 1e30 (loadable) whose network overflows float32: every sample is NaN."""
    return vector_model(scale=1e30).save(tmp_path_factory.mktemp("exploding") / "model")


@pytest.mark.parametrize("suffix", [".npy", ".csv"])
def test_non_finite_samples_stop_sample_and_inpaint_and_write_nothing(exploding, tmp_path, capsys, suffix):
    np.save(tmp_path / "x.npy", np.ones((2, 3)))
    np.save(tmp_path / "mask.npy", np.array([1, 0, 0]))
    out = tmp_path / f"out{suffix}"
    before = snapshot(tmp_path)
    one_line_error(capsys, ["sample", str(exploding), "-n", "20", "--batch-size", "7", "--steps", "3",
                            "--out", str(out)], "NaN or Inf in 7 of 7 samples", "nothing was written")
    assert main(["inpaint", str(exploding), "--image", str(tmp_path / "x.npy"), "--mask", str(tmp_path / "mask.npy"),
                 "--method", "replace_x0", "--sampler", "ddim", "--steps", "3", "--out", str(out)]) == 2
    err = capsys.readouterr().err.splitlines()  # the plan of the run, then the error
    assert len(err) == 2 and err[1].startswith("gaussdiff inpaint: error: the sampler returned NaN or Inf in 2 of 2")
    assert snapshot(tmp_path) == before
    # An existing output stays as it was, even with --overwrite.
    np.savetxt(out, np.zeros((2, 3)), delimiter=",") if suffix == ".csv" else np.save(out, np.zeros((2, 3)))
    before = snapshot(tmp_path)
    one_line_error(capsys, ["sample", str(exploding), "-n", "5", "--steps", "3", "--out", str(out), "--overwrite"],
                   "NaN or Inf")
    assert snapshot(tmp_path) == before


# --- 4. a run stopped before it wrote its model ----------------------------------------------------------

@pytest.mark.parametrize("argv", [["sample", "--out", "s.npy"], ["elbo", "--data", "moons"],
                                  ["inpaint", "--image", "x.npy", "--mask", "m.npy", "--out", "o.npy"]])
def test_a_run_without_its_model_says_how_to_continue_it(tmp_path, capsys, argv, monkeypatch):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "step_00000020.pt").write_bytes(b"")
    (run / "config.json").write_text(json.dumps({"data": "moons", "steps": 100}))  # the trainer's, not a model's
    monkeypatch.chdir(tmp_path)
    line = one_line_error(capsys, [argv[0], str(run), *argv[1:]], f"{run} is a training run that has no model yet",
                          f"gaussdiff train --resume {run}")
    assert "not a gaussdiff model config" not in line


# --- 5. one overwrite policy ---------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["s.npy", "s.csv"])
def test_sample_refuses_an_existing_file_without_overwrite(models, tmp_path, capsys, name):
    out = tmp_path / name
    out.write_text("1,2,3\n")
    one_line_error(capsys, ["sample", str(models["vectors"]), "-n", "5", "--out", str(out)], f"{out} exists",
                   "--overwrite")
    assert out.read_text() == "1,2,3\n" and len(list(tmp_path.iterdir())) == 1
    assert sample(models["vectors"], out, "-n", "5", "--overwrite") == 0
    assert (np.load(out) if name.endswith(".npy") else np.loadtxt(out, delimiter=",")).shape == (5, 3)


def test_inpaint_refuses_an_existing_file_without_overwrite(models, tmp_path, capsys):
    np.save(tmp_path / "x.npy", np.ones((2, 3)))
    np.save(tmp_path / "mask.npy", np.array([1, 0, 0]))
    out = tmp_path / "o.npy"
    np.save(out, np.zeros(4))
    argv = ["inpaint", str(models["vectors"]), "--image", str(tmp_path / "x.npy"), "--mask", str(tmp_path / "mask.npy"),
            "--method", "replace_x0", "--sampler", "ddim", "--steps", "3", "--out", str(out)]
    one_line_error(capsys, argv, f"{out} exists", "--overwrite")
    assert np.array_equal(np.load(out), np.zeros(4))
    assert main([*argv, "--overwrite"]) == 0
    filled = np.load(out)
    assert filled.shape == (2, 3) and np.array_equal(filled[:, 0], [1.0, 1.0])


def test_a_folder_of_pngs_is_refused_only_where_a_file_of_this_run_exists(models, tmp_path, capsys):
    folder = tmp_path / "pngs"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    (folder / "000000_seed9.png").write_bytes(b"another seed's")  # not a name this run writes
    (folder / "000004_seed3.png").write_bytes(b"sample 4 of seed 3")  # one it writes
    (folder / "000005_seed3.png").write_bytes(b"sample 5 of seed 3: -n 5 does not write it")
    before = snapshot(folder)
    one_line_error(capsys, ["sample", str(models["images"]), "-n", "5", "--seed", "3", "--steps", "3",
                            "--out", f"{folder}/"], "already holds 000004_seed3.png", "--overwrite")
    assert snapshot(folder) == before
    assert sample(models["images"], f"{folder}/", "-n", "4", "--seed", "3") == 0  # 0..3: no clash
    assert sample(models["images"], f"{folder}/", "-n", "5", "--seed", "3", "--overwrite") == 0
    after = snapshot(folder)
    assert sorted(after) == sorted([*before, *(f"{i:06d}_seed3.png" for i in range(4))])
    for name in ("notes.txt", "000000_seed9.png", "000005_seed3.png"):  # what this run does not write stays
        assert after[name] == before[name]
    assert Image.open(folder / "000004_seed3.png").size == (8, 8)
    assert [p.name for p in tmp_path.iterdir()] == ["pngs"]  # no temporary folder left


def test_a_grid_is_refused_if_it_exists(models, tmp_path, capsys):
    grid = tmp_path / "g.png"
    grid.write_bytes(b"a picture")
    one_line_error(capsys, ["sample", str(models["images"]), "-n", "4", "--out", str(grid)], "exists", "--overwrite")
    assert grid.read_bytes() == b"a picture"
    assert sample(models["images"], grid, "-n", "4", "--overwrite") == 0
    assert Image.open(grid).size[0] > 32


def test_folder_names_follow_the_classes_and_clash_only_with_their_own():
    target = Target(Path("out"), "folder", 6, 17, 2, ["a", "b_c"])
    names = [target.name(i) for i in range(6)]
    assert names == ["a_000000_seed2", "a_000001_seed2", "a_000002_seed2",
                     "b_c_000000_seed2", "b_c_000001_seed2", "b_c_000002_seed2"]
    assert all(target.writes(n) for n in names)
    assert not any(target.writes(n) for n in ["a_000003_seed2", "b_000000_seed2", "a_000000_seed3", "000000_seed2",
                                              "c_000000_seed2", "a_00000_seed2", "notes"])
    plain = Target(Path("out"), "folder", 3, 17, 2)
    assert [plain.name(i) for i in range(3)] == ["000000_seed2", "000001_seed2", "000002_seed2"]
    assert plain.writes("000002_seed2") and not plain.writes("a_000000_seed2") and not plain.writes("000003_seed2")


# --- 6. an --out that cannot be written ---------------------------------------------------------------------------

@pytest.mark.parametrize("model, name", [("vectors", "s.npy"), ("vectors", "s.csv"), ("images", "g.png"),
                                         ("images", "pngs/")])
def test_an_out_inside_a_file_is_one_line(models, tmp_path, capsys, model, name):
    (tmp_path / "notes.txt").write_text("mine")
    out = f"{tmp_path / 'notes.txt'}/{name}"
    one_line_error(capsys, ["sample", str(models[model]), "-n", "4", "--out", out], "notes.txt is a file, not a "
                   "directory")
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


@pytest.mark.parametrize("model, name", [("vectors", "s.npy"), ("images", "g.png"), ("images", "pngs/")])
def test_an_out_in_a_folder_without_write_permission_is_one_line(models, tmp_path, capsys, monkeypatch, model, name):
    """The folder is made read-only; as root (who may write anyway) os.access is made to say what it says to others."""
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if Path(p) == locked else access(p, mode, **kw))
    try:
        one_line_error(capsys, ["sample", str(models[model]), "-n", "4", "--out", f"{locked}/{name}"],
                       f"cannot create files in {locked} (permission denied)")
        one_line_error(capsys, ["export", str(models[model]), "--diffusers", str(locked / "pipe")],
                       "permission denied")
        assert list(locked.iterdir()) == []
    finally:
        locked.chmod(0o755)


# --- 7. streaming, and outputs too large ---------------------------------------------------------------------------

def expected_samples(folder, n, batch_size, seed, sampler="ddim"):
    """What gaussdiff sample drew before it streamed: each batch of rows start.. drawn, then all concatenated."""
    model = load_model(folder)
    denoiser, options = sampler_inputs(model, sampler, {})
    if model.transform.model_range is not None:  # images: x0 clipped by default
        denoiser = clip_x0(denoiser, *model.transform.model_range)
    grid = {"rho": None, "sigma_min": None, "sigma_max": None}
    with torch.no_grad():
        chunks = [generate(denoiser, (min(batch_size, n - start), *model.sample_shape), model.schedule,
                           sampler=sampler, steps=3, spacing=DEFAULT_SPACING, seed=seed, start=start,
                           grid_options=grid, **options) for start in range(0, n, batch_size)]
    return model.to_data_units(torch.cat(chunks)).numpy()


def test_streamed_samples_are_those_drawn_at_once(models, tmp_path):
    """23 samples in batches of 7: the .npy is byte for byte np.save of what the batches concatenate to, the .csv
    holds the same numbers, a folder the same pictures; another batch size gives the same samples to float32
    rounding (tests/test_cli.py::test_samples_do_not_depend_on_the_batch_size)."""
    flags = ["-n", "23", "--batch-size", "7", "--seed", "4", "--sampler", "ddim"]
    want = expected_samples(models["vectors"], 23, 7, 4)
    for name in ("s.npy", "s.csv"):
        assert sample(models["vectors"], tmp_path / name, *flags) == 0
    np.save(tmp_path / "want.npy", want)
    assert (tmp_path / "s.npy").read_bytes() == (tmp_path / "want.npy").read_bytes()
    assert np.array_equal(np.loadtxt(tmp_path / "s.csv", delimiter=","), want)
    assert sample(models["vectors"], tmp_path / "b23.npy", *flags[:2], "--batch-size", "23", *flags[4:]) == 0
    np.testing.assert_allclose(np.load(tmp_path / "b23.npy"), want, rtol=0, atol=1e-4)
    levels = expected_samples(models["images"], 23, 7, 4)
    assert sample(models["images"], f"{tmp_path / 'pngs'}/", *flags) == 0
    assert sample(models["images"], tmp_path / "i.npy", *flags) == 0
    assert np.array_equal(np.load(tmp_path / "i.npy"), levels) and levels.dtype == np.uint8
    for i in range(23):  # 17 levels shown as round(v 255 / 16)
        png = np.asarray(Image.open(tmp_path / "pngs" / f"{i:06d}_seed4.png"))
        assert np.array_equal(png, (510 * levels[i, 0].astype(int) + 16) // 32)


def test_class_groups_stream_into_named_files(models, tmp_path):
    out = f"{tmp_path / 'pngs'}/"
    assert sample(models["classes"], out, "--class", "a", "b", "-n", "3", "--batch-size", "2", "--seed", "1") == 0
    assert sample(models["classes"], tmp_path / "all.npy", "--class", "a", "b", "-n", "3", "--seed", "1") == 0
    levels = np.load(tmp_path / "all.npy")
    names = sorted(p.name for p in (tmp_path / "pngs").iterdir())
    assert names == sorted(f"{c}_{i:06d}_seed1.png" for c in "ab" for i in range(3))
    for k, c in enumerate("ab"):
        for i in range(3):
            png = np.asarray(Image.open(tmp_path / "pngs" / f"{c}_{i:06d}_seed1.png"))
            assert np.array_equal(png, (510 * levels[3 * k + i, 0].astype(int) + 16) // 32)


@pytest.mark.parametrize("name", ["s.npy", "s.csv"])
def test_samples_reach_the_disk_batch_by_batch(models, tmp_path, monkeypatch, name):
    """While batch k is drawn, the temporary file already holds the batches before it (less what the file object
    still buffers): memory holds one batch, not all of them."""
    sizes, real = [], sample_cli.generate

    def watched(*args, **kwargs):
        sizes.append(sum(p.stat().st_size for p in tmp_path.glob(f".{name}.*.tmp")))
        return real(*args, **kwargs)

    monkeypatch.setattr(sample_cli, "generate", watched)
    assert sample(models["vectors"], tmp_path / name, "-n", "5000", "--batch-size", "1000", "--sampler", "ddim") == 0
    batch_bytes = 1000 * 3 * (8 if name.endswith(".npy") else 18)  # a .csv value takes >= 18 bytes with its comma
    assert len(sizes) == 5 and sizes[0] == 0
    assert sizes[4] >= 3 * batch_bytes  # 4 batches written, at most one still in a buffer
    assert [p.name for p in tmp_path.iterdir()] == [name]


def test_an_output_larger_than_the_disk_is_refused_before_any_work(models, tmp_path, capsys, monkeypatch):
    calls = []
    monkeypatch.setattr(sample_cli, "generate", lambda *a, **k: calls.append(1))
    for name in ("s.npy", "s.csv"):
        one_line_error(capsys, ["sample", str(models["vectors"]), "-n", str(10 ** 12), "--out", str(tmp_path / name)],
                       f"{10 ** 12} samples take about", "GB free on its disk")
    one_line_error(capsys, ["sample", str(models["images"]), "-n", str(10 ** 13), "--out", f"{tmp_path / 'p'}/"],
                   "GB free on its disk")
    np.save(tmp_path / "x.npy", np.ones((2, 3)))
    np.save(tmp_path / "mask.npy", np.array([1, 0, 0]))
    one_line_error(capsys, ["inpaint", str(models["vectors"]), "--image", str(tmp_path / "x.npy"), "--mask",
                            str(tmp_path / "mask.npy"), "-n", str(10 ** 12), "--out", str(tmp_path / "o.npy")],
                   "GB free on its disk")
    assert calls == [] and sorted(p.name for p in tmp_path.iterdir()) == ["mask.npy", "x.npy"]


def test_a_grid_above_the_limit_is_refused(models, tmp_path, capsys):
    one_line_error(capsys, ["sample", str(models["images"]), "-n", str(MAX_GRID + 1), "--out", str(tmp_path / "g.png")],
                   f"a .png grid holds at most {MAX_GRID} images", "folder DIR/")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", ["s.npy", "s.csv", "g.png", "pngs/"])
def test_a_failure_mid_stream_leaves_the_target_as_it_was(tmp_path, name):
    """The second batch raises: no file of the run, no temporary one, and an existing target unchanged."""
    images = name in ("g.png", "pngs/")
    shape, levels = ((1, 8, 8), 17) if images else ((3,), None)
    (tmp_path / "pngs").mkdir()
    (tmp_path / "pngs" / "000000_seed0.png").write_bytes(b"old")
    if not images:
        (tmp_path / name).write_bytes(b"old")
    target = check_target(tmp_path / name, shape, levels, 4, 0, overwrite=True)
    before = snapshot(tmp_path)

    def batches():
        yield torch.zeros(2, *shape, dtype=torch.uint8 if images else torch.float64)
        raise InputError("the sampler returned NaN")

    with pytest.raises(InputError, match="returned NaN"):
        write_samples(target, batches())
    assert snapshot(tmp_path) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["pngs", *([] if images else [name])])
