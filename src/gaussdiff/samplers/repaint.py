"""RePaint (Lugmayr et al. 2022, "RePaint: Inpainting using Denoising Diffusion Probabilistic Models"): ancestral
sampling that walks back up the chain now and then, so that the unknown part has time to agree with the known part.

Over a grid of n + 1 times (grid index 0 = the start, n = t 0) the walk is a list of grid indices, each move one
index down or up (:func:`repaint_schedule`):
    down k -> k + 1: one ancestral step p(x_s | x_t) (``ancestral.AncestralSteps``: the same posterior mean and
                     variance as ``ddpm``, learned variance included), then ``project(s, x)``, the known values
                     noised to the new level (``known.replace_xt``);
    up k + 1 -> k:   the forward chain x_t ~ q(x_t | x_s) = N(sqrt(abar_t / abar_s) x_s, (1 - abar_t / abar_s) I).
The walk goes down one index at a time; at every jump_length-th index, counted from the last positive time upward
(the authors' t = 0, jump_length, 2 jump_length, ... below n - jump_length, in their index t = n - 1 - k), it goes
back up jump_length indices and down again, jump_n_sample - 1 times. This is the authors' ``get_schedule_jump``
(with its other options at their defaults) and diffusers' ``RePaintScheduler.set_timesteps``. The paper's defaults:
250 steps, jump_length = 10, jump_n_sample = 10, which make 2,410 denoiser calls (:func:`repaint_nfe`), one per
down move.
"""

from __future__ import annotations

import math

import torch

from ..errors import check_int
from ..param import Denoiser, ReverseModel
from ..schedule import NoiseSchedule
from .ancestral import AncestralSteps
from .noise import normal_noise

STEPS, JUMP_LENGTH, JUMP_N_SAMPLE = 250, 10, 10  # the paper's


def _jumps_at(k: int, n: int, jump_length: int) -> bool:
    """Whether the walk jumps back up at grid index k (the authors' t = n - 1 - k in 0, J, 2J, ... < n - J)."""
    return jump_length <= k < n and (n - 1 - k) % jump_length == 0


def repaint_schedule(n: int, jump_length: int = JUMP_LENGTH, jump_n_sample: int = JUMP_N_SAMPLE) -> list[int]:
    """RePaint's walk over grid indices 0 (the start) .. n (t = 0), from 0 to n, each move one index (module doc)."""
    check_int("the number of steps", n, 1)
    check_int("jump_length", jump_length, 1)
    check_int("jump_n_sample", jump_n_sample, 1)
    path = [0]
    for k in range(1, n + 1):
        path.append(k)
        if _jumps_at(k, n, jump_length):
            for _ in range(jump_n_sample - 1):
                path += range(k - 1, k - jump_length - 1, -1)  # up jump_length indices
                path += range(k - jump_length + 1, k + 1)  # and down again to k
    return path


def repaint_nfe(n: int, jump_length: int = JUMP_LENGTH, jump_n_sample: int = JUMP_N_SAMPLE) -> int:
    """The denoiser calls of RePaint over n steps, one per down move: n + (r - 1) j (number of jump indices)."""
    return n + (jump_n_sample - 1) * jump_length * len(range(0, n - jump_length, jump_length))


def repaint(denoiser: Denoiser | ReverseModel, x_T: torch.Tensor, schedule: NoiseSchedule, grid, *, generator=None,
            variance: str = "beta_tilde", jump_length: int = JUMP_LENGTH, jump_n_sample: int = JUMP_N_SAMPLE,
            project=None, callback=None) -> torch.Tensor:
    """RePaint's walk over ``grid`` (module doc): ``project(s, x)`` after each down move (to time s), and
    ``callback(i, t, x, x0_hat)`` after move i to time t (x0_hat None after an up move, which calls no denoiser).
    ``variance``: ddpm's; ``generator``: a torch.Generator or a ``noise.RowNoise``."""
    steps = AncestralSteps(schedule, grid, variance)
    path = repaint_schedule(steps.n, jump_length, jump_n_sample)
    x = x_T
    for i, (k, k_next) in enumerate(zip(path[:-1], path[1:])):
        if k_next > k:
            x, x0_hat = steps.step(denoiser, x, k, generator)
            if project is not None:
                x = project(steps.grid[k_next], x)
        else:  # x_t = sqrt(1 - beta) x_s + sqrt(beta) z, beta = 1 - abar_t / abar_s
            beta, x0_hat = steps.beta[k_next], None
            x = torch.add(x * math.sqrt(1 - beta), normal_noise(x.shape, generator, x.dtype, x.device),
                          alpha=math.sqrt(beta))
        if callback is not None:
            callback(i, steps.grid[k_next], x, x0_hat)
    return x
