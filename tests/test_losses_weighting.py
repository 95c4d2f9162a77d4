"""Min-SNR-gamma loss weighting (losses.loss_weight, training_loss(loss_weighting=...)) and its training options.

Reference: the x_0 error each prediction implies, computed by hand from x_t = sqrt(abar) x_0 + sqrt(1 - abar) eps
and the three parameterizations' definitions (not through gaussdiff.param); the weighted loss must be
min(SNR_t, gamma) times its mean square, per sample (Hang et al. 2023, eq. 6 and 9). Float64 throughout: the only
error is rounding (rtol 1e-10).
"""

import json

import pytest
import torch

from gaussdiff.cli import main
from gaussdiff.errors import InputError
from gaussdiff.losses import HYBRID_LAMBDA, loss_weight, training_loss
from gaussdiff.schedule import make_schedule
from gaussdiff.train import TrainConfig, train

T, D, B, GAMMA = 1000, 2, 12, 5.0
TS = torch.tensor([1, 2, 10, 50, 100, 150, 200, 300, 500, 700, 900, 1000])  # SNR from ~1e4 down to ~4e-5


@pytest.fixture
def setup():
    s = make_schedule("linear", T)
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(B, D, generator=g, dtype=torch.float64)
    eps = torch.randn(B, D, generator=g, dtype=torch.float64)
    snr = s.alpha_bar[TS] / (1 - s.alpha_bar[TS])
    assert (snr > 10 * GAMMA).sum() >= 3 and (snr < GAMMA / 10).sum() >= 3  # both sides of the clip are tested
    return s, x0, eps


def net(x_t, t):
    """A fixed smooth 'network' (no parameters): any output will do, the loss is checked against it."""
    return torch.sin(3 * x_t) * (t[:, None] / T) + 0.1


def x0_error_by_hand(prediction_type, s, x0, eps, head=None):
    """(x0_hat - x0) per sample, from the network output read as eps, x_0 or v."""
    abar = s.alpha_bar[TS][:, None]
    a, sd = abar.sqrt(), (1 - abar).sqrt()
    x_t = a * x0 + sd * eps
    out = net(x_t, TS.double()) if head is None else head(x_t, TS.double())[:, :D]
    x0_hat = {"epsilon": (x_t - sd * out) / a, "sample": out, "v_prediction": a * x_t - sd * out}[prediction_type]
    return x0_hat - x0


@pytest.mark.parametrize("prediction_type", ["epsilon", "sample", "v_prediction"])
def test_min_snr_loss_is_min_snr_gamma_times_the_x0_error(setup, prediction_type):
    s, x0, eps = setup
    loss, vlb = training_loss(net, x0, s, prediction_type, t=TS, eps=eps, loss_weighting="min_snr",
                              min_snr_gamma=GAMMA)
    snr = s.alpha_bar[TS] / (1 - s.alpha_bar[TS])
    expected = torch.minimum(snr, torch.tensor(GAMMA, dtype=torch.float64)) * \
        x0_error_by_hand(prediction_type, s, x0, eps).pow(2).mean(1)
    torch.testing.assert_close(loss, expected, rtol=1e-10, atol=0)
    assert vlb is None


@pytest.mark.parametrize("prediction_type, snr_factor", [("epsilon", lambda r: r), ("sample", lambda r: 1),
                                                         ("v_prediction", lambda r: r + 1)])
def test_no_weighting_is_each_targets_plain_mean_square(setup, prediction_type, snr_factor):
    """The default: eps-MSE = SNR x0-MSE, v-MSE = (SNR + 1) x0-MSE, x0-MSE itself (the identities min-SNR uses)."""
    s, x0, eps = setup
    loss, _ = training_loss(net, x0, s, prediction_type, t=TS, eps=eps)
    snr = s.alpha_bar[TS] / (1 - s.alpha_bar[TS])
    expected = snr_factor(snr) * x0_error_by_hand(prediction_type, s, x0, eps).pow(2).mean(1)
    torch.testing.assert_close(loss, expected, rtol=1e-10, atol=0)


