"""What ``elbo``, ``nll`` and ``sweep`` evaluate without --data: the run's held-out points, never its training data.

Runs are stood in for by a hand-written RUN/config.json (the keys the trainer writes: data, seed, n_data,
label_column, holdout, data_sha256) beside a saved model in RUN/model. The model is the exact denoiser of
N(MEAN, diag(STD^2)) in the data's units (an MLP whose last layer is zero under v-prediction is the exact denoiser of
N(0, I) in model units; see test_nll_cli), so ``nll`` gives each evaluated point its closed-form density and the
per-sample NLLs say which points were evaluated (every pair of candidate points differs by more than the command's
error, asserted where it matters).
"""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from gaussdiff.cli import main
from gaussdiff.data import Standardize, load_dataset, load_points
from gaussdiff.data.digits import digits_split
from gaussdiff.data.heldout import heldout_points
from gaussdiff.data.split import heldout_seed, split_rows
from gaussdiff.nets import MLP
from gaussdiff.saved import SavedModel, class_conditioning
from gaussdiff.schedule import make_schedule
from gaussdiff.sweep import FLOOR_DRAWS, run_held_out, table_sets

from test_cli import one_line_error

NLL_TOL = 1e-3  # the command's error against the closed form: measured 2e-6 nats (test_nll_cli)


def exact_model(mean, std, num_classes=0) -> SavedModel:
    """The exact denoiser of N(mean, diag(std^2)) in the data's units (module doc)."""
    dim = len(mean)
    net = MLP(dim, num_train_timesteps=100, width=16, depth=1, emb_dim=8, num_classes=num_classes)
    torch.nn.init.zeros_(net.out[-1].weight)
    torch.nn.init.zeros_(net.out[-1].bias)
    conditioning = class_conditioning(["a", "b", "c"], 0.1) if num_classes else None
    return SavedModel(net, make_schedule("linear", 100), "v_prediction", Standardize(mean, std), "data",
                      conditioning=conditioning)


def gaussian_nll(x, mean, std):
    """-log N(x; mean, diag(std^2)) per row."""
    x, mean, std = np.asarray(x, dtype=float), np.asarray(mean, dtype=float), np.asarray(std, dtype=float)
    z = (x - mean) / std
    return 0.5 * (z**2).sum(1) + np.log(std).sum() + 0.5 * x.shape[1] * math.log(2 * math.pi)


def make_run(folder, model: SavedModel, **config):
    """A stand-in run folder: RUN/config.json with ``config``, and the model in RUN/model."""
    folder.mkdir()
    model.save(folder / "model")
    (folder / "config.json").write_text(json.dumps({"n_data": 1000, "label_column": None} | config))
    return folder


def table(path, n=40, seed=0):
    """A .csv of n rows: two features (x, y) and an integer label column in the middle; the features array."""
    rng = np.random.default_rng(seed)
    features = rng.normal([5.0, -2.0], [2.0, 0.5], (n, 2))
    labels = rng.integers(0, 3, n)
    lines = ["x,label,y"] + [f"{a!r},{c},{b!r}" for (a, b), c in zip(features.tolist(), labels.tolist())]
    path.write_text("\n".join(lines) + "\n")
    return features


def file_run(tmp_path, name="run", holdout=0.25, seed=5):
    """A run trained on a 40-row table with its label column, holding out ``holdout`` of the rows under ``seed``."""
    path = tmp_path / "rows.csv"
    features = table(path)
    digest = load_dataset(str(path), label_column="label").sha256()  # as the training loop records it
    run = make_run(tmp_path / name, exact_model(features.mean(0), features.std(0)), data=str(path), seed=seed,
                   label_column="label", holdout=holdout, data_sha256=digest)
    return run, path, features


def nll_of(capsys, argv):
    """(per-sample NLL, printed output) of ``gaussdiff nll`` with ``argv``."""
    out = argv[argv.index("--out") + 1]
    assert main(["nll", *argv]) == 0
    printed = capsys.readouterr().out
    return np.array(json.loads((Path(out) / "nll.json").read_text())["per_sample"]["nll_nats"]), printed


# --- built-in sets: a fresh draw under another seed -------------------------------------------------------------

@pytest.fixture(scope="module")
def moons_run(tmp_path_factory):
    """A run 'trained' on moons under seed 3 (the exact model of N(0, I), whose NLL tells points apart)."""
    return make_run(tmp_path_factory.mktemp("moons") / "run", exact_model([0.0, 0.0], [1.0, 1.0]), data="moons",
                    seed=3)


