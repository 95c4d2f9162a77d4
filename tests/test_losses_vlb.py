"""Tests of the bound as a training loss (losses.vlb_loss, hybrid_loss, training_loss) and of the loss-aware
t sampler (losses.ImportanceSampler).

References: autograd (which parameters each part of the hybrid loss moves), the bound's terms computed through the
likelihood code (gaussdiff.likelihood.term_at), Improved DDPM's rule for p_t written out in numpy, and Monte
Carlo against exact means with stated tolerances.
"""

import collections
import math

import numpy as np
import pytest
import torch

from gaussdiff.chain import q_sample
from gaussdiff.errors import InputError, TrainingError
from gaussdiff.likelihood import term_at
from gaussdiff.losses import (HYBRID_LAMBDA, ImportanceSampler, hybrid_loss, simple_loss, training_loss,
                              vlb_loss)
from gaussdiff.nets import MLP
from gaussdiff.param import as_reverse_model, training_target
from gaussdiff.schedule import make_schedule

T, D, B = 40, 3, 64


@pytest.fixture
def setup():
    s = make_schedule("squaredcos_cap_v2", T)
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(B, D, generator=g, dtype=torch.float64)
    eps = torch.randn(B, D, generator=g, dtype=torch.float64)
    t = torch.randint(1, T + 1, (B,), generator=g)
    t[:4] = torch.tensor([1, 1, 2, T])  # the decoder term and both ends are in the batch
    return s, x0, eps, t


class Leaf:
    """A 'network' whose output is a fixed leaf tensor (B, 2D): the gradients w.r.t. it are what autograd sees."""

    def __init__(self, out):
        self.out = out.clone().requires_grad_(True)

    def __call__(self, x_t, t):
        return self.out


def test_hybrid_loss_moves_the_mean_only_through_L_simple(setup):
    s, x0, eps, t = setup
    leaf = Leaf(torch.randn(B, 2 * D, generator=torch.Generator().manual_seed(1), dtype=torch.float64).tanh())
    loss, vlb = training_loss(leaf, x0, s, "v_prediction", "hybrid", "learned_range", t=t, eps=eps)
    (grad,) = torch.autograd.grad(loss.sum(), leaf.out)
    target = training_target("v_prediction", x0, eps, s.alpha_bar[t])
    (grad_simple,) = torch.autograd.grad(((leaf.out[:, :D] - target) ** 2).mean(1).sum(), leaf.out)
    # The prediction channels get exactly L_simple's gradient: the L_vlb part sees them detached.
    torch.testing.assert_close(grad[:, :D], grad_simple[:, :D], rtol=0, atol=0)
    # The variance channels get lambda T dL_t/dv, and only from L_vlb; not vacuous: it is not zero.
    (grad_vlb,) = torch.autograd.grad(HYBRID_LAMBDA * _vlb(leaf, x0, eps, t, s).sum(), leaf.out)
    torch.testing.assert_close(grad[:, D:], grad_vlb[:, D:], rtol=1e-12, atol=0)
    assert grad[:, D:].abs().min() > 0
    # ... while the bound as a loss on its own does move the mean.
    vlb_only, _ = training_loss(leaf, x0, s, "v_prediction", "vlb", "learned_range", t=t, eps=eps)
    (grad_all,) = torch.autograd.grad(vlb_only.sum(), leaf.out)
    assert grad_all[:, :D].abs().max() > 0
    torch.testing.assert_close(vlb, _vlb(leaf, x0, eps, t, s).detach(), rtol=1e-12, atol=0)


def _vlb(leaf, x0, eps, t, s):
    """T L_t (bits/dim) of the leaf's output with nothing detached."""
    return vlb_loss(leaf.out, x0, q_sample(x0, t, s, eps), t, s, "v_prediction", "learned_range")


@pytest.mark.parametrize("variance_type, levels", [("fixed_small", None), ("fixed_large", None),
                                                   ("learned_range", None), ("learned_range", 17)])