def test_hybrid_weights_only_the_simple_term(setup):
    s, x0, eps = setup

    def head(x_t, t):  # (v prediction, variance values) of a learned_range network
        return torch.cat([net(x_t, t), torch.tanh(x_t)], dim=1)

    loss, vlb = training_loss(head, x0, s, "v_prediction", "hybrid", "learned_range", t=TS, eps=eps,
                              loss_weighting="min_snr", min_snr_gamma=GAMMA)
    snr = s.alpha_bar[TS] / (1 - s.alpha_bar[TS])
    simple = snr.clamp(max=GAMMA) * x0_error_by_hand("v_prediction", s, x0, eps, head).pow(2).mean(1)
    torch.testing.assert_close(loss, simple + HYBRID_LAMBDA * vlb, rtol=1e-10, atol=0)
    _, vlb_none = training_loss(head, x0, s, "v_prediction", "hybrid", "learned_range", t=TS, eps=eps)
    torch.testing.assert_close(vlb, vlb_none, rtol=0, atol=0)  # the bound's term is not weighted


def test_loss_weight_refuses_unknown_names_and_bad_gammas():
    snr = torch.tensor([0.5, 50.0], dtype=torch.float64)
    torch.testing.assert_close(loss_weight("v_prediction", snr, "min_snr", 5.0), torch.tensor([0.5 / 1.5, 5 / 51],
                                                                                              dtype=torch.float64))
    for weighting, gamma, message in [("p2", 5.0, "unknown loss_weighting 'p2'"), ("min_snr", 0.0, "positive"),
                                      ("min_snr", float("nan"), "positive"), ("min_snr", float("inf"), "positive")]:
        with pytest.raises(InputError, match=message):
            loss_weight("epsilon", snr, weighting, gamma)
    with pytest.raises(InputError, match="unknown prediction_type"):
        loss_weight("score", snr, "min_snr", 5.0)


TINY = ["--n-data", "2000", "--width", "32", "--depth", "1", "--emb-dim", "16", "--num-train-timesteps", "50",
        "--batch-size", "128", "--threads", "1"]


@pytest.mark.parametrize("flags, message", [
    (["--loss-weighting", "p2"], "unknown loss_weighting 'p2'; known: none, min_snr"),
    (["--loss-weighting", "min_snr", "--min-snr-gamma", "-1"], "min_snr_gamma must be a positive number, got -1.0"),
    (["--loss-weighting", "min_snr", "--loss-type", "vlb"], "loss_weighting 'min_snr' weights L_simple"),
])
def test_bad_weighting_options_are_one_line(tmp_path, capsys, flags, message):
    assert main(["train", "--out", str(tmp_path / "run"), "--steps", "5", *TINY, *flags]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()


def test_training_passes_the_weighting_to_the_loss(tmp_path):
    """One step from the same initial network, batch, t and noise: with x_0 prediction and gamma below every SNR of
    the schedule (the smallest is ~4e-5 at t = T), min-SNR multiplies every per-sample loss by gamma exactly, so the
    logged loss of the first step is gamma times the unweighted one (float32 rounding: rtol 1e-5)."""
    base = dict(data="moons", n_data=512, batch_size=128, width=16, depth=1, emb_dim=8, steps=1, log_every=1,
                threads=1, prediction_type="sample")
    losses = {}
    for weighting in ("none", "min_snr"):
        run = train(TrainConfig(out=str(tmp_path / weighting), loss_weighting=weighting, min_snr_gamma=1e-9, **base),
                    progress=False)
        losses[weighting] = json.loads((run / "metrics.jsonl").read_text().splitlines()[0])["loss"]
        assert json.loads((run / "config.json").read_text())["loss_weighting"] == weighting
    assert losses["none"] > 0
    assert losses["min_snr"] == pytest.approx(1e-9 * losses["none"], rel=1e-5)