def test_builtin_run_evaluates_a_fresh_draw_not_the_training_one(moons_run, tmp_path, capsys):
    """nll without --data evaluates exactly load_points('moons', 20, heldout_seed(3)): each per-sample NLL is that
    point's closed form within 1e-3 nats, while the training draw's first 20 points are off by far more; the output
    says which data it used. The run's model/ folder given as RUN finds the run's config too."""
    expected = load_points("moons", 20, heldout_seed(3))[0].numpy()
    training = load_dataset("moons", 1000, 3).data[:20].numpy()
    for run in (moons_run, moons_run / "model"):
        out = tmp_path / run.name
        nll, printed = nll_of(capsys, [str(run), "-n", "20", "--out", str(out)])
        assert np.abs(nll - gaussian_nll(expected, [0, 0], [1, 1])).max() <= NLL_TOL
        assert np.abs(nll - gaussian_nll(training, [0, 0], [1, 1])).max() > 100 * NLL_TOL
        assert f"data: built-in 'moons', 20 fresh points (seed {heldout_seed(3)}, not the training draw)" in printed


def test_builtin_heldout_points_share_no_point_with_the_training_draw():
    x, _ = heldout_points({"data": "moons", "seed": 3}, 500)
    assert torch.equal(x, load_points("moons", 500, heldout_seed(3))[0])
    training = {tuple(r) for r in load_dataset("moons", 1000, 3).data.double().tolist()}
    assert not training & {tuple(r) for r in x.tolist()}


def test_elbo_default_is_elbo_of_the_heldout_points(moons_run, tmp_path, capsys):
    """elbo without --data gives the bound of the same points passed as a file, to the last bit (same seed: same t
    and noise): the points are load_points('moons', 30, heldout_seed(3))."""
    np.save(tmp_path / "points.npy", load_points("moons", 30, heldout_seed(3))[0].numpy())
    common = ["-n", "30", "--seed", "1", "--threads", "1"]
    assert main(["elbo", str(moons_run), *common, "--out", str(tmp_path / "a")]) == 0
    assert "data: built-in 'moons', 30 fresh points" in capsys.readouterr().out
    assert main(["elbo", str(moons_run), "--data", str(tmp_path / "points.npy"), *common, "--out",
                 str(tmp_path / "b")]) == 0
    a, b = (json.loads((tmp_path / d / "elbo.json").read_text()) for d in "ab")
    assert a["terms"] == b["terms"] and a["points"] == 30 and "not the training draw" in a["data"]


def test_digits_run_evaluates_its_heldout_split():
    x, description = heldout_points({"data": "digits", "seed": 0}, 5, seed=2)
    test_images = {tuple(im.ravel()) for im in digits_split("test")[0].astype(float)}
    assert len(x) == 5 and all(tuple(im.ravel()) in test_images for im in x.numpy())
    assert "held-out split" in description


def test_sweep_default_on_a_builtin_run(moons_run):
    """The reference is the run's held-out draw, load_points('moons', n, heldout_seed(3)); the floor sets are other
    fresh draws: none is the reference or the training draw."""
    held = run_held_out({"data": "moons", "seed": 3}, 200, 0, (2,))
    assert torch.equal(held.reference, load_points("moons", 200, heldout_seed(3))[0])
    training = load_dataset("moons", 200, 3).data.double()
    assert len(held.fresh) == FLOOR_DRAWS
    for x in held.fresh:
        assert x.shape == (200, 2) and not torch.equal(x, held.reference) and not torch.equal(x, training)
    assert held.note is None and "not the training draw" in held.description


# --- files: the rows the run held out, if it did ----------------------------------------------------------------

def test_file_run_evaluates_exactly_its_heldout_rows(tmp_path, capsys):
    """The 10 rows split_rows(40, 0.25, 5) holds out, in file order, without the label column: each per-sample NLL
    is that row's closed form (every pair of the 40 rows' NLLs differs by more than 2e-3, so no other row passes);
    -n 4 takes 4 of those 10."""
    run, _, features = file_run(tmp_path)
    held = split_rows(40, 0.25, 5)[1]
    mean, std = features.mean(0), features.std(0)
    exact = gaussian_nll(features, mean, std)
    assert np.diff(np.sort(exact)).min() > 2 * NLL_TOL
    nll, printed = nll_of(capsys, [str(run), "--out", str(tmp_path / "all")])
    assert len(nll) == 10 and np.abs(nll - exact[held]).max() <= NLL_TOL
    assert "rows.csv: all 10 held-out rows (holdout 0.25 under the run's seed 5; never trained on)" in printed
    nll, printed = nll_of(capsys, [str(run), "-n", "4", "--out", str(tmp_path / "four")])
    rows = [int(np.abs(exact - v).argmin()) for v in nll]
    assert len(set(rows)) == 4 and set(rows) <= set(held.tolist()) and np.abs(nll - exact[rows]).max() <= NLL_TOL
    assert "4 of its 10 held-out rows, drawn under seed 0" in printed


