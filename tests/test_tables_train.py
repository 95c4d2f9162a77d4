"""Tables end to end through the command line: a CSV with a header trains with per-column kinds (RUN/columns.json),
gaps are trained around, samples come back as the file's own cells, and the evaluation commands read the table."""

import csv
import json

import numpy as np
import pytest
import torch

from gaussdiff.cli import main
from gaussdiff.data import load_dataset
from gaussdiff.data.split import split_rows
from gaussdiff.saved import load_model

COLORS = ["red", "green", "blue"]
P_COLOR = [0.5, 0.3, 0.2]
HEADER = ["x", "color", "count", "income", "country"]


def write_table(path, n=400, seed=0, gaps=0.0):
    """A table of a continuous column whose mean follows a 3-category column, a Poisson count, a log-normal (skewed)
    income and a constant text column; ``gaps`` of the cells (none of the constant's) left empty at random."""
    rng = np.random.default_rng(seed)
    color = rng.choice(COLORS, n, p=P_COLOR)
    x = rng.normal(size=n) + 3.0 * (color == "red")
    count = rng.poisson(4.0, n)
    income = np.exp(rng.normal(10.0, 1.0, n))
    rows = [[f"{a:.4f}", c, str(k), f"{m:.2f}", "FR"] for a, c, k, m in zip(x, color, count, income)]
    for i, j in zip(*np.nonzero(rng.random((n, 4)) < gaps)):
        rows[i][j] = ""
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows([HEADER, *rows])
    return path


def read_rows(path):
    with open(path, newline="") as f:
        return list(csv.reader(f))


def train(tmp_path, data, *extra, steps=400, pictures=False):
    """A run on ``data`` of ``steps`` steps (400: enough for the sample shares these tests check), its pictures
    drawn only if asked."""
    run = tmp_path / "run"
    code = main(["train", "--data", str(data), "--out", str(run), "--steps", str(steps), "--threads", "1",
                 "--eval-every", "0", *extra, *([] if pictures else ["--no-pictures"])])
    assert code == 0
    return run


def test_a_table_trains_with_inferred_kinds_and_samples_its_own_cells(tmp_path):
    run = train(tmp_path, write_table(tmp_path / "t.csv"), pictures=True)
    assert all((run / "pictures" / name).is_file() for name in ("samples.png", "chain.png"))  # pair plot, entries
    schema = json.loads((run / "columns.json").read_text())
    kinds = {c["name"]: c for c in schema["columns"]}
    assert [c["name"] for c in schema["columns"]] == HEADER
    assert kinds["color"]["kind"] == "categorical" and kinds["color"]["categories"] == sorted(COLORS)
    assert kinds["count"]["kind"] == "integer"
    assert kinds["income"]["kind"] == "continuous" and kinds["income"]["transform"] == "quantile"  # skew ~6
    assert kinds["x"]["kind"] == "continuous"
    assert kinds["country"]["kind"] == "constant" and kinds["country"]["value"] == "FR"
    model = load_model(run)
    assert model.sample_shape == (1 + 3 + 1 + 1,)  # x, one-hot color, count, income; the constant takes none

    out = tmp_path / "rows.csv"
    assert main(["sample", str(run), "-n", "2000", "--out", str(out)]) == 0
    rows = read_rows(out)
    assert rows[0] == HEADER and len(rows) == 2001
    cells = list(zip(*rows[1:]))
    assert set(cells[1]) <= set(COLORS) and set(cells[4]) == {"FR"}
    assert all(c.lstrip("-").isdigit() for c in cells[2])  # integers come back as integers
    places = lambda column: {len(c.partition(".")[2]) for c in column}
    assert places(cells[0]) <= set(range(5)) and places(cells[3]) <= {0, 1, 2}  # the file's 4 and 2 decimals
    assert max(places(cells[0])) == 4  # written to its places, not to fewer (~1 in 10 values ends in a 0)
    share = {c: cells[1].count(c) / 2000 for c in COLORS}
    # a decoder that lost the categories' order or always took one would miss these by far more than the error of a
    # 400-step model; the training shares are 0.5 / 0.3 / 0.2
    assert abs(share["red"] - 0.5) < 0.15 and all(share[c] > 0.05 for c in COLORS)


