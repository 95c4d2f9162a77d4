"""Training's check of the imputation methods (issue 13, train/impute_choice.py): the held-out cells it hides, the
choice against the exact conditional of a known Gaussian mixture, the record saved in the model, the default that
``gaussdiff impute`` and ``imputation.impute`` take from it, the intervals its scores calibrate (split conformal,
against a simulation and by hand) and RePaint's imputation steps."""

import dataclasses
import json
import math

import numpy as np
import pytest
import torch

from gaussdiff.cli import main
from gaussdiff.columns import Table
from gaussdiff.data.schema import infer_schema
from gaussdiff.data.tables import encode, read_table
from gaussdiff.errors import InputError
from gaussdiff.imputation import (
    DEFAULT_METHOD,
    Imputation,
    conformal_quantile,
    default_method,
    impute,
    intervals,
)
from gaussdiff.mixture import GaussianMixture
from gaussdiff.nets import MLP
from gaussdiff.saved import SavedModel, load_model
from gaussdiff.schedule import make_schedule
from gaussdiff.train import TrainConfig
from gaussdiff.train.impute_choice import (
    MAX_CELLS,
    choice_line,
    choose_method,
    conformity_scores,
    hidden_cells,
    leave_one_cell_out,
)
from gaussdiff.transforms import Standardize

from test_cli import one_line_error
from test_impute_cli import HEADER, table_rows, untrained, write_csv
from test_imputation import correlated_mixture, exact_conditional

RECORD = {"method": "repaint", "by": "held-out cells", "cells": 40, "draws": 10, "level": 0.9,
          "rmse": {"replace_xt": 0.5, "repaint": 0.4}, "coverage": {"replace_xt": 0.9, "repaint": 0.85},
          "scores": {"replace_xt": [0.05 * i for i in range(40)], "repaint": [0.1 * i for i in range(40)]}}


def test_the_hidden_cells_are_the_observed_cells_of_rows_with_two_or_more():
    nan = math.nan
    x = torch.tensor([[1.0, nan, 2.0], [nan, nan, 3.0], [4.0, 5.0, 6.0], [nan, nan, nan]], dtype=torch.float64)
    row, column = hidden_cells(x, None, seed=0)
    expected = [(i, j) for i in range(4) for j in range(3)
                if not math.isnan(x[i, j]) and sum(not math.isnan(v) for v in x[i].tolist()) >= 2]
    assert list(zip(row.tolist(), column.tolist())) == expected == [(0, 0), (0, 2), (2, 0), (2, 1), (2, 2)]
    checks = leave_one_cell_out(x, row, column)
    for m, (i, j) in enumerate(expected):
        assert math.isnan(checks[m, j])
        others = [k for k in range(3) if k != j]
        assert torch.equal(checks[m, others].nan_to_num(-9), x[i, others].nan_to_num(-9))
    assert not torch.isnan(x[0, 0])  # the rows given are not modified


def test_a_constant_column_is_never_hidden(tmp_path):
    """An untrained table model (random weights) over x, color, count and a constant country: 12 rows, row 0's x
    missing; the cells hidden are the 3 modelled ones of each row (2 of row 0), never the constant one."""
    raw = read_table(write_csv(tmp_path / "t.csv", [HEADER, *table_rows(200, seed=0)]))
    specs = infer_schema(raw)
    model = load_model(untrained(tmp_path / "m", Table.fit(torch.from_numpy(encode(raw, specs)), specs)))
    x = torch.from_numpy(encode(raw, specs))[:12].clone()
    x[0, 0] = math.nan
    record = choose_method(model, x, draws=2)
    assert [s.kind for s in specs][3] == "constant" and record["cells"] == 12 * 3 - 1
    row, column = hidden_cells(x, None, 0, torch.tensor([True, True, True, False]))
    assert 3 not in column.tolist() and len(row) == 35


