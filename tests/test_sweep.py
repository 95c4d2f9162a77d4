"""Tests of gaussdiff.sweep and ``gaussdiff sweep``: steps are the most a budget of denoiser calls allows
(checked against brute force and Heun's 2K - 1), each cell is the SW2 an independent run computes, the
exact oracle reaches the floor in the data's own units while one call does not, held-out sets are
disjoint from each other, and every bad input is one line with exit code 2 and nothing written."""

import csv
import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from gaussdiff import plots
from gaussdiff.cli import main
from gaussdiff.data import BUILTIN, Standardize, eight_gaussians_params, load_points
from gaussdiff.data.split import heldout_seed
from gaussdiff.errors import InputError
from gaussdiff.metrics import sliced_w2
from gaussdiff.mixture import GaussianMixture
from gaussdiff.samplers import SAMPLERS, Option, RowNoise, SamplerSpec, ddim, ddpm, timestep_grid
from gaussdiff.saved import load_model
from gaussdiff.schedule import make_schedule
from gaussdiff.sweep import FLOOR_DRAWS, format_table, held_out, steps_for_nfe, sweep

from test_cli import one_line_error

T = 50
TINY = ["--n-data", "2000", "--width", "32", "--depth", "1", "--emb-dim", "16", "--num-train-timesteps", str(T),
        "--batch-size", "128", "--warmup-steps", "5", "--threads", "1", "--no-pictures"]
N = 200


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny moons run trained through the command line (seed 0)."""
    out = tmp_path_factory.mktemp("sweep") / "run"
    assert main(["train", "--out", str(out), "--steps", "40", *TINY]) == 0
    return out


def assert_png(path):
    with Image.open(path) as img:
        assert img.format == "PNG" and min(img.size) > 100
        assert np.asarray(img.convert("L"), dtype=float).std() > 5  # not a blank picture


# --- steps for a budget of calls ---------------------------------------------------------------------

@pytest.mark.parametrize("cost", [lambda k: k, lambda k: 2 * k - 1, lambda k: 3 * k + 4, lambda k: 40,
                                  lambda k: k * k], ids=["one", "heun", "affine", "adaptive", "square"])
def test_steps_for_nfe_is_the_largest_that_fits(cost):
    for target in range(1, 60):
        fits = [k for k in range(1, target + 1) if cost(k) <= target]  # brute force
        assert steps_for_nfe(cost, target) == (max(fits) if fits else None), target


# --- the sweep on the exact oracle ---------------------------------------------------------------------

def oracle_model(transform):
    """The exact denoiser of the 8 Gaussians (in model units) with the given map to the data's units: a sweep
    of samplers other than ddpm needs only denoiser(), schedule and transform, so no training stands between
    it and the truth."""
    schedule = make_schedule("squaredcos_cap_v2", 100)
    mix = GaussianMixture(*eight_gaussians_params())
    return SimpleNamespace(denoiser=lambda: mix.denoiser(schedule), schedule=schedule, transform=transform), mix


@pytest.mark.parametrize("units", ["builtin", "file"])
def test_oracle_reaches_the_floor_in_the_data_units(tmp_path, units):
    """A perfect sampler's SW2 to the reference is one more draw of the floor's distribution (same
    estimator, an independent set of n true points), so it lies within mean + 3 sd (fixed seeds).
    DPM-Solver++(2M) at 50 steps on the oracle is that close: measured 0.113 against a floor of
    0.123 +- 0.025 on the built-in (n = 500), 0.87 against 0.94 +- 0.19 in the file. One call returns
    x0_hat(x_T, T), all near the data mean: measured 1.0 and 9.9, 35 and 48 sd above the floor. In the
    file's units 10 x + 100 every distance scales by 10; without the inverse transform SW2 would be ~100."""
    n = 500
    if units == "builtin":
        model, _ = oracle_model(Standardize.identity(2))
        data = "8gaussians"
    else:
        model, mix = oracle_model(Standardize([100.0, 100.0], [10.0, 10.0]))
        data = tmp_path / "points.npy"
        np.save(data, (10 * mix.sample(4 * n, generator=torch.Generator().manual_seed(5)) + 100).numpy())
        data = str(data)
    held = held_out(data, n, seed=0, sample_shape=(2,))
    reference, fresh = held.reference, held.fresh
    result = sweep(model, reference, fresh, ["dpmpp_2m"], [1, 50], seed=0)
    assert len(fresh) == FLOOR_DRAWS
    floors = [sliced_w2(x, reference) for x in fresh]
    assert result.floor_mean == pytest.approx(np.mean(floors))
    assert result.floor_sd == pytest.approx(np.std(floors, ddof=1))
    scale = 10 if units == "file" else 1
    assert 0.03 * scale < result.floor_mean < 0.3 * scale  # SW2 of n = 500 points in units of ~1 std
    one, fifty = result.rows
    assert (one.nfe, fifty.nfe) == (1, 50)
    assert fifty.sw2 <= result.floor_mean + 3 * result.floor_sd
    assert one.sw2 > result.floor_mean + 10 * result.floor_sd
    assert result.cheapest(within=2.0) is fifty