def test_elbo_default_on_a_file_run_is_elbo_of_its_heldout_rows(tmp_path, capsys):
    run, _, features = file_run(tmp_path)
    np.save(tmp_path / "held.npy", features[split_rows(40, 0.25, 5)[1]])
    assert main(["elbo", str(run), "--threads", "1", "--out", str(tmp_path / "a")]) == 0
    assert main(["elbo", str(run), "--data", str(tmp_path / "held.npy"), "--threads", "1", "--out",
                 str(tmp_path / "b")]) == 0
    capsys.readouterr()
    a, b = (json.loads((tmp_path / d / "elbo.json").read_text()) for d in "ab")
    assert a["terms"] == b["terms"] and a["points"] == 10


def test_an_image_file_run_gives_its_heldout_images_at_their_levels(tmp_path):
    """A .npy of 20 gray 8x8 uint8 images, 0.25 held out under seed 2: the 5 images split_rows names, as float64
    levels (N, 1, 8, 8), as elbo and nll take images."""
    images = np.random.default_rng(0).integers(0, 256, (20, 8, 8), dtype=np.uint8)
    np.save(tmp_path / "images.npy", images)
    digest = load_dataset(str(tmp_path / "images.npy")).sha256()
    config = {"data": str(tmp_path / "images.npy"), "seed": 2, "holdout": 0.25, "data_sha256": digest}
    x, description = heldout_points(config, 1000)
    expected = images[split_rows(20, 0.25, 2)[1]][:, None].astype(np.float64)
    assert x.dtype == torch.float64 and np.array_equal(x.numpy(), expected)
    assert "all 5 held-out rows" in description


@pytest.mark.parametrize("command", ["elbo", "nll", "sweep"])
def test_a_changed_file_is_one_line_and_writes_nothing(tmp_path, capsys, command):
    run, path, _ = file_run(tmp_path)
    path.write_text(path.read_text().replace("x,label,y\n", "x,label,y\n1.5,0,2.5\n"))  # one row more
    one_line_error(capsys, [command, str(run), "--out", str(tmp_path / "out")], f"{path} is not the data",
                   "pass --data")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("command", ["elbo", "nll", "sweep"])
@pytest.mark.parametrize("holdout", [None, 0])
def test_a_file_run_without_a_split_needs_data(tmp_path, capsys, command, holdout):
    run, path, _ = file_run(tmp_path, holdout=holdout)
    one_line_error(capsys, [command, str(run), "--out", str(tmp_path / "out")],
                   f"was trained on {path} with no held-out split", "pass --data")
    assert not (tmp_path / "out").exists()


def test_a_missing_file_or_no_recorded_hash_needs_data(tmp_path, capsys):
    run, path, _ = file_run(tmp_path)
    config = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps(config | {"data_sha256": None}))
    one_line_error(capsys, ["nll", str(run)], "recorded no SHA-256", "pass --data")
    path.unlink()
    one_line_error(capsys, ["nll", str(run)], f"was trained on {path}, which does not exist", "pass --data")


@pytest.mark.parametrize("command", ["elbo", "nll", "sweep"])
def test_data_that_is_the_training_file_is_said_to_hold_training_rows(tmp_path, capsys, command):
    """--data naming the file the run trained on (here by another path to it) is evaluated as asked, and the output
    says that its rows include the training rows; another file is not flagged."""
    x = np.random.default_rng(3).normal(size=(60, 2))
    np.save(tmp_path / "rows.npy", x)
    np.save(tmp_path / "other.npy", x[:30])
    run = make_run(tmp_path / "run", exact_model([0.0, 0.0], [1.0, 1.0]), data=str(tmp_path / "rows.npy"), seed=0,
                   holdout=0.1, data_sha256="not checked when --data is given")
    extra = ["--samplers", "ddim", "--nfe", "2"] if command == "sweep" else []
    flag = f"(the file {run} was trained on: its training rows are among these)"
    for data, flagged in [(tmp_path / "sub" / ".." / "rows.npy", True), (tmp_path / "other.npy", False)]:
        (tmp_path / "sub").mkdir(exist_ok=True)
        assert main([command, str(run), "--data", str(data), "-n", "6", *extra, "--out", str(tmp_path / "out")]) == 0
        printed = capsys.readouterr().out
        assert (flag in printed.splitlines()[0]) == flagged, printed


@pytest.mark.parametrize("command", ["elbo", "nll", "sweep"])
def test_a_bare_model_folder_needs_data(tmp_path, capsys, command):
    exact_model([0.0, 0.0], [1.0, 1.0]).save(tmp_path / "model")
    one_line_error(capsys, [command, str(tmp_path / "model")], "model folder without the config.json", "pass --data")


def test_an_unreadable_run_config_needs_data(tmp_path, capsys):
    run = make_run(tmp_path / "run", exact_model([0.0, 0.0], [1.0, 1.0]), data="moons", seed=0)
    (run / "config.json").write_text("{not json")
    one_line_error(capsys, ["elbo", str(run)], "config.json is not readable JSON", "pass --data")


