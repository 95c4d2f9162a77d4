"""Tests of the offline image metric: the Frechet distance against exact oracles and scipy, the shipped digits
classifier's stated accuracy, the copy and nearest-neighbour checks, feature-net files, and ``gaussdiff score``."""

import json
import re
import shutil

import numpy as np
import pytest
import scipy.linalg

from gaussdiff import cli
from gaussdiff.cli import score
from gaussdiff.data.digits import digits_split
from gaussdiff.errors import InputError
from gaussdiff.features import (DIGITS_NET, FeatureNet, class_histogram, digits_net, digits_report, exact_copies,
                                frechet_distance, nearest_train_distance, score_report)


@pytest.fixture(scope="module")
def digits():
    """(training images, held-out images, held-out labels) of the fixed split."""
    (train, _), (heldout, labels) = digits_split("train"), digits_split("test")
    return train, heldout, labels


def correlated(rng, n, d, scale=1.0):
    """n rows of a d-dimensional Gaussian with a random full covariance (A A^T) and mean."""
    a = rng.normal(size=(d, d)) * scale
    return rng.normal(size=d) + rng.normal(size=(n, d)) @ a.T


def with_moments(rng, n, mean, var):
    """n rows whose sample mean is ``mean`` and sample covariance (ddof 1) is diag(var), to rounding: standard
    normal draws, centred and whitened by the Cholesky factor of their own sample covariance."""
    z = rng.normal(size=(n, len(mean)))
    z -= z.mean(axis=0)
    z = np.linalg.solve(np.linalg.cholesky(np.cov(z, rowvar=False)), z.T).T
    return mean + z * np.sqrt(var)


# --- Frechet distance ----------------------------------------------------------------------------

def test_fd_of_identical_sets_is_zero():
    f = correlated(np.random.default_rng(0), 500, 64)
    # The terms are O(tr S) ~ 4e3; float64 eigen-decompositions leave ~1e-12 of them.
    assert abs(frechet_distance(f, f)) < 1e-8


def test_fd_matches_the_diagonal_closed_form_on_the_same_moments():
    """With diagonal sample covariances diag(a), diag(b) the distance is exactly |mu1 - mu2|^2 + sum (sqrt a -
    sqrt b)^2; variances over six decades test the stability of the eigen route."""
    rng = np.random.default_rng(1)
    d = 16
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    a, b = 10.0 ** rng.uniform(-3, 3, d), 10.0 ** rng.uniform(-3, 3, d)
    f1, f2 = with_moments(rng, 400, mu1, a), with_moments(rng, 300, mu2, b)
    expected = ((mu1 - mu2) ** 2).sum() + ((np.sqrt(a) - np.sqrt(b)) ** 2).sum()
    # The oracle moments hold to ~1e-13 relative (the whitening's rounding); 1e-9 leaves four decades.
    assert frechet_distance(f1, f2) == pytest.approx(expected, rel=1e-9)


def test_fd_matches_scipy_sqrtm_for_full_covariances():
    """pytorch-fid's formula, tr sqrtm(S1 S2) by scipy's general matrix square root, on non-commuting
    covariances; sqrtm of the non-symmetric product carries ~1e-10 relative error, hence 1e-7."""
    rng = np.random.default_rng(2)
    f1, f2 = correlated(rng, 600, 20), correlated(rng, 500, 20, scale=0.5)
    s1, s2 = np.cov(f1, rowvar=False), np.cov(f2, rowvar=False)
    dmu = f1.mean(axis=0) - f2.mean(axis=0)
    expected = dmu @ dmu + np.trace(s1) + np.trace(s2) - 2 * np.trace(scipy.linalg.sqrtm(s1 @ s2).real)
    assert frechet_distance(f1, f2) == pytest.approx(expected, rel=1e-7)


def test_fd_is_symmetric():
    rng = np.random.default_rng(3)
    f1, f2 = correlated(rng, 300, 32), correlated(rng, 200, 32, scale=2.0)
    # The two orders take different eigen-decompositions; they agree to rounding (~1e-13 relative).
    assert frechet_distance(f1, f2) == pytest.approx(frechet_distance(f2, f1), rel=1e-10)


def test_fd_refuses_mismatched_feature_sets():
    with pytest.raises(InputError, match="same D"):
        frechet_distance(np.zeros((5, 3)), np.zeros((5, 4)))


# --- the shipped classifier ---------------------------------------------------------------------

