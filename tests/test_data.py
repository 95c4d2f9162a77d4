"""Tests of gaussdiff.data: built-in datasets, user arrays on disk, and the Standardize map."""

import json
import math
import os

import numpy as np
import pytest
import torch
from sklearn.datasets import make_swiss_roll

from gaussdiff.data import files
from gaussdiff.data import (BUILTIN, Standardize, eight_gaussians_params, load_array, load_dataset, load_points,
                            output_folder, save_array)
from gaussdiff.transforms import transform_from_dict
from gaussdiff.errors import InputError

NAMES = ["moons", "swiss_roll", "8gaussians", "checkerboard", "circles", "pinwheel"]


# --- built-in datasets -------------------------------------------------------------------------

def test_builtin_names():
    assert sorted(BUILTIN) == sorted(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_builtin_is_deterministic_under_a_seed_and_differs_across_seeds(name):
    a, b, c = BUILTIN[name](1001, seed=3), BUILTIN[name](1001, seed=3), BUILTIN[name](1001, seed=4)
    assert a.dtype == torch.float32 and a.shape == (1001, 2)
    assert torch.equal(a, b)
    assert (a - c).abs().max() > 0.1


@pytest.mark.parametrize("name", NAMES)
def test_builtin_is_standardized_per_axis(name):
    n = 200_000
    x = BUILTIN[name](n, seed=0).double()
    m, s = x.mean(0), x.std(0)
    # 5 standard errors: SE(mean) = s / sqrt(n); by the delta method
    # SE(std) = sqrt((mu4 - s^4) / (4 s^2 n)), mu4 the sample's central fourth moment.
    mu4 = ((x - m) ** 4).mean(0)
    assert ((m.abs() / (s / math.sqrt(n))) < 5).all(), (m, s)
    assert (((s - 1).abs() / ((mu4 - s**4) / (4 * s**2 * n)).sqrt()) < 5).all(), (m, s)


def test_eight_gaussians_params_closed_form():
    # Standardizing divides (center + 0.5 z) / 1.414 by sqrt(8.25) / 1.414, so 1.414 cancels.
    w, mu, cov = eight_gaussians_params()
    assert w.dtype == mu.dtype == cov.dtype == torch.float64
    r = 1 / math.sqrt(2)
    dirs = torch.tensor([(1, 0), (-1, 0), (0, 1), (0, -1), (r, r), (r, -r), (-r, r), (-r, -r)],
                        dtype=torch.float64)
    torch.testing.assert_close(w, torch.full((8,), 0.125, dtype=torch.float64), rtol=0, atol=1e-15)
    torch.testing.assert_close(mu, 4 * dirs / math.sqrt(8.25), rtol=1e-14, atol=1e-14)
    expected_cov = (0.25 / 8.25) * torch.eye(2, dtype=torch.float64).expand(8, 2, 2)
    torch.testing.assert_close(cov, expected_cov, rtol=1e-14, atol=1e-16)


def test_eight_gaussians_params_match_a_large_sample():
    n = 200_000
    x = BUILTIN["8gaussians"](n, seed=11).double()
    w, mu, cov = eight_gaussians_params()
    sigma = cov[0, 0, 0].sqrt().item()  # the claimed per-axis std of every mode (isotropic)
    # Keep the points within r = 2.5 sigma of each mean (neighbouring means are ~6.1 sigma apart,
    # so other modes contribute ~1e-4 of them). With E = |x - mu|^2 / (2 sigma^2) ~ Exp(1):
    # P(inside) = 1 - e^-c and E[E | inside] = 1 - c e^-c / (1 - e^-c), c = r^2 / (2 sigma^2).
    c = 2.5**2 / 2
    p_in = 1 - math.exp(-c)
    e_in = 1 - c * math.exp(-c) / p_in
    for k in range(8):
        d = x - mu[k]
        d = d[(d**2).sum(1) < 2 * c * sigma**2]
        m = d.shape[0]
        p = w[k].item() * p_in  # the count is Binomial(n, p); 5 standard errors throughout
        assert abs(m - n * p) < 5 * math.sqrt(n * p * (1 - p))
        assert (d.mean(0).abs() < 5 * d.std(0) / math.sqrt(m)).all()  # symmetric cut: mean mu_k
        q = (d**2).sum(1) / (2 * sigma**2)
        assert abs(q.mean() - e_in) < 5 * q.std() / math.sqrt(m)
        for v in (d[:, 0] * d[:, 1], d[:, 0] ** 2 - d[:, 1] ** 2):  # isotropic: both average 0
            assert abs(v.mean()) < 5 * v.std() / math.sqrt(m)


def test_swiss_roll_uses_x_and_z():
    ours = BUILTIN["swiss_roll"](3000, seed=7).double().numpy()
    sk = make_swiss_roll(3000, noise=0.5, random_state=7)[0]
    # Each of our axes is an increasing affine function of sklearn's x and z (up to float32).
    assert np.corrcoef(ours[:, 0], sk[:, 0])[0, 1] > 1 - 1e-9
    assert np.corrcoef(ours[:, 1], sk[:, 2])[0, 1] > 1 - 1e-9
    # sklearn's y is independent of (x, z): |corr| ~ 1/sqrt(3000) ~ 0.02.
    assert abs(np.corrcoef(ours[:, 1], sk[:, 1])[0, 1]) < 0.1


@pytest.mark.parametrize("n, seed", [(0, 0), (2.5, 0), (True, 0), (10, -1), (10, 2**32), (10, "a")])
def test_builtin_rejects_bad_count_or_seed(n, seed):
    with pytest.raises(InputError):
        BUILTIN["moons"](n, seed)


# --- load_array / save_array -------------------------------------------------------------------

@pytest.fixture
def awkward():
    """Float64 values whose decimal text needs all 17 digits, plus extremes."""
    x = np.random.default_rng(0).normal(size=(50, 3)) / 3
    x[0] = [1e-300, -1.7976931348623157e308, 0.1]
    x[1] = [5e-324, 0.0, -0.0]
    return x


@pytest.mark.parametrize("suffix", [".npy", ".csv", ".CSV"])
def test_save_then_load_round_trips_exactly(tmp_path, awkward, suffix):
    path = tmp_path / f"a{suffix}"
    save_array(path, awkward)
    out = load_array(path)
    assert out.dtype == np.float64
    np.testing.assert_array_equal(out, awkward)
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary file left


def test_save_accepts_a_tensor(tmp_path):
    x = torch.arange(6, dtype=torch.float32).reshape(3, 2)
    save_array(tmp_path / "t.npy", x)
    np.testing.assert_array_equal(load_array(tmp_path / "t.npy"), x.double().numpy())


def test_csv_with_header_blank_lines_and_crlf(tmp_path):
    path = tmp_path / "h.csv"
    path.write_bytes(b"\xef\xbb\xbfx, y\r\n1, 2\r\n\r\n3,4.5e0\r\n  \r\n")  # BOM, spaces, blanks
    np.testing.assert_array_equal(load_array(path), [[1.0, 2.0], [3.0, 4.5]])


def _npy(array, **kw):
    """A writer of a .npy file holding array."""
    return lambda p: np.save(p, array, **kw)


def _raw(content):
    """A writer of the given bytes."""
    return lambda p: p.write_bytes(content)


def _npz_named_npy(p):
    """Write an .npz archive under a .npy name."""
    with open(p, "wb") as f:
        np.savez(f, a=np.zeros((3, 2)))


def _truncated_npy(p):
    """Write a .npy file, then cut off its last bytes."""
    np.save(p, np.zeros((100, 2)))
    p.write_bytes(p.read_bytes()[:-50])


def _nan_rows():
    x = np.ones((10, 2))
    x[3, 0], x[7, 1] = np.nan, np.nan
    return x


BAD_FILES = {
    "missing": ("gone.npy", None, ["no such file"]),
    "directory": ("dir.npy", lambda p: p.mkdir(), ["is a directory"]),
    "unknown extension": ("a.txt", _raw(b"1,2\n3,4\n"), ["unknown file type", ".txt"]),
    "no extension": ("a", _raw(b"1,2\n3,4\n"), ["unknown file type"]),
    "corrupt npy": ("c.npy", _raw(b"this is not numpy"), ["not a readable .npy"]),
    "truncated npy": ("t.npy", _truncated_npy, ["not a readable .npy"]),
    "pickled objects": ("o.npy", _npy(np.array([{}, 1], dtype=object), allow_pickle=True),
                        ["not a readable .npy"]),
    "npz under npy name": ("z.npy", _npz_named_npy, ["not a readable .npy"]),
    "strings": ("s.npy", _npy(np.array([["a", "b"], ["c", "d"]])), ["expected real numbers"]),
    "complex": ("j.npy", _npy(np.ones((3, 2), dtype=complex)), ["expected real numbers"]),
    "1-D": ("v.npy", _npy(np.arange(10.0)), ["(10,)", "(N, D)"]),
    "3-D": ("w.npy", _npy(np.zeros((4, 2, 2))), ["(4, 2, 2)", "(N, D)"]),
    "one row": ("r.npy", _npy(np.zeros((1, 2))), ["1 data row", "at least 2"]),
    "no columns": ("e.npy", _npy(np.zeros((5, 0))), ["no values"]),
    "NaN rows": ("n.npy", _npy(_nan_rows()), ["2 of 10 rows", "NaN", "row 3"]),
    "Inf in csv": ("i.csv", _raw(b"1,2\n3,inf\n5,6\n"), ["1 of 3 rows", "Inf", "row 1"]),
    "non-numeric cell": ("b.csv", _raw(b"x,y\n1,2\n3,abc\n"), ["line 3", "column 2", "'abc'"]),
    "bad cell on line 1": ("b1.csv", _raw(b"1,abc\n2,3\n"), ["line 1", "'abc'"]),
    "empty cell": ("b2.csv", _raw(b"1,2\n3,\n"), ["line 2", "column 2"]),
    "ragged csv": ("g.csv", _raw(b"1,2\n3\n4,5\n"), ["line 2 has 1 values", "line 1 has 2"]),
    "empty csv": ("empty.csv", _raw(b""), ["0 data row"]),
    "header only": ("ho.csv", _raw(b"x,y\n"), ["0 data row"]),
    "not text": ("bin.csv", _raw(b"\xff\xfe\x00\x81\x00"), ["cannot read as text"]),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_load_array_rejects_bad_input_with_one_line(tmp_path, case):
    name, write, needles = BAD_FILES[case]
    path = tmp_path / name
    if write:
        write(path)
    with pytest.raises(InputError) as info:
        load_array(path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message
    for needle in needles:
        assert needle in message


def test_save_to_missing_directory_or_unknown_extension_writes_nothing(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        save_array(tmp_path / "no" / "x.npy", np.zeros((3, 2)))
    with pytest.raises(InputError, match="unknown file type"):
        save_array(tmp_path / "x.txt", np.zeros((3, 2)))
    assert list(tmp_path.iterdir()) == []


def test_save_to_a_directory_named_like_a_file(tmp_path):
    (tmp_path / "d.npy").mkdir()
    with pytest.raises(InputError, match="is a directory"):
        save_array(tmp_path / "d.npy", np.zeros((3, 2)))


@pytest.mark.parametrize("suffix", [".npy", ".csv"])
def test_failed_write_leaves_existing_file_byte_identical(tmp_path, monkeypatch, suffix):
    path = tmp_path / f"keep{suffix}"
    save_array(path, np.arange(8.0).reshape(4, 2))
    before = path.read_bytes()

    def fail(f, *args):
        f.write(b"half a file")
        raise OSError("No space left on device")

    monkeypatch.setattr(np, "save", fail)
    monkeypatch.setattr(files, "_write_csv", fail)
    with pytest.raises(InputError, match="cannot write"):
        save_array(path, np.zeros((100, 2)))
    with pytest.raises(InputError, match=r"\(N, D\)"):
        save_array(path, np.zeros(5))
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == [path.name]


def test_overwrite_keeps_file_mode(tmp_path):
    path = tmp_path / "m.npy"
    save_array(path, np.zeros((2, 2)))
    assert path.stat().st_mode & 0o777 == 0o644
    os.chmod(path, 0o640)
    save_array(path, np.ones((2, 2)))
    assert path.stat().st_mode & 0o777 == 0o640
    np.testing.assert_array_equal(load_array(path), np.ones((2, 2)))


# --- Standardize -------------------------------------------------------------------------------

@pytest.fixture
def user_data():
    """Float64 (1000, 4): three features with distinct means and scales, one constant."""
    x = np.random.default_rng(1).normal(loc=[5.0, -3.0, 0.0], scale=[3.0, 0.5, 2.0], size=(1000, 3))
    return torch.from_numpy(np.column_stack([x, np.full(1000, 0.1)]))


def test_fit_matches_numpy(user_data):
    t = Standardize.fit(user_data)
    x = user_data.numpy()
    np.testing.assert_allclose(t.mean.numpy(), x.mean(0), rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(t.std.numpy()[:3], x[:, :3].std(0, ddof=0), rtol=1e-12)
    assert t.std[3].item() == 1.0  # the constant feature
    y = t.forward(user_data)
    np.testing.assert_allclose(y.mean(0).numpy(), 0, atol=1e-12)
    np.testing.assert_allclose(y[:, :3].std(0, correction=0).numpy(), 1, rtol=1e-12)
    assert y[:, 3].abs().max() < 1e-15


def test_inverse_undoes_forward(user_data):
    t = Standardize.fit(user_data)
    torch.testing.assert_close(t.inverse(t.forward(user_data)), user_data, rtol=0, atol=1e-12)
    y = torch.randn(7, 4, dtype=torch.float64)
    torch.testing.assert_close(t.forward(t.inverse(y)), y, rtol=0, atol=1e-12)
    assert t.forward(user_data.float()).dtype == torch.float32


def test_log_abs_det_jacobian_against_autograd(user_data):
    t = Standardize.fit(user_data)
    jac = torch.autograd.functional.jacobian(t.forward, user_data[0])
    expected = torch.linalg.slogdet(jac).logabsdet.item()
    per_sample = t.log_abs_det_jacobian(user_data[:5])
    assert per_sample.shape == (5,) and per_sample.dtype == torch.float64
    np.testing.assert_allclose(per_sample.numpy(), expected, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(per_sample.numpy(), -np.log(user_data[:, :3].numpy().std(0)).sum(), rtol=1e-12)


def test_identity():
    t = Standardize.identity(3)
    x = torch.randn(5, 3)
    assert torch.equal(t.forward(x), x) and torch.equal(t.inverse(x), x)
    assert torch.equal(t.log_abs_det_jacobian(x), torch.zeros(5, dtype=torch.float64))
    for bad in (0, -1, 2.0, True):
        with pytest.raises(InputError):
            Standardize.identity(bad)


def test_to_dict_json_round_trip(user_data):
    t = Standardize.fit(user_data)
    d = json.loads(json.dumps(t.to_dict()))
    assert set(d) == {"kind", "mean", "std"} and d["kind"] == "standardize"
    assert all(isinstance(v, float) for v in d["mean"] + d["std"])
    for u in (Standardize.from_dict(d), transform_from_dict(d),
              transform_from_dict({"mean": d["mean"], "std": d["std"]})):  # format 1 stored no kind
        assert isinstance(u, Standardize) and torch.equal(u.mean, t.mean) and torch.equal(u.std, t.std)


@pytest.mark.parametrize("d", [
    [1.0, 2.0],
    {"mean": [0.0]},
    {"mean": [0.0], "std": [1.0], "scale": 2},
    {"mean": "0.0", "std": [1.0]},
    {"mean": ["0"], "std": [1.0]},
    {"mean": [True], "std": [1.0]},
    {"mean": [[0.0]], "std": [[1.0]]},
    {"mean": [0.0, 1.0], "std": [1.0]},
    {"mean": [], "std": []},
    {"mean": [0.0], "std": [0.0]},
    {"mean": [0.0], "std": [-1.0]},
    {"mean": [float("nan")], "std": [1.0]},
    {"mean": [0.0], "std": [float("inf")]},
])
def test_from_dict_rejects_bad_input(d):
    with pytest.raises(InputError):
        Standardize.from_dict(d)


@pytest.mark.parametrize("x", [torch.zeros(1, 2), torch.zeros(5), torch.zeros(3, 0),
                               torch.tensor([[0.0, 1.0], [float("nan"), 1.0]])])
def test_fit_rejects_bad_input(x):
    with pytest.raises(InputError):
        Standardize.fit(x)


def test_forward_rejects_wrong_feature_count(user_data):
    t = Standardize.fit(user_data)
    with pytest.raises(InputError, match="4 features"):
        t.forward(torch.zeros(3, 5))
    with pytest.raises(InputError, match="4 features"):
        t.inverse(torch.zeros(3, 3))


# --- load_dataset ------------------------------------------------------------------------------

def test_load_dataset_builtin():
    data = load_dataset("pinwheel", n=500, seed=1)
    x, t = data.get(torch.arange(500)).x, data.transform
    assert torch.equal(x, BUILTIN["pinwheel"](500, seed=1)) and len(data) == 500 and data.sample_shape == (2,)
    assert torch.equal(t.mean, torch.zeros(2, dtype=torch.float64))
    assert torch.equal(t.std, torch.ones(2, dtype=torch.float64))
    assert "pinwheel" in data.description and "500" in data.description and data.name == "pinwheel"


@pytest.mark.parametrize("suffix", [".npy", ".csv"])
def test_load_dataset_file_is_standardized(tmp_path, suffix):
    user = np.random.default_rng(2).normal(loc=[100.0, -5.0], scale=[10.0, 0.1], size=(400, 2))
    path = tmp_path / f"u{suffix}"
    save_array(path, user)
    data = load_dataset(path, n=7)
    x, t, description = data.get(torch.arange(len(data))).x, data.transform, data.description
    assert data.name == str(path.resolve())
    torch.testing.assert_close(data.get(torch.tensor([5, 2])).x, x[[5, 2]], rtol=0, atol=0)  # rows as asked
    assert x.dtype == torch.float32 and x.shape == (400, 2)
    # float32 rounding of values of order 3: errors ~1e-7.
    np.testing.assert_allclose(x.double().mean(0).numpy(), 0, atol=1e-6)
    np.testing.assert_allclose(x.double().std(0, correction=0).numpy(), 1, atol=1e-6)
    np.testing.assert_allclose(t.inverse(x.double()).numpy(), user, rtol=1e-6)
    np.testing.assert_allclose(t.mean.numpy(), user.mean(0), rtol=1e-13)
    assert str(path) in description and "400" in description


def test_load_dataset_unknown_name_lists_builtins(tmp_path):
    with pytest.raises(InputError) as info:
        load_dataset("moon")
    for name in NAMES:
        assert name in str(info.value)
    with pytest.raises(InputError, match="no such file"):
        load_array(tmp_path / "moon.npy")


def test_load_dataset_rejects_bad_count():
    with pytest.raises(InputError):
        load_dataset("moons", n=0)


# --- load_points: what -n means wherever a command evaluates data ------------------------------------------

def test_load_points_of_a_builtin_are_fresh_points_under_the_seed():
    x, description = load_points("moons", 300, 5)
    assert x.dtype == torch.float64 and torch.equal(x, BUILTIN["moons"](300, 5).double())
    assert "moons" in description and "300" in description and "seed 5" in description
    with pytest.raises(InputError, match="the number of points must be an integer >= 1, got None"):
        load_points("moons", None, 0)  # a built-in set has no 'all'


def test_load_points_of_a_file_are_rows_drawn_without_replacement(tmp_path):
    """n < N: n distinct rows of the file, in its order, fixed by the seed; every row is drawn with probability n/N
    (2000 seeds: each count is Binomial(2000, 0.3), sd 20.5; asserted within 5 sd). n >= N or None: all rows."""
    rows = np.arange(20.0).reshape(10, 2)  # row i is (2i, 2i + 1)
    path = tmp_path / "rows.csv"
    save_array(path, rows)
    counts = np.zeros(10)
    for seed in range(2000):
        x, _ = load_points(path, 3, seed)
        index = (x[:, 0] / 2).long().numpy()
        assert np.array_equal(x.numpy(), rows[index]) and len(set(index)) == 3 and (np.diff(index) > 0).all()
        counts[index] += 1
    assert np.abs(counts - 600).max() < 5 * math.sqrt(2000 * 0.3 * 0.7), counts
    a, description = load_points(path, 3, 7)
    assert torch.equal(a, load_points(path, 3, 7)[0]) and "3 of 10 rows" in description and "seed 7" in description
    for n in (10, 11, None):
        x, description = load_points(path, n, 7)
        assert np.array_equal(x.numpy(), rows) and "all 10 rows" in description
    with pytest.raises(InputError, match="unknown dataset 'rows.npy'"):
        load_points("rows.npy", 3, 0)


def test_output_folder_is_made_with_its_parents_or_refused_in_one_line(tmp_path):
    assert output_folder(tmp_path / "a" / "b") == tmp_path / "a" / "b" and (tmp_path / "a" / "b").is_dir()
    assert output_folder(str(tmp_path / "a" / "b")).is_dir()  # an existing folder is fine
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError) as info:
        output_folder(tmp_path / "file" / "out", "the sweep folder")
    assert f"cannot use {tmp_path / 'file' / 'out'} as the sweep folder: " in str(info.value)
    assert "\n" not in str(info.value)