def test_vlb_loss_is_T_times_the_bounds_term_in_bits_per_dim(setup, variance_type, levels):
    """The training loss and the likelihood code compute the same term by two routes (training_loss's single
    network call, and term_at through the reverse-model wrapper)."""
    s, x0, eps, t = setup
    if levels:
        x0 = (torch.round((x0.clamp(-1, 1) + 1) * 8) / 8 - 1)  # on the 17 levels of [-1, 1]
    torch.manual_seed(2)
    net = MLP(D, T, width=16, depth=1, emb_dim=8, learn_variance=variance_type == "learned_range").double()
    loss, vlb = training_loss(net, x0, s, "epsilon", "vlb", variance_type, t=t, eps=eps, levels=levels)
    with torch.no_grad():
        nats = term_at(as_reverse_model(net, s, "epsilon", variance_type), x0, s, t, eps, levels)
    # float64 throughout; the two routes differ in rounding only (1e-10 relative of terms ~0.01..10).
    torch.testing.assert_close(loss.detach(), T * nats / (D * math.log(2)), rtol=1e-10, atol=1e-12)
    assert torch.equal(vlb, loss.detach())


def test_simple_loss_type_is_simple_loss(setup):
    s, x0, eps, t = setup
    torch.manual_seed(3)
    net = MLP(D, T, width=16, depth=1, emb_dim=8).double()
    loss, vlb = training_loss(net, x0, s, "sample", "simple", "fixed_small", t=t, eps=eps)
    assert vlb is None and torch.equal(loss, simple_loss(net, x0, s, "sample", t=t, eps=eps))


def test_bad_loss_settings_are_rejected(setup):
    s, x0, eps, t = setup
    net = MLP(D, T, width=16, depth=1, emb_dim=8).double()
    with pytest.raises(InputError, match="unknown loss_type"):
        training_loss(net, x0, s, "epsilon", "kl", "fixed_small", t=t, eps=eps)
    with pytest.raises(InputError, match="does not go with"):
        training_loss(net, x0, s, "epsilon", "simple", "learned_range", t=t, eps=eps)
    with pytest.raises(InputError, match="does not go with"):
        training_loss(net, x0, s, "epsilon", "hybrid", "fixed_large", t=t, eps=eps)
    with pytest.raises(InputError, match="unknown variance_type"):
        training_loss(net, x0, s, "epsilon", "vlb", "learned", t=t, eps=eps)
    with pytest.raises(InputError, match="variance head"):  # learned_range from a net without one
        training_loss(net, x0, s, "epsilon", "vlb", "learned_range", t=t, eps=eps)
    with pytest.raises(InputError, match="variance head"):
        hybrid_loss(net(x0, t.double()), x0, x0, t, x0, s, "epsilon")


# --- the importance sampler ---------------------------------------------------------------------------

def fill(sampler, losses_of_t, rounds, generator):
    """Feed ``rounds`` losses at every t, in a shuffled order; losses_of_t(t, k) gives the k-th loss at t."""
    seen = collections.defaultdict(int)
    order = torch.arange(1, sampler.T + 1).repeat(rounds)
    order = order[torch.randperm(len(order), generator=generator)]
    values = []
    for t in order.tolist():
        values.append(losses_of_t(t, seen[t]))
        seen[t] += 1
    sampler.update(order, torch.tensor(values, dtype=torch.float64))


def test_sampler_is_uniform_until_every_t_has_ten_losses_then_follows_the_second_moment():
    g = torch.Generator().manual_seed(4)
    sampler = ImportanceSampler(T)
    uniform = np.full(T, 1 / T)
    loss = lambda t, k: t * (1 + 0.1 * (k % 3))  # noqa: E731 (varies with t and with the draw)
    fill(sampler, loss, 9, g)
    sampler.update(torch.arange(1, T), torch.ones(T - 1))  # every t but T now has 10
    np.testing.assert_array_equal(sampler.probabilities().numpy(), uniform)
    sampler.update(torch.tensor([T]), torch.tensor([1.0]))
    # Improved DDPM: p_t = (1 - 1e-3) sqrt(E[L_t^2]) / sum + 1e-3 / T over each t's losses, written out in numpy
    # from the history a deque of 10 keeps.
    history = {t: collections.deque([loss(t, k) for k in range(9)] + [1.0], maxlen=10) for t in range(1, T + 1)}
    rms = np.array([math.sqrt(np.mean(np.square(history[t]))) for t in range(1, T + 1)])
    expected = 0.999 * rms / rms.sum() + 0.001 / T
    np.testing.assert_allclose(sampler.probabilities().numpy(), expected, rtol=1e-12)
    # Newer losses push out the oldest: 5 more at t = 3 keep the last 10.
    for k in range(5):
        sampler.update(torch.tensor([3]), torch.tensor([100.0 + k]))
        history[3].append(100.0 + k)
    np.testing.assert_allclose(sampler.losses[2].numpy(), list(history[3]), rtol=0)
    with pytest.raises(TrainingError, match="non-finite"):
        sampler.update(torch.tensor([1]), torch.tensor([math.nan]))