# --- sweep on small tables ----------------------------------------------------------------------------------------

def iris(tmp_path):
    """scikit-learn's iris (150 rows, 4 features; shipped with it) as iris.csv with its species column, and
    features.csv without it; the features array."""
    from sklearn.datasets import load_iris

    data = load_iris()
    x, y = data.data, data.target
    rows = [",".join(["sepal_length", "sepal_width", "petal_length", "petal_width", "species"])]
    rows += [",".join(map(repr, [*map(float, r), int(c)])) for r, c in zip(x, y)]
    (tmp_path / "iris.csv").write_text("\n".join(rows) + "\n")
    np.savetxt(tmp_path / "features.csv", x, delimiter=",")
    return x


def test_sweep_runs_on_a_150_row_table_and_says_n_was_lowered(tmp_path, capsys):
    """--data with 150 rows: n = 2,000 needs 6,000, so n becomes 150 // 3 = 50 (said in the output and in
    sweep.json). A run with a 20 % held-out split sweeps on its 30 held-out rows: n = 10."""
    x = iris(tmp_path)
    model = exact_model(x.mean(0), x.std(0))
    digest = load_dataset(str(tmp_path / "iris.csv"), label_column="species").sha256()
    run = make_run(tmp_path / "run", model, data=str(tmp_path / "iris.csv"), seed=7, label_column="species",
                   holdout=0.2, data_sha256=digest)
    quick = ["--samplers", "ddim", "--nfe", "2", "--threads", "1"]
    for data, k, what in [(["--data", str(tmp_path / "features.csv")], 50, "features.csv: all 150 rows"),
                          ([], 10, "iris.csv: all 30 held-out rows (holdout 0.2 under the run's seed 7")]:
        out = tmp_path / f"sweep{k}"
        assert main(["sweep", str(run), *data, *quick, "--out", str(out)]) == 0
        printed = capsys.readouterr().out
        assert f"data: {tmp_path}/{what}" in printed
        assert f"note: n lowered from 2,000 to {k}: the data have {3 * k} rows" in printed
        summary = json.loads((out / "sweep.json").read_text())
        assert summary["n"] == k and f"n lowered from 2,000 to {k}" in summary["data"]
        assert summary["floor_sd"] > 0 and math.isfinite(summary["rows"][0]["sw2"])


def test_table_sets_of_a_small_table():
    """m rows, n asked: k = min(n, m // 3) rows in the reference and in each floor set; the floor sets come from the
    m - k other rows and differ from each other (so the floor has a spread); fewer than 6 rows are refused."""
    rows = torch.arange(2.0 * 31).reshape(31, 2)  # every row distinct
    held = table_sets(rows, "t.csv", 2000, seed=4)
    reference = {tuple(r) for r in held.reference.tolist()}
    assert len(reference) == 10 and "n lowered from 2,000 to 10" in held.note
    floor_sets = [frozenset(tuple(r) for r in x.tolist()) for x in held.fresh]
    assert all(len(s) == 10 and not s & reference for s in floor_sets) and len(set(floor_sets)) > 1
    assert table_sets(rows, "t.csv", 10, seed=4).note is None  # 31 >= 3 x 10: n kept
    with pytest.raises(Exception, match="5 rows are too few for a sweep"):
        table_sets(rows[:5], "t.csv", 2000, seed=4)


def test_sweep_default_on_a_file_run_uses_only_heldout_rows(tmp_path):
    run, _, features = file_run(tmp_path, holdout=0.5)  # 20 held-out rows: n = 6
    config = json.loads((run / "config.json").read_text())
    held = run_held_out(config, 2000, 0, (2,), str(run))
    held_rows = {tuple(r) for r in features[split_rows(40, 0.5, 5)[1]].tolist()}
    for x in [held.reference, *held.fresh]:
        assert len(x) == 6 and {tuple(r) for r in x.tolist()} <= held_rows


# --- conditional models are evaluated unconditionally, and say so ------------------------------------------------

@pytest.mark.parametrize("command", ["elbo", "nll", "sweep"])
def test_a_conditional_model_says_it_is_evaluated_unconditionally(tmp_path, capsys, command):
    run = make_run(tmp_path / "run", exact_model([0.0, 0.0], [1.0, 1.0], num_classes=3), data="moons", seed=0)
    extra = ["--samplers", "ddim", "--nfe", "2"] if command == "sweep" else []
    assert main([command, str(run), "-n", "20", *extra, "--out", str(tmp_path / "out")]) == 0
    printed = capsys.readouterr().out
    assert "class-conditional model: evaluated unconditionally (its null label, trained on 10% of the labels)" \
        in printed

