"""Training on a table with gaps (issue 13): the loss masked on missing entries (MissDiff, Ouyang et al. 2023) and
the trainer's per-step dequantization noise for integer columns.

References: the masked L_simple is recomputed sample by sample on the observed sub-vector, with x_t built by hand
from x_t = sqrt(abar) x_0 + sqrt(1 - abar) eps where x_0 is observed and sqrt(1 - abar) eps where it is missing;
float64 throughout, so the only error is rounding (rtol 1e-12). The trainer is checked end to end on a fake table
that follows data.dataset's contract (get(rows, dequant) -> Batch with mask), against the streams it must draw.
"""

import json
import math

import pytest
import scipy.stats
import torch

from gaussdiff.data import Batch, Dataset, Standardize
from gaussdiff.data.split import heldout_seed
from gaussdiff.errors import InputError
from gaussdiff.losses import simple_loss, training_loss
from gaussdiff.nets import MLP
from gaussdiff.schedule import make_schedule
from gaussdiff.train import GlobalBatches, TrainConfig, train
from gaussdiff.train import loop as train_loop

T, B, D = 100, 12, 5
TS = torch.tensor([1, 2, 5, 10, 20, 30, 40, 50, 60, 75, 90, 100])


@pytest.fixture
def setup():
    """(schedule, x0 with NaN at its missing entries, eps, mask): row 0 fully observed, row 1 one entry observed."""
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(B, D, generator=g, dtype=torch.float64)
    eps = torch.randn(B, D, generator=g, dtype=torch.float64)
    mask = torch.rand(B, D, generator=g) < 0.6
    mask[0], mask[1] = True, torch.arange(D) == 2
    assert 0 < (~mask).sum() < B * D
    return make_schedule("linear", T), x0.masked_fill(~mask, math.nan), eps, mask


def net(x_t, t):
    """A fixed 'network' (no parameters) that mixes entries, so the noise at missing entries reaches the output."""
    return torch.sin(3 * x_t) * (t[:, None] / T) + 0.2 * x_t.roll(1, dims=1) + 0.1


def masked_loss_by_hand(prediction_type, s, x0, eps, mask, weight, filled=False):
    """weight_t * sum over the observed entries of (out - target)^2 / D, sample by sample; x_0 at the missing entries
    taken as 0, or as x0's values there when ``filled``."""
    losses = []
    for i in range(B):
        a, sd = s.alpha_bar[TS[i]].sqrt().item(), (1 - s.alpha_bar[TS[i]]).sqrt().item()
        obs = mask[i].nonzero().flatten()
        x_t = sd * eps[i].clone()  # missing entries: x_0 = 0, pure noise
        x_t[obs] += a * x0[i, obs]
        if filled:
            x_t[~mask[i]] += a * x0[i, ~mask[i]]
        out = net(x_t[None], TS[i:i + 1].double())[0, obs]
        target = {"epsilon": eps[i, obs], "sample": x0[i, obs], "v_prediction": a * eps[i, obs] - sd * x0[i, obs]}
        losses.append(weight[i] * ((out - target[prediction_type]) ** 2).sum() / D)
    return torch.stack(losses)


def min_snr_factor(prediction_type, s, gamma=5.0):
    snr = s.alpha_bar[TS] / (1 - s.alpha_bar[TS])
    clipped = snr.clamp(max=gamma)
    return {"epsilon": clipped / snr, "sample": clipped, "v_prediction": clipped / (snr + 1)}[prediction_type]


# --- the masked loss ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("prediction_type", ["epsilon", "sample", "v_prediction"])
@pytest.mark.parametrize("weighting", ["none", "min_snr"])
def test_masked_loss_is_the_mean_square_on_the_observed_entries(setup, prediction_type, weighting):
    """x0 holds NaN where missing: those values must not enter (x_0 is taken as 0 there)."""
    s, x0, eps, mask = setup
    loss, vlb = training_loss(net, x0, s, prediction_type, t=TS, eps=eps, mask=mask, loss_weighting=weighting)
    weight = min_snr_factor(prediction_type, s) if weighting == "min_snr" else torch.ones(B, dtype=torch.float64)
    torch.testing.assert_close(loss, masked_loss_by_hand(prediction_type, s, x0, eps, mask, weight), rtol=1e-12,
                               atol=0)
    assert vlb is None
    assert torch.equal(simple_loss(net, x0, s, prediction_type, t=TS, eps=eps, mask=mask, loss_weighting=weighting),
                       loss)


