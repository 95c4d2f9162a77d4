"""gaussdiff sample --class/--guidance/--init and gaussdiff inpaint from the command line (issue 12), with the bad
inputs the issue lists: one line, exit code 2, nothing on disk changed."""

import math

import numpy as np
import pytest
import torch
from PIL import Image

from gaussdiff.cli import main
from gaussdiff.samplers import RowNoise, generate, timestep_grid
from gaussdiff.schedule import make_schedule

from test_cli import one_line_error, snapshot

TINY_DIGITS = ["--data", "digits", "--steps", "20", "--num-train-timesteps", "50", "--threads", "1", "--no-pictures",
               "--preview-every", "0", "--network", '{"kind": "unet", "base_channels": 8, "norm_groups": 4}']


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A class-conditional digits run (label dropout 0.1), one without label dropout and an unconditional one."""
    root = tmp_path_factory.mktemp("cond")
    for name, extra in (("cond", ["--class-conditional"]), ("nodrop", ["--class-conditional", "--label-dropout", "0"]),
                        ("plain", [])):
        assert main(["train", "--out", str(root / name), *TINY_DIGITS, *extra]) == 0
    top = np.zeros((8, 8), dtype=np.uint8)
    top[:4] = 255
    Image.fromarray(top).save(root / "top.png")
    return root


def test_several_classes_make_one_grid_row_each_and_share_the_noise(runs, tmp_path):
    """--class 3 7 -n 4: the .npy holds class 3's four samples then class 7's; class 3's equal a run of --class 3
    alone (the same rows of the seeded set)."""
    both, alone = tmp_path / "both.npy", tmp_path / "alone.npy"
    assert main(["sample", str(runs / "cond"), "--class", "3", "7", "-n", "4", "--steps", "5", "--out", str(both)]) == 0
    assert main(["sample", str(runs / "cond"), "--class", "3", "-n", "4", "--steps", "5", "--out", str(alone)]) == 0
    assert np.array_equal(np.load(both)[:4], np.load(alone))
    grid = tmp_path / "grid.png"
    assert main(["sample", str(runs / "cond"), "--class", "3", "7", "-n", "4", "--steps", "5", "--out", str(grid)]) == 0
    width, height = Image.open(grid).size
    assert width > 1.8 * height  # 4 columns, 2 rows


def test_guidance_1_is_the_conditional_model_and_0_the_unconditional(runs, tmp_path):
    out = {s: tmp_path / f"s{s}.npy" for s in ("0", "1", "none")}
    for s in ("0", "1"):
        assert main(["sample", str(runs / "cond"), "--class", "5", "-n", "6", "--steps", "5", "--guidance", s,
                     "--out", str(out[s])]) == 0
    assert main(["sample", str(runs / "cond"), "-n", "6", "--steps", "5", "--out", str(out["none"])]) == 0
    assert np.array_equal(np.load(out["0"]), np.load(out["none"]))  # s = 0: the null label's model
    assert not np.array_equal(np.load(out["1"]), np.load(out["0"]))


def test_sdedit_on_the_gaussian_oracle_starts_from_the_noised_init():
    """For data N(0, I) the exact denoiser is sqrt(abar) x_t, and a DDIM step t -> s (eta 0) maps x to
    (sqrt(abar_s abar_t) + sqrt((1 - abar_s)(1 - abar_t))) x. So SDEdit returns its start,
    x_t0 = sqrt(abar_t0) init + sqrt(1 - abar_t0) z (t0 the first of the last round(s K) grid times, z the seeded
    set's first draw), times the product of those factors over the kept steps. float64: agreement to 1e-10."""
    schedule = make_schedule("linear", 1000, 1e-4, 0.02)
    oracle = lambda x_t, t: schedule.alpha_bar_at(torch.as_tensor(t, dtype=torch.float64)).sqrt() * x_t
    init = torch.randn(5, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    z = RowNoise(4, 0, 5, (3,), dtype=torch.float64).draw()
    for strength in (0.3, 0.6, 1.0):
        x = generate(oracle, (5, 3), schedule, sampler="ddim", steps=20, seed=4, dtype=torch.float64, init=init,
                     strength=strength)
        kept = timestep_grid(schedule, 20, "trailing")[-(round(strength * 20) + 1):]
        ab = schedule.alpha_bar_at(kept).tolist()
        factor = math.prod(math.sqrt(a * b) + math.sqrt((1 - a) * (1 - b)) for a, b in zip(ab[:-1], ab[1:]))
        start = math.sqrt(ab[0]) * init + math.sqrt(1 - ab[0]) * z
        assert torch.allclose(x, factor * start, atol=1e-10, rtol=0), strength


def test_sdedit_from_the_command_line(runs, tmp_path):
    src, low, png = tmp_path / "src.npy", tmp_path / "low.npy", tmp_path / "edit.png"
    assert main(["sample", str(runs / "plain"), "-n", "3", "--steps", "10", "--out", str(src)]) == 0
    assert main(["sample", str(runs / "plain"), "--init", str(src), "--strength", "0.1", "--steps", "10",
                 "--out", str(low)]) == 0
    assert np.load(low).shape == (3, 1, 8, 8)
    assert main(["sample", str(runs / "plain"), "--init", str(src), "-n", "2", "--steps", "10", "--out", str(png)]) == 0


@pytest.mark.parametrize("method", ["replace_x0", "replace_xt", "repaint"])
def test_inpaint_returns_the_known_half_exactly(runs, tmp_path, method):
    src, out = tmp_path / "src.npy", tmp_path / "out.npy"
    assert main(["sample", str(runs / "plain"), "-n", "3", "--steps", "5", "--out", str(src)]) == 0
    assert main(["inpaint", str(runs / "plain"), "--image", str(src), "--mask", str(runs / "top.png"),
                 "--method", method, "--steps", "12", "--jump-length", "3", "--jump-count", "2", "-n", "2",
                 "--out", str(out)]) == 0
    images, filled = np.load(src), np.load(out)
    assert filled.shape == (6, 1, 8, 8)
    assert np.array_equal(filled[:, :, :4], np.repeat(images, 2, axis=0)[:, :, :4])


def test_inpaint_prints_repaints_nfe(runs, tmp_path, capsys):
    src = tmp_path / "src.npy"
    assert main(["sample", str(runs / "plain"), "-n", "1", "--steps", "5", "--out", str(src)]) == 0
    capsys.readouterr()
    assert main(["inpaint", str(runs / "plain"), "--image", str(src), "--mask", str(runs / "top.png"),
                 "--out", str(tmp_path / "o.png"), "--steps", "20"]) == 0
    # 20 steps, j = 10, r = 10: jumps at the authors' t = 0 only (t < 20 - 10), 9 times 10 more calls
    assert "repaint on ddpm, 20 steps, jump length 10, jump count 10: 110 network calls per sample" in \
        capsys.readouterr().err


def _bad_masks(folder):
    gray = np.zeros((8, 8), dtype=np.uint8)
    gray[:4] = 128
    Image.fromarray(gray).save(folder / "gray.png")
    Image.fromarray(np.zeros((6, 6), dtype=np.uint8)).save(folder / "small.png")
    Image.fromarray(np.full((8, 8), 255, dtype=np.uint8)).save(folder / "white.png")
    np.save(folder / "wrong.npy", np.ones((3, 8, 8), dtype=np.uint8))


@pytest.mark.parametrize("argv, needles", [
    (["sample", "{cond}", "--class", "99"], ["no class '99'", "0..9"]),
    (["sample", "{cond}", "--class", "seven"], ["no class 'seven'"]),
    (["sample", "{plain}", "--class", "3"], ["not class-conditional", "--class"]),
    (["sample", "{plain}", "--guidance", "2"], ["not class-conditional", "--guidance"]),
    (["sample", "{cond}", "--guidance", "2"], ["give --class too"]),
    (["sample", "{nodrop}", "--class", "1", "--guidance", "2"], ["without label dropout"]),
    (["sample", "{cond}", "--class", "1", "--guidance", "nan"], ["finite"]),
    (["sample", "{cond}", "--class", "1", "--guidance-rescale", "2"], ["rescale must lie in [0, 1]"]),
    (["sample", "{cond}", "--class", "1", "--guidance-interval", "3", "1"], ["0 <= lo < hi"]),
    (["sample", "{plain}", "--strength", "0.5"], ["--strength goes with --init"]),
    (["sample", "{plain}", "--init", "{top}", "--strength", "1.5"], ["strength must lie in (0, 1]"]),
    (["inpaint", "{plain}", "--image", "{top}", "--mask", "{gray}"], ["black (0, unknown) and white (255, known)"]),
    (["inpaint", "{plain}", "--image", "{top}", "--mask", "{small}"], ["6x6 pixels", "8x8"]),
    (["inpaint", "{plain}", "--image", "{top}", "--mask", "{white}"], ["every value as known", "nothing to fill"]),
    (["inpaint", "{plain}", "--image", "{top}", "--mask", "{wrong}"], ["3 masks for 1 inputs"]),
    (["inpaint", "{plain}", "--image", "{top}", "--mask", "{top}", "--method", "repaint", "--sampler", "dpmpp_2m"],
     ["ddpm"]),
])
def test_bad_conditioning_input_is_one_line(runs, tmp_path, capsys, argv, needles):
    _bad_masks(tmp_path)
    names = dict(cond=runs / "cond", plain=runs / "plain", nodrop=runs / "nodrop", top=runs / "top.png",
                 gray=tmp_path / "gray.png", small=tmp_path / "small.png", white=tmp_path / "white.png",
                 wrong=tmp_path / "wrong.npy")
    before = snapshot(runs)
    argv = [a.format(**names) for a in argv] + ["--out", str(tmp_path / "out.npy"), "--steps", "3"]
    one_line_error(capsys, argv, *needles)
    assert snapshot(runs) == before and not (tmp_path / "out.npy").exists()


def test_all_unknown_mask_warns_and_samples(runs, tmp_path, capsys):
    Image.fromarray(np.zeros((8, 8), dtype=np.uint8)).save(tmp_path / "black.png")
    with pytest.warns(UserWarning, match="marks no value as known: this is plain sampling"):
        assert main(["inpaint", str(runs / "plain"), "--image", str(runs / "top.png"), "--mask",
                     str(tmp_path / "black.png"), "--method", "replace_xt", "--steps", "3",
                     "--out", str(tmp_path / "o.npy")]) == 0


@pytest.mark.parametrize("extra, needles", [
    (["--label-column", "nope"], ["no label column 'nope'", "x, label, y"]),
    (["--label-column", "x"], ["non-integer values"]),
    (["--label-column", "label"], []),
])
def test_label_column_errors_leave_no_run(tmp_path, capsys, extra, needles):
    rng = np.random.default_rng(0)
    rows = np.column_stack([rng.normal(size=200), rng.integers(0, 3, 200), rng.normal(size=200)])
    table = tmp_path / "t.csv"
    table.write_text("x,label,y\n" + "\n".join(f"{a!r},{int(b)},{c!r}" for a, b, c in rows.tolist()))
    out = tmp_path / "run"
    argv = ["train", "--data", str(table), "--out", str(out), "--class-conditional", "--steps", "5", "--threads", "1",
            "--no-pictures", "--width", "16", "--depth", "1", *extra]
    if not needles:  # the good column trains, and the model names its classes by the column's values
        assert main(argv) == 0
        assert (out / "model" / "config.json").read_text().count('"classes": [') == 1
        return
    one_line_error(capsys, argv, *needles)
    assert not out.exists()


def test_label_column_needs_class_conditional(tmp_path, capsys):
    one_line_error(capsys, ["train", "--data", "moons", "--label-column", "1", "--out", str(tmp_path / "r")],
                   "add --class-conditional")
