"""Tests of gaussdiff.plots: each picture is a real PNG, written atomically; bad shapes fail early."""

import matplotlib.figure
import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from PIL import Image

from gaussdiff import plots
from gaussdiff.errors import InputError

RNG = np.random.default_rng(0)
CLOUD = RNG.standard_normal((200, 2))
FORWARD = [(0, CLOUD), (500, 0.5 * CLOUD), (1000, RNG.standard_normal((200, 2)))]
BACKWARD = [(t, pts) for t, pts in reversed(FORWARD)]
STEPS = np.arange(1, 301)
LOSSES = 0.3 + np.exp(-STEPS / 50) * RNG.uniform(0.5, 1.5, STEPS.size)


def assert_png(path):
    """`path` is the only file in its folder, a PNG of a real picture (not one flat colour)."""
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # no temp file left
    with Image.open(path) as img:
        assert img.format == "PNG" and min(img.size) > 100
        assert np.asarray(img.convert("L"), dtype=float).std() > 10
    assert plt.get_fignums() == []  # the figure was closed


# --- each picture is written -------------------------------------------------------------------

@pytest.mark.parametrize("overlay", [False, True])
def test_samples_over_data_writes_png(tmp_path, overlay):
    path = tmp_path / "samples.png"
    assert plots.samples_over_data(CLOUD + 1, CLOUD, path, title="toy", overlay=overlay) == path
    assert_png(path)


def test_chain_strip_writes_png(tmp_path):
    path = tmp_path / "chain.png"
    assert plots.chain_strip(FORWARD, BACKWARD, 1000, path) == path
    assert_png(path)
    assert path.stat().st_mode & 0o777 == 0o644  # readable like any file, not mkstemp's 0o600


def test_chain_strip_with_one_row(tmp_path):
    assert_png(plots.chain_strip(FORWARD, [], 1000, tmp_path / "forward_only.png"))


@pytest.mark.parametrize("lrs", [None, np.linspace(1e-3, 0, STEPS.size)])
def test_loss_curve_writes_png(tmp_path, lrs):
    assert_png(plots.loss_curve(STEPS, LOSSES, tmp_path / "loss.png", lrs=lrs))


def test_loss_curve_skips_non_finite_and_non_positive_losses(tmp_path):
    losses = LOSSES - 0.5
    losses[10] = np.nan
    assert_png(plots.loss_curve(STEPS, losses, tmp_path / "loss.png"))


def test_metric_curves_writes_png(tmp_path):
    nfe = np.array([5, 10, 20, 50, 100])
    series = {"ddim": 1 / nfe, "ddpm": 3 / nfe, "floor": np.full(5, 0.02)}
    path = tmp_path / "sw2.png"
    assert_png(plots.metric_curves(nfe, series, path, "NFE", "SW2", logy=True, logx=True))


def test_pair_plot_writes_png(tmp_path):
    x = RNG.standard_normal((300, 3))
    assert_png(plots.pair_plot(x + 1, x, tmp_path / "pairs.png", columns=["a", "b", "c"], units=plots.DATA_UNITS))


def test_accepts_torch_tensors_and_makes_missing_folders(tmp_path):
    path = tmp_path / "run" / "pictures" / "samples.png"
    plots.samples_over_data(torch.from_numpy(CLOUD).float(), torch.from_numpy(CLOUD), path)
    assert_png(path)


# --- what the pictures say ---------------------------------------------------------------------

def _suptitle_of(monkeypatch, draw):
    """The figure title `draw()` would have written, captured instead of saving."""
    seen = []
    monkeypatch.setattr(plots, "_save", lambda fig, path: seen.append(fig.get_suptitle()))
    draw()
    plt.close("all")
    return seen[0]


def test_points_beyond_two_dims_are_named_in_the_title(monkeypatch):
    x = RNG.standard_normal((50, 5))
    title = _suptitle_of(monkeypatch, lambda: plots.samples_over_data(x, x, "unused.png"))
    assert "first 2 of 5 dims" in title
    title = _suptitle_of(monkeypatch, lambda: plots.chain_strip([(0, x)], [], 10, "unused.png"))
    assert "first 2 of 5 dims" in title


