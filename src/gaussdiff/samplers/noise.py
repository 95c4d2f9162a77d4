"""Noise that does not depend on how a sample set is cut into batches.

A set of N samples draws a stream of standard normal tensors of shape (N, *sample_shape): draw 0 is x_T, the later
ones are a stochastic sampler's step noise, in the order it asks for them. ``RowNoise(seed, start, stop, ...)`` gives
rows start..stop-1 of every draw of that stream, whatever start and stop are, so sample i's noise is a function of
(seed, i) alone and a batch of rows start..stop-1 draws exactly what the whole set would give those rows.

Rows are grouped in blocks of BLOCK; block b has its own ``torch.Generator`` seeded from (seed, b). Each draw takes
the block's full (BLOCK, *sample_shape) tensor, so its values never depend on how many of its rows are kept (torch's
CPU normal fill, for one, works in chunks of 16 values), and keeps the rows asked for: one randn call per block
touched, not one per row. The generators live on the draw's device, so a set is reproducible per device type.

Samplers draw through :func:`normal_noise`, which takes a ``torch.Generator`` (or None: torch's global one) as
before, or a ``RowNoise``; the sampler contract keeps its ``generator=None`` keyword. :func:`noise_source` picks the
one an entry point (``generate``, ``known.sample_known``) hands its sampler, from its seed, start row and generator.
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import InputError, check_int

BLOCK = 64
SALT = 0x0051_0E5E  # keeps the blocks' seeds apart from other streams seeded by the same small integers


def block_seed(seed: int, block: int) -> int:
    """The 64-bit seed of block ``block`` of the sample set ``seed`` (numpy's SeedSequence hash of both)."""
    return int(np.random.SeedSequence([seed, block, SALT]).generate_state(1, np.uint64)[0])


class RowNoise:
    """Rows start..stop-1 of the seeded sample set's noise stream (module doc); each :meth:`draw` is the next."""

    def __init__(self, seed: int, start: int, stop: int, sample_shape, *, dtype: torch.dtype = torch.float32,
                 device=None):
        check_int("the seed", seed, 0)
        check_int("the first row", start, 0)
        check_int("the end row", stop, start + 1)
        self.shape = (stop - start, *(check_int("a sample dimension", d, 1) for d in sample_shape))
        self.dtype, self.device = dtype, torch.device("cpu" if device is None else device)
        self._blocks = []  # (generator, rows of the block kept, rows of the output filled)
        for block in range(start // BLOCK, (stop - 1) // BLOCK + 1):
            g = torch.Generator(device=self.device).manual_seed(block_seed(seed, block))
            lo, hi = max(start, block * BLOCK), min(stop, (block + 1) * BLOCK)
            self._blocks.append((g, slice(lo - block * BLOCK, hi - block * BLOCK), slice(lo - start, hi - start)))

    def draw(self) -> torch.Tensor:
        """The next draw: (stop - start, *sample_shape) standard normal values of ``dtype`` on ``device``."""
        out = torch.empty(self.shape, dtype=self.dtype, device=self.device)
        for g, kept, filled in self._blocks:
            out[filled] = torch.randn((BLOCK, *self.shape[1:]), generator=g, dtype=self.dtype, device=self.device)[kept]
        return out


def normal_noise(shape, generator: torch.Generator | RowNoise | None, dtype: torch.dtype, device) -> torch.Tensor:
    """Standard normal noise of ``shape``: the next draw of a RowNoise (cast to ``dtype`` and moved to ``device``),
    else ``torch.randn`` with the given generator (None: torch's global one)."""
    if not isinstance(generator, RowNoise):
        return torch.randn(shape, generator=generator, dtype=dtype, device=device)
    if generator.shape != tuple(shape):
        raise InputError(f"the noise source gives rows of shape {generator.shape}, the sampler needs {tuple(shape)}")
    return generator.draw().to(dtype=dtype, device=device)


def noise_source(shape, seed: int | None, start: int, generator: torch.Generator | None, dtype: torch.dtype, device,
                 caller: str) -> torch.Generator | RowNoise | None:
    """What a batch of ``shape`` = (B, *sample_shape) draws its noise from: with ``seed``, rows start..start+B-1 of
    the seeded sample set (a RowNoise), else ``generator`` (None: torch's global one). ``caller`` names the entry
    point in the one-line errors (a seed with a generator; a start row without a seed)."""
    if seed is not None:
        if generator is not None:
            raise InputError(f"{caller} takes a seed or a generator, not both")
        return RowNoise(seed, start, start + shape[0], shape[1:], dtype=dtype, device=device)
    if start:
        raise InputError(f"{caller}'s start row needs a seed (rows of a seeded sample set)")
    return generator