def test_one_batched_update_keeps_what_one_by_one_updates_keep():
    """A batch with repeated t (up to 25 at one t, beyond the history of 10) must leave each t's last 10
    losses in batch order, as a deque of 10 fed one loss at a time does."""
    g = torch.Generator().manual_seed(6)
    sampler, history = ImportanceSampler(T), {t: collections.deque(maxlen=10) for t in range(1, T + 1)}
    for batch in range(6):
        t = torch.randint(1, T + 1, (int(torch.randint(1, 120, (), generator=g)),), generator=g)
        t[:25] = 2  # one t seen 25 times in one batch
        values = torch.rand(len(t), generator=g, dtype=torch.float64)
        sampler.update(t, values)
        for ti, v in zip(t.tolist(), values.tolist()):
            history[ti].append(v)
    for ti in range(1, T + 1):
        n = len(history[ti])
        assert sampler.counts[ti - 1] == n
        np.testing.assert_array_equal(sampler.losses[ti - 1, 10 - n:].numpy(), list(history[ti]))


def test_importance_weighted_loss_is_an_unbiased_estimate_of_the_uniform_mean():
    g = torch.Generator().manual_seed(5)
    sampler = ImportanceSampler(T)
    L = torch.linspace(0.01, 5, T, dtype=torch.float64) ** 2  # a skewed loss profile over t
    fill(sampler, lambda t, k: L[t - 1].item() * (0.8 + 0.04 * k), 10, g)
    p = sampler.probabilities()
    assert p.max() > 20 * p.min()  # far from uniform
    exact = L.mean().item()  # E_{t ~ U} L_t, what the trainer's mean estimates without importance sampling
    # The identity behind the weights: sum_t p_t L_t / (T p_t) = mean L_t.
    assert (p * L / (T * p)).sum().item() == pytest.approx(exact, rel=1e-12)
    n = 100_000
    t, w = sampler.sample(n, g)
    est = w * L[t - 1]
    # Mean of n i.i.d. draws: SE = sd / sqrt(n); 5 SE.
    assert abs(est.mean().item() - exact) <= 5 * est.std().item() / math.sqrt(n)
    # Sampling by the second moment lowers the variance of the estimate against uniform draws (sd of L_t).
    assert est.std() < 0.5 * L.std()
    assert t.min() >= 1 and t.max() <= T and torch.equal(w, 1 / (T * p[t - 1]))


def test_sampler_state_round_trip_resumes_exactly():
    g = torch.Generator().manual_seed(6)
    a = ImportanceSampler(T)
    fill(a, lambda t, k: math.sin(t + k) + 2, 12, g)
    b = ImportanceSampler(T)
    b.load_state_dict({k: v.clone() for k, v in a.state_dict().items()})
    assert all(torch.is_tensor(v) for v in a.state_dict().values())
    draws = [x.sample(500, torch.Generator().manual_seed(7)) for x in (a, b)]
    assert torch.equal(draws[0][0], draws[1][0]) and torch.equal(draws[0][1], draws[1][1])
    a.update(torch.tensor([5]), torch.tensor([9.0]))
    b.update(torch.tensor([5]), torch.tensor([9.0]))
    torch.testing.assert_close(a.probabilities(), b.probabilities(), rtol=0, atol=0)
    for bad in ({}, {"losses": torch.zeros(T, 10)}, ImportanceSampler(T + 1).state_dict()):
        with pytest.raises(InputError, match="does not fit"):
            ImportanceSampler(T).load_state_dict(bad)
