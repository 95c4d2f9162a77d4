"""Tests of ``gaussdiff elbo``: the table, elbo.json and elbo.png for continuous and discrete data and both
estimates; the number is the library's bound in the data's own units (checked against the same model evaluated
in model units, which differs by exactly the transform's log-Jacobian); bad input is one line and exit code 2."""

import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from gaussdiff.cli import main
from gaussdiff.cli.elbo import compute
from gaussdiff.data import BUILTIN, Standardize
from gaussdiff.likelihood import elbo
from gaussdiff.nets import MLP
from gaussdiff.saved import SavedModel
from gaussdiff.schedule import make_schedule

T = 20
MEAN, STD = [100.0, -3.0], [20.0, 0.5]


def save_model(folder, dim=2, transform=None, learn_variance=True, seed=0):
    torch.manual_seed(seed)
    net = MLP(dim, T, width=16, depth=1, emb_dim=8, learn_variance=learn_variance)
    model = SavedModel(net, make_schedule("squaredcos_cap_v2", T), "v_prediction",
                       transform or Standardize.identity(dim), "points.npy",
                       "learned_range" if learn_variance else "fixed_small")
    return model.save(folder)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("elbo")
    return {"user": save_model(root / "user", transform=Standardize(MEAN, STD)),
            "plain": save_model(root / "plain", learn_variance=False), "root": root}


def run_ok(capsys, argv):
    assert main(argv) == 0
    return capsys.readouterr().out


def one_line_error(capsys, argv, needle):
    code = main(argv)
    captured = capsys.readouterr()
    assert code == 2, captured
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("gaussdiff elbo: error: ") and needle in lines[0], captured.err
    assert "Traceback" not in captured.err + captured.out


def test_table_json_and_picture_in_the_users_units(models, tmp_path, capsys):
    x = np.random.default_rng(0).normal(MEAN, STD, (64, 2))
    np.save(tmp_path / "user.npy", x)
    np.save(tmp_path / "model_units.npy", (x - MEAN) / STD)
    common = ["--threads", "1", "--batch-size", "500", "--seed", "3"]
    out = run_ok(capsys, ["elbo", str(models["user"]), "--data", str(tmp_path / "user.npy"), "--out",
                          str(tmp_path / "a"), *common])
    for label in ("total (bound on -log p)", "L_T (prior)", "sum L_{t-1}, t = 2..T", "L_0 (decoder)", "bits/dim",
                  "20 network evaluations per point", "learned_range"):
        assert label in out, label
    result = json.loads((tmp_path / "a" / "elbo.json").read_text())
    terms = result["terms"]
    parts = sum(terms[k]["nats"] for k in ("L_T", "sum L_{t-1}", "L_0"))
    assert terms["total"]["nats"] == pytest.approx(parts, rel=1e-12)
    assert terms["total"]["bits_per_dim"] == pytest.approx(terms["total"]["nats"] / (2 * math.log(2)), rel=1e-12)
    assert len(result["per_t_nats"]) == T and result["points"] == 64 and result["estimate"] == "exact"
    assert f"{terms['total']['nats']:.4f}" in out
    with Image.open(tmp_path / "a" / "elbo.png") as im:
        assert im.format == "PNG" and im.size[0] > 400

    # The same network with the identity transform on the data in model units: the same noise (seed), so the
    # only difference is the density's change of units, log|det dy/dx| = -sum log std, added to the NLL bound.
    save_model(tmp_path / "same_net")  # same seed, same weights; identity transform
    run_ok(capsys, ["elbo", str(tmp_path / "same_net"), "--data", str(tmp_path / "model_units.npy"), "--out",
                    str(tmp_path / "b"), *common])
    model_units = json.loads((tmp_path / "b" / "elbo.json").read_text())["terms"]
    shift = -sum(math.log(s) for s in STD)  # log|det J| of y = (x - mean) / std
    # float32 network on inputs that differ by the float64 round trip of the transform: 1e-5 nats.
    assert terms["total"]["nats"] == pytest.approx(model_units["total"]["nats"] - shift, abs=1e-5)
    assert terms["L_0"]["nats"] == pytest.approx(model_units["L_0"]["nats"] - shift, abs=1e-5)
    assert terms["sum L_{t-1}"]["nats"] == pytest.approx(model_units["sum L_{t-1}"]["nats"], abs=1e-5)