def _figure_of(monkeypatch, draw):
    """The figure `draw()` would have written, captured instead of saving."""
    seen = []
    monkeypatch.setattr(plots, "_save", lambda fig, path: seen.append(fig))
    draw()
    plt.close("all")
    return seen[0]


def test_pair_plot_has_a_panel_per_pair_of_the_first_columns_named_with_their_units(monkeypatch):
    data, samples = RNG.standard_normal((80, 6)), RNG.standard_normal((90, 6)) + 5
    names = list("abcdef")
    fig = _figure_of(monkeypatch, lambda: plots.pair_plot(samples, data, "unused.png", title="t", columns=names,
                                                          units=plots.DATA_UNITS))
    k = plots.PAIR_COLUMNS
    axes = np.array(fig.axes).reshape(k, k)
    assert [ax.get_xlabel() for ax in axes[-1]] == [f"{c} (data units)" for c in names[:k]]
    assert [ax.get_ylabel() for ax in axes[:, 0]] == [f"{c} (data units)" for c in names[:k]]
    assert f"first {k} of 6 columns" in fig.get_suptitle() and "(n = 80)" in fig.get_suptitle()
    for i in range(k):
        for j in range(k):
            if i == j:  # two histograms over the column's range, sharing their bins
                assert not axes[i, j].collections and len(axes[i, j].patches) == 41
            else:  # column j across, column i up: data below the diagonal, samples above
                np.testing.assert_array_equal(axes[i, j].collections[0].get_offsets(),
                                              (data if i > j else samples)[:, [j, i]])


def test_pair_plot_without_data_shows_the_samples_on_both_sides_numbered_columns(monkeypatch):
    samples = RNG.standard_normal((50, 3))
    fig = _figure_of(monkeypatch, lambda: plots.pair_plot(samples, None, "unused.png"))
    axes = np.array(fig.axes).reshape(3, 3)
    assert [ax.get_xlabel() for ax in axes[-1]] == ["column 0", "column 1", "column 2"]
    np.testing.assert_array_equal(axes[2, 0].collections[0].get_offsets(), samples[:, [0, 2]])
    np.testing.assert_array_equal(axes[0, 2].collections[0].get_offsets(), samples[:, [2, 0]])
    assert "model samples (n = 50)" in fig.get_suptitle() and "data" not in fig.get_suptitle()


def test_point_pictures_name_their_axes_and_units(monkeypatch):
    fig = _figure_of(monkeypatch, lambda: plots.samples_over_data(CLOUD, CLOUD, "unused.png", columns=["u", "v"],
                                                                  units=plots.DATA_UNITS))
    assert [ax.get_xlabel() for ax in fig.axes] == ["u (data units)"] * 2
    assert fig.axes[0].get_ylabel() == "v (data units)"
    fig = _figure_of(monkeypatch, lambda: plots.samples_over_data(CLOUD, None, "unused.png"))
    assert [ax.get_title() for ax in fig.axes] == ["model samples (n = 200)"]
    fig = _figure_of(monkeypatch, lambda: plots.chain_strip(FORWARD, BACKWARD, 1000, "unused.png",
                                                            columns=["u", "v"], units=plots.MODEL_UNITS))
    assert [ax.get_xlabel() for ax in fig.axes] == [""] * 3 + ["u (model units)"] * 3  # the bottom row's
    assert [ax.get_ylabel().splitlines()[-1] for ax in fig.axes if ax.get_ylabel()] == ["v (model units)"] * 2


def test_non_finite_samples_are_counted_not_drawn(monkeypatch):
    samples = CLOUD.copy()
    samples[:3] = np.nan
    monkeypatch.setattr(plots, "_save", lambda fig, path: titles.extend(
        ax.get_title() for ax in fig.axes))
    titles = []
    plots.samples_over_data(samples, CLOUD, "unused.png")
    plt.close("all")
    assert "3 non-finite not shown" in titles[1] and "non-finite" not in titles[0]


def test_ema_of_a_constant_is_that_constant_and_it_follows_a_step():
    smooth, span = plots._ema(np.full(500, 3.0))
    np.testing.assert_allclose(smooth, 3.0)
    smooth, _ = plots._ema(np.r_[np.zeros(500), np.ones(500)])
    assert smooth[499] == 0 and 0 < smooth[520] < 1 and smooth[-1] > 0.99


