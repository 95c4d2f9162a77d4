"""What each process trains on at each step, as a pure function of (seed, step).

The global batch of B rows is the same whatever the number of processes: an epoch's order comes from
torch's DistributedSampler (a permutation seeded by seed + epoch, dealt out to ranks), and t and the noise of
the global batch come from a generator seeded by (seed, step) and are sliced by rank. So N processes compute
what one process computes on the same global batch, and a resumed run needs nothing but the step counter
to continue the exact same stream. The dequantization noise of integer table columns comes from a generator of its
own, keyed by (seed, step) as well and sliced the same way, so runs without such columns draw what they always did.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import DistributedSampler

from ..errors import InputError


DEQUANT_SALT = 0xDE0_0A27  # keeps the dequantization streams apart from other streams seeded by (seed, step)


def step_generator(seed: int, step: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed << 32 | step)  # distinct for every (seed, step) with step < 2^32


def dequant_generator(seed: int, step: int) -> torch.Generator:
    """The generator of step ``step``'s dequantization noise: seeded by numpy's SeedSequence hash of (seed, step)."""
    return torch.Generator().manual_seed(int(np.random.SeedSequence([seed, step, DEQUANT_SALT]).generate_state(
        1, np.uint64)[0]))


class GlobalBatches:
    """Rank ``rank`` of ``world`` gets rows, t and eps of positions rank, rank + world, ... of each global batch."""

    def __init__(self, n: int, batch_size: int, grad_accum: int, seed: int, rank: int = 0, world: int = 1):
        unit = world * grad_accum
        if n < unit:
            raise InputError(f"{world} process(es) x {grad_accum} micro-batch(es) need at least {unit} data rows; "
                             f"the data has {n}")
        if batch_size % unit:
            raise InputError(f"batch-size {batch_size} must be a multiple of processes x grad-accum = {unit}")
        batch_size = min(batch_size, n - n % unit)  # a small data set: one global batch is all of it
        self.seed, self.rank, self.world, self.batch_size = seed, rank, world, batch_size
        self.local = batch_size // world
        self.sampler = DistributedSampler(range(n), num_replicas=world, rank=rank, shuffle=True, seed=seed,
                                          drop_last=True)
        self.per_epoch = len(self.sampler) // self.local  # the same as n // batch_size for every world size
        self._epoch, self._order = -1, None

    def rows(self, step: int) -> torch.Tensor:
        """This rank's row indices at ``step`` (long, (B / world,)); epochs are reshuffled."""
        epoch, k = divmod(step, self.per_epoch)
        if epoch != self._epoch:
            self.sampler.set_epoch(epoch)
            self._epoch, self._order = epoch, torch.tensor(list(self.sampler))
        return self._order[k * self.local:(k + 1) * self.local]

    def t_and_noise(self, step: int, T: int, sample_shape: tuple[int, ...], t_sampler=None, label_dropout: float = 0.0):
        """t, eps ~ N(0, I), the importance weights of t and the label-dropout draws (bool: True where the class is
        replaced by the null label; None when ``label_dropout`` is 0) for the global batch, this rank's slice.

        t ~ U{1..T} (weights 1), or from ``t_sampler.sample(B, generator)`` (weights 1 / (T p_t)); the dropout draws
        come after t and eps from the same (seed, step) generator, so runs without it draw what they always did."""
        g = step_generator(self.seed, step)
        if t_sampler is None:
            t, w = torch.randint(1, T + 1, (self.batch_size,), generator=g), torch.ones(self.batch_size)
        else:
            t, w = t_sampler.sample(self.batch_size, g)
        eps = torch.randn((self.batch_size, *sample_shape), generator=g)
        dropped = torch.rand(self.batch_size, generator=g) < label_dropout if label_dropout else None
        mine = slice(self.rank, None, self.world)
        return t[mine], eps[mine], w[mine].float(), None if dropped is None else dropped[mine]

    def dequant_noise(self, step: int, width: int) -> torch.Tensor:
        """u ~ U[0, 1) float64 (B / world, width) for this rank's slice of the global batch at ``step``: the draws that
        dequantize a table's integer columns (k + u - 1/2), from :func:`dequant_generator` (seed, step)."""
        u = torch.rand((self.batch_size, width), generator=dequant_generator(self.seed, step), dtype=torch.float64)
        return u[self.rank::self.world]