def test_at_most_the_cap_a_seeded_draw_in_row_order():
    x = torch.randn(50, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    everything = set(zip(*(t.tolist() for t in hidden_cells(x, None, 0))))
    row, column = hidden_cells(x, 30, seed=1)
    pairs = list(zip(row.tolist(), column.tolist()))
    assert len(pairs) == 30 and set(pairs) <= everything and pairs == sorted(pairs)
    assert pairs == list(zip(*(t.tolist() for t in hidden_cells(x, 30, seed=1))))
    assert pairs != list(zip(*(t.tolist() for t in hidden_cells(x, 30, seed=2))))


class ExactNetwork(torch.nn.Module):
    """The mixture's exact E[eps | x_t] as an epsilon-predicting network (one unused parameter, as a model has)."""

    def __init__(self, gm: GaussianMixture, schedule):
        super().__init__()
        self.gm, self.schedule = gm, schedule
        self.unused = torch.nn.Parameter(torch.zeros(1))

    def forward(self, x, t):
        return self.gm.eps(x, self.schedule.alpha_bar_at(t.double())).to(x)


@pytest.mark.slow
def test_on_the_exact_oracle_repaint_is_chosen_and_the_errors_are_the_methods():
    """With the correlated 4-D mixture's exact denoiser as the model, x_t replacement draws a missing value without
    letting it agree with the observed ones, and RePaint's resampling corrects much of that (test_imputation: RMSE
    of the draws' mean 1.6 and 1.35 x the exact conditional mean's). 60 rows, each observed cell hidden in turn, 120 of
    the 240 kept, 10 draws, T = 100. Measured (seeded): exact conditional mean 0.335, RePaint 0.437 (1.30 x),
    replacement 0.593 (1.77 x); a perfect sampler's sqrt(1.1) = 1.05 x. Asserted: RePaint chosen, its error below
    1.45 x the exact floor and replacement's above 1.55 x (each ~12 % from the measured value, two relative SE of an
    RMSE over 120 cells); each error is that of ``impute`` with the method named (the record is the command's
    imputation); the 0.9 intervals' coverage (0.917 both) within 0.12 (4 binomial SE at 120 cells) of 0.9."""
    schedule = make_schedule("linear", 100, 1e-3, 0.2)
    gm = correlated_mixture()
    model = SavedModel(ExactNetwork(gm, schedule), schedule, "epsilon", Standardize.identity(4), "mixture")
    x = gm.sample(60, generator=torch.Generator().manual_seed(4))
    record = choose_method(model, x, cells=120, seed=0)
    row, column = hidden_cells(x, 120, seed=0)
    hidden = torch.zeros(120, 4, dtype=torch.bool)
    hidden[torch.arange(120), column] = True
    exact, _ = exact_conditional(gm, x[row], hidden)
    floor = (exact - x[row])[hidden].pow(2).mean().sqrt().item()
    assert record["method"] == "repaint" and record["cells"] == 120 and record["draws"] == 10
    assert record["rmse"]["repaint"] < 1.45 * floor and record["rmse"]["replace_xt"] > 1.55 * floor
    checks = leave_one_cell_out(x, row, column)
    for method in ("replace_xt", "repaint"):
        draws = impute(model, checks, 10, method=method, seed=0).draws_model.double()[:, hidden]
        truth = x[row][hidden]
        assert record["rmse"][method] == pytest.approx((draws.mean(0) - truth).pow(2).mean().sqrt().item(), rel=1e-6)
        assert abs(record["coverage"][method] - 0.9) < 0.12
        z = ((truth - draws.mean(0)).abs() / draws.std(0)).sort().values
        assert record["scores"][method] == pytest.approx(z.tolist(), abs=2e-6)  # kept to 6 places


def test_the_record_travels_in_the_model_and_sets_the_default(tmp_path):
    net = MLP(2, 20, width=8, depth=1, emb_dim=8)
    folder = SavedModel(net, make_schedule("linear", 20), "epsilon", Standardize.identity(2), "t",
                        imputation=RECORD).save(tmp_path / "m")
    model = load_model(folder)
    assert model.imputation == RECORD
    assert default_method(model) == "repaint"
    assert default_method(model, "ddim") == DEFAULT_METHOD  # RePaint walks the ancestral chain only
    config = json.loads((folder / "config.json").read_text())
    del config["imputation"]  # a model saved before the choice existed
    (folder / "config.json").write_text(json.dumps(config))
    assert load_model(folder).imputation is None and default_method(load_model(folder)) == DEFAULT_METHOD
    config["imputation"] = {"method": "magic"}
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(InputError, match="imputation record names method 'magic'"):
        load_model(folder)
    for scores in ({"repaint": "0.1, 0.2"}, {"repaint": [0.1, -1.0]}, {"magic": [0.1]}, [0.1]):
        config["imputation"] = RECORD | {"scores": scores}
        (folder / "config.json").write_text(json.dumps(config))
        with pytest.raises(InputError, match="imputation record mistypes its scores"):
            load_model(folder)


def test_a_saved_config_keeps_a_list_of_numbers_on_one_line(tmp_path):
    net = MLP(2, 20, width=8, depth=1, emb_dim=8)
    folder = SavedModel(net, make_schedule("linear", 20), "epsilon", Standardize.identity(2), "t",
                        imputation=RECORD).save(tmp_path / "m")
    text = (folder / "config.json").read_text()
    assert json.loads(text)["imputation"] == RECORD
    assert '"repaint": [0.0, 0.1, 0.2, 0.30000000000000004, 0.4,' in text
    assert len(text.splitlines()) < 150  # not a line per score (80 of them)


def test_impute_follows_the_record_unless_told(tmp_path, capsys):
    """The command's rows equal ``impute`` with the recorded method named, and differ from the other method's."""
    torch.manual_seed(0)
    net = MLP(2, 20, width=8, depth=1, emb_dim=8)
    folder = SavedModel(net, make_schedule("linear", 20), "epsilon", Standardize.identity(2), "t",
                        imputation=RECORD).save(tmp_path / "m")
    x = np.array([[0.5, np.nan], [np.nan, -1.0], [0.2, 0.3]])
    np.save(tmp_path / "gaps.npy", x)
    for flags, name in (([], "auto.npy"), (["--method", "replace_xt"], "told.npy")):
        assert main(["impute", str(folder), "--data", str(tmp_path / "gaps.npy"), "--out", str(tmp_path / name),
                     "--draws", "3", "--threads", "1", *flags]) == 0
    err = capsys.readouterr().err
    assert "draws each: repaint (the model's choice: RMS error 0.400 on 40 held-out cells against 0.500)" in err
    assert "draws each: replace_xt on ddpm" in err
    config = json.loads((folder / "config.json").read_text())
    config["imputation"] = {"method": "repaint"}  # a record edited down to its method
    (folder / "config.json").write_text(json.dumps(config))
    assert main(["impute", str(folder), "--data", str(tmp_path / "gaps.npy"), "--out", str(tmp_path / "bare.npy"),
                 "--draws", "3", "--threads", "1"]) == 0
    assert "draws each: repaint (the model's choice) on ddpm" in capsys.readouterr().err
    model = load_model(folder)
    for name, method in (("auto.npy", "repaint"), ("told.npy", "replace_xt")):
        expected = impute(model, torch.from_numpy(x), 3, method=method).filled.numpy()
        assert np.array_equal(np.load(tmp_path / name), expected)
    assert not np.array_equal(np.load(tmp_path / "auto.npy"), np.load(tmp_path / "told.npy"))


def test_impute_writes_intervals_calibrated_on_the_scores(tmp_path, capsys):
    """--intervals 0.9 from a model whose record holds 40 RePaint scores 0, 0.1, ..., 3.9: q = the 37th smallest,
    3.6 (ceil(41 x 0.9) = 37), so each interval is the 3 draws' mean +- 3.6 s; with --method replace_xt, its scores
    0, 0.05, ..., 1.95: q = 1.8."""
    torch.manual_seed(0)
    folder = SavedModel(MLP(2, 20, width=8, depth=1, emb_dim=8), make_schedule("linear", 20), "epsilon",
                        Standardize.identity(2), "t", imputation=RECORD).save(tmp_path / "m")
    np.save(tmp_path / "gaps.npy", np.array([[0.5, np.nan], [np.nan, -1.0]]))
    for flags, q in (([], 3.6), (["--method", "replace_xt"], 1.8)):
        out = tmp_path / f"{q}.csv"
        assert main(["impute", str(folder), "--data", str(tmp_path / "gaps.npy"), "--out", str(out), "--draws", "3",
                     "--intervals", "0.9", "--threads", "1", *flags, "--draws-out", str(tmp_path / f"{q}.d.csv")]) == 0
        assert "0.9 intervals to" in (said := capsys.readouterr().out) and "(calibrated on 40 held-out cells" in said
        draws = np.loadtxt(tmp_path / f"{q}.d.csv", delimiter=",", skiprows=1)  # row, draw, the 2 values
        rows = np.loadtxt(out.with_suffix(".intervals.csv"), delimiter=",", skiprows=1, usecols=(0, 3, 4))
        for i, column in ((0, 3), (1, 2)):
            values = draws[draws[:, 0] == i, column]
            lower, upper = rows[rows[:, 0] == i, 1:][0]
            half = q * values.std(ddof=1)
            assert (lower, upper) == pytest.approx((values.mean() - half, values.mean() + half), abs=1e-5)
    assert main(["impute", str(folder), "--data", str(tmp_path / "gaps.npy"), "--out", str(tmp_path / "s.csv"),
                 "--draws", "3", "--intervals", "0.9", "--threads", "1", "--steps", "7"]) == 0
    assert "calibrated" not in capsys.readouterr().out  # not drawn as the scored draws were: the draws' own


def test_the_line_names_both_errors():
    assert choice_line(RECORD) == ("impute will default to repaint: on 40 held-out cells hidden one at a time (10 "
                                   "draws), RMS error 0.400 against replace_xt's 0.500 (model units), their 0.9 "
                                   "intervals covering 0.85 and 0.90; gaussdiff impute --method overrides it")
    categories = RECORD | {"coverage": {"replace_xt": None, "repaint": None}}  # no numeric column hidden
    assert "model units); gaussdiff" in choice_line(categories)


def test_bad_check_cells_are_one_line(tmp_path, capsys):
    (tmp_path / "t.csv").write_text("a,b\n1,2\n3,\n5,6\n")
    assert TrainConfig(data=str(tmp_path / "t.csv"), impute_check_cells=0).validate().impute_check_cells == 0
    for bad in (-1, MAX_CELLS + 1):
        with pytest.raises(InputError, match="impute-check-cells must lie in"):
            TrainConfig(data=str(tmp_path / "t.csv"), impute_check_cells=bad).validate()
    one_line_error(capsys, ["train", "--data", tmp_path / "t.csv", "--out", tmp_path / "r", "--impute-check-cells",
                            "-5"], "impute-check-cells must lie in [0, 100,000]")
    assert not (tmp_path / "r").exists()


# ---------------------------------------------------------------------------------------------
# Intervals calibrated on the held-out scores (imputation.calibrated_intervals).

def test_the_conformal_quantile_by_hand():
    scores = [0.5, 0.1, 0.9, 0.3, 0.7, 0.2, 0.8, 0.4, 0.6]  # n = 9: ceil(10 x 0.9) = 9, the largest
    assert conformal_quantile(scores, 0.9) == 0.9
    assert conformal_quantile(scores, 0.5) == 0.5  # ceil(10 x 0.5) = 5
    assert conformal_quantile(scores[:8], 0.9) is None  # ceil(9 x 0.9) = 9 > 8


def test_calibrated_intervals_cover_where_the_draws_are_too_narrow():
    """y ~ N(mu, 1) per cell, the model's 10 draws N(mu, 0.5^2): the draws' own 0.9 intervals (Gaussian bounds at
    K = 10) cover y about P(|Z| < 0.96) = 0.66 of the time. 500 calibration cells' scores (conformity_scores) widen
    them; on 4,000 fresh cells the coverage must be 0.9 within 0.04 (3 SE: the calibration's 0.013 from 500 scores,
    sqrt(0.9 x 0.1 / 502), and the test cells' 0.005); measured (seeded) 0.915 against 0.642 uncalibrated."""
    g = torch.Generator().manual_seed(0)

    def cells(n):
        mu = 3 * torch.randn(n, generator=g, dtype=torch.float64)
        return mu + torch.randn(n, generator=g, dtype=torch.float64), \
            mu + 0.5 * torch.randn(10, n, generator=g, dtype=torch.float64)

    y, draws = cells(500)
    scores = conformity_scores(draws, y)
    assert scores == sorted(scores) and len(scores) == 500
    y, draws = cells(4000)
    result = Imputation(draws.mean(0)[:, None], draws[..., None], torch.ones(4000, 1, dtype=torch.bool),
                        draws[..., None], Standardize.identity(1), scores)
    lower, upper = result.intervals(0.9)
    covered = ((lower[:, 0] <= y) & (y <= upper[:, 0])).double().mean().item()
    assert result.calibrated(0.9) and abs(covered - 0.9) < 0.04
    lower, upper = intervals(draws[..., None], 0.9, Standardize.identity(1))
    assert ((lower[:, 0] <= y) & (y <= upper[:, 0])).double().mean().item() < 0.72  # P(|Z| < 0.96) = 0.66
    assert not dataclasses.replace(result, scores=scores[:8]).calibrated(0.9)  # too few: the draws' own


def test_repaint_imputes_on_fewer_steps_than_it_inpaints(tmp_path, capsys):
    """imputation.REPAINT_STEPS (100; the benchmark's choice for tables) where none are given, on a chain of T = 200
    whose inpainting default is 200 (min(250, T)): the command says 100 and writes impute(steps=100)'s rows."""
    torch.manual_seed(0)
    folder = SavedModel(MLP(2, 200, width=8, depth=1, emb_dim=8), make_schedule("linear", 200), "epsilon",
                        Standardize.identity(2), "t").save(tmp_path / "m")
    x = np.array([[0.5, np.nan], [np.nan, -1.0]])
    np.save(tmp_path / "gaps.npy", x)
    assert main(["impute", str(folder), "--data", str(tmp_path / "gaps.npy"), "--out", str(tmp_path / "o.npy"),
                 "--draws", "2", "--threads", "1", "--method", "repaint"]) == 0
    assert "repaint on ddpm, 100 steps" in capsys.readouterr().err
    model = load_model(folder)
    expected = impute(model, torch.from_numpy(x), 2, method="repaint", steps=100).filled.numpy()
    assert np.array_equal(np.load(tmp_path / "o.npy"), expected)
    assert not np.array_equal(expected, impute(model, torch.from_numpy(x), 2, method="repaint", steps=200).filled)
