"""Tests of the command line: help shows defaults; every user error is exit code 2 with one line on
stderr and no traceback, and leaves files on disk as they were; sample and plot write real files."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import gaussdiff
from gaussdiff import cli
from gaussdiff.cli import main
from gaussdiff.samplers import SAMPLERS
from gaussdiff.train import TrainConfig
from gaussdiff.train.config import DATA_DEFAULTS

# Tiny models contend badly for 2 shared cores with torch's default thread count.

SRC = str(Path(__file__).resolve().parents[1] / "src")
T = 50
TINY = ["--n-data", "2000", "--width", "32", "--depth", "1", "--emb-dim", "16", "--num-train-timesteps", str(T),
        "--batch-size", "128", "--warmup-steps", "5", "--threads", "1", "--no-pictures"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A run trained through the command line, shared by the tests below (read-only for them)."""
    out = tmp_path_factory.mktemp("cli") / "run"
    assert main(["train", "--out", str(out), "--steps", "40", "--log-every", "10", "--checkpoint-every", "20", *TINY]) == 0
    return out


def snapshot(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(Path(folder).rglob("*")) if p.is_file()}


def one_line_error(capsys, argv, *needles):
    """Run main(argv) (its items as text); assert exit code 2 and exactly one stderr line naming the problem, no
    traceback; return it."""
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    assert code == 2, captured
    lines = captured.err.splitlines()
    assert len(lines) == 1 and captured.err.endswith("\n"), captured.err
    assert lines[0].startswith(f"gaussdiff {argv[0]}: error: ")
    assert "Traceback" not in captured.err + captured.out
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def run_cli(*args):
    env = dict(os.environ, PYTHONPATH=SRC, OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "gaussdiff", *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=120)


# --- help ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("command, defaults", [
    ("train", [f"--batch-size BATCH_SIZE global minibatch size, split over processes and accumulation steps "
               f"(default: {DATA_DEFAULTS['batch_size'][0]} for vectors, {DATA_DEFAULTS['batch_size'][1]} for images)",
               f"peak learning rate of AdamW (default: {DATA_DEFAULTS['lr'][0]} for vectors, "
               f"{DATA_DEFAULTS['lr'][1]} for images)", f"(default: {TrainConfig.data})",
               f"(default: {TrainConfig.beta_schedule})", f"(default: {TrainConfig.num_train_timesteps})",
               f"(default: {TrainConfig.prediction_type})", f"(default: {TrainConfig.lr_schedule})", "--overwrite"]),
    ("sample", ["(default: 1000, with --init 1)", "(default: ddpm)", "(default: trailing)", "(default: ema)",
                "(default: the model's variance_type)", "(default: 10000)"]),
    ("plot", ["points per picture (default: 2000)", "sampling seed (default: 0)"]),
])
def test_help_shows_defaults(capsys, command, defaults):
    with pytest.raises(SystemExit) as info:
        main([command, "--help"])
    assert info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())  # undo argparse's line wrapping
    assert text.startswith(f"usage: gaussdiff {command}")
    for needle in defaults:
        assert needle in text, needle