def test_discrete_data_and_the_importance_estimate(tmp_path, capsys):
    digits = np.random.default_rng(1).integers(0, 17, (40, 4)).astype(float)  # like scikit-learn's digits, 0..16
    np.save(tmp_path / "digits.npy", digits)
    model = save_model(tmp_path / "m", dim=4, transform=Standardize.fit(digits))
    out = run_ok(capsys, ["elbo", str(model), "--data", str(tmp_path / "digits.npy"), "--levels", "17",
                          "--estimate", "importance", "--draws", "4", "--threads", "1"])
    assert "discrete data on 17 levels" in out and "importance: 4 network evaluations per point" in out
    result = json.loads((model / "elbo" / "elbo.json").read_text())
    assert result["levels"] == 17 and result["estimate"] == "importance" and result["per_t_points"] == 10
    # A bound on a probability: every term's mean is >= 0 (importance draws are >= 0 too: KLs and -log P times
    # positive weights).
    assert all(row["bits_per_dim"] >= 0 for row in result["terms"].values())


def test_the_network_sees_x_t_in_its_own_dtype():
    """A float64 network gets float64 x_t (a hard-coded float32 would not even run), so the command's estimate is
    the library's bound of the same reverse model with the same seed, bit for bit."""
    torch.manual_seed(0)
    net = MLP(2, T, width=16, depth=1, emb_dim=8, learn_variance=True).double()
    model = SavedModel(net, make_schedule("squaredcos_cap_v2", T), "v_prediction", Standardize.identity(2), "moons",
                       "learned_range")
    y = BUILTIN["moons"](16, 0).double()
    args = SimpleNamespace(levels=None, batch_size=100, seed=3, estimate="exact", draws=16)
    bound, curve, pilot = compute(model, y, model.transform.inverse(y), -1.0, 1.0, args)
    expected = elbo(model.reverse_model(), y, model.schedule, batch_size=100,
                    generator=torch.Generator().manual_seed(3))
    assert bound is curve and pilot == 0
    torch.testing.assert_close(bound.total, expected.total, rtol=0, atol=0)


@pytest.mark.parametrize("args, needle", [
    (["--levels", "1"], "levels must be an integer >= 2"),
    (["--levels", "17"], "must be integers 0..16"),  # continuous data given as discrete
    (["--estimate", "sampled"], "unknown estimate 'sampled'"),
    (["--batch-size", "0"], "--batch-size must be positive"),
    (["-n", "0"], "-n/--num-points must be positive"),
    (["--variance-type", "learned_range"], "variance head"),  # the 'plain' model has none
    (["--variance-type", "large"], "unknown variance_type 'large'"),
    (["--weights", "best"], "unknown weights 'best'"),
])
def test_bad_input_is_one_line_and_exit_2(models, tmp_path, capsys, args, needle):
    out = tmp_path / "out"
    one_line_error(capsys, ["elbo", str(models["plain"]), "--data", "moons", "-n", "20", "--out", str(out), *args],
                   needle)
    assert not out.exists()


def test_bad_data_and_run_are_one_line_and_exit_2(models, tmp_path, capsys):
    np.save(tmp_path / "three.npy", np.zeros((5, 3)))
    one_line_error(capsys, ["elbo", str(models["plain"]), "--data", str(tmp_path / "three.npy")],
                   "the data have samples of shape [3]; the model at")
    np.save(tmp_path / "big.npy", np.array([[0.0, 3.0], [17.0, 2.0]]))
    one_line_error(capsys, ["elbo", str(models["plain"]), "--data", str(tmp_path / "big.npy"), "--levels", "17"],
                   "must be integers 0..16")
    (tmp_path / "nan.csv").write_text("1,2\nnan,3\n")
    one_line_error(capsys, ["elbo", str(models["plain"]), "--data", str(tmp_path / "nan.csv")], "NaN")
    one_line_error(capsys, ["elbo", str(models["plain"]), "--data", "spirals"], "unknown dataset 'spirals'")
    one_line_error(capsys, ["elbo", str(tmp_path / "missing"), "--data", "moons"], "does not exist")
