"""Tests of the sampler registry (samplers.spec, samplers.SAMPLERS) and of gaussdiff.sampling: every sampler declares
its options and traits beside its function; `gaussdiff sample` (flags, help), `gaussdiff sweep` and `generate` read
them, so a new sampler is one function and one spec entry; a model's own defaults are filled in one place."""

import inspect
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from gaussdiff.cli import main
from gaussdiff.errors import InputError
from gaussdiff.sampling import sampler_inputs
from gaussdiff.samplers import SAMPLERS, Option, SamplerSpec, ddim, generate, get_sampler, options_by_name
from gaussdiff.saved import load_model
from gaussdiff.schedule import make_schedule

TINY = ["--n-data", "2000", "--width", "32", "--depth", "1", "--emb-dim", "16", "--num-train-timesteps", "50",
        "--batch-size", "128", "--warmup-steps", "5", "--threads", "1", "--no-pictures"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny moons run (fixed_small: its own ddpm variance is beta_tilde)."""
    out = tmp_path_factory.mktemp("registry") / "run"
    assert main(["train", "--out", str(out), "--steps", "20", *TINY]) == 0
    return out


def shrink(denoiser, x_T, schedule, grid, *, generator=None, scale: float = 1.0, project=None, callback=None):
    """A new sampler for the tests: ``scale`` times DDIM's output."""
    return scale * ddim(denoiser, x_T, schedule, grid, project=project, callback=callback)


# --- the declarations ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_every_registered_sampler_meets_the_contract(name):
    """Registered under its own name; sample(denoiser, x_T, schedule, grid, *, generator=None, project=None,
    callback=None, ...) with its declared options keyword-only, each with a default."""
    spec = SAMPLERS[name]
    assert spec.name == name and get_sampler(name) is spec
    params = inspect.signature(spec.fn).parameters
    assert list(params)[:4] == ["denoiser", "x_T", "schedule", "grid"]
    for keyword in ("generator", "project", "callback"):
        assert params[keyword].kind is inspect.Parameter.KEYWORD_ONLY and params[keyword].default is None
    for option in spec.options:
        assert params[option.name].kind is inspect.Parameter.KEYWORD_ONLY
        assert params[option.name].default is not inspect.Parameter.empty


def test_the_declared_options_and_traits():
    """What the command line and the sweep used to hard-code by name, now declared: ddpm's variance (the model's own
    by default; 'learned' needs a reverse model), ddim's eta, pf_ode's tolerances and its adaptive trait."""
    got = {name: ([o.name for o in spec.options], spec.adaptive) for name, spec in SAMPLERS.items()}
    assert got == {"ddpm": (["variance"], False), "ddim": (["eta"], False), "dpmpp_2m": ([], False),
                   "dpmpp_3m": ([], False), "euler": ([], False), "heun": ([], False),
                   "pf_ode": (["rtol", "atol"], True)}
    ddpm = SAMPLERS["ddpm"]
    assert ddpm.options[0].model_default == "ddpm_variance"
    assert [ddpm.needs_reverse_model(o) for o in ({}, {"variance": "beta"}, {"variance": "learned"})] == [
        False, False, True]
    assert not any(SAMPLERS[n].needs_reverse_model({"eta": 1.0}) for n in SAMPLERS if n != "ddpm")
    assert (SAMPLERS["ddim"].default("eta"), SAMPLERS["pf_ode"].default("rtol")) == (0.0, 1e-5)
    assert [name for name, spec in SAMPLERS.items() if not spec.projects] == ["pf_ode"]
    assert {name: spec.nfe and spec.nfe(7) for name, spec in SAMPLERS.items()} == {
        "ddpm": 7, "ddim": 7, "dpmpp_2m": 7, "dpmpp_3m": 7, "euler": 7, "heun": 13, "pf_ode": None}


def test_a_spec_refuses_a_function_without_the_contracts_keywords():
    def no_project(denoiser, x_T, schedule, grid, *, generator=None, callback=None):
        return x_T

    with pytest.raises(TypeError, match="sampler mine: no_project lacks the keyword-only project=None"):
        SamplerSpec("mine", no_project)


def test_a_spec_refuses_an_option_its_function_does_not_take():
    with pytest.raises(TypeError, match="'eta' is not a keyword-only parameter of shrink"):
        SamplerSpec("mine", shrink, (Option("eta", float, "-"),))
    with pytest.raises(TypeError, match="'variance' is not a keyword-only parameter of shrink"):
        SamplerSpec("mine", shrink, reverse_model_when={"variance": "learned"})


def test_options_by_name_merges_equal_declarations_and_refuses_clashing_ones():
    def other(denoiser, x_T, schedule, grid, *, generator=None, scale: float = 1.0, project=None, callback=None):
        return x_T

    def clash(denoiser, x_T, schedule, grid, *, generator=None, scale: float = 2.0, project=None, callback=None):
        return x_T

    scale = Option("scale", float, "-")
    merged = options_by_name([SamplerSpec("a", shrink, (scale,)), SamplerSpec("b", other, (scale,))])
    assert merged == {"scale": (scale, ["a", "b"])}
    with pytest.raises(TypeError, match="option 'scale' of b differs from that of a"):
        options_by_name([SamplerSpec("a", shrink, (scale,)), SamplerSpec("b", clash, (scale,))])


def test_check_options_names_the_option_and_what_the_sampler_takes():
    with pytest.raises(InputError, match=r"sampler 'ddim' has no option 'variance' \(its options: eta\)"):
        SAMPLERS["ddim"].check_options({"variance": "beta"})
    with pytest.raises(InputError, match=r"sampler 'euler' has no option 'eta' \(it takes none\)"):
        SAMPLERS["euler"].check_options({"eta": 0.0})
    SAMPLERS["pf_ode"].check_options({"rtol": 1e-3, "atol": 1e-3})


# --- the model's own defaults, in one place --------------------------------------------------------------------

def fake_model(ddpm_variance: str):
    """A saved model as sampling sees it: a denoiser, a reverse model and its own ddpm variance."""
    return SimpleNamespace(denoiser=lambda: "denoiser", reverse_model=lambda: "reverse model",
                           ddpm_variance=ddpm_variance)


@pytest.mark.parametrize("own, given, variance, calls", [
    ("beta", {}, "beta", "denoiser"),
    ("learned", {}, "learned", "reverse model"),
    ("learned", {"variance": None}, "learned", "reverse model"),
    ("learned", {"variance": "beta_tilde"}, "beta_tilde", "denoiser"),
    ("beta_tilde", {"variance": "learned"}, "learned", "reverse model"),
])
def test_sampler_inputs_fill_the_models_own_variance(own, given, variance, calls):
    assert sampler_inputs(fake_model(own), "ddpm", given) == (calls, {"variance": variance})


def test_sampler_inputs_leave_other_samplers_options_as_given():
    assert sampler_inputs(fake_model("learned"), "ddim", {"eta": 0.5}) == ("denoiser", {"eta": 0.5})
    assert sampler_inputs(fake_model("learned"), "heun") == ("denoiser", {})
    with pytest.raises(InputError, match="unknown sampler 'nope'; known: ddpm"):
        sampler_inputs(fake_model("beta"), "nope")
    with pytest.raises(InputError, match="sampler 'heun' has no option 'variance'"):
        sampler_inputs(fake_model("beta"), "heun", {"variance": "beta"})


# --- the command line and generate read the registry -------------------------------------------------------------

def sample_help(capsys) -> str:
    with pytest.raises(SystemExit):
        main(["sample", "--help"])
    return " ".join(capsys.readouterr().out.split())  # undo argparse's line wrapping


def test_sample_help_lists_every_sampler_and_option_with_its_default(capsys):
    text = sample_help(capsys)
    assert f"sampler: {', '.join(SAMPLERS)} (default: ddpm)" in text
    for name, spec in SAMPLERS.items():
        for option in spec.options:
            default = option.model_default_help if option.model_default else spec.default(option.name)
            flag = f"--{option.name} {option.name.upper()} {name}: {option.help} (default: {default})"
            assert flag in text, flag
    assert "--variance VARIANCE ddpm: reverse variance, one of beta_tilde, beta, learned (default: the model's " \
           "variance_type)" in text


def test_a_new_sampler_is_one_function_and_one_entry(run, tmp_path, monkeypatch, capsys):
    """Registering `shrink` (one spec) gives it a --sampler name, a --scale flag with its help and default, a run from
    the command line (scale 1: DDIM's samples bit for bit; scale 0: every sample is the model's x = 0 mapped to the
    data's units), a column in the sweep and a name for generate."""
    monkeypatch.setitem(SAMPLERS, "shrink", SamplerSpec("shrink", shrink, (Option("scale", float, "output factor"),)))
    text = sample_help(capsys)
    assert "ddim, dpmpp_2m, dpmpp_3m, euler, heun, pf_ode, shrink" in text
    assert "--scale SCALE shrink: output factor (default: 1.0)" in text

    def sample(*flags):
        out = tmp_path / f"s{len(list(tmp_path.iterdir()))}.npy"
        assert main(["sample", str(run), "-n", "30", "--steps", "5", "--out", str(out), *flags]) == 0
        return np.load(out)

    assert np.array_equal(sample("--sampler", "shrink"), sample("--sampler", "ddim"))
    zero = load_model(run).transform.inverse(torch.zeros(30, 2, dtype=torch.float64)).numpy()
    assert np.array_equal(sample("--sampler", "shrink", "--scale", "0"), zero)
    capsys.readouterr()
    assert main(["sweep", str(run), "--data", "moons", "--samplers", "shrink", "--nfe", "3", "-n", "50",
                 "--out", str(tmp_path / "sweep")]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("shrink")]
    assert len(rows) == 1  # the sweep's table has the new sampler's row (after its data lines and header)
    s = make_schedule("linear", 20)
    x = generate(lambda x, t: 0 * x, (4, 2), s, sampler="shrink", steps=3, seed=0, scale=2.0)
    assert x.shape == (4, 2) and torch.equal(x, torch.zeros(4, 2))


def test_a_flag_of_another_sampler_is_one_line_and_exit_2(run, tmp_path, capsys):
    out = tmp_path / "s.npy"
    assert main(["sample", str(run), "-n", "5", "--sampler", "dpmpp_2m", "--eta", "1", "--out", str(out)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err == ["gaussdiff sample: error: sampler 'dpmpp_2m' has no option 'eta' (it takes none)"]
    assert not out.exists()