def test_top_level_help_lists_the_commands(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert all(c in out for c in ("train", "sample", "plot"))


@pytest.mark.parametrize("argv", [[], ["fly"], ["sample", "RUN"], ["train", "--steps", "ten"]])
def test_malformed_command_lines_exit_with_2(capsys, argv):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: gaussdiff") and "Traceback" not in err


# --- train -----------------------------------------------------------------------------------------

def test_train_writes_a_run_folder(run):
    assert sorted(p.name for p in run.iterdir()) == ["checkpoints", "config.json", "metrics.jsonl", "model"]
    config = json.loads((run / "config.json").read_text())
    assert config["steps"] == 40 and config["width"] == 32 and config["num_train_timesteps"] == T
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 4


@pytest.mark.parametrize("args, needles", [
    (["--data", "no_such_set"], ["unknown dataset 'no_such_set'"]),
    (["--steps", "0"], ["steps must be positive, got 0"]),
    (["--steps", "-3"], ["steps must be positive, got -3"]),
    (["--batch-size", "0"], ["batch-size must be positive, got 0"]),
    (["--lr", "0"], ["lr must be a positive number"]),
    (["--lr", "nan"], ["lr must be a positive number"]),
    (["--beta-start", "0"], ["every beta must lie in the open interval (0, 1)"]),
    (["--beta-end", "1.5"], ["every beta must lie in the open interval (0, 1)", "max 1.5"]),
    (["--beta-schedule", "quadratic"], ["unknown beta_schedule 'quadratic'", "squaredcos_cap_v2"]),
    (["--prediction-type", "noise"], ["unknown prediction_type 'noise'"]),
    (["--lr-schedule", "step"], ["unknown lr-schedule 'step'"]),
    (["--grad-clip", "-1"], ["grad-clip must be positive, got -1.0"]),
    (["--threads", "0"], ["threads must be positive, got 0"]),
])
def test_train_bad_input(tmp_path, capsys, args, needles):
    out = tmp_path / "run"
    one_line_error(capsys, ["train", "--out", str(out), "--steps", "5", *TINY, *args], *needles)
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_train_bad_data_file(tmp_path, capsys):
    (tmp_path / "points.txt").write_text("1,2\n3,4\n")
    one_line_error(capsys, ["train", "--data", str(tmp_path / "points.txt"), "--out", str(tmp_path / "run"),
                            "--steps", "5", *TINY], "unknown file type '.txt'")
    assert not (tmp_path / "run").exists()


def test_train_into_a_missing_directory(tmp_path, capsys):
    out = tmp_path / "missing" / "run"
    one_line_error(capsys, ["train", "--out", str(out), "--steps", "5", *TINY], "does not exist", str(out.parent))
    assert list(tmp_path.iterdir()) == []


def test_train_refuses_an_existing_run_without_overwrite(run, capsys):
    before = snapshot(run)
    one_line_error(capsys, ["train", "--out", str(run), "--steps", "5", *TINY], str(run), "--overwrite")
    assert snapshot(run) == before


def test_train_refuses_a_non_empty_folder_even_with_overwrite(tmp_path, capsys):
    """--overwrite replaces a gaussdiff run, never a folder of other files (tests/test_reliability_train.py has
    the rest of the policy)."""
    out = tmp_path / "run"
    out.mkdir()
    (out / "notes.txt").write_text("precious")
    one_line_error(capsys, ["train", "--out", str(out), "--steps", "5", *TINY], "--overwrite")
    assert snapshot(out) == {"notes.txt": b"precious"}
    one_line_error(capsys, ["train", "--out", str(out), "--steps", "5", "--overwrite", *TINY],
                   "--overwrite replaces only a gaussdiff run folder")
    assert snapshot(out) == {"notes.txt": b"precious"}


# --- sample ----------------------------------------------------------------------------------------

def test_sample_writes_npy_and_csv_with_n_rows(run, tmp_path, capsys):
    npy, csv = tmp_path / "s.npy", tmp_path / "s.csv"
    for out in (npy, csv):  # 37 samples in chunks of 10: the last chunk is short
        assert main(["sample", str(run), "-n", "37", "--batch-size", "10", "--steps", "10", "--seed", "3",
                     "--out", str(out), "--threads", "1"]) == 0
        assert f"wrote 37 samples to {out}" in capsys.readouterr().out
    a = np.load(npy)
    b = np.loadtxt(csv, delimiter=",", ndmin=2, skiprows=1, dtype=np.float32)
    assert a.shape == b.shape == (37, 2) and np.isfinite(a).all() and a.dtype == np.float32  # moons' dtype
    assert csv.read_text().splitlines()[0] == "x,y" and len(csv.read_text().splitlines()) == 38
    assert np.array_equal(a, b)  # same seed, and the CSV keeps every float32 bit
    assert len(np.unique(a, axis=0)) == 37
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.csv", "s.npy"]  # no temporary files


def test_sample_accepts_model_folder_and_online_weights(run, tmp_path):
    outs = {}
    for name, argv in {"run": [str(run)], "model": [str(run / "model")],
                       "online": [str(run), "--weights", "online"]}.items():
        outs[name] = tmp_path / f"{name}.npy"
        assert main(["sample", *argv, "-n", "20", "--steps", "5", "--out", str(outs[name]), "--threads", "1"]) == 0
    assert np.array_equal(np.load(outs["run"]), np.load(outs["model"]))
    assert not np.array_equal(np.load(outs["run"]), np.load(outs["online"]))


def test_sample_seed_decides_the_samples(run, tmp_path):
    paths = [tmp_path / f"{i}.npy" for i in range(3)]
    for path, seed in zip(paths, [1, 1, 2]):
        assert main(["sample", str(run), "-n", "20", "--steps", "5", "--seed", str(seed), "--out", str(path)]) == 0
    a, b, c = (np.load(p) for p in paths)
    assert np.array_equal(a, b) and not np.array_equal(a, c)


@pytest.fixture
def bad_run_folders(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    corrupt = tmp_path / "corrupt"
    (corrupt / "model").mkdir(parents=True)
    (corrupt / "model" / "config.json").write_text("<<< garbage, not JSON")
    return {"missing": tmp_path / "missing", "empty": empty, "corrupt": corrupt}


@pytest.mark.parametrize("which, needle", [
    ("missing", "does not exist"),
    ("empty", "is neither a gaussdiff run folder nor a model folder"),
    ("corrupt", "config.json is not readable JSON"),
])
def test_sample_bad_run_folder(bad_run_folders, tmp_path, capsys, which, needle):
    out = tmp_path / "s.npy"
    one_line_error(capsys, ["sample", str(bad_run_folders[which]), "--out", str(out)], needle,
                   str(bad_run_folders[which]))
    assert not out.exists()


@pytest.mark.parametrize("args, needles", [
    (["-n", "0"], ["-n/--num-samples must be positive, got 0"]),
    (["-n", "-5"], ["-n/--num-samples must be positive, got -5"]),
    (["--steps", "0"], ["--steps must be positive, got 0"]),
    (["--steps", "-2"], ["--steps must be positive, got -2"]),
    (["--steps", str(T + 1)], [f"steps must be an integer in [1, {T}], got {T + 1}"]),
    (["--batch-size", "0"], ["--batch-size must be positive, got 0"]),
    (["--sampler", "euler_z"], ["unknown sampler 'euler_z'", "ddpm"]),
    (["--spacing", "sideways"], ["unknown timestep spacing 'sideways'"]),
    (["--sampler", "ddpm", "--variance", "big"], ["unknown reverse variance 'big'"]),
    (["--sampler", "ddpm", "--eta", "0.5"], ["sampler 'ddpm' has no option 'eta' (its options: variance)"]),
    (["--sampler", "heun", "--rtol", "1e-3"], ["sampler 'heun' has no option 'rtol' (it takes none)"]),
    (["--seed", "-1"], ["the seed must be an integer in [0, 4294967295], got -1"]),
    (["--weights", "best"], ["unknown weights 'best'"]),
])
def test_sample_bad_option(run, tmp_path, capsys, args, needles):
    out = tmp_path / "s.npy"
    one_line_error(capsys, ["sample", str(run), "-n", "10", "--out", str(out), *args], *needles)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name, needle", [
    ("missing/s.npy", "does not exist"),
    ("s.txt", "unknown file type '.txt'"),
    ("s", "unknown file type '(no extension)'"),
])
def test_sample_bad_output_path(run, tmp_path, capsys, name, needle):
    one_line_error(capsys, ["sample", str(run), "-n", "10", "--out", str(tmp_path / name)], needle)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("args", [["--sampler", "nope"], ["--steps", "999"], ["--sampler", "ddpm", "--variance", "big"],
                                  ["--weights", "best"]])