def test_shipped_classifier_reproduces_its_stated_heldout_accuracy(digits):
    _, heldout, labels = digits
    net = digits_net()
    stated = net.config["heldout"]
    correct = int((net.predict(heldout) == labels).sum())
    assert (stated["images"], stated["correct"]) == (len(heldout), correct)
    assert stated["accuracy"] == correct / len(heldout) and stated["accuracy"] >= 0.97
    assert len(net.config["trained"]["commit"]) == 40 and net.config["trained"]["data"].startswith("digits training")


def test_class_histogram_of_the_heldout_images_follows_their_labels(digits):
    """The histogram counts the net's predictions: it differs from the label counts by at most the misclassified."""
    _, heldout, labels = digits
    net = digits_net()
    histogram = class_histogram(net, heldout)
    wrong = len(labels) - net.config["heldout"]["correct"]
    assert histogram.sum() == len(heldout) and np.abs(histogram - np.bincount(labels, minlength=10)).sum() <= 2 * wrong


# --- copies and nearest neighbours --------------------------------------------------------------

def test_exact_copies_finds_planted_copies(digits):
    train = digits[0]
    rng = np.random.default_rng(4)
    samples = rng.integers(0, 17, size=(100, 1, 8, 8), dtype=np.uint8)  # 17^64 images: no chance hit
    samples[[3, 10, 11, 50, 77, 98, 99]] = train[[0, 5, 5, 200, 1499, 42, 7]]
    near = train[8].copy()
    near[0, 4, 4] = (near[0, 4, 4] + 1) % 17  # one level off: not a copy
    samples[0] = near
    assert exact_copies(samples, train) == 7 / 100


def test_nearest_train_distance(digits):
    train = digits[0]
    assert (nearest_train_distance(train[:300], train, levels=17) == 0).all()  # exact: integer arithmetic
    rng = np.random.default_rng(5)
    images = np.concatenate([digits[1][:50], rng.integers(0, 17, size=(20, 1, 8, 8))])
    diffs = (images[:, None].astype(float) - train[None].astype(float)).reshape(len(images), len(train), -1)
    brute = np.sqrt((diffs ** 2).sum(axis=2)).min(axis=1) / 16  # every pair, no expansion of the square
    assert np.allclose(nearest_train_distance(images, train, levels=17, chunk=16), brute, rtol=1e-12, atol=0)


def test_digits_report_of_the_heldout_images_is_their_own_reference(digits):
    """Scored as samples, the held-out images meet their own references exactly."""
    train, heldout, _ = digits
    r = digits_report(heldout)
    assert abs(r["fd_heldout"]) < 1e-8 and r["fd_train"] == r["fd_heldout_vs_train"]
    assert r["exact_copies"] == r["heldout_exact_copies"] and r["nearest_ratio"] == 1.0
    assert r["floor_draws"] == 10 and r["floor_sd"] > 0 and r["samples"] == r["heldout_images"] == 297
    with pytest.raises(InputError, match="at least 297 samples"):
        digits_report(heldout[:296])


# --- feature-net files --------------------------------------------------------------------------

@pytest.fixture
def net_copy(tmp_path):
    """A copy of the shipped config and weights to break."""
    for name in (DIGITS_NET.name, DIGITS_NET.with_suffix(".safetensors").name):
        shutil.copy(DIGITS_NET.parent / name, tmp_path / name)
    return tmp_path / DIGITS_NET.name


def rewrite(path, **changes):
    config = json.loads(path.read_text())
    path.write_text(json.dumps({k: v for k, v in {**config, **changes}.items() if v is not None}))


def one_line_input_error(path, needle):
    with pytest.raises(InputError) as e:
        FeatureNet.load(path)
    assert "\n" not in str(e.value) and needle in str(e.value), str(e.value)


def test_feature_net_missing_or_corrupt_files(net_copy, tmp_path):
    one_line_input_error(tmp_path / "none.json", "no such file")
    (tmp_path / "bad.json").write_text("{not json")
    one_line_input_error(tmp_path / "bad.json", "not a readable JSON")
    weights = net_copy.with_suffix(".safetensors")
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    one_line_input_error(net_copy, "not a readable safetensors")
    weights.write_bytes(data[:-4] + b"\0\0\0\0")  # same size, other numbers
    one_line_input_error(net_copy, "SHA-256")
    weights.unlink()
    one_line_input_error(net_copy, "no such file")