@pytest.mark.parametrize("prediction_type", ["epsilon", "sample", "v_prediction"])
def test_a_filled_missing_entry_enters_x_t_and_never_the_loss(setup, prediction_type):
    """x0 holding values at its missing entries (an EM fill, train/gaps.py): the network receives x_t = sqrt(abar)
    fill + sqrt(1 - abar) eps there, and the loss still sums the observed entries alone."""
    s, x0, eps, mask = setup
    fill = torch.linspace(-2, 2, B * D, dtype=torch.float64).view(B, D)
    x0 = torch.where(mask, x0, fill)
    loss, _ = training_loss(net, x0, s, prediction_type, t=TS, eps=eps, mask=mask)
    ones = torch.ones(B, dtype=torch.float64)
    torch.testing.assert_close(loss, masked_loss_by_hand(prediction_type, s, x0, eps, mask, ones, filled=True),
                               rtol=1e-12, atol=0)
    assert not torch.equal(loss, training_loss(net, x0.masked_fill(~mask, 0), s, prediction_type, t=TS, eps=eps,
                                               mask=mask)[0])


@pytest.mark.parametrize("weighting", ["none", "min_snr"])
def test_the_gradient_ignores_the_prediction_at_missing_entries(setup, weighting):
    """eps-prediction, the network's output a free tensor: d loss / d pred is 2 w (pred - eps) / D where observed
    and exactly 0 where missing, and changing pred at missing entries changes neither the loss nor the gradient."""
    s, x0, eps, mask = setup
    g = torch.Generator().manual_seed(1)
    free = torch.randn(B, D, generator=g, dtype=torch.float64)

    def loss_and_grad(pred):
        pred = pred.clone().requires_grad_(True)
        loss, _ = training_loss(lambda x_t, t: pred, x0, s, "epsilon", t=TS, eps=eps, mask=mask,
                                loss_weighting=weighting)
        loss.sum().backward()
        return loss.detach(), pred.grad

    loss, grad = loss_and_grad(free)
    weight = min_snr_factor("epsilon", s) if weighting == "min_snr" else torch.ones(B, dtype=torch.float64)
    expected = 2 * weight[:, None] * (free - eps) / D
    torch.testing.assert_close(grad[mask], expected[mask], rtol=1e-12, atol=0)
    assert torch.equal(grad[~mask], torch.zeros(int((~mask).sum()), dtype=torch.float64))
    loss2, grad2 = loss_and_grad(free.masked_fill(~mask, 1e3))
    assert torch.equal(loss2, loss) and torch.equal(grad2, grad)


