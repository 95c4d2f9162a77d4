"""Tests of gaussdiff.report: the pictures of a run draw the model's own samples with the stated sampler settings, name
a table's columns by its header in the units each picture is in, and say what they draw on stderr."""

import json
import re

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from PIL import Image
from test_cli import one_line_error

from gaussdiff import plots, report
from gaussdiff.cli import main
from gaussdiff.data.images import save_image_grid
from gaussdiff.nets import MLP, UNet
from gaussdiff.samplers import ddpm, timestep_grid
from gaussdiff.samplers.noise import RowNoise
from gaussdiff.saved import SavedModel
from gaussdiff.schedule import make_schedule
from gaussdiff.transforms import Pixels, Standardize

T = 50  # min(100, T) = 50 trailing steps: the grid is 50, 49, ..., 1, 0
HEADER = ["alpha", "beta", "label", "gamma", "delta", "eps"]  # "label" is the run's --label-column
FEATURES = [c for c in HEADER if c != "label"]


def table_rows(n=120, seed=0):
    """(all columns, features without the label column) of a small table with an integer label column."""
    rng = np.random.default_rng(seed)
    features = rng.normal(size=(n, 5)) * [1, 2, 3, 4, 5] + [10, 0, -5, 1, 2]
    labels = rng.integers(0, 3, size=(n, 1)).astype(float)
    return np.hstack([features[:, :2], labels, features[:, 2:]]), features


def make_run(folder, data, dim, columns=None, label_column=None, net=None, transform=None, variance="fixed_small"):
    """A run folder (model/, config.json, metrics.jsonl) around an untrained network, as ``gaussdiff train`` leaves."""
    torch.manual_seed(0)
    net = net or MLP(dim, T, width=16, depth=1, emb_dim=8, learn_variance=variance == "learned_range")
    transform = transform or Standardize(torch.arange(1.0, dim + 1), torch.full((dim,), 2.0))
    model = SavedModel(net, make_schedule("linear", T), "epsilon", transform, str(data), variance, None, columns)
    folder.mkdir()
    model.save(folder / "model")
    (folder / "config.json").write_text(json.dumps({"data": str(data), "seed": 0, "label_column": label_column}))
    (folder / "metrics.jsonl").write_text("".join(json.dumps({"step": s, "loss": 1 / s, "lr": 1e-3}) + "\n"
                                                  for s in range(1, 21)))
    return folder


@pytest.fixture
def table_run(tmp_path):
    everything, _ = table_rows()
    path = tmp_path / "table.csv"
    np.savetxt(path, everything, delimiter=",", header=",".join(HEADER), comments="")
    return make_run(tmp_path / "run", path, 5, label_column="label")


@pytest.fixture
def figures(monkeypatch):
    """The figures the pictures would have written, by file name, captured instead of saved."""
    seen = {}
    monkeypatch.setattr(plots, "_save", lambda fig, path: seen.__setitem__(path.name, fig) or path)
    yield seen
    plt.close("all")


def calls(monkeypatch, name):
    """Record the arguments of each call of plots.<name>, then draw as it would."""
    seen, draw = [], getattr(plots, name)
    monkeypatch.setattr(plots, name, lambda *a, **k: seen.append((a, k)) or draw(*a, **k))
    return seen


def reference_samples(model, n, seed, variance="beta_tilde"):
    """ddpm on the 50 trailing steps with ``variance``, x_T and the noise of rows 0..n-1 of the set seeded by
    ``seed``: what ``gaussdiff sample -n n --seed seed`` writes, built here from the sampler function itself."""
    noise = RowNoise(seed, 0, n, model.sample_shape)
    x_T = noise.draw()
    network = model.reverse_model() if variance == "learned" else model.denoiser()
    with torch.no_grad():
        return ddpm(network, x_T, model.schedule, timestep_grid(model.schedule, T, "trailing"), generator=noise,
                    variance=variance), x_T


def labels(fig):
    """(x labels of the bottom row, y labels of the left column) of a figure's visible axes grid."""
    axes = [ax for ax in fig.axes if ax.get_visible()]
    bottom = max(ax.get_subplotspec().rowspan.start for ax in axes)
    rows = [ax for ax in axes if ax.get_subplotspec().rowspan.start == bottom]
    left = [ax for ax in axes if ax.get_subplotspec().colspan.start == 0]
    return [ax.get_xlabel() for ax in rows], [ax.get_ylabel() for ax in left]


# --- tables: a pair plot named by the header ----------------------------------------------------