def test_feature_net_config_that_does_not_fit_the_weights(net_copy):
    rewrite(net_copy, kind="vit")
    one_line_input_error(net_copy, "unknown feature-net kind")
    rewrite(net_copy, kind="cnn", input_shape=[1, 8])
    one_line_input_error(net_copy, "input_shape")
    rewrite(net_copy, input_shape=[1, 8, 8], feature_layer="nope")
    one_line_input_error(net_copy, "feature_layer")
    rewrite(net_copy, feature_layer="feature_relu", weights_sha256=None, feature_dim=32)
    one_line_input_error(net_copy, "has shape")
    rewrite(net_copy, feature_dim=64, channels=[16, 32, 8], pools=[1, 2, 1])
    one_line_input_error(net_copy, "missing ['conv2.bias', 'conv2.weight']")


USER_NET = {"kind": "cnn", "input_shape": [3, 8, 8], "levels": 256, "channels": [4], "pools": [2], "feature_dim": 8,
            "classes": ["a", "b"], "feature_layer": "feature_relu", "weights": "mine.safetensors"}


def test_a_users_feature_net_round_trips_and_checks_its_images(tmp_path):
    net = FeatureNet(USER_NET)
    net.save(tmp_path / "mine.json")
    loaded = FeatureNet.load(tmp_path / "mine.json")
    images = np.random.default_rng(6).integers(0, 256, size=(40, 3, 8, 8), dtype=np.uint8)
    assert np.array_equal(loaded.features(images), net.features(images))
    r = score_report(images[:20], images, loaded)
    assert r["exact_copies"] == 1.0 and r["nearest_train_median"] == 0.0 and "fd_heldout" not in r
    with pytest.raises(InputError, match=r"takes \(N, 3, 8, 8\)"):
        loaded.features(images[:, :1])
    with pytest.raises(InputError, match="integer levels 0..255"):
        loaded.features(images + 0.5)
    with pytest.raises(InputError, match="the digits are"):
        digits_report(images, loaded)


# --- gaussdiff score ----------------------------------------------------------------------------

@pytest.fixture
def main(monkeypatch):
    """cli.main with the score command registered (as cli/__init__ does once it lists it)."""
    monkeypatch.setitem(cli.MODULES, "score", score)
    monkeypatch.setitem(cli.COMMANDS, "score", score.run)
    return cli.main


def test_cli_prints_and_writes_the_report(main, digits, tmp_path, capsys):
    train, heldout, _ = digits
    samples = np.concatenate([train[:100, 0], heldout[:250, 0]])  # (N, 8, 8): a copied share of 100 / 350
    np.save(tmp_path / "s.npy", samples)
    assert main(["score", str(tmp_path / "s.npy"), "--data", "digits", "--out", str(tmp_path / "r.json")]) == 0
    out = capsys.readouterr().out
    r = json.loads((tmp_path / "r.json").read_text())
    assert r["exact_copies"] == 100 / 350 and r["class_histogram"] == np.bincount(
        digits_net().predict(samples), minlength=10).tolist()
    net = digits_net()
    assert r["fd_train"] == pytest.approx(frechet_distance(net.features(samples), net.features(train)), rel=1e-12)
    for line in ("FD vs 1500 training images (all 350 samples)", "FD vs 297 held-out images", "floor",
                 "exact copies of a training image", "28.6 %", "class histogram: 0:"):
        assert line in out, line


def test_cli_refuses_a_bad_npy_in_one_line(main, tmp_path, capsys):
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    np.save(tmp_path / "flat.npy", np.zeros((10, 64), dtype=np.uint8))
    for name, needle in (("obj.npy", "not a readable .npy"), ("flat.npy", "images of shape (10, 64)"),
                         ("none.npy", "No such file")):
        code = main(["score", str(tmp_path / name), "--data", "digits", "--out", str(tmp_path / "r.json")])
        err = capsys.readouterr().err
        assert code == 2 and err.count("\n") == 1 and needle in err and "Traceback" not in err, err
    assert not (tmp_path / "r.json").exists()


def test_cli_scores_a_users_images_against_their_reference(main, tmp_path, capsys):
    FeatureNet(USER_NET).save(tmp_path / "mine.json")
    rng = np.random.default_rng(7)
    reference = rng.integers(0, 256, size=(30, 8, 8, 3), dtype=np.uint8).transpose(0, 3, 1, 2)
    np.save(tmp_path / "ref.npy", reference)
    np.save(tmp_path / "s.npy", np.concatenate([reference[:3], reference[:1] // 2]))  # 3 copies of 4
    argv = ["score", str(tmp_path / "s.npy"), "--data", str(tmp_path / "ref.npy"), "--feature-net",
            str(tmp_path / "mine.json")]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert re.search(r"exact copies of a training image +75\.0 %", out), out
    assert "FD vs 30 training images (all 4 samples)" in out and "held-out" not in out