def test_a_training_batch_is_the_map_of_its_dequantized_rows(tmp_path):
    """Dataset.get with dequantization draws u: the model units of the rows' codes dequantized by u (the oracle: the
    Table map applied to them, float32 rounding apart), 0 at missing entries with the mask False exactly there."""
    data = load_dataset(str(write_table(tmp_path / "gaps.csv", gaps=0.2)))
    rows = torch.arange(0, 400, 3)
    u = torch.rand(len(rows), data.dequant_width, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    batch = data.get(rows, dequant=u)
    expected = data.transform.forward(data.transform.dequantize(data.data[rows], u)).float()
    assert torch.equal(batch.mask, ~torch.isnan(expected)) and not batch.mask.all()
    torch.testing.assert_close(batch.x, expected.nan_to_num(0.0), rtol=0, atol=1e-6)
    assert not torch.equal(batch.x, data.get(rows).x)  # the count column moved


def test_gaps_are_trained_around_without_dropping_rows(tmp_path):
    data = write_table(tmp_path / "gaps.csv", gaps=0.2)
    run = train(tmp_path, data, "--holdout", "0", steps=100)
    config = json.loads((run / "config.json").read_text())
    assert "400 rows" in config["data_description"] and "missing cells" in config["data_description"]
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert all(np.isfinite(m["loss"]) for m in metrics if "loss" in m)
    out = tmp_path / "rows.csv"
    assert main(["sample", str(run), "-n", "100", "--out", str(out)]) == 0
    assert all(all(cell != "" for cell in row) for row in read_rows(out)[1:])  # samples have no gaps


def test_a_schema_file_overrides_the_inferred_kinds(tmp_path):
    data = write_table(tmp_path / "t.csv")
    schema = tmp_path / "schema.json"
    schema.write_text(json.dumps({"columns": [{"name": "count", "kind": "continuous"},
                                              {"name": "income", "kind": "positive"}]}))
    run = train(tmp_path, data, "--schema", str(schema), steps=10)
    kinds = {c["name"]: c["kind"] for c in json.loads((run / "columns.json").read_text())["columns"]}
    assert kinds == {"x": "continuous", "color": "categorical", "count": "continuous", "income": "positive",
                     "country": "constant"}


@pytest.mark.parametrize("columns, names", [([{"name": "nope", "kind": "integer"}], "nope"),
                                            ([{"name": "x", "kind": "ordinal"}], "ordinal")])
def test_a_schema_naming_unknown_columns_or_kinds_is_refused(tmp_path, capsys, columns, names):
    data = write_table(tmp_path / "t.csv")
    schema = tmp_path / "schema.json"
    schema.write_text(json.dumps({"columns": columns}))
    before = data.read_bytes()
    code = main(["train", "--data", str(data), "--out", str(tmp_path / "run"), "--steps", "10",
                 "--schema", str(schema)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and names in err[0]
    assert data.read_bytes() == before and not (tmp_path / "run").exists()


@pytest.mark.slow
def test_elbo_of_a_table_evaluates_its_complete_held_out_rows_and_says_what_its_density_covers(tmp_path, capsys):
    data = write_table(tmp_path / "gaps.csv", gaps=0.05)
    run = train(tmp_path, data, "--holdout", "0.25", steps=50)
    capsys.readouterr()
    assert main(["elbo", str(run), "--estimate", "importance", "--draws", "20"]) == 0
    out = capsys.readouterr().out
    assert "left out" in out  # held-out rows with gaps: a density is of complete rows
    assert "count enter dequantized" in out and "color are excluded" in out and "country are not modelled" in out
    result = json.loads((run / "elbo" / "elbo.json").read_text())
    held = split_rows(400, 0.25, 0)[1]  # the run's held-out rows (seed 0), counted here from the file itself
    complete = [i for i in held if all(cell != "" for cell in read_rows(data)[1 + i])]
    assert result["points"] == len(complete) < len(held)
    assert np.isfinite(result["terms"]["total"]["nats"])


def test_a_text_label_column_gives_named_classes(tmp_path):
    data = write_table(tmp_path / "t.csv")
    run = train(tmp_path, data, "--class-conditional", "--label-column", "color")
    model = load_model(run)
    assert model.classes == sorted(COLORS) and model.header == ["x", "count", "income", "country"]
    out = tmp_path / "red.csv"
    assert main(["sample", str(run), "--class", "red", "-n", "500", "--out", str(out)]) == 0
    x = np.array([float(r[0]) for r in read_rows(out)[1:]])
    # red rows have x ~ N(3, 1), the others N(0, 1): the class must move the mean far past the midpoint 1.5
    assert x.mean() > 1.5


def test_a_label_column_of_numbers_and_text_orders_its_classes_like_categories(tmp_path):
    """Classes are a label column's distinct cells, numbers by value (3 and 3.0 are one class) then text, as the
    categories of a categorical column are ordered."""
    path = tmp_path / "t.csv"
    labels = ["b", "10", "3.0", "a", "3", "2"] * 10
    rng = np.random.default_rng(1)
    path.write_text("v,label\n" + "".join(f"{rng.normal():.3f},{c}\n" for c in labels))
    data = load_dataset(str(path), class_conditional=True, label_column="label")
    assert data.classes == ["2", "3", "10", "a", "b"]
    assert [data.classes[i] for i in data.labels[:6]] == ["b", "10", "3", "a", "3", "2"]