def test_failed_sample_leaves_an_existing_output_byte_identical(run, tmp_path, capsys, args):
    out = tmp_path / "s.npy"
    np.save(out, np.arange(6.0).reshape(3, 2))
    before = out.read_bytes()
    one_line_error(capsys, ["sample", str(run), "-n", "10", "--out", str(out), *args])
    assert out.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["s.npy"]


# --- plot ------------------------------------------------------------------------------------------

def assert_png(path):
    with Image.open(path) as img:
        img.verify()
    with Image.open(path) as img:
        assert img.format == "PNG" and min(img.size) > 100
        assert np.asarray(img.convert("L"), dtype=float).std() > 5  # not a blank picture


def test_plot_writes_three_pngs(run, tmp_path, capsys):
    out = tmp_path / "pictures"
    assert main(["plot", str(run), "-n", "300", "--out", str(out)]) == 0
    names = ["samples.png", "chain.png", "loss.png"]
    printed = capsys.readouterr().out.splitlines()
    assert printed == [f"picture: {out / n}" for n in names]
    assert sorted(p.name for p in out.iterdir()) == sorted(names)
    for name in names:
        assert_png(out / name)


def test_plot_bad_count(run, tmp_path, capsys):
    one_line_error(capsys, ["plot", str(run), "--out", str(tmp_path / "pics"), "-n", "0"],
                   "-n/--num-samples must be positive, got 0")
    assert not (tmp_path / "pics").exists()


def test_plot_into_a_file_is_refused(run, tmp_path, capsys):
    (tmp_path / "pics").write_text("a file, not a folder")
    one_line_error(capsys, ["plot", str(run), "-n", "50", "--out", str(tmp_path / "pics")],
                   "cannot use", str(tmp_path / "pics"))
    assert (tmp_path / "pics").read_text() == "a file, not a folder"


def test_plot_missing_run(tmp_path, capsys):
    one_line_error(capsys, ["plot", str(tmp_path / "missing")], "does not exist")


def test_interrupt_is_one_line_and_exit_130(monkeypatch, capsys):
    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setitem(cli.COMMANDS, "plot", interrupted)
    assert main(["plot", "anything"]) == 130
    assert capsys.readouterr().err == "gaussdiff plot: interrupted\n"


