"""gaussdiff impute from the command line (issue 13), in-process. An untrained table model (random weights, its
table transform fitted to real rows: the command's reading, writing and checks do not depend on what the network
learnt) fills the gaps of a table with every kind of column, writes its draws and intervals, returns the observed
cells as their text and never touches its input; so does a vector model with .csv and .npy rows; each bad input is
one line, exit code 2, nothing written. One slow test trains a tiny table model with `gaussdiff train` and checks
that its imputations follow the observed cells."""

import csv
import json
import math

import numpy as np
import pytest
import torch

from gaussdiff.cli import main
from gaussdiff.columns import Table
from gaussdiff.data.schema import infer_schema
from gaussdiff.data.tables import decode, encode, read_table
from gaussdiff.imputation import impute
from gaussdiff.nets import MLP
from gaussdiff.saved import SavedModel, class_conditioning, load_model
from gaussdiff.schedule import make_schedule
from gaussdiff.transforms import Standardize

from test_cli import one_line_error, snapshot

HEADER = ["x", "color", "count", "country"]
COLORS = ["blue", "green", "red"]
T = 50  # the untrained models' chain
FAST = ["--method", "repaint", "--steps", "10", "--jump-length", "5", "--jump-count", "2", "--threads", "1"]


def write_csv(path, rows):
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows(rows)
    return path


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.reader(f))


def table_rows(n, seed):
    """x ~ N(0, 0.3^2) + 3 for red rows (a red row's x is near 3, the others' near 0), a 3-category color, a count
    0..5 and a constant text column."""
    rng = np.random.default_rng(seed)
    color = rng.choice(COLORS, n, p=[0.3, 0.3, 0.4])
    x = rng.normal(0, 0.3, n) + 3.0 * (color == "red")
    count = rng.integers(0, 6, n)
    return [[f"{a:.3f}", c, str(k), "FR"] for a, c, k in zip(x, color, count)]


def untrained(folder, transform, **fields):
    """A saved model of random weights (a tiny MLP, T = 50) with this transform."""
    net = MLP(transform.sample_shape[0], T, width=16, depth=1, emb_dim=8)
    SavedModel(net, make_schedule("linear", T), "epsilon", transform, "test", **fields).save(folder)
    return folder


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """``table``: the table's kinds inferred from 200 rows (x continuous, color categorical, count integer, country
    constant) and fitted to them; ``vector``: a standardization of 2 numbers a row, written as float32."""
    root = tmp_path_factory.mktemp("impute")
    raw = read_table(write_csv(root / "train.csv", [HEADER, *table_rows(200, seed=0)]))
    specs = infer_schema(raw)
    assert [s.kind for s in specs] == ["continuous", "categorical", "integer", "constant"]
    untrained(root / "table", Table.fit(torch.from_numpy(encode(raw, specs)), specs))
    untrained(root / "vector", Standardize([0.0, 0.0], [1.0, 2.0]), data_dtype="float32")
    return root


@pytest.fixture
def gaps(tmp_path):
    """24 rows of the table with gaps written in each way a table may: "", NA, nan, null (row 0: x missing, red;
    row 1: color missing, x = 3.1; rows 2..: one cell of x, color or count missing in turn; the last row complete)."""
    rows = table_rows(24, seed=5)
    rows[0] = ["", "red", "2", "FR"]
    rows[1] = ["3.100", "NA", "1", "FR"]
    for i in range(2, 23):
        rows[i][i % 3] = ("", "nan", "null")[i % 3]
    return write_csv(tmp_path / "gaps.csv", [HEADER, *rows])


