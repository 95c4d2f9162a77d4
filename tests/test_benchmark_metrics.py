"""Tests of the benchmarks' pieces: the issue-4 oracle metrics and drivers (benchmarks/oracle_problems.py,
benchmarks/sampler_methods.py, samplers_oracle_report.py), the provenance every row records (provenance.py) and the
diffusers arms of the time-to-quality benchmark (time_to_quality.py).

The metrics are checked on sample sets whose answer is known: true samples (the std error is then the Monte Carlo
error of a sample std, relative sd 1 / sqrt(2 (n_k - 1)) per mode and axis, so |error| has mean
sqrt(2 / pi) / sqrt(2 (n_k - 1))), the same samples with every mode shrunk by 10 % (error 0.10), and sets built
with known mode counts (TV by hand). The fast diagonal oracle is checked against the package's
GaussianMixture, and the diffusers driver against a hand-written Euler step and the eps conversion. Provenance is
checked against git itself on a scratch repository; the recipe arm's sampler against gaussdiff's default sampler fed
the same noise.
"""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from oracle_problems import PROBLEMS, floors, mode_weight_tv, sample_metrics, within_mode_std_error  # noqa: E402
from provenance import Provenance, commit_line, git_state  # noqa: E402
from sampler_methods import DIFFUSERS, Diffusers, class_defaults, diffusers_method, oracle_model, steps_for_nfe  # noqa
from samplers_oracle_report import Results, _targets  # noqa: E402

from gaussdiff.schedule import make_schedule  # noqa: E402

N = 20_000


@pytest.fixture(scope="module", params=list(PROBLEMS))
def problem(request):
    return PROBLEMS[request.param]()


@pytest.fixture(scope="module")
def schedule():
    return make_schedule("squaredcos_cap_v2", 1000)


def true_samples(problem, seed=0):
    return problem.mixture.sample(N, generator=torch.Generator().manual_seed(seed), return_labels=True)


def mc_sd(problem):
    """Relative sd of a sample std per (mode, axis): 1 / sqrt(2 (n_k - 1)), n_k = N w_k, shape (K, D)."""
    n_k = N * problem.weights
    return (1 / torch.sqrt(2 * (n_k - 1)))[:, None].expand_as(problem.stds)