def test_adaptive_sampler_runs_once_at_its_own_nfe():
    """pf_ode (adaptive in the registry) ignores the NFE targets: one run on the full grid, reported with the calls
    it made, counted here independently on the same x_T (rows 0..299 of seed 2); on the oracle it is at the floor
    (mean + 3 sd)."""
    model, _ = oracle_model(Standardize.identity(2))
    held = held_out("8gaussians", 300, seed=2, sample_shape=(2,))
    reference, fresh = held.reference, held.fresh
    result = sweep(model, reference, fresh, ["pf_ode"], [5, 10], seed=2)
    [row] = result.rows
    calls = []
    denoiser = model.denoiser()
    x_T = RowNoise(2, 0, 300, (2,)).draw()
    with torch.no_grad():
        SAMPLERS["pf_ode"].fn(lambda x, t: calls.append(1) or denoiser(x, t), x_T, model.schedule,
                           timestep_grid(model.schedule, model.schedule.T, "trailing"))
    assert row.target_nfe is None and row.steps == model.schedule.T and row.nfe == len(calls) > 10
    assert row.sw2 <= result.floor_mean + 3 * result.floor_sd
    assert "pf_ode (adaptive, sets its own NFE): SW2" in format_table(result)


def test_the_registry_not_an_option_name_says_which_sampler_is_adaptive(monkeypatch):
    """A sampler with an rtol option that the registry does not call adaptive is run at each NFE target (its steps
    found by probing); one the registry calls adaptive, with no option at all, runs once on the full grid."""
    model, _ = oracle_model(Standardize.identity(2))

    def ddim_with_rtol(denoiser, x_T, schedule, grid, *, generator=None, rtol=1e-5, project=None, callback=None):
        return ddim(denoiser, x_T, schedule, grid, project=project, callback=callback)

    monkeypatch.setitem(SAMPLERS, "ddim_rtol", SamplerSpec("ddim_rtol", ddim_with_rtol, (Option("rtol", float, "-"),)))
    monkeypatch.setitem(SAMPLERS, "ddim_adaptive", SamplerSpec("ddim_adaptive", ddim, adaptive=True))
    held = held_out("8gaussians", 50, seed=0, sample_shape=(2,))
    reference, fresh = held.reference, held.fresh
    result = sweep(model, reference, fresh, ["ddim_rtol", "ddim_adaptive"], [3, 7])
    T = model.schedule.T
    assert [(r.sampler, r.target_nfe, r.steps, r.nfe) for r in result.rows] == [
        ("ddim_rtol", 3, 3, 3), ("ddim_rtol", 7, 7, 7), ("ddim_adaptive", None, T, T)]


def test_ddpm_cell_uses_the_models_own_variance():
    """A model whose own reverse variance is beta: the sweep's ddpm cell is the SW2 of ddpm with variance 'beta'
    on rows 0..n-1 of the seed's sample set (recomputed here from the noise source), not beta_tilde's."""
    model, _ = oracle_model(Standardize.identity(2))
    model.ddpm_variance = "beta"
    model.reverse_model = None  # never asked for: 'beta' needs no reverse model
    n, seed = 200, 3
    held = held_out("8gaussians", n, seed=seed, sample_shape=(2,))
    reference, fresh = held.reference, held.fresh
    [row] = sweep(model, reference, fresh, ["ddpm"], [10], seed=seed).rows

    def sw2(variance):
        noise = RowNoise(seed, 0, n, (2,))
        with torch.no_grad():
            x = ddpm(model.denoiser(), noise.draw(), model.schedule, timestep_grid(model.schedule, 10), generator=noise,
                     variance=variance)
        return sliced_w2(x.double(), reference)

    assert row.sw2 == sw2("beta")  # the same computation, bit for bit
    assert abs(row.sw2 - sw2("beta_tilde")) > 1e-3  # the two variances can be told apart


