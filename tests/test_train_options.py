"""Training options: gradient accumulation, mixed precision, torch.compile, device choice, TensorBoard,
loss and variance types, importance sampling of t, a diffusers scheduler config as the schedule."""

import json

import pytest
import torch
from safetensors.torch import load_file

from gaussdiff.cli import main, parser
from gaussdiff.saved import load_model
from gaussdiff.train import TrainConfig, resolve, train
from gaussdiff.train.config import FIELDS

TINY = ["--n-data", "2000", "--width", "32", "--depth", "1", "--emb-dim", "16", "--num-train-timesteps", "50",
        "--batch-size", "128", "--warmup-steps", "5", "--threads", "1", "--log-every", "10"]
BASE = dict(data="moons", n_data=2000, batch_size=128, width=32, depth=1, emb_dim=16, num_train_timesteps=50,
            warmup_steps=5, threads=1, steps=30, log_every=10, checkpoint_every=100)


def online_weights(cfg: TrainConfig) -> dict:
    return load_file(train(cfg, progress=False) / "model" / "online.safetensors")


def resolve_cli(argv: list[str]) -> TrainConfig:
    """The config `gaussdiff train ARGV` would train with."""
    args = parser().parse_args(["train", *argv])
    return resolve({k: getattr(args, k) for k in FIELDS if hasattr(args, k)}, args.config, args.resume,
                   args.scheduler_config)


def max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max((a[k] - b[k]).abs().max().item() for k in a)


@pytest.fixture(scope="module")
def eager(tmp_path_factory):
    """30 plain fp32 steps, and the weights after 1 step (to show how far real training moves them)."""
    folder = tmp_path_factory.mktemp("eager")
    return (online_weights(TrainConfig(out=str(folder / "30"), **BASE)),
            online_weights(TrainConfig(out=str(folder / "1"), **BASE | dict(steps=1))))


def test_gradient_accumulation_matches_the_whole_batch(eager, tmp_path):
    """Two micro-batches of 64 give the same mean gradient as one batch of 128, up to float32 summation
    order (relative ~1e-7 per step). Adam divides by sqrt(v), so tiny differences stay tiny: after 30 steps
    the weights agree to 1e-5 (seen: ~1e-7), far below the > 1e-3 that 29 more steps of training move them."""
    full, one_step = eager
    assert max_diff(online_weights(TrainConfig(out=str(tmp_path / "r"), grad_accum=2, **BASE)), full) < 1e-5
    assert max_diff(full, one_step) > 1e-3


@pytest.mark.process
def test_compile_computes_what_eager_computes(eager, tmp_path):
    """torch.compile fuses the same float32 math in another order: agreement to 1e-4 after 30 steps
    (seen ~1e-6), against > 1e-3 of real training. Slow to build (~30 s on 2 cores), so one test only."""
    full, _ = eager
    assert max_diff(online_weights(TrainConfig(out=str(tmp_path / "r"), compile=True, **BASE)), full) < 1e-4


def test_bf16_autocast_trains_on_cpu(eager, tmp_path):
    """bf16 keeps ~3 significant digits, so its weights must differ from fp32's (else the option did nothing)
    by more than float32 noise; and training must still work: finite metrics, a loss below the untrained ~1."""
    cfg = TrainConfig(out=str(tmp_path / "r"), precision="bf16", **BASE)
    bf16 = online_weights(cfg)
    assert max_diff(bf16, eager[0]) > 1e-4
    rows = [json.loads(line) for line in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in rows) and rows[-1]["loss"] < rows[0]["loss"] < 2