def test_a_table_gets_a_pair_plot_of_its_first_columns_named_by_the_header(table_run, figures):
    report.make_pictures(table_run, n=300, seed=3, progress=False)
    pair = figures["samples.png"]
    k = plots.PAIR_COLUMNS
    assert len(pair.axes) == k * k
    xs, ys = labels(pair)
    assert xs == [f"{c} (data units)" for c in FEATURES[:k]]  # the label column is not a feature
    assert ys == [f"{c} (data units)" for c in FEATURES[:k]]
    assert f"first {k} of 5 columns" in pair.get_suptitle()
    chain_x, chain_y = labels(figures["chain.png"])
    assert set(chain_x) == {"alpha (model units)"}
    assert all(y.endswith("beta (model units)") for y in chain_y)


def test_pair_plot_data_are_the_tables_rows_and_samples_the_models_with_the_stated_settings(table_run, figures,
                                                                                            monkeypatch, capsys):
    pairs = calls(monkeypatch, "pair_plot")
    report.make_pictures(table_run, n=300, seed=3)
    [(args, kwargs)] = pairs
    samples, data = args[0], args[1]
    np.testing.assert_array_equal(data.numpy(), table_rows()[1])  # all 120 rows (n > 120), file order, no labels
    model = report.load_model(table_run)
    expected, _ = reference_samples(model, 300, seed=3)
    torch.testing.assert_close(samples, model.transform.inverse(expected.double()), rtol=0, atol=0)
    settings = "ddpm (variance beta_tilde), 50 trailing steps, seed 3"
    assert settings in kwargs["title"] and settings in capsys.readouterr().err


def test_pair_plot_panels_hold_data_below_the_diagonal_and_samples_above(table_run, figures, monkeypatch):
    pairs = calls(monkeypatch, "pair_plot")
    report.make_pictures(table_run, n=200, seed=1, progress=False)
    samples, data = (np.asarray(a, dtype=float) for a in pairs[0][0][:2])
    axes = np.array(figures["samples.png"].axes).reshape(plots.PAIR_COLUMNS, plots.PAIR_COLUMNS)
    for (i, j) in [(1, 0), (3, 2), (0, 1), (2, 3)]:
        drawn = axes[i, j].collections[0].get_offsets()
        np.testing.assert_allclose(drawn, (data if i > j else samples)[:, [j, i]])
    assert not axes[2, 2].collections and axes[2, 2].patches  # histograms on the diagonal


def test_with_the_data_file_gone_the_columns_are_numbered_and_the_samples_drawn_alone(table_run, figures, capsys):
    (table_run.parent / "table.csv").unlink()
    paths = report.make_pictures(table_run, n=100, progress=True)
    assert [p.name for p in paths] == ["samples.png", "chain.png", "loss.png"]
    xs, _ = labels(figures["samples.png"])
    assert xs == [f"column {j} (data units)" for j in range(plots.PAIR_COLUMNS)]
    assert "model samples (n = 100)" in figures["samples.png"].get_suptitle()
    assert "data not drawn:" in capsys.readouterr().err


def test_column_names_recorded_in_the_model_outlive_the_data_file(tmp_path, figures):
    run = make_run(tmp_path / "run", tmp_path / "gone.csv", 3, columns=["u", "v", "w"])
    report.make_pictures(run, n=50, progress=False)
    assert labels(figures["samples.png"])[0] == ["u (data units)", "v (data units)", "w (data units)"]


# --- two columns: the 2-D scatter ---------------------------------------------------------------

def test_a_two_column_run_still_draws_the_2d_scatter_over_fresh_data(tmp_path, figures, monkeypatch):
    pairs, scatters = calls(monkeypatch, "pair_plot"), calls(monkeypatch, "samples_over_data")
    run = make_run(tmp_path / "run", "moons", 2)
    report.make_pictures(run, n=400, seed=2, progress=False)
    assert not pairs and len(scatters) == 1
    samples, data, _ = scatters[0][0]
    assert samples.shape == data.shape == (400, 2)
    fig = figures["samples.png"]
    assert [ax.get_xlabel() for ax in fig.axes] == ["x (data units)"] * 2 and fig.axes[0].get_ylabel() == \
        "y (data units)"
    # moons in its own (standardized) units, not the model's (mean 1, 2 and std 2 away): mean 0, std 1 per axis;
    # 4 sd of a mean of 400 points
    np.testing.assert_allclose(data.mean(0), 0, atol=4 / 20)
    np.testing.assert_allclose(data.std(0), 1, atol=0.15)


def test_the_strip_shows_the_sampling_run_from_its_seeded_x_T_to_its_samples(tmp_path, figures, monkeypatch):
    strips, scatters = calls(monkeypatch, "chain_strip"), calls(monkeypatch, "samples_over_data")
    run = make_run(tmp_path / "run", "moons", 2)
    report.make_pictures(run, n=64, seed=5, progress=False)
    (forward, backward, strip_T, _), kwargs = strips[0]
    model = report.load_model(run)
    samples, x_T = reference_samples(model, 64, seed=5)
    states = dict(backward)
    assert strip_T == T and max(states) == T and min(states) == 0 and len(states) == len(report.STRIP_FRACTIONS)
    torch.testing.assert_close(states[T], x_T, rtol=0, atol=0)
    torch.testing.assert_close(states[0], samples, rtol=0, atol=0)
    data = scatters[0][0][1]  # q(x_0 | x_0) is the data itself, in model units
    torch.testing.assert_close(dict(forward)[0].double(), model.transform.forward(data), rtol=0, atol=1e-6)
    assert kwargs["units"] == plots.MODEL_UNITS