def test_held_out_sets_are_fresh_and_disjoint(tmp_path):
    """Built-in: not the training draw (seed 0). File: the reference shares no row with any fresh set."""
    held = held_out("moons", N, seed=0, sample_shape=(2,))
    reference, fresh = held.reference, held.fresh
    assert not torch.equal(reference, BUILTIN["moons"](N, 0).double())
    assert all(not torch.equal(reference, x) for x in fresh)
    rows = np.arange(3 * N * 2, dtype=float).reshape(3 * N, 2)  # every row distinct; 3N: n = N is kept
    np.save(tmp_path / "d.npy", rows)
    held = held_out(str(tmp_path / "d.npy"), N, seed=1, sample_shape=(2,))
    reference, fresh = held.reference, held.fresh
    ref_rows = {tuple(r) for r in reference.tolist()}
    assert len(ref_rows) == N
    for x in fresh:
        assert len({tuple(r) for r in x.tolist()}) == N and not ref_rows & {tuple(r) for r in x.tolist()}


# --- the command -------------------------------------------------------------------------------------------

def test_sweep_command_prints_and_writes(run, capsys):
    assert main(["sweep", str(run), "--data", "moons", "--samplers", "ddim,heun", "--nfe", "9,1,4",
                 "-n", str(N), "--threads", "1"]) == 0
    data, *out = capsys.readouterr().out.splitlines()
    folder = run / "sweep"  # the default --out
    assert data == f"data: built-in 'moons': a reference and {FLOOR_DRAWS} floor sets of {N} fresh points each, " \
                   "under seeds from --seed 0"
    assert out[0].split() == ["sampler", "NFE", "1", "NFE", "4", "NFE", "9"]
    assert out[1].startswith("ddim") and out[2].startswith("heun") and " (3)" in out[2]  # Heun's actual NFE
    assert out[3].startswith("floor (fresh true sets vs the reference): ")
    assert out[4].startswith("cheapest within 2 x floor: ")
    assert out[5:] == [f"wrote {folder / name}" for name in ("sweep.csv", "sweep.json", "sweep.png")]
    with open(folder / "sweep.csv") as f:
        rows = list(csv.DictReader(f))
    got = {(r["sampler"], int(r["target_nfe"])): (int(r["steps"]), int(r["nfe"]), float(r["sw2"])) for r in rows}
    # Heun makes 2K - 1 calls for K steps: the most steps within 1, 4, 9 calls are 1, 2, 5.
    assert {k: v[:2] for k, v in got.items()} == {("ddim", 1): (1, 1), ("ddim", 4): (4, 4), ("ddim", 9): (9, 9),
                                                  ("heun", 1): (1, 1), ("heun", 4): (2, 3), ("heun", 9): (5, 9)}
    # One cell recomputed by hand: DDIM, 4 steps, x_T rows 0..N-1 of the seed's sample set, in the data's units.
    model = load_model(run)
    x_T = RowNoise(0, 0, N, (2,)).draw()
    with torch.no_grad():
        x = ddim(model.denoiser(), x_T, model.schedule, timestep_grid(model.schedule, 4, "trailing"))
    reference = held_out("moons", N, seed=0, sample_shape=(2,)).reference
    assert got[("ddim", 4)][2] == pytest.approx(sliced_w2(model.transform.inverse(x.double()), reference), rel=1e-12)
    summary = json.loads((folder / "sweep.json").read_text())
    assert [r["sw2"] for r in summary["rows"]] == [v[2] for v in got.values()]
    assert summary["n"] == N and summary["threads"] == 1 and summary["floor_mean"] > 0 and summary["data"] == data[6:]
    assert_png(folder / "sweep.png")
    assert sorted(p.name for p in folder.iterdir()) == ["sweep.csv", "sweep.json", "sweep.png"]  # no temp files