@pytest.mark.parametrize("prediction_type", ["epsilon", "sample", "v_prediction"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_an_all_true_mask_is_no_mask_exactly(prediction_type, dtype):
    """A real MLP, loss and parameter gradients bit for bit."""
    s = make_schedule("linear", T)
    g = torch.Generator().manual_seed(2)
    x0, eps = torch.randn(B, D, generator=g, dtype=dtype), torch.randn(B, D, generator=g, dtype=dtype)
    torch.manual_seed(0)
    model = MLP((D,), T, width=16, depth=1, emb_dim=8).to(dtype)

    def loss_and_grads(**mask):
        model.zero_grad()
        loss, _ = training_loss(model, x0, s, prediction_type, t=TS, eps=eps, loss_weighting="min_snr", **mask)
        loss.sum().backward()
        return loss.detach(), [p.grad.clone() for p in model.parameters()]

    (masked, masked_grads), (plain, plain_grads) = loss_and_grads(mask=torch.ones(B, D, dtype=torch.bool)), \
        loss_and_grads()
    assert torch.equal(masked, plain)
    assert all(torch.equal(a, b) for a, b in zip(masked_grads, plain_grads))


@pytest.mark.parametrize("loss_type, variance_type", [("hybrid", "learned_range"), ("vlb", "fixed_small"),
                                                      ("vlb", "learned_range")])
def test_the_bound_refuses_a_mask_in_one_line(setup, loss_type, variance_type):
    s, x0, eps, mask = setup
    calls = []
    with pytest.raises(InputError) as info:
        training_loss(lambda x_t, t: calls.append(1), x0, s, "epsilon", loss_type, variance_type, t=TS, eps=eps,
                      mask=mask)
    message = str(info.value)
    assert f"loss_type {loss_type!r} cannot train on data with missing values; use --loss-type simple" in message
    assert "\n" not in message and not calls


# --- the dequantization noise ------------------------------------------------------------------------------------

@pytest.mark.parametrize("world, accum", [(2, 1), (4, 1), (2, 2)])
def test_ranks_together_draw_the_one_process_dequantization(world, accum):
    """Rank r's draws are rows r, r + world, ... of the global batch's, as its rows are (test_train's t_and_noise)."""
    one = GlobalBatches(103, 24, accum, seed=3)
    ranks = [GlobalBatches(103, 24, accum, seed=3, rank=r, world=world) for r in range(world)]
    for step in [0, 1, one.per_epoch, 5 * one.per_epoch + 2]:
        parts = [b.dequant_noise(step, 3) for b in ranks]
        assert all(p.shape == (24 // world, 3) and p.dtype == torch.float64 for p in parts)
        assert torch.equal(torch.stack(parts, 1).flatten(0, 1), one.dequant_noise(step, 3))


def test_dequantization_is_a_function_of_seed_and_step_and_leaves_the_other_draws_alone():
    a, b = GlobalBatches(100, 10, 1, seed=7), GlobalBatches(100, 10, 1, seed=7)
    before = b.t_and_noise(37, 50, (2,), label_dropout=0.1)
    for step in range(5):
        a.dequant_noise(step, 2)
    assert torch.equal(a.dequant_noise(37, 2), b.dequant_noise(37, 2))
    assert all(torch.equal(u, v) for u, v in zip(b.t_and_noise(37, 50, (2,), label_dropout=0.1), before))
    assert not torch.equal(a.dequant_noise(37, 2), a.dequant_noise(38, 2))
    assert not torch.equal(a.dequant_noise(37, 2), GlobalBatches(100, 10, 1, seed=8).dequant_noise(37, 2))


def test_dequantization_draws_are_uniform():
    """10,000 draws: the Kolmogorov-Smirnov test against U[0, 1) at level 1e-3 (fixed seed: it passes or fails
    the same way every time; a draw from another law, e.g. U[-1/2, 1/2), has p ~ 0)."""
    u = GlobalBatches(1000, 1000, 1, seed=0).dequant_noise(3, 10)
    assert u.min() >= 0 and u.max() < 1
    assert scipy.stats.kstest(u.flatten().numpy(), "uniform").pvalue > 1e-3


# --- the trainer on a table with gaps ----------------------------------------------------------------------------

class GappyTable(Dataset):
    """A fake table as the trainer sees one (data.dataset's contract): column 0 continuous, column 1 an integer
    count that get() dequantizes with the trainer's draws (k + u - 1/2); about 30 % of the cells missing (NaN in
    the data), handed out as ``value`` in x (0 by the contract, a trainer's fill after an EM step) with mask False.
    Every ``dequant`` that get() receives is kept in ``dequants``."""

    dequant_width = 2

    def __init__(self, n: int, seed: int = 0, value: float = 0.0):
        g = torch.Generator().manual_seed(seed)
        codes = torch.stack([torch.randn(n, generator=g, dtype=torch.float64),
                             torch.randint(0, 4, (n,), generator=g).double()], 1)
        missing = torch.rand(n, 2, generator=g) < 0.3
        missing[:, 0] &= ~missing[:, 1]  # no row with every cell missing
        super().__init__(codes.masked_fill(missing, math.nan), Standardize.identity(2), "gappy", "a fake table")
        self.value, self.dequants = value, []

    def get(self, rows, dequant=None) -> Batch:
        assert dequant is not None and dequant.shape == (len(rows), 2) and dequant.dtype == torch.float64
        self.dequants.append(dequant)
        codes = self.data[rows] + torch.tensor([0.0, 1.0], dtype=torch.float64) * (dequant - 0.5)
        mask = ~codes.isnan()
        return Batch(codes.nan_to_num(nan=self.value).float(), {}, mask)


N, HELD = 256, 40
TINY = dict(data="moons", batch_size=64, width=32, depth=1, emb_dim=16, num_train_timesteps=50, warmup_steps=2,
            threads=1, lr_schedule="constant", log_every=1, eval_size=50)


def gappy_run(monkeypatch, out, value=0.0, **overrides):
    """Train on a GappyTable (held-out: another one) under TINY | overrides; returns (run, training set, held-out)."""
    table, heldout = GappyTable(N, 0, value), GappyTable(HELD, 1, value)
    monkeypatch.setattr(train_loop, "load_dataset", lambda *args, **kwargs: table)
    monkeypatch.setattr(train_loop, "training_and_heldout",
                        lambda cfg, data: (data, heldout if cfg.eval_every else None))
    return train(TrainConfig(out=str(out), **TINY | overrides), progress=False), table, heldout


def evals(run):
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["loss"], r.get("eval_train_loss"), r.get("eval_heldout_loss")) for r in rows]


def weights(run):
    return [(run / "model" / name).read_bytes() for name in ("model.safetensors", "online.safetensors")]


def test_the_value_at_a_missing_entry_is_input_only_and_nan_is_zero(monkeypatch, tmp_path):
    """Runs whose tables differ only in the value handed out at missing entries: NaN trains as 0 does, bit for bit
    (weights, training and held-out losses); 7.5 moves the weights (the network receives it: an EM fill) while every
    loss stays finite."""
    steps = dict(steps=6, eval_every=3)
    a, *_ = gappy_run(monkeypatch, tmp_path / "a", 0.0, **steps)
    b, *_ = gappy_run(monkeypatch, tmp_path / "b", math.nan, **steps)
    c, *_ = gappy_run(monkeypatch, tmp_path / "c", 7.5, **steps)
    assert weights(a) == weights(b)
    assert evals(a) == evals(b)
    assert weights(c) != weights(a)
    assert all(math.isfinite(v) for run in (a, c) for row in evals(run) for v in row[1:] if v is not None)
    assert [row[2] is not None for row in evals(a)] == [False, False, True, False, False, True]


def test_each_step_gets_its_dequantization_and_each_micro_batch_its_mask(monkeypatch, tmp_path):
    """Two micro-batches per step: step k's get() receives GlobalBatches' dequant_noise(k) for its rows, each
    objective call the mask of its micro-batch's rows; the held-out draws are the documented fixed ones."""
    masks, loss = [], train_loop.training_loss

    def recording_loss(*args, mask=None, **kwargs):
        masks.append(mask)
        return loss(*args, mask=mask, **kwargs)

    monkeypatch.setattr(train_loop, "training_loss", recording_loss)
    run, table, heldout = gappy_run(monkeypatch, tmp_path / "r", steps=3, grad_accum=2, eval_every=3)
    stream = GlobalBatches(N, 64, 2, seed=0)
    assert [d.shape for d in table.dequants[1:]] == [(64, 2)] * 3  # [0]: the held-out loss's draw on training rows
    for step in range(3):
        assert torch.equal(table.dequants[1 + step], stream.dequant_noise(step, 2))
        observed = ~table.data[stream.rows(step)].isnan()
        assert torch.equal(torch.cat(masks[2 * step:2 * step + 2]), observed)
        assert [len(m) for m in masks[2 * step:2 * step + 2]] == [32, 32]
    g = torch.Generator().manual_seed(heldout_seed(0))  # heldout.py's documented order
    torch.randperm(N, generator=g), torch.randperm(HELD, generator=g), torch.randint(1, 51, (50,), generator=g)
    torch.randn((50, 2), generator=g)
    fixed = torch.rand((50, 2), generator=g, dtype=torch.float64)
    assert torch.equal(table.dequants[0], fixed) and torch.equal(heldout.dequants[0], fixed)
    assert all(m is not None for m in masks[6:])  # the held-out losses are masked too


def test_a_resumed_run_on_a_table_with_gaps_is_byte_identical(monkeypatch, tmp_path):
    """5 steps with a checkpoint every 2 (the end writes step 5), resumed to 9: the same weights, losses and later
    held-out losses as 9 steps in one go (test_train's resume check, on masked data with dequantization; the short
    run's end adds an evaluation at step 5)."""
    steps = dict(checkpoint_every=2, keep_checkpoints=3, eval_every=4)
    short, *_ = gappy_run(monkeypatch, tmp_path / "short", steps=5, **steps)
    cfg = TrainConfig(out=str(short), **TINY | steps | dict(steps=9))
    train(cfg, resume=True, progress=False)
    whole, *_ = gappy_run(monkeypatch, tmp_path / "whole", steps=9, **steps)
    assert weights(short) == weights(whole)
    assert [row[:2] for row in evals(short)] == [row[:2] for row in evals(whole)]
    assert [row for row in evals(short) if row[0] > 5] == [row for row in evals(whole) if row[0] > 5]
    assert [row[0] for row in evals(whole) if row[2] is not None] == [4, 8, 9]