def test_impute_fills_every_gap_and_returns_the_observed_cells_as_given(runs, gaps, tmp_path):
    """The filled table has the input's header and every observed cell's text; each gap holds its column's kind of
    value; the draws file holds K complete tables whose point estimates are the filled cells (x: the draws' mean, to
    the places of x's cells; count: their rounded mean; color: their mode); the intervals cover the imputed numeric
    cells around their values; the input is unchanged and the result does not depend on --batch-size."""
    out, draws_out, before = tmp_path / "filled.csv", tmp_path / "draws.csv", snapshot(gaps.parent)
    assert main(["impute", str(runs / "table"), "--data", str(gaps), "--out", str(out), "--draws", "6",
                 "--draws-out", str(draws_out), "--intervals", "0.9", *FAST]) == 0
    assert {k: v for k, v in snapshot(gaps.parent).items() if k == "gaps.csv"} == {"gaps.csv": before["gaps.csv"]}
    given, filled = read_csv(gaps), read_csv(out)
    assert filled[0] == HEADER and len(filled) == len(given)
    missing = [(i, j) for i, row in enumerate(given[1:]) for j, cell in enumerate(row)
               if cell.strip().lower() in ("", "na", "nan", "null")]
    for i, row in enumerate(given[1:]):
        for j, cell in enumerate(row):
            if (i, j) not in missing:
                assert filled[i + 1][j] == cell
    for i, j in missing:
        value = filled[i + 1][j]
        assert {0: lambda v: math.isfinite(float(v)), 1: lambda v: v in COLORS,
                2: lambda v: v.isdigit() and 0 <= int(v) <= 5}[j](value), (i, j, value)

    draws = read_csv(draws_out)
    assert draws[0] == ["row", "draw", *HEADER] and len(draws) == 1 + 6 * 24
    by_row = {}
    for line in draws[1:]:
        by_row.setdefault(int(line[0]), []).append(line[2:])
    places = load_model(runs / "table").table.specs[0].decimals  # x's, inferred from its cells' 3 places
    assert places == 3
    for i, j in missing:
        cells = [d[j] for d in by_row[i]]
        if j == 0:  # the mean to x's places (a half may go either way in binary)
            assert float(filled[i + 1][0]) == pytest.approx(np.mean([float(c) for c in cells]),
                                                            abs=0.5 * 10.0 ** -places + 1e-9)
            assert len(filled[i + 1][0].partition(".")[2]) <= places
        elif j == 1:
            counts = {c: cells.count(c) for c in set(cells)}
            assert counts[filled[i + 1][1]] == max(counts.values())
        else:
            assert int(filled[i + 1][2]) == round(np.mean([int(c) for c in cells]))
    assert all(d[k] == given[i + 1][k] for i, rows in by_row.items() for d in rows for k in range(4)
               if (i, k) not in missing)

    intervals = read_csv(tmp_path / "filled.intervals.csv")
    assert intervals[0] == ["row", "column", "value", "lower", "upper"]
    listed = {(int(r[0]), HEADER.index(r[1])) for r in intervals[1:]}
    assert listed == {(i, j) for i, j in missing if j in (0, 2)}
    for r in intervals[1:]:  # x's value is the mean of its draws, the centre of its Gaussian bounds (K = 6)
        assert r[2] == filled[int(r[0]) + 1][HEADER.index(r[1])] and float(r[3]) <= float(r[4])
        assert r[1] == "count" or float(r[3]) < float(r[2]) < float(r[4])

    again = tmp_path / "again.csv"
    assert main(["impute", str(runs / "table"), "--data", str(gaps), "--out", str(again), "--draws", "6",
                 "--batch-size", "7", *FAST]) == 0
    again = read_csv(again)  # the same noise; float32 network sums may differ in the last bit with the batch's size
    assert [r[1:] for r in again] == [r[1:] for r in filled]
    assert np.allclose([float(r[0]) for r in again[1:]], [float(r[0]) for r in filled[1:]], rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_a_trained_table_model_imputes_values_that_follow_the_observed_ones(tmp_path):
    """End to end: `gaussdiff train` on 400 complete rows of the table (its kinds inferred), then `gaussdiff impute`.
    x is near 3 in red rows and near 0 in the others (sd 0.3): x imputed given the color must be near its color's
    value, and a color imputed given x = 3.1 must be red, given x = -0.1 not. A model that ignored the observed
    cells would impute the mixture's mean, about 1.2, everywhere. 10 rows each; asserted with a margin of 1 (over 3
    sd of x), which leaves room for a model trained for seconds."""
    data = write_csv(tmp_path / "train.csv", [HEADER, *table_rows(400, seed=0)])
    assert main(["train", "--data", str(data), "--out", str(tmp_path / "run"), "--steps", "400",
                 "--num-train-timesteps", "100", "--width", "64", "--depth", "2", "--emb-dim", "32", "--threads", "1",
                 "--eval-every", "0", "--holdout", "0", "--no-pictures"]) == 0
    rows = [["", c, "2", "FR"] for c in ("red", "blue") * 10] + [["3.100", "", "2", "FR"], ["-0.100", "", "2", "FR"]]
    data, out = write_csv(tmp_path / "g.csv", [HEADER, *rows]), tmp_path / "f.csv"
    assert main(["impute", str(tmp_path / "run"), "--data", str(data), "--out", str(out), *FAST]) == 0
    filled = read_csv(out)[1:]
    red = [float(r[0]) for r in filled[:20] if r[1] == "red"]
    blue = [float(r[0]) for r in filled[:20] if r[1] == "blue"]
    assert abs(np.mean(red) - 3) < 1 and abs(np.mean(blue)) < 1, (red, blue)
    assert filled[20][1] == "red" and filled[21][1] != "red"


def test_a_vector_model_imputes_csv_and_npy_rows(runs, tmp_path):
    """The vector model fills NaN in a .npy and empty or NA cells in a headerless .csv; the observed values come
    back exactly, in the model's float32 (0.5, not 0.5000000000000001), the filled ones finite."""
    x = np.array([[0.5, np.nan], [np.nan, 2.0], [-1.0, -2.0], [1.0, np.nan]])
    np.save(tmp_path / "g.npy", x)
    assert main(["impute", str(runs / "vector"), "--data", str(tmp_path / "g.npy"), "--out",
                 str(tmp_path / "f.npy"), *FAST]) == 0
    filled = np.load(tmp_path / "f.npy")
    observed = ~np.isnan(x)
    assert filled.dtype == np.float32 and np.array_equal(filled[observed], x[observed]) and np.isfinite(filled).all()
    (tmp_path / "g.csv").write_text("0.5,\nNA,2.0\n-1.0,-2.0\n")
    assert main(["impute", str(runs / "vector"), "--data", str(tmp_path / "g.csv"), "--out",
                 str(tmp_path / "f.csv"), *FAST]) == 0
    lines = (tmp_path / "f.csv").read_text().splitlines()
    assert len(lines) == 3 and lines[0].startswith("0.5,") and lines[1].endswith(",2.0") and lines[2] == "-1.0,-2.0"
    assert all(math.isfinite(float(v)) for line in lines for v in line.split(","))


BAD = [
    ("complete", [HEADER, ["0.1", "red", "1", "FR"], ["2.9", "blue", "2", "FR"]], [], ["no cell is missing",
                                                                                      "nothing to impute"]),
    ("empty row", [HEADER, ["0.1", "", "1", "FR"], ["", "NA", "", "FR"]], [], ["line 3", "every cell missing"]),
    ("columns", [["x", "colour", "count", "country", "extra"], ["0.1", "red", "", "FR", "1"],
                 ["0.2", "red", "1", "FR", "1"]], [], ["not the model's", "missing color", "unexpected colour, extra"]),
    ("category", [HEADER, ["0.1", "purple", "", "FR"], ["0.2", "red", "1", "FR"]], [], ["'purple'", "line 2"]),
    ("level", [HEADER, ["", "red", "1", "FR"], ["0.2", "red", "1", "FR"]], ["--intervals", "1.5"], ["--intervals"]),
    ("lonely out", [HEADER, ["", "red", "1", "FR"], ["0.2", "red", "1", "FR"]], ["--intervals-out", "{tmp}/i.csv"],
     ["--intervals-out goes with --intervals"]),
    ("npy out", [HEADER, ["", "red", "1", "FR"], ["0.2", "red", "1", "FR"]], ["--out", "{tmp}/f.npy"], [".csv"]),
    ("in place", [HEADER, ["", "red", "1", "FR"], ["0.2", "red", "1", "FR"]], ["--out", "{tmp}/bad.csv",
                                                                               "--overwrite"], ["never modifies"]),
]


@pytest.mark.parametrize("name,rows,extra,needles", BAD, ids=[b[0] for b in BAD])
def test_bad_input_is_one_line_and_nothing_is_written(runs, tmp_path, capsys, name, rows, extra, needles):
    data = write_csv(tmp_path / "bad.csv", rows)
    before = snapshot(tmp_path)
    extra = [e.replace("{tmp}", str(tmp_path)) for e in extra]
    argv = ["impute", runs / "table", "--data", data, "--out", tmp_path / "f.csv", *FAST, *extra]
    if "--out" in extra:
        del argv[4:6]
    one_line_error(capsys, argv, *needles)
    assert snapshot(tmp_path) == before


def test_an_existing_output_needs_overwrite(runs, gaps, tmp_path, capsys):
    out = tmp_path / "f.csv"
    out.write_text("mine\n")
    one_line_error(capsys, ["impute", runs / "table", "--data", gaps, "--out", out, *FAST], str(out), "--overwrite")
    assert out.read_text() == "mine\n"
    assert main(["impute", str(runs / "table"), "--data", str(gaps), "--out", str(out), "--overwrite", *FAST]) == 0
    assert read_csv(out)[0] == HEADER


def test_a_class_conditional_model_imputes_each_row_given_its_class(tmp_path, capsys):
    """A run trained with --label-column group --class-conditional (classes a, b): each row is completed given the
    class in its group cell, which is copied to the output; the same rows labelled b, or without the column (the null
    label's unconditional model), fill other values from the same noise. An unknown or empty class is one line."""
    raw = read_table(write_csv(tmp_path / "train.csv", [HEADER, *table_rows(200, seed=0)]))
    specs = infer_schema(raw)
    table = Table.fit(torch.from_numpy(encode(raw, specs)), specs)
    net = MLP(table.sample_shape[0], T, width=16, depth=1, emb_dim=8, num_classes=2)
    run = tmp_path / "run"
    run.mkdir()
    SavedModel(net, make_schedule("linear", T), "epsilon", table, "test",
               conditioning=class_conditioning(["a", "b"], 0.1)).save(run / "model")
    (run / "config.json").write_text(json.dumps({"data": str(tmp_path / "train.csv"), "label_column": "group"}))
    rows = table_rows(6, seed=3)
    for row in rows:
        row[0] = ""
    filled = {}
    for name, label in (("a", "a"), ("b", "b"), ("none", None)):
        cells = [[label, *row] if label else row for row in rows]
        data = write_csv(tmp_path / f"{name}.csv", [["group", *HEADER] if label else HEADER, *cells])
        assert main(["impute", str(run), "--data", str(data), "--out", str(tmp_path / f"{name}.out.csv"), *FAST]) == 0
        filled[name] = read_csv(tmp_path / f"{name}.out.csv")
    assert [r[0] for r in filled["a"][1:]] == ["a"] * 6 and filled["a"][0] == ["group", *HEADER]
    x = {name: [r[-4] for r in out[1:]] for name, out in filled.items()}
    assert x["a"] != x["b"] and x["a"] != x["none"] and x["b"] != x["none"]
    capsys.readouterr()
    for label, needle in (("c", "class 'c' of column 'group' is not one the model was trained on"),
                          ("", "the label column 'group' is empty")):
        data = write_csv(tmp_path / "bad.csv", [["group", *HEADER], *[[label, *row] for row in rows]])
        one_line_error(capsys, ["impute", run, "--data", data, "--out", tmp_path / "bad.out.csv", *FAST], "line 2",
                       needle)


def test_number_labels_name_their_classes_as_training_did(tmp_path):
    """Training names a label cell "3.0" class "3" (dataset.class_name); a file to impute whose labels read "3.0"
    (or " 3") must find class "3", and complete its rows exactly as the file that reads "3" does (same seed)."""
    raw = read_table(write_csv(tmp_path / "train.csv", [HEADER, *table_rows(50, seed=0)]))
    specs = infer_schema(raw)
    table = Table.fit(torch.from_numpy(encode(raw, specs)), specs)
    run = tmp_path / "run"
    run.mkdir()
    SavedModel(MLP(table.sample_shape[0], T, width=16, depth=1, emb_dim=8, num_classes=2),
               make_schedule("linear", T), "epsilon", table, "test",
               conditioning=class_conditioning(["1", "3"], 0.1)).save(run / "model")
    (run / "config.json").write_text(json.dumps({"data": str(tmp_path / "train.csv"), "label_column": "group"}))
    rows = table_rows(4, seed=3)
    for row in rows:
        row[0] = ""
    filled = []
    for label in ("3", "3.0", " 3"):
        data = write_csv(tmp_path / "gaps.csv", [["group", *HEADER], *[[label, *row] for row in rows]])
        out = tmp_path / f"out{len(filled)}.csv"
        assert main(["impute", str(run), "--data", str(data), "--out", str(out), *FAST]) == 0
        filled.append([r[1:] for r in read_csv(out)])  # the label cell is copied as written
    assert filled[0] == filled[1] == filled[2]


def test_the_python_api_imputes_codes_as_the_command_does(runs, gaps, tmp_path):
    """``gaussdiff.imputation.impute(model, codes)`` fills the codes' NaN with what ``gaussdiff impute`` writes (the
    same settings), keeps the observed codes exactly, and gives intervals of the missing numeric cells only."""
    model = load_model(runs / "table")
    codes = encode(read_table(gaps), model.table.specs)
    result = impute(model, codes, draws=4, method="repaint", steps=10, jump_length=5, jump_n_sample=2)
    missing = np.isnan(codes)
    assert result.draws.shape == (4, 24, 4) and torch.equal(result.filled[~missing], torch.from_numpy(codes[~missing]))
    out = tmp_path / "f.csv"
    assert main(["impute", str(runs / "table"), "--data", str(gaps), "--out", str(out), "--draws", "4", *FAST]) == 0
    assert read_csv(out)[1:] == [[gaps_cell if not m else value for gaps_cell, m, value in zip(row, miss, text)]
                                 for row, miss, text in zip(read_csv(gaps)[1:], missing,
                                                            decode(result.filled.numpy(), model.table.specs))]
    lower, upper = result.intervals(0.9)
    numeric_missing = result.missing & torch.tensor([True, False, True, False])  # x and count
    assert torch.equal(torch.isnan(lower), ~numeric_missing) and torch.equal(torch.isnan(upper), ~numeric_missing)
    assert (lower[numeric_missing] <= upper[numeric_missing]).all()