def test_sweep_without_data_uses_the_runs_heldout_draw(run, tmp_path, capsys):
    """The trained run's config.json (moons, seed 0) gives the reference: N fresh points under heldout_seed(0), not the
    training draw; the DDIM cell is recomputed against that reference by hand."""
    out = tmp_path / "out"
    assert main(["sweep", str(run), "--samplers", "ddim", "--nfe", "4", "-n", str(N), "--threads", "1",
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == (f"data: built-in 'moons', {N} fresh points (seed {heldout_seed(0)}, not the training draw) "
                          f"as the reference; {FLOOR_DRAWS} more fresh draws as the floor sets")
    model = load_model(run)
    with torch.no_grad():
        x = ddim(model.denoiser(), RowNoise(0, 0, N, (2,)).draw(), model.schedule, timestep_grid(model.schedule, 4))
    reference = load_points("moons", N, heldout_seed(0))[0]
    [row] = json.loads((out / "sweep.json").read_text())["rows"]
    assert row["sw2"] == pytest.approx(sliced_w2(model.transform.inverse(x.double()), reference), rel=1e-12)


@pytest.fixture
def data_files(tmp_path):
    np.save(tmp_path / "three.npy", np.random.default_rng(0).standard_normal((1000, 3)))
    np.save(tmp_path / "few.npy", np.random.default_rng(0).standard_normal((5, 2)))
    (tmp_path / "nan.csv").write_text("x,y\n" + "1,2\n" * 50 + "nan,1\n")
    (tmp_path / "points.txt").write_text("1,2\n")
    return tmp_path


@pytest.mark.parametrize("args, needles", [
    (["--samplers", "ddim,nope"], ["unknown sampler 'nope'", "ddpm"]),
    (["--nfe", "0"], ["every NFE must be an integer in [1, 50], got 0"]),
    (["--nfe", "5,51"], ["every NFE must be an integer in [1, 50], got 51"]),
    (["--nfe", "5,ten"], ["--nfe must be comma-separated integers, got '5,ten'"]),
    (["-n", "0"], ["-n/--num-samples must be positive, got 0"]),
    (["-n", "1"], ["at least 2 points"]),
    (["--within", "0"], ["--within must be a finite number > 0, got 0.0"]),
    (["--seed", "-1"], ["the seed must be an integer in [0, 4294967295], got -1"]),
    (["--spacing", "sideways"], ["unknown timestep spacing 'sideways'"]),
    (["--weights", "best"], ["unknown weights 'best'"]),
    (["--data", "moonz"], ["unknown dataset 'moonz'", "moons"]),
    (["--data", "{files}/three.npy"], ["held-out data has samples of shape (3,), the model (2,)"]),
    (["--data", "{files}/few.npy"], ["5 rows are too few for a sweep", "3 times as many rows"]),
    (["--data", "{files}/nan.csv"], ["contain NaN or Inf"]),
    (["--data", "{files}/points.txt"], ["unknown file type '.txt'"]),
])
def test_sweep_bad_input_is_one_line_and_writes_nothing(run, data_files, tmp_path, capsys, args, needles):
    out = tmp_path / "out"
    argv = ["sweep", str(run), "--data", "moons", "-n", "20", "--nfe", "2", "--samplers", "ddim", "--out", str(out)]
    one_line_error(capsys, argv + [a.replace("{files}", str(data_files)) for a in args], *needles)
    assert not out.exists()


def test_sweep_missing_run(tmp_path, capsys):
    one_line_error(capsys, ["sweep", str(tmp_path / "missing"), "--data", "moons"], "does not exist")


def test_sweep_help_shows_defaults(capsys):
    with pytest.raises(SystemExit):
        main(["sweep", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for needle in ["(default: 5,10,20,50,100)", "(default: 2000)", "(default: trailing)", "(default: 2.0)"]:
        assert needle in text, needle


# --- the picture ---------------------------------------------------------------------------------------------

def test_sweep_curves_writes_png_and_refuses_bad_input(tmp_path):
    curves = {"ddim": ([5, 10, 20], [0.3, 0.1, 0.05]), "heun": ([5, 9], [0.4, float("nan")])}
    path = plots.sweep_curves(curves, 0.04, 0.005, tmp_path / "s.png")
    assert_png(path)
    for bad, needle in [({}, "at least one sampler"), ({"a": ([1, 2], [0.1])}, "length 2"),
                        ({"a": ([1], [[0.1]])}, "length 1")]:
        with pytest.raises(InputError, match=needle):
            plots.sweep_curves(bad, 0.04, 0.005, tmp_path / "t.png")
    with pytest.raises(InputError, match="positive mean"):
        plots.sweep_curves(curves, 0.0, 0.005, tmp_path / "t.png")
    assert [p.name for p in tmp_path.iterdir()] == ["s.png"]
