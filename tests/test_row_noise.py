"""Tests of samplers.noise and ``generate(seed=...)``: RowNoise gives rows start..stop-1 of every draw of the seeded
sample set's noise stream, by its documented construction, whatever the cut; the draws are independent N(0, 1);
so sample i depends on (seed, i) alone: 20 samples at batch sizes 20, 10 and 7 are bit-identical for ddpm, ddim with
eta = 1 and a deterministic sampler, on vectors and on images."""

import math
import re

import pytest
import torch

from gaussdiff.errors import InputError
from gaussdiff.samplers import SAMPLERS, RowNoise, generate, normal_noise, timestep_grid
from gaussdiff.samplers.noise import BLOCK, block_seed
from gaussdiff.schedule import make_schedule

SHAPES = [(2,), (1, 8, 8)]


def draws(noise: RowNoise, k: int) -> list[torch.Tensor]:
    return [noise.draw() for _ in range(k)]


# --- the noise source ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("shape", SHAPES)
def test_row_i_is_row_i_mod_block_of_its_blocks_generator(shape):
    """The documented construction: row i of the k-th draw is row i % BLOCK of the k-th (BLOCK, *shape) randn of a
    torch.Generator seeded by block_seed(seed, i // BLOCK)."""
    n, seed = 2 * BLOCK + 9, 11
    got = draws(RowNoise(seed, 0, n, shape), 3)
    for block in range(3):
        g = torch.Generator().manual_seed(block_seed(seed, block))
        for k in range(3):
            full = torch.randn((BLOCK, *shape), generator=g)
            rows = slice(block * BLOCK, min(n, (block + 1) * BLOCK))
            assert torch.equal(got[k][rows], full[: rows.stop - rows.start]), (block, k)


@pytest.mark.parametrize("shape", SHAPES)
def test_any_cut_of_the_rows_draws_what_the_whole_set_draws(shape):
    """Rows start..stop-1 of each of 4 draws are those rows of the whole set's draws: cuts inside one block, across
    one and two block boundaries, a whole block, and single rows at both ends."""
    n = 3 * BLOCK + 5
    whole = draws(RowNoise(7, 0, n, shape), 4)
    for start, stop in [(0, 1), (3, 10), (BLOCK - 2, BLOCK + 3), (BLOCK, 2 * BLOCK), (5, n), (n - 1, n)]:
        for part, full in zip(draws(RowNoise(7, start, stop, shape), 4), whole, strict=True):
            assert part.shape == (stop - start, *shape)
            assert torch.equal(part, full[start:stop]), (start, stop)