@pytest.mark.parametrize("alpha_bar", [1.0 - 1e-6, 0.5, 1e-3, 2.4e-9])
def test_fast_oracle_is_the_mixture_posterior_mean(problem, alpha_bar):
    """Same formula, different algebra (products of (N, D) and (D, K) instead of per-sample Cholesky): agree to
    float64 rounding, 1e-10 on values of order 1 (measured <= 1e-14)."""
    x = torch.randn(500, problem.dim, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    ref = problem.mixture.posterior_x0_mean(x, torch.tensor(alpha_bar, dtype=torch.float64))
    assert (problem.posterior_x0_mean(x, alpha_bar) - ref).abs().max().item() <= 1e-10


def test_assignment_is_argmax_of_the_mixture_responsibilities(problem):
    x, labels = true_samples(problem)
    assigned = problem.assign(x)
    assert torch.equal(assigned, problem.mixture.responsibilities(x).argmax(1))
    # The modes are well apart (half the distance between any two means is >= 7 stds along that line):
    # assignment recovers the labels.
    assert (assigned != labels).sum().item() <= 2


def test_true_samples_give_the_monte_carlo_error(problem):
    """|error| per (mode, axis) is half-normal with scale sd = mc_sd: mean sqrt(2/pi) sd, spread sqrt(1 - 2/pi) sd;
    the mean over M = K D cells is within 4 of its standard errors (and the signed mean within 4 sd / sqrt(M))."""
    x, _ = true_samples(problem)
    err, bias = within_mode_std_error(problem, x, problem.assign(x))
    sd = mc_sd(problem)
    M = sd.numel()
    expected = math.sqrt(2 / math.pi) * sd.mean().item()
    assert abs(err - expected) <= 4 * math.sqrt(1 - 2 / math.pi) * sd.pow(2).mean().sqrt().item() / math.sqrt(M)
    assert abs(bias) <= 4 * sd.pow(2).mean().sqrt().item() / math.sqrt(M)


def test_modes_shrunk_by_ten_percent_give_error_ten_percent(problem):
    """x -> m_k + 0.9 (x - m_k): each std is 0.9 (1 + e), e the MC error above, so the relative error is
    -0.1 + 0.9 e (never folded: |e| << 0.1); its mean over cells is -0.1 within 4 x 0.9 sd / sqrt(M)."""
    x, labels = true_samples(problem)
    shrunk = problem.means[labels] + 0.9 * (x - problem.means[labels])
    err, bias = within_mode_std_error(problem, shrunk, problem.assign(shrunk))
    tol = 4 * 0.9 * mc_sd(problem).pow(2).mean().sqrt().item() / math.sqrt(problem.stds.numel())
    assert abs(err - 0.10) <= tol and abs(bias + 0.10) <= tol


def test_mode_weight_tv_of_known_counts():
    """ring8 (weights 1/8): counts 250, 125 x 6, 0 of 1000 points placed on the means -> frequencies 0.25, 0.125,
    0: TV = (|0.25 - 0.125| + |0 - 0.125|) / 2 = 0.125. A mode left empty has std error 1 (std 0)."""
    problem = PROBLEMS["ring8"]()
    counts = torch.tensor([250, 125, 125, 125, 125, 125, 125, 0])
    x = problem.means.repeat_interleave(counts, dim=0)
    labels = problem.assign(x)
    assert mode_weight_tv(problem, labels) == pytest.approx(0.125, abs=1e-12)
    assert sample_metrics(problem, x)["tv"] == pytest.approx(0.125, abs=1e-12)
    # spread the points; the empty mode 7 counts as std 0, relative error 1 on each of its 2 axes
    x = x + 0.1 * torch.randn(x.shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    by_hand = [(x[labels == k].std(0) / 0.1 - 1).abs().sum().item() for k in range(7)] + [2.0]
    assert within_mode_std_error(problem, x, labels)[0] == pytest.approx(sum(by_hand) / 16, abs=1e-12)


def test_tv_floor_is_the_multinomial_error():
    """E TV of multinomial frequencies ~ 1/2 sum_k sqrt(2 w_k (1 - w_k) / (pi n)) (normal approximation); the
    floor's mean over 10 draws (sd ~ 0.003 / sqrt(10) for mix16) is within 25 % of it."""
    problem = PROBLEMS["mix16"]()
    w = problem.weights
    expected = 0.5 * torch.sqrt(2 * w * (1 - w) / (math.pi * N)).sum().item()
    fl = floors(problem, N, draws=10)
    assert fl["tv"]["mean"] == pytest.approx(expected, rel=0.25)
    assert fl["std_err"]["mean"] == pytest.approx(math.sqrt(2 / math.pi) * mc_sd(problem).mean().item(), rel=0.25)


# --- the diffusers driver ------------------------------------------------------------------------------

def test_diffusers_euler_through_the_oracle_is_the_euler_step_in_sigma(problem):
    """Two trailing steps on the linear schedule (timesteps 999, 499 = our t 1000, 500), by hand in EDM variables
    with diffusers' own float32 sigmas: y_0 = x_T sqrt(1 + s_0^2),
    y_1 = y_0 + (s_1 - s_0) (y_0 - D(y_0 / sqrt(1 + s_0^2), 1000)) / s_0, and the last step, to sigma 0, returns
    D(y_1 / sqrt(1 + s_1^2), 500). diffusers steps in float32 with y_0 up to ~600 (s_0 = 157): measured 4e-5;
    asserted 3e-4, while calling the oracle one timestep off (t = i instead of i + 1) is 4e-3 or more."""
    schedule = make_schedule("linear", 1000)
    method = diffusers_method("Euler", "matched")
    den = problem.denoiser(schedule)
    x_T = torch.randn(256, problem.dim, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    sch = method.scheduler(schedule)
    sch.set_timesteps(2)
    s0, s1 = sch.sigmas[0].double(), sch.sigmas[1].double()
    y0 = x_T * torch.sqrt(1 + s0**2)
    y1 = y0 + (s1 - s0) * (y0 - den(y0 / torch.sqrt(1 + s0**2), 1000.0)) / s0
    expected = den(y1 / torch.sqrt(1 + s1**2), 500.0)
    assert (method.run(den, x_T, schedule, 2) - expected).abs().max().item() <= 3e-4


def test_eps_answering_model_is_equivalent_to_sample_answering(problem):
    """DDIM driven by eps = (x - sqrt(abar) x0) / sqrt(1 - abar) (what PNDM gets) and by x0 directly, linear
    schedule: diffusers turns eps back into x0 with its float32 alpha_bar (1e-7 relative), which the division by
    sqrt(abar_T) = 0.006 amplifies ~160x on |x| <= 4: <= 1e-4 (measured 1.6e-5 at 1 step, 3e-6 at 10); a wrong
    conversion is off by O(1). Then the conversion itself, at one point, to float64 rounding."""
    schedule = make_schedule("linear", 1000)
    den = problem.denoiser(schedule)
    x_T = torch.randn(256, problem.dim, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    ddim = diffusers_method("DDIM", "matched")
    eps_ddim = Diffusers("DDIM eps", "DDIMScheduler", {**ddim.options, "prediction_type": "epsilon"})
    for steps in (1, 10):
        assert (ddim.run(den, x_T, schedule, steps) - eps_ddim.run(den, x_T, schedule, steps)).abs().max() <= 1e-4
    model = oracle_model(den, schedule, "epsilon")
    x = x_T[:4]
    t = torch.tensor(499)  # our t = 500
    ab = schedule.alpha_bar_at(500.0)
    assert torch.allclose(model(x, t), (x - ab.sqrt() * den(x, 500.0)) / (1 - ab).sqrt(), atol=1e-12)


@pytest.mark.parametrize("label,nfe,steps", [("Heun", 10, 5), ("Heun", 1000, 500), ("PNDM (PLMS)", 10, 9),
                                             ("DDIM", 20, 20)])
def test_steps_for_nfe_counts_real_calls(schedule, label, nfe, steps):
    """Heun makes 2K - 1 calls for K steps, PNDM (PLMS) K + 1 (its first step is two), DDIM K."""
    method = diffusers_method(label, "matched")
    assert steps_for_nfe(method, schedule, nfe) == steps


# --- provenance -----------------------------------------------------------------------------------------

def _git(repo, *args) -> str:
    return subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t", *args],
                          check=True, capture_output=True, text=True).stdout.strip()


def test_git_state_of_a_scratch_repository(tmp_path):
    """The commit is git's HEAD; the tree turns dirty with an untracked file or a changed tracked one anywhere but
    under benchmarks/results/ (what the runs themselves write); outside a repository nothing is known."""
    assert git_state(tmp_path) == {"commit": None, "dirty": None, "dirty_count": 0, "dirty_paths": []}
    results = tmp_path / "benchmarks" / "results"
    results.mkdir(parents=True)
    (results / "r.jsonl").write_text("{}\n")
    (tmp_path / "a.py").write_text("x = 1\n")
    _git(tmp_path, "init", "-q")
    _git(tmp_path, "add", ".")
    _git(tmp_path, "commit", "-q", "-m", "one")
    head = _git(tmp_path, "rev-parse", "HEAD")
    clean = {"commit": head, "dirty": False, "dirty_count": 0, "dirty_paths": []}
    assert git_state(tmp_path) == clean
    (results / "r.jsonl").write_text("{}\n{}\n")  # a run appended its rows
    (results / "new.jsonl").write_text("{}\n")  # and started a new file
    assert git_state(tmp_path) == clean
    (tmp_path / "b.py").write_text("y = 2\n")
    assert git_state(tmp_path) == {"commit": head, "dirty": True, "dirty_count": 1, "dirty_paths": ["b.py"]}
    (tmp_path / "b.py").unlink()
    (tmp_path / "a.py").write_text("x = 2\n")
    assert git_state(tmp_path) == {"commit": head, "dirty": True, "dirty_count": 1, "dirty_paths": ["a.py"]}


def test_stamp_adds_the_run_record_to_a_row(tmp_path):
    """A stamped row keeps its fields and gains the checkout's HEAD (git's own answer), the settings as JSON (a path
    as text), the torch thread count and the package versions the modules report; it stays JSON."""
    import diffusers

    prov = Provenance({"out": tmp_path / "x.jsonl", "steps": 3})
    row = prov.stamp({"sw2": 0.5})
    p = row["provenance"]
    assert row["sw2"] == 0.5
    assert p["commit"] == _git(Path(__file__).resolve().parents[1], "rev-parse", "HEAD")
    assert p["settings"] == {"out": str(tmp_path / "x.jsonl"), "steps": 3}
    assert p["threads"] == torch.get_num_threads()
    assert (p["versions"]["torch"], p["versions"]["diffusers"]) == (torch.__version__, diffusers.__version__)
    assert json.loads(json.dumps(row)) == row


def test_commit_line_names_every_commit():
    clean, dirty = {"provenance": {"commit": "abc", "dirty": False}}, {"provenance": {"commit": "abc", "dirty": True}}
    assert commit_line([clean, clean]) == "Commit: abc"
    assert commit_line([clean, dirty, {"sw2": 1.0}]) == \
        "Commits: abc (clean, 1 rows); abc (dirty, 1 rows); none recorded (1 rows)"


# --- diffusers at its defaults and matched to ours --------------------------------------------------------

def test_each_variant_holds_its_settings():
    """"defaults": the class's own spacing, alpha_bar end and final steps; "matched": trailing spacing and
    set_alpha_to_one=True where the class has them; both: clip_sample off (the data are not images in [-1, 1])
    and the schedule. DPMSolverSinglestep has no spacing option, so its two variants are one ("both")."""
    schedule = make_schedule("linear", 1000)
    for m in DIFFUSERS:
        cfg, own = m.scheduler(schedule).config, class_defaults(m.cls)
        assert (cfg.beta_schedule, cfg.beta_start, cfg.beta_end) == ("linear", 1e-4, 0.02)
        if m.variant in ("defaults", "both"):
            for key in ("timestep_spacing", "set_alpha_to_one", "steps_offset", "final_sigmas_type"):
                assert key not in own or cfg[key] == own[key], (m, key)
        if m.variant in ("matched", "both"):
            assert "timestep_spacing" not in own or cfg.timestep_spacing == "trailing", m
            assert "set_alpha_to_one" not in own or cfg.set_alpha_to_one is True, m
        assert "clip_sample" not in own or cfg.clip_sample is False, m
    assert {m.variant for m in DIFFUSERS if m.cls == "DPMSolverSinglestepScheduler"} == {"both"}
    assert {m.variant for m in DIFFUSERS if m.label == "Heun karras"} == {"defaults", "matched"}


@pytest.mark.parametrize("label", ["Euler karras", "Heun karras"])
def test_karras_ramp_ends_at_the_last_spaced_timestep(label):
    """diffusers 0.42.1 ends the Karras ramp at the sigma of its last spaced timestep: at 10 steps on the linear
    schedule that is timestep 99 under "trailing" (the matched variant), sigma = sqrt((1 - abar) / abar) at our
    t = 100, 0.3388, instead of timestep 0 (our t = 1, 0.0100) under its default "linspace". Our sigmas from our
    schedule; diffusers keeps alpha_bar in float32 (1e-4 relative)."""
    schedule = make_schedule("linear", 1000)
    sigma = lambda t: math.sqrt((1 - schedule.alpha_bar_at(t).item()) / schedule.alpha_bar_at(t).item())  # noqa: E731
    for variant, t, expected in (("matched", 100.0, 0.3388), ("defaults", 1.0, 0.0100)):
        sch = diffusers_method(label, variant).scheduler(schedule)
        sch.set_timesteps(10)
        assert sch.sigmas[-1].item() == 0 and sch.sigmas[-2].item() == pytest.approx(sigma(t), rel=1e-4)
        assert sigma(t) == pytest.approx(expected, abs=1e-4)


def _oracle_cell(method, variant, std_err, side="diffusers"):
    row = {"kind": "cell", "problem": "ring8", "schedule": "linear", "n": 100, "side": side, "method": method,
           "nfe_target": 10, "nfe": 10, "nan": False, "std_err": std_err, "tv": 0.01}
    return row if variant == "absent" else row | {"variant": variant}


def test_report_compares_with_the_better_variant():
    """The best diffusers row at 10 NFE is the better variant of each method (Heun karras: defaults 0.025 against
    matched 0.236), and the target line names it; a row from before the variants (no key) counts as matched."""
    stats = {"mean": 0.01, "sd": 0.0}
    rows = [{"kind": "floor", "problem": "ring8", "n": 100, "draws": 2, "std_err": stats, "std_bias": stats,
             "tv": stats},
            _oracle_cell("dpmpp_2m (log_snr)", None, 0.05, side="gaussdiff"),
            _oracle_cell("Heun karras", "defaults", 0.025), _oracle_cell("Heun karras", "matched", 0.236),
            _oracle_cell("Euler", "absent", 0.5)]
    res = Results(rows)
    block = ("ring8", "linear")
    assert res.best(block, "diffusers", 10)["variant"] == "defaults"
    assert res.get(block, "Heun karras", 10, "matched")["std_err"] == 0.236
    assert res.get(block, "Euler", 10)["variant"] == "matched"
    target = _targets(res, [], [])[2]
    assert "| Heun karras (defaults): 0.025 | 2.00 | MISS |" in target


# --- time to quality: the diffusers arms -------------------------------------------------------------------

def test_recipe_arm_samples_as_gaussdiffs_default_sampler():
    """The recipe arm's DDPMScheduler loop against gaussdiff's generate with its default sampler, steps and spacing
    and the model's own variance, on the same (randomised) v-prediction MLP, both drawing x_T and each step's noise
    from one seeded generator in the same order: the same samples up to float32 rounding over 100 steps
    (measured 5e-6 on samples up to 3.9; asserted 1e-4). With Ho et al.'s beta as the variance instead they differ
    by 0.22, on the leading grid by 0.14 (asserted >= 0.1 each)."""
    from time_to_quality import diffusers_sample, recipe_scheduler, resolved, same_network

    from gaussdiff.param import as_denoiser
    from gaussdiff.samplers import DEFAULT_SAMPLER, DEFAULT_SPACING, DEFAULT_STEPS, generate
    from gaussdiff.saved import DDPM_VARIANCE

    cfg = resolved("moons", 0, 1)
    net = same_network(cfg, 0)
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for p in net.parameters():  # a network with a non-trivial output everywhere
            p.copy_(0.3 * torch.randn(p.shape, generator=g))
    schedule = make_schedule(cfg.beta_schedule, cfg.num_train_timesteps, cfg.beta_start, cfg.beta_end)
    steps = min(DEFAULT_STEPS, schedule.T)
    denoiser = as_denoiser(net, schedule, cfg.prediction_type)

    def ours(variance=DDPM_VARIANCE[cfg.variance_type], spacing=DEFAULT_SPACING):
        with torch.no_grad():
            return generate(denoiser, (256, 2), schedule, sampler=DEFAULT_SAMPLER, steps=steps, spacing=spacing,
                            variance=variance, generator=torch.Generator().manual_seed(7))

    theirs = diffusers_sample(net, recipe_scheduler(cfg), steps, 256, 7)
    assert (ours() - theirs).abs().max().item() <= 1e-4
    assert (ours(variance="beta") - theirs).abs().max().item() >= 0.1
    assert (ours(spacing="leading") - theirs).abs().max().item() >= 0.1


def test_time_to_quality_report_shows_the_three_arms(tmp_path, capsys):
    """SW2 / floor per arm, tool = gaussdiff / recipe and recipe = recipe / reference; rows from before the recipe
    arm name their arm "tool"."""
    from time_to_quality import report

    base = {"dataset": "moons", "seed": 0, "budget": 30, "floor": 0.01, "floor_sd": 0.001, "steps": 100,
            "sample_s": 1.0, "cpu_wall": 2.0}
    rows = [base | {"arm": "gaussdiff", "sw2": 0.02}, base | {"arm": "recipe", "sw2": 0.04},
            base | {"tool": "reference", "sw2": 0.08}]
    path = tmp_path / "ttq.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    report(str(path))
    assert "| moons | 30 | 0.0100 ± 0.0010 | 2.00 | 4.00 | 8.00 | 0.5 | 0.5 | 100/100/100 |" in capsys.readouterr().out