# --- wrong inputs and atomic writes ------------------------------------------------------------

BAD_CALLS = {
    "samples 1-D": (lambda p: plots.samples_over_data(np.zeros(10), CLOUD, p),
                    r"samples must have shape \(N, D\).*got shape \(10,\)"),
    "data one column": (lambda p: plots.samples_over_data(CLOUD, np.zeros((10, 1)), p),
                        r"data must have shape \(N, D\).*got shape \(10, 1\)"),
    "dims differ": (lambda p: plots.samples_over_data(CLOUD, np.zeros((10, 3)), p),
                    r"same dimension, got 2 and 3"),
    "empty cloud": (lambda p: plots.samples_over_data(np.zeros((0, 2)), CLOUD, p),
                    r"N >= 1"),
    "pair dims differ": (lambda p: plots.pair_plot(CLOUD, np.zeros((10, 3)), p), r"same dimension, got 2 and 3"),
    "names too few": (lambda p: plots.pair_plot(CLOUD, None, p, columns=["a"]),
                      r"columns must name the 2 columns of the points, got 1 names"),
    "state not a pair": (lambda p: plots.chain_strip([CLOUD], [], 10, p),
                         r"forward\[0\] must be a pair \(t, points"),
    "state wrong shape": (lambda p: plots.chain_strip([], [(3, np.zeros((4, 2, 2)))], 10, p),
                          r"backward\[0\] points must have shape \(N, D\)"),
    "t beyond T": (lambda p: plots.chain_strip([(11, CLOUD)], [], 10, p),
                   r"forward\[0\] has t = 11.*\[0, T = 10\]"),
    "no states": (lambda p: plots.chain_strip([], [], 10, p), r"at least one"),
    "losses too short": (lambda p: plots.loss_curve(STEPS, LOSSES[:-1], p),
                         r"losses must be a 1-D array of length 300, got shape \(299,\)"),
    "lrs 2-D": (lambda p: plots.loss_curve(STEPS, LOSSES, p, lrs=np.zeros((300, 1))),
                r"lrs must be a 1-D array of length 300"),
    "losses all nan": (lambda p: plots.loss_curve(STEPS, np.full(300, np.nan), p),
                       r"no finite value"),
    "series length": (lambda p: plots.metric_curves([1, 2, 3], {"a": [1, 2]}, p, "x", "y"),
                      r"series\['a'\] must be a 1-D array of length 3"),
    "no series": (lambda p: plots.metric_curves([1, 2, 3], {}, p, "x", "y"), r"at least one"),
    "not numbers": (lambda p: plots.metric_curves(["a", "b"], {"a": [1, 2]}, p, "x", "y"),
                    r"x must be an array of numbers"),
}


@pytest.mark.parametrize("case", BAD_CALLS)
def test_wrong_input_raises_and_leaves_the_old_file(tmp_path, case):
    call, message = BAD_CALLS[case]
    path = tmp_path / "picture.png"
    path.write_bytes(b"the previous picture")
    with pytest.raises(InputError, match=message):
        call(path)
    assert path.read_bytes() == b"the previous picture"
    assert [p.name for p in tmp_path.iterdir()] == ["picture.png"]
    assert plt.get_fignums() == []


def test_failed_save_leaves_the_old_file_and_no_temp_file(tmp_path, monkeypatch):
    def broken_savefig(self, file, **kwargs):
        file.write(b"half a picture")
        raise OSError("disk full")

    path = tmp_path / "picture.png"
    path.write_bytes(b"the previous picture")
    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", broken_savefig)
    with pytest.raises(OSError, match="disk full"):
        plots.metric_curves([1, 2], {"a": [1, 2]}, path, "x", "y")
    assert path.read_bytes() == b"the previous picture"
    assert [p.name for p in tmp_path.iterdir()] == ["picture.png"]
    assert plt.get_fignums() == []


def test_successful_save_replaces_the_old_file(tmp_path):
    path = tmp_path / "picture.png"
    path.write_bytes(b"the previous picture")
    plots.metric_curves([1, 2], {"a": [1, 2]}, path, "x", "y")
    assert_png(path)
