"""Issue 11, outputs users can use: written samples keep the data's column names and dtype, and a .csv holds each value
in the shortest text that reads back as the same float32 (or float64) bits. Models record the names and dtype in their
config.json (optional fields of format 2, gathered at training time by data.files.row_format); older models without
them write as before: float64 in Python's repr, no header."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from gaussdiff.cli import main
from gaussdiff.data.files import csv_header, fits_float32, load_array, row_format, save_array, stream_array
from gaussdiff.errors import InputError
from gaussdiff.outputs import check_target, write_samples
from gaussdiff.saved import load_model
from gaussdiff.train import TrainConfig, train

V1 = Path(__file__).parent / "fixtures" / "v1_model"
F32_EDGES = np.array([1e-45, -1e-45, 1.1754942e-38, 1.17549435e-38, 1e-30, 3.4e38, 3.4028235e38, -3.4028235e38, -0.0,
                      0.0, 0.1, 1 / 3, 0.123456789, 123456.789, 16777217.0, 1e-5, 2e-4, 1e16, 9.99999e-5],
                     dtype=np.float32)


def random_float32(n: int, seed: int = 0) -> np.ndarray:
    """``n`` float32 values of uniformly random bit patterns (every exponent, subnormals and signs), finite only."""
    bits = np.random.default_rng(seed).integers(0, 2**32, size=n, dtype=np.uint64).astype(np.uint32)
    values = bits.view(np.float32)
    return values[np.isfinite(values)]


def cells(path) -> list[str]:
    """The cells of a .csv without its header line, in order."""
    return [c for line in Path(path).read_text().splitlines()[1:] for c in line.split(",")]


def significant_digits(cell: str) -> int:
    mantissa = cell.lstrip("-").split("e")[0].replace(".", "").lstrip("0").rstrip("0")
    return max(len(mantissa), 1)


# --- the text of a value

def test_float32_values_round_trip_bit_for_bit_in_their_shortest_text(tmp_path):
    """Edge values (subnormals, the largest float32, -0.0, 9-digit values) and 20,000 random bit patterns: each cell,
    read as float64 (as gaussdiff and numpy read a .csv) and rounded to float32, gives the same 32 bits; and no cell
    has a digit to spare: the nearest decimal with one digit fewer reads back as another float32."""
    values = np.concatenate([F32_EDGES, random_float32(20_000)])
    rows = values[: len(values) // 4 * 4].reshape(-1, 4)
    save_array(tmp_path / "x.csv", rows, columns=["a", "b", "c", "d"])
    text = cells(tmp_path / "x.csv")
    back = np.array([float(c) for c in text]).astype(np.float32)
    assert np.array_equal(back.view(np.uint32), rows.ravel().view(np.uint32))  # -0.0 keeps its sign bit
    for cell, v in zip(text, rows.ravel()):
        k = significant_digits(cell)
        assert k <= 9  # float32 never needs more than 9 significant digits
        if k > 1:
            shorter = float(f"{float(v):.{k - 2}e}")  # the nearest decimal of k - 1 significant digits
            assert np.float32(shorter) != v, (cell, v)


def test_float64_values_are_written_as_pythons_repr_as_before(tmp_path):
    """float64 rows (older models, float64 data) get the text the writer wrote before issue 11: repr, which round-trips
    float64; checked on edge values and random bit patterns."""
    bits = np.random.default_rng(1).integers(0, 2**63, size=4000, dtype=np.uint64)
    values = np.concatenate([[5e-324, 1.7976931348623157e308, -0.0, 0.1 + 0.2, 1e16, 1e-5, 1e-4, 123456789012345.0],
                             bits.view(np.float64)])
    rows = values[np.isfinite(values)][:4000].reshape(-1, 2)
    save_array(tmp_path / "x.csv", rows)
    assert (tmp_path / "x.csv").read_text() == "".join(",".join(map(repr, row)) + "\n" for row in rows.tolist())


def test_streamed_csv_has_one_header_and_keeps_float32(tmp_path):
    batches = [torch.arange(6, dtype=torch.float32).reshape(3, 2) / 10, torch.tensor([[0.25, -0.0]])]
    stream_array(tmp_path / "s.csv", 4, iter(batches), columns=["x", "y"])
    assert (tmp_path / "s.csv").read_text() == "x,y\n0.0,0.1\n0.2,0.3\n0.4,0.5\n0.25,-0.0\n"
    stream_array(tmp_path / "s.npy", 4, iter(batches), columns=["x", "y"])
    assert np.load(tmp_path / "s.npy").dtype == np.float32
    assert np.array_equal(np.load(tmp_path / "s.npy"), torch.cat(batches).numpy())
    assert csv_header(tmp_path / "s.csv") == ["x", "y"] and load_array(tmp_path / "s.csv").shape == (4, 2)


def test_a_failed_stream_leaves_the_old_csv(tmp_path):
    (tmp_path / "s.csv").write_text("precious\n")

    def failing():
        yield torch.zeros(2, 2)
        raise InputError("the sampler returned NaN")

    with pytest.raises(InputError):
        stream_array(tmp_path / "s.csv", 4, failing(), columns=["x", "y"])
    assert (tmp_path / "s.csv").read_text() == "precious\n" and [p.name for p in tmp_path.iterdir()] == ["s.csv"]


@pytest.mark.parametrize("dtype, written", [(np.float32, np.float32), (np.float64, np.float64),
                                            (np.float16, np.float64), (np.int64, np.int64)])
def test_npy_rows_keep_float32_and_float64(tmp_path, dtype, written):
    save_array(tmp_path / "x.npy", np.ones((3, 2), dtype=dtype))
    assert np.load(tmp_path / "x.npy").dtype == written


# --- the data's format

def write_text(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_fits_float32_reads_the_values_as_written():
    assert fits_float32(np.array([5.1, 3.5, -0.0, 1e-45, 3.4028234663852886e38]))  # short decimals, float32 edges
    assert fits_float32(np.float32([0.1, 1 / 3]).astype(np.float64))  # float32 values read into float64
    assert fits_float32(np.arange(2**24, dtype=np.float64)[-3:])  # integers up to 2^24
    assert not fits_float32(np.array([0.123456789]))  # 9 digits: float32 prints it 0.12345679
    assert not fits_float32(np.array([2.0**24 + 1]))
    assert not fits_float32(np.array([1e39]))  # beyond float32's range
    assert not fits_float32(np.r_[np.full(70_000, 0.5), 0.1 + 0.2])  # one float64 value in a later chunk


def test_row_format_of_files_built_in_sets_and_images(tmp_path):
    rows = np.array([[5.1, 3.0, 0.2], [4.9, 1.0, 0.4]])
    table = write_text(tmp_path / "t.csv", "sepal,label,width\n5.1,3,0.2\n4.9,1,0.4\n")
    assert row_format(table, "label", rows[:, [0, 2]]) == (["sepal", "width"], "float32")
    assert row_format(table, "1", rows[:, [0, 2]]) == (["sepal", "width"], "float32")  # by column number
    assert row_format(table, None, rows) == (["sepal", "label", "width"], "float32")
    assert row_format(write_text(tmp_path / "h.csv", "5.1,3,0.2\n"), None, rows) == (None, "float32")  # no header
    wide = write_text(tmp_path / "w.csv", "a,b\n1,2,3\n")
    assert row_format(wide, None, rows) == (None, "float32")  # 2 names for 3 values: no names
    np.save(tmp_path / "x.npy", np.array([[0.123456789, 1.0]]))
    assert row_format(tmp_path / "x.npy", None, np.array([[0.123456789, 1.0]])) == (None, "float64")
    assert row_format("moons", None, torch.zeros(5, 2)) == (["x", "y"], "float32")
    assert row_format("digits", None, torch.zeros(5, 1, 8, 8, dtype=torch.uint8)) == (None, None)


# --- trained models

@pytest.fixture(scope="module")
def table_run(tmp_path_factory):
    """A tiny class-conditional run on a table with a header and a label column; its values have at most 4 digits."""
    root = tmp_path_factory.mktemp("table")
    rng = np.random.default_rng(0)
    rows = np.column_stack([np.round(rng.normal(5, 1, 400), 2), rng.integers(0, 2, 400),
                            np.round(rng.normal(size=400), 3)])
    table = root / "iris.csv"
    table.write_text("sepal,species,petal\n" + "".join(f"{a},{int(b)},{c}\n" for a, b, c in rows))
    cfg = TrainConfig(data=str(table), label_column="species", class_conditional=True, out=str(root / "run"),
                      steps=20, batch_size=64, width=16, depth=1, emb_dim=8, num_train_timesteps=20, warmup_steps=2,
                      log_every=10, checkpoint_every=20, threads=1)
    return train(cfg, progress=False)


def test_training_records_the_columns_and_dtype(table_run):
    data = json.loads((table_run / "model" / "config.json").read_text())["data"]
    assert [c["name"] for c in data["transform"]["columns"]] == ["sepal", "petal"] and data["dtype"] == "float32"
    model = load_model(table_run)
    assert model.header == ["sepal", "petal"] and model.data_dtype == "float32"
    assert model.sample(5, steps=3).dtype == torch.float32


def float32_csv(path) -> np.ndarray:
    return np.loadtxt(path, delimiter=",", skiprows=1, dtype=np.float32, ndmin=2)


def test_sample_and_inpaint_write_the_header_and_float32(table_run, tmp_path, capsys):
    """gaussdiff sample --out x.csv: the training file's names without the label column, float32 values in at most 9
    significant digits, the very numbers of the .npy; gaussdiff impute keeps the file's header and its known cells'
    text."""
    flags = ["-n", "30", "--steps", "5", "--seed", "2", "--class", "1"]
    for name in ("s.csv", "s.npy"):
        assert main(["sample", str(table_run), *flags, "--out", str(tmp_path / name)]) == 0
    text = (tmp_path / "s.csv").read_text()
    assert text.splitlines()[0] == "sepal,petal" and len(text.splitlines()) == 31
    assert all(significant_digits(c) <= 9 for c in cells(tmp_path / "s.csv"))
    assert np.load(tmp_path / "s.npy").dtype == np.float32
    assert np.array_equal(float32_csv(tmp_path / "s.csv"), np.load(tmp_path / "s.npy"))
    write_text(tmp_path / "x.csv", "sepal,species,petal\n5.1,0,\n4.25,0,\n")  # petal to fill, in class 0
    assert main(["impute", str(table_run), "--data", str(tmp_path / "x.csv"), "--steps", "5",
                 "--out", str(tmp_path / "i.csv")]) == 0
    lines = (tmp_path / "i.csv").read_text().splitlines()
    assert lines[0] == "sepal,species,petal" and [line.split(",")[0] for line in lines[1:]] == ["5.1", "4.25"]
    assert all(significant_digits(line.split(",")[2]) <= 9 for line in lines[1:])


def test_models_without_the_fields_write_as_before(tmp_path):
    """tests/fixtures/v1_model (gaussdiff 0.1.0) records neither: its .csv has no header and float64 in repr, the same
    numbers as its .npy, which stays float64."""
    model = load_model(V1)
    assert model.columns is None and model.data_dtype is None
    for name in ("s.csv", "s.npy"):
        assert main(["sample", str(V1), "-n", "12", "--steps", "4", "--out", str(tmp_path / name)]) == 0
    x = np.load(tmp_path / "s.npy")
    assert x.dtype == np.float64
    assert (tmp_path / "s.csv").read_text() == "".join(",".join(map(repr, row)) + "\n" for row in x.tolist())


def test_write_samples_heads_a_csv_with_the_targets_columns(tmp_path):
    target = check_target(tmp_path / "s.csv", (2,), None, 3, 0, columns=["u", "v"])
    write_samples(target, iter([torch.tensor([[1.5, 2.0]], dtype=torch.float32), torch.zeros(2, 2)]))
    assert (tmp_path / "s.csv").read_text() == "u,v\n1.5,2.0\n0.0,0.0\n0.0,0.0\n"
    assert [p.name for p in tmp_path.iterdir()] == ["s.csv"]  # no temporary file left