@pytest.mark.parametrize("flags, message", [
    (["--precision", "fp16", "--device", "cpu"], "fp16 needs a CUDA device"),
    (["--precision", "fp8"], "unknown precision 'fp8'; known: fp32, bf16, fp16"),
    (["--device", "tpu"], "unknown device 'tpu'; known: auto, cpu, cuda, mps"),
    (["--grad-accum", "3"], "batch-size 128 must be a multiple of processes x grad-accum = 3"),
    (["--grad-accum", "0"], "grad-accum must be positive"),
    (["--seed", "-1"], "the seed must be an integer in [0, 4294967295], got -1"),
])
def test_bad_training_options_are_one_line(tmp_path, capsys, flags, message):
    assert main(["train", "--out", str(tmp_path / "run"), "--steps", "5", *TINY, *flags]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err
    assert not (tmp_path / "run").exists() or not any((tmp_path / "run").rglob("*.pt"))


def test_cuda_where_there_is_none_is_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # the same on a machine that has CUDA
    assert main(["train", "--out", str(tmp_path / "run"), "--device", "cuda", *TINY]) == 2
    assert "device cuda is not available here" in capsys.readouterr().err


def test_tensorboard_logs_the_metrics(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = train(TrainConfig(out=str(tmp_path / "r"), data="moons", n_data=500, batch_size=64, width=16, depth=1,
                            emb_dim=16, num_train_timesteps=20, threads=1, steps=20, log_every=10,
                            tensorboard=True), progress=False)
    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    logged = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    loss = events.Scalars("train/loss")
    assert [e.step for e in loss] == [r["step"] for r in logged]
    assert [e.value for e in loss] == pytest.approx([r["loss"] for r in logged], rel=1e-6)  # float32 in the file


# --- training on the bound (issue 5) -------------------------------------------------------------

def test_hybrid_loss_with_learned_variances_and_importance_sampling_resumes_exactly(tmp_path):
    """The importance sampler's history is state like any other: a run resumed from its step-20
    checkpoint (later checkpoints and the model removed, as if it had died there) must end byte-identical.
    The exported model carries the variance head, and the importance weights and history really moved t:
    after 60 steps of history (T = 50, 10 losses per t needed) the sampler is no longer uniform."""
    cfg = TrainConfig(out=str(tmp_path / "r"), **BASE | dict(steps=60, checkpoint_every=20, keep_checkpoints=3,
                                                         loss_type="hybrid", variance_type="learned_range",
                                                         t_sampling="importance"))
    run = train(cfg, progress=False)
    final = {name: (run / "model" / name).read_bytes() for name in ("model.safetensors", "online.safetensors")}
    state = torch.load(run / "checkpoints" / "step_00000060.pt", weights_only=True)
    counts = state["t_sampler"]["counts"]
    assert counts.min() == 10  # full history at every t: p_t now follows sqrt(E[L_t^2])

    for name in ("step_00000040.pt", "step_00000060.pt"):
        (run / "checkpoints" / name).unlink()
    for file in (run / "model").iterdir():
        file.unlink()
    (run / "model").rmdir()
    assert main(["train", "--resume", str(run), "--no-pictures"]) == 0
    assert {name: (run / "model" / name).read_bytes() for name in final} == final

    model = load_model(run)
    assert model.variance_type == "learned_range" and model.network.config["learn_variance"]


@pytest.mark.parametrize("flags, message", [
    (["--variance-type", "learned_range"], "loss_type 'simple' does not go with variance_type 'learned_range'"),
    (["--loss-type", "hybrid"], "loss_type 'hybrid' does not go with variance_type 'fixed_small'"),
    (["--loss-type", "elbo"], "unknown loss_type 'elbo'"),
    (["--t-sampling", "adaptive"], "unknown t-sampling 'adaptive'; known: uniform, importance"),
])
def test_bad_loss_settings_are_one_line(tmp_path, capsys, flags, message):
    assert main(["train", "--out", str(tmp_path / "run"), "--steps", "5", *TINY, *flags]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err
    assert not (tmp_path / "run").exists()


# --- a diffusers scheduler config as the source of the schedule ---------------------------------

def test_scheduler_config_sets_schedule_prediction_and_variance(tmp_path):
    """A config diffusers itself writes (DDPMScheduler.save_config) decides the schedule; flags still win."""
    from diffusers import DDPMScheduler

    DDPMScheduler(num_train_timesteps=40, beta_schedule="squaredcos_cap_v2", prediction_type="sample",
                  variance_type="fixed_large", clip_sample=False).save_config(tmp_path)
    cfg = resolve_cli(["--scheduler-config", str(tmp_path / "scheduler_config.json"), "--prediction-type", "epsilon"])
    assert (cfg.num_train_timesteps, cfg.beta_schedule, cfg.variance_type) == (40, "squaredcos_cap_v2", "fixed_large")
    assert cfg.prediction_type == "epsilon"


def test_scheduler_config_sampling_switches_are_ignored_with_a_warning(tmp_path):
    """diffusers' default DDPMScheduler config has clip_sample = true: it changes sampling, not the model."""
    from diffusers import DDPMScheduler

    DDPMScheduler(num_train_timesteps=30).save_config(tmp_path)
    with pytest.warns(UserWarning, match="ignoring the sampling-only setting.*clip_sample"):
        cfg = resolve_cli(["--scheduler-config", str(tmp_path / "scheduler_config.json")])
    assert (cfg.num_train_timesteps, cfg.beta_schedule, cfg.prediction_type) == (30, "linear", "epsilon")


@pytest.mark.parametrize("config, message", [
    ({"num_train_timesteps": 50, "rescale_betas_zero_snr": True}, "rescale_betas_zero_snr = true"),
    ({"num_train_timesteps": 50, "beta_schedule": "exponential"}, "beta_schedule"),
    ({"num_train_timesteps": 2, "trained_betas": [0.1, 0.2]}, "cannot be trained yet"),
])
def test_unsupported_scheduler_config_is_one_line(tmp_path, capsys, config, message):
    (tmp_path / "s.json").write_text(json.dumps(config | {"clip_sample": config.get("clip_sample", False)}))
    assert main(["train", "--scheduler-config", str(tmp_path / "s.json"), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()