def corr(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.flatten() - a.mean(), b.flatten() - b.mean()
    return float((a @ b) / (a.norm() * b.norm()))


def test_draws_are_independent_standard_normals():
    """8 draws of 1000 rows x 8 (64,000 values over 16 blocks), float64. Mean 0, variance 1 and fourth moment 3
    within 4.5 standard errors (1/sqrt(n), sqrt(2/n), sqrt(96/n): var(z^4) = 105 - 9); the correlations between
    successive draws, between each row and the row one block later (blocks must be seeded apart) and between seeds
    0 and 1 within 4.5/sqrt(pairs) of 0."""
    z = torch.stack(draws(RowNoise(0, 0, 1000, (8,), dtype=torch.float64), 8))  # (draw, row, feature)
    n = z.numel()
    assert abs(z.mean().item()) < 4.5 / math.sqrt(n)
    assert abs(z.var().item() - 1) < 4.5 * math.sqrt(2 / n)
    assert abs((z**4).mean().item() - 3) < 4.5 * math.sqrt(96 / n)
    assert abs(corr(z[1:], z[:-1])) < 4.5 / math.sqrt(z[1:].numel())
    assert abs(corr(z[:, BLOCK:], z[:, :-BLOCK])) < 4.5 / math.sqrt(z[:, BLOCK:].numel())
    other = torch.stack(draws(RowNoise(1, 0, 1000, (8,), dtype=torch.float64), 8))
    assert abs(corr(z, other)) < 4.5 / math.sqrt(n)


def test_normal_noise_takes_a_generator_as_before_or_a_row_noise():
    """A torch.Generator: torch.randn with it, as the samplers drew before. A RowNoise: its next draw, cast to the
    requested dtype; a draw of another shape is refused."""
    got = normal_noise((3, 2), torch.Generator().manual_seed(5), torch.float64, "cpu")
    assert torch.equal(got, torch.randn(3, 2, generator=torch.Generator().manual_seed(5), dtype=torch.float64))
    first = RowNoise(2, 4, 7, (2,)).draw()
    got = normal_noise((3, 2), RowNoise(2, 4, 7, (2,)), torch.float64, "cpu")
    assert got.dtype == torch.float64 and torch.equal(got, first.double())
    with pytest.raises(InputError, match=r"the noise source gives rows of shape \(3, 2\), the sampler needs \(3, 1\)"):
        normal_noise((3, 1), RowNoise(2, 4, 7, (2,)), torch.float32, "cpu")


@pytest.mark.parametrize("args, needle", [
    ((-1, 0, 5, (2,)), "the seed must be an integer >= 0, got -1"),
    ((1.5, 0, 5, (2,)), "the seed must be an integer >= 0, got 1.5"),
    ((0, 5, 5, (2,)), "the end row must be an integer >= 6, got 5"),
    ((0, -1, 5, (2,)), "the first row must be an integer >= 0, got -1"),
    ((0, 0, 5, (0,)), "a sample dimension must be an integer >= 1, got 0"),
])
def test_bad_row_noise_is_refused(args, needle):
    with pytest.raises(InputError, match=re.escape(needle)):
        RowNoise(*args)


# --- samples through generate ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def schedule():
    return make_schedule("linear", 50)


def gaussian_denoiser(schedule):
    """The exact denoiser of N(0, I) data, E[x_0 | x_t] = sqrt(abar_t) x_t: element-wise, so a row's output cannot
    depend on the other rows of its batch, and any dependence on the batch size is the noise's."""
    return lambda x, t: x * math.sqrt(schedule.alpha_bar_at(t).item())


def in_batches(schedule, n: int, batch: int, shape, seed: int = 0, **options) -> torch.Tensor:
    """n samples drawn ``batch`` at a time, as ``gaussdiff sample`` draws them."""
    return torch.cat([generate(gaussian_denoiser(schedule), (min(batch, n - start), *shape), schedule, steps=10,
                               seed=seed, start=start, **options) for start in range(0, n, batch)])


CASES = {"ddpm": {"sampler": "ddpm"}, "ddim_eta1": {"sampler": "ddim", "eta": 1.0}, "dpmpp_2m": {"sampler": "dpmpp_2m"}}


@pytest.mark.parametrize("shape", SHAPES, ids=["vectors", "images"])
@pytest.mark.parametrize("case", CASES)
def test_samples_do_not_depend_on_the_batch_size(schedule, shape, case):
    """Batches of 20, 10 and 7 give the same 20 samples, bit for bit; another seed gives other samples."""
    whole = in_batches(schedule, 20, 20, shape, **CASES[case])
    for batch in (10, 7):
        assert torch.equal(in_batches(schedule, 20, batch, shape, **CASES[case]), whole), batch
    assert not torch.equal(in_batches(schedule, 20, 20, shape, seed=1, **CASES[case]), whole)


@pytest.mark.parametrize("case", CASES)
def test_generate_runs_the_sampler_on_the_sources_draws(schedule, case):
    """generate(seed) is the sampler on x_T = the source's first draw with the same source for its step noise; the
    stochastic samplers' output changes when only the step noise comes from elsewhere (so the step noise is what the
    batch-size test above holds fixed), the deterministic one's does not."""
    options = dict(CASES[case])
    spec = SAMPLERS[options.pop("sampler")]
    got = in_batches(schedule, 20, 20, (2,), **CASES[case])
    source = RowNoise(0, 0, 20, (2,))
    x_T, grid, den = source.draw(), timestep_grid(schedule, 10), gaussian_denoiser(schedule)
    assert torch.equal(got, spec.fn(den, x_T, schedule, grid, generator=source, **options))
    other_steps = spec.fn(den, x_T, schedule, grid, generator=torch.Generator().manual_seed(0), **options)
    assert torch.equal(other_steps, got) == (case == "dpmpp_2m")


def test_row_i_of_a_100_sample_run_is_row_i_of_a_30_sample_run(schedule):
    for dtype in (torch.float32, torch.float64):
        big = generate(gaussian_denoiser(schedule), (100, 2), schedule, steps=10, seed=4, dtype=dtype)
        small = generate(gaussian_denoiser(schedule), (30, 2), schedule, steps=10, seed=4, dtype=dtype)
        assert big.dtype == dtype and torch.equal(big[:30], small)


def test_generate_refuses_a_seed_with_a_generator_and_a_start_without_a_seed(schedule):
    den = gaussian_denoiser(schedule)
    with pytest.raises(InputError, match="generate takes a seed or a generator, not both"):
        generate(den, (4, 2), schedule, seed=0, generator=torch.Generator())
    with pytest.raises(InputError, match="generate's start row needs a seed"):
        generate(den, (4, 2), schedule, start=3)