def test_a_learned_range_model_is_drawn_with_its_learned_variance(tmp_path, figures, monkeypatch):
    scatters = calls(monkeypatch, "samples_over_data")
    run = make_run(tmp_path / "run", "moons", 2, variance="learned_range")
    report.make_pictures(run, n=100, seed=7, progress=False)
    model = report.load_model(run)
    learned, _ = reference_samples(model, 100, seed=7, variance="learned")
    torch.testing.assert_close(scatters[0][0][0], model.transform.inverse(learned.double()), rtol=0, atol=0)
    assert "variance learned" in scatters[0][1]["title"]
    assert not torch.allclose(learned, reference_samples(model, 100, seed=7)[0], atol=1e-3)


# --- progress, threads --------------------------------------------------------------------------

def test_one_progress_line_per_piece_of_work_with_its_seconds(table_run, figures, capsys):
    report.make_pictures(table_run, n=100)
    err = capsys.readouterr().err.splitlines()
    timed = [line for line in err if re.fullmatch(r"pictures: .+ \.\.\. \d+\.\d s", line)]
    assert [line.split(" ...")[0] for line in timed] == [
        "pictures: sampling 100 points", "pictures: samples.png (pairs of the first 4 of 5 columns)",
        "pictures: chain.png", "pictures: loss.png"]
    assert re.fullmatch(r"pictures: 3 in .+ in \d+\.\d s \(1 torch thread\(s\)\)", err[-1])


def test_pictures_sample_on_one_thread_and_restore_the_count(tmp_path, figures, monkeypatch):
    seen = []
    monkeypatch.setattr(report, "point_pictures", lambda *a: seen.append(torch.get_num_threads()) or [])
    run = make_run(tmp_path / "run", "moons", 2)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        report.make_pictures(run, progress=False)
        report.make_pictures(run, threads=2, progress=False)
        assert seen == [report.PICTURE_THREADS, 2] and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


# --- images -------------------------------------------------------------------------------------

def test_image_pictures_are_the_grid_gaussdiff_sample_draws_and_a_strip(tmp_path):
    torch.manual_seed(0)
    net = UNet([1, 8, 8], T, base_channels=8, norm_groups=4, num_heads=2)
    run = make_run(tmp_path / "run", "digits", None, net=net, transform=Pixels((1, 8, 8), 17))
    paths = report.make_pictures(run, seed=4, progress=False)
    assert [p.name for p in paths] == ["samples.png", "chain.png", "loss.png"]
    model = report.load_model(run)
    clipped = lambda x, t: model.denoiser()(x, t).clamp(-1, 1)  # images: x0 clipped to the data's range
    noise = RowNoise(4, 0, report.GRID_SAMPLES, (1, 8, 8))
    with torch.no_grad():
        x = ddpm(clipped, noise.draw(), model.schedule, timestep_grid(model.schedule, T), generator=noise)
    save_image_grid(tmp_path / "expected.png", model.to_data_units(x).numpy(), 17)
    with Image.open(paths[0]) as got, Image.open(tmp_path / "expected.png") as want:
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    with Image.open(paths[1]) as strip, Image.open(tmp_path / "expected.png") as grid:
        # 3 kinds of rows (noised data, x_t, predicted x_0) of STRIP_ROWS images, one column per strip time
        cell = grid.size[0] // 8  # the 8 x 8 grid of 64 images: one cell = an image and its padding
        assert strip.size == (len(report.STRIP_FRACTIONS) * cell + 1, 3 * report.STRIP_ROWS * cell + 1)


# --- the command --------------------------------------------------------------------------------

def test_gaussdiff_plot_says_what_it_draws_on_stderr_and_names_the_pictures_on_stdout(table_run, tmp_path, figures,
                                                                                      capsys):
    out = tmp_path / "pics"
    assert main(["plot", str(table_run), "-n", "60", "--out", str(out), "--threads", "1"]) == 0
    captured = capsys.readouterr()
    assert captured.out.splitlines() == [f"picture: {out / name}" for name in ("samples.png", "chain.png", "loss.png")]
    assert "pictures: samples.png (pairs of the first 4 of 5 columns) ..." in captured.err
    one_line_error(capsys, ["plot", table_run, "--threads", "0"], "--threads must be positive, got 0")
