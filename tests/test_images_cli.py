"""Images end to end through the command line: train on a folder of pictures (unreadable files skipped and counted),
sample to a PNG grid, a .npy of levels or a folder of PNGs (the same samples in all three, whatever --batch-size), the
bound at the data's levels on the held-out digits, and bad input refused in one line with nothing left on disk."""

import json

import numpy as np
import pytest
from PIL import Image

from gaussdiff.cli import main
from gaussdiff.saved import load_model

TINY_UNET = '{"kind": "unet", "base_channels": 8, "norm_groups": 4, "attention_resolutions": [], "num_heads": 1}'
FAST = ["--steps", "3", "--batch-size", "4", "--num-train-timesteps", "20", "--threads", "1", "--no-pictures",
        "--network", TINY_UNET]


def one_line_error(capsys, argv, needle):
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2 and len(err.splitlines()) == 1 and needle in err and "Traceback" not in err, err


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """Two classes of 8x8 pictures in four modes, plus a corrupt PNG and a zero-byte JPEG."""
    root = tmp_path_factory.mktemp("pictures")
    rng = np.random.default_rng(0)
    for name in ("circles", "squares"):
        (root / name).mkdir()
        for i, mode in enumerate(["RGB", "L", "RGBA", "P", "RGB", "L"]):
            pixels = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
            Image.fromarray(pixels).convert(mode).save(root / name / f"{i}.png")
    (root / "circles" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (root / "squares" / "empty.jpg").write_bytes(b"")
    return root


@pytest.fixture(scope="module")
def run(folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "pictures"
    assert main(["train", "--data", str(folder), "--out", str(out), *FAST]) == 0
    return out


def test_training_on_a_folder_skips_unreadable_files_and_saves_a_pixel_model(folder, tmp_path):
    out = tmp_path / "run"
    with pytest.warns(UserWarning, match=r"skipped 2 unreadable file\(s\), e.g. .*broken.png"):
        assert main(["train", "--data", str(folder), "--out", str(out), *FAST]) == 0
    config = json.loads((out / "model" / "config.json").read_text())
    assert config["sample_shape"] == [3, 8, 8] and config["network"]["kind"] == "unet"
    assert config["data"]["transform"] == {"kind": "pixels", "sample_shape": [3, 8, 8], "levels": 256}


def test_grid_npy_and_folder_hold_the_same_samples_whatever_the_batch_size(run, tmp_path):
    common = [str(run), "-n", "6", "--steps", "5", "--seed", "3"]
    assert main(["sample", *common, "--out", str(tmp_path / "a.npy"), "--batch-size", "6"]) == 0
    assert main(["sample", *common, "--out", str(tmp_path / "b.npy"), "--batch-size", "4"]) == 0
    assert main(["sample", *common, "--out", str(tmp_path / "pngs") + "/", "--batch-size", "5"]) == 0
    assert main(["sample", *common, "--out", str(tmp_path / "grid.png")]) == 0
    a, b = np.load(tmp_path / "a.npy"), np.load(tmp_path / "b.npy")
    assert a.dtype == np.uint8 and a.shape == (6, 3, 8, 8)
    np.testing.assert_array_equal(a, b)  # sample i's noise is a function of (seed, i) alone
    files = sorted((tmp_path / "pngs").iterdir())
    assert [f.name for f in files] == [f"{i:06d}_seed3.png" for i in range(6)]
    for i, f in enumerate(files):  # 256 levels: a PNG stores the levels themselves
        np.testing.assert_array_equal(np.asarray(Image.open(f)).transpose(2, 0, 1), a[i])
    grid = Image.open(tmp_path / "grid.png")
    assert grid.mode == "RGB" and grid.size == (3 * 32 + 4, 2 * 32 + 3)  # 3 x 2 tiles of 32 px, 1 px padding


def test_x0_clipping_is_on_for_images_and_can_be_turned_off(run, tmp_path):
    """A 3-step model's x0 estimates leave [-1, 1]; unclipped samples of the same noise differ from clipped ones."""
    common = [str(run), "-n", "6", "--steps", "5"]
    assert main(["sample", *common, "--out", str(tmp_path / "on.npy")]) == 0
    assert main(["sample", *common, "--out", str(tmp_path / "off.npy"), "--no-clip-x0"]) == 0
    assert not np.array_equal(np.load(tmp_path / "on.npy"), np.load(tmp_path / "off.npy"))


def test_elbo_on_the_held_out_digits_uses_their_17_levels(tmp_path):
    out = tmp_path / "digits"
    assert main(["train", "--data", "digits", "--out", str(out), *FAST]) == 0
    assert load_model(out).transform.levels == 17
    assert main(["elbo", str(out), "--data", "digits", "-n", "3", "--out", str(tmp_path / "elbo")]) == 0
    result = json.loads((tmp_path / "elbo" / "elbo.json").read_text())
    assert result["levels"] == 17 and result["dim"] == 64 and result["log_det_jacobian"] == 0.0
    assert result["terms"]["total"]["bits_per_dim"] > 0  # a bound on a probability: -log2 P >= 0


def bad_npy(tmp_path, name, array):
    np.save(tmp_path / name, array, allow_pickle=True)
    return tmp_path / name


@pytest.mark.parametrize("make, extra, needle", [
    (lambda p: (p / "empty").mkdir() or p / "empty", [], "empty"),
    (lambda p: (p / "texts").mkdir() or (p / "texts" / "a.txt").write_text("hi") and p / "texts", [], "texts"),
    (lambda p: bad_npy(p, "five.npy", np.zeros((2, 1, 1, 8, 8), np.uint8)), [], "five.npy"),
    (lambda p: bad_npy(p, "objects.npy", np.array([[{"a": 1}] * 8] * 8, dtype=object)[None]), [], "objects.npy"),
    (lambda p: bad_npy(p, "floats.npy", np.zeros((4, 8, 8))), [], "pixel"),
])
def test_bad_image_data_is_one_line_and_creates_no_run(tmp_path, capsys, make, extra, needle):
    data = make(tmp_path)
    one_line_error(capsys, ["train", "--data", str(data), "--out", str(tmp_path / "run"), *FAST, *extra], needle)
    assert not (tmp_path / "run").exists()


def test_image_size_the_unet_cannot_halve_is_one_line_and_creates_no_run(folder, tmp_path, capsys):
    one_line_error(capsys, ["train", "--data", str(folder), "--out", str(tmp_path / "run"), *FAST,
                            "--image-size", "9"], "image size 9x9 is not divisible by 2")
    assert not (tmp_path / "run").exists()


def test_a_vector_model_is_refused_for_pictures_and_an_image_model_for_csv(run, tmp_path, capsys):
    v1 = str(__import__("pathlib").Path(__file__).parent / "fixtures" / "v1_model")
    one_line_error(capsys, ["sample", v1, "--out", str(tmp_path / "g.png")], "pictures are written for image models")
    one_line_error(capsys, ["sample", str(run), "--out", str(tmp_path / "s.csv")], "images are written as")
    assert list(tmp_path.iterdir()) == []


def test_previews_do_not_change_training_and_a_resumed_image_run_is_byte_identical(tmp_path):
    """Previews draw with their own seeded noise and the network in eval mode: the weights come out byte-identical
    with and without them. An image run resumed from its step-2 checkpoint ends where an uninterrupted one does."""
    common = ["--data", "digits", *FAST[2:], "--steps", "4", "--lr-schedule", "constant", "--checkpoint-every", "2"]
    assert main(["train", *common, "--out", str(tmp_path / "plain"), "--preview-every", "0"]) == 0
    assert main(["train", *common, "--out", str(tmp_path / "previews"), "--preview-every", "2"]) == 0
    assert sorted(p.name for p in (tmp_path / "previews" / "pictures").iterdir()) == [
        "preview_00000002.png", "preview_00000004.png"]
    assert main(["train", *common, "--out", str(tmp_path / "resumed"), "--preview-every", "0", "--steps", "2"]) == 0
    assert main(["train", "--resume", str(tmp_path / "resumed"), "--steps", "4", "--no-pictures"]) == 0
    weights = {name: (tmp_path / name / "model" / "model.safetensors").read_bytes()
               for name in ("plain", "previews", "resumed")}
    assert weights["plain"] == weights["previews"] == weights["resumed"]


def test_sweep_of_an_image_model_is_one_line(run, tmp_path, capsys):
    one_line_error(capsys, ["sweep", str(run), "--data", "digits", "--out", str(tmp_path / "sweep")],
                   "sweep measures the sliced W2 distance of vectors")
    assert not (tmp_path / "sweep").exists()


def test_a_float_image_npy_trains_with_its_pixel_range(tmp_path):
    """Floats in [0, 1] with --pixel-range 0 1 become the levels round(255 x); the model is a 256-level pixel model."""
    images = np.random.default_rng(1).random((8, 8, 8, 1))  # (N, H, W, C), channels last
    np.save(tmp_path / "floats.npy", images)
    out = tmp_path / "run"
    assert main(["train", "--data", str(tmp_path / "floats.npy"), "--out", str(out), *FAST,
                 "--pixel-range", "0", "1"]) == 0
    assert load_model(out).transform.to_dict() == {"kind": "pixels", "sample_shape": [1, 8, 8], "levels": 256}
    assert json.loads((out / "config.json").read_text())["pixel_range"] == [0.0, 1.0]