# --- the real process: exit code and stderr --------------------------------------------------------

@pytest.mark.process
def test_process_missing_run_folder(tmp_path):
    result = run_cli("sample", tmp_path / "missing", "--out", tmp_path / "s.npy")
    assert result.returncode == 2
    assert result.stderr.splitlines() == [f"gaussdiff sample: error: {tmp_path / 'missing'} does not exist"]
    assert "Traceback" not in result.stderr and result.stdout == ""
    assert list(tmp_path.iterdir()) == []


@pytest.mark.process
def test_process_bad_beta(tmp_path):
    result = run_cli("train", "--out", tmp_path / "run", "--steps", "5", "--beta-end", "1.5", *TINY)
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("gaussdiff train: error: ") and "beta" in lines[0]
    assert "Traceback" not in result.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.process
def test_process_sample_matches_in_process_sample(run, tmp_path):
    """Exit code 0, and the same seed gives the same samples in another process (CSV keeps every digit)."""
    result = run_cli("sample", run, "-n", "25", "--steps", "8", "--seed", "5", "--out", tmp_path / "s.csv")
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert main(["sample", str(run), "-n", "25", "--steps", "8", "--seed", "5", "--out", str(tmp_path / "s.npy")]) == 0
    assert np.array_equal(np.loadtxt(tmp_path / "s.csv", delimiter=",", ndmin=2, skiprows=1, dtype=np.float32),
                          np.load(tmp_path / "s.npy"))



@pytest.mark.parametrize("sampler", sorted(SAMPLERS))
def test_every_sampler_runs_from_the_command_line(run, tmp_path, sampler):
    """Each registered sampler writes N finite rows through the command line."""
    out = tmp_path / "s.npy"
    assert main(["sample", str(run), "-n", "64", "--steps", "5", "--sampler", sampler, "--out", str(out)]) == 0
    x = np.load(out)
    assert x.shape == (64, 2) and np.isfinite(x).all()


def test_ddpm_uses_the_models_own_variance_by_default(run, tmp_path):
    """No --variance: a fixed_small model samples with beta_tilde, a learned_range one with its learned
    variance (same seed, byte-identical files), and the two learned choices differ from beta_tilde's."""
    def sample(folder, *flags):
        out = tmp_path / f"s{len(list(tmp_path.iterdir()))}.npy"
        assert main(["sample", str(folder), "-n", "50", "--sampler", "ddpm", "--steps", "10", "--spacing", "trailing",
                     "--out", str(out), *flags]) == 0
        return np.load(out)

    assert np.array_equal(sample(run), sample(run, "--variance", "beta_tilde"))
    learned = tmp_path / "learned"
    assert main(["train", "--out", str(learned), "--steps", "20", "--loss-type", "hybrid", "--variance-type",
                 "learned_range", *TINY]) == 0
    assert np.array_equal(sample(learned), sample(learned, "--variance", "learned"))
    assert not np.array_equal(sample(learned), sample(learned, "--variance", "beta_tilde"))


@pytest.mark.parametrize("flags", [[], ["--sampler", "ddim", "--eta", "1"], ["--sampler", "dpmpp_2m"]],
                         ids=["ddpm", "ddim_eta1", "dpmpp_2m"])
def test_samples_do_not_depend_on_the_batch_size(run, tmp_path, flags):
    """20 samples at --batch-size 20, 10 and 7, and the first 20 of 30, are the same samples: sample i's noise is
    a function of (seed, i) (bit for bit: tests/test_row_noise.py). Only the network's float32 rounding may differ
    with the batch (the BLAS blocks a matmul by its row count: up to 2.4e-7 per call on this MLP, at most 5e-7 after
    the 10 steps, measured at batch sizes 1 to 20), so they agree to 1e-5, where noise from another stream is O(1)
    away: another seed is checked to be > 0.1 away."""
    def sample(n, batch_size, seed=0):
        out = tmp_path / f"s{len(list(tmp_path.iterdir()))}.npy"
        assert main(["sample", str(run), "-n", str(n), "--batch-size", str(batch_size), "--steps", "10",
                     "--seed", str(seed), "--out", str(out), "--threads", "1", *flags]) == 0
        return np.load(out)

    whole = sample(20, 20)
    for x in (sample(20, 10), sample(20, 7), sample(30, 7)[:20]):
        np.testing.assert_allclose(x, whole, rtol=0, atol=1e-5)
    assert np.abs(sample(20, 20, seed=1) - whole).max() > 0.1


def test_version_names_the_release(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0 and capsys.readouterr().out.strip() == f"gaussdiff {gaussdiff.__version__}"
