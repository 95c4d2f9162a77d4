"""Imputation (issue 13): a model's conditional draws of the missing values of rows, and what they sum up to.

Rows in model units (N, D) carry NaN in the entries of their missing cells (``Table.forward`` maps a missing cell to
NaN in all its entries; a standardization lets NaN through). Each row with a missing value is completed K times by a
known-value method (:func:`gaussdiff.samplers.known.sample_known`), its observed entries kept exactly; rows without
one are not sampled. Draw k of the r-th row with a gap (of M) is row k M + r of the seeded sample set, so the draws
depend on the seed and the rows alone, not on the batch size (up to the network's float rounding).

From the K draws, decoded into the data's units:
- the point estimate (:func:`point_estimate`) per column kind: continuous, positive, bounded: the draws' mean (their
  estimate of E[x_missing | x_observed], the best single value in squared error), rounded to the column's decimals
  where it has them (the places its file shows; the draws are rounded so too); integer: that mean rounded (half
  to even); categorical: the most frequent draw, ties broken by the largest average model entry (the average one-hot,
  2 onehot - 1) among the tied categories; constant: its value;
- an interval at level l (:func:`intervals`), per entry in model units, where every numeric column's map is
  increasing, so that the interval maps to one of the same coverage in the data's units: with i = floor((K+1)(1-l)/2)
  >= 1 the order statistics [x_(i), x_(K+1-i)], which cover a further draw of the same law with probability
  (K + 1 - 2i) / (K + 1) >= l whatever the law; with fewer draws (K + 1 < 2 / (1 - l): K < 19 at l = 0.9) the
  Gaussian prediction bounds mean +- t_{K-1, (1+l)/2} s sqrt(1 + 1/K) (s the draws' sample sd), exact for a Gaussian
  conditional; the draws' empirical quantiles there would cover a further draw at most (K - 1) / (K + 1) of the time
  (9/11 for K = 10). Those cover a further draw of the *model's* law; where the model's draws are narrower than the
  truth's spread (RePaint's on small tables), they cover the truth less often. So a model whose training scored its
  held-out cells (``train.impute_choice``: the scores z = |y - mean| / s of n hidden cells, K = 10 draws each) gets
  split-conformal intervals instead (:func:`calibrated_intervals`; Vovk et al. 2005, Lei et al. 2018): mean +- q s,
  q the ceil((n + 1) l)-th smallest score, which a fresh exchangeable cell's score stays at or below with probability
  >= l. The gaps of training rows are not exchangeable with held-out cells, and more draws than 10 shrink a score's
  noise, so this is near l rather than a guarantee; where n is too small for l (ceil((n + 1) l) > n), or the draws
  are not made as the scored ones were (each method on ``ddpm`` with its default steps and jumps), the draws' own
  interval stands.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import dataclass

import torch
from scipy.special import stdtrit  # scipy comes with scikit-learn
from tqdm import tqdm

from .columns import Table, rounded
from .errors import InputError, check_int
from .param import Denoiser, ReverseModel
from .samplers import DEFAULT_SAMPLER, DEFAULT_SPACING
from .samplers.known import default_steps, sample_known
from .samplers.repaint import JUMP_LENGTH, JUMP_N_SAMPLE
from .sampling import Plan, finite, plan, sampler_inputs
from .saved import SavedModel
from .schedule import NoiseSchedule

# The defaults, from the tables benchmark (benchmarks/RESULTS.md, "Tables with early stopping"; iris, wine, breast
# cancer, diabetes, seeds 0-2, early-stopped models). x_t replacement against RePaint on the same trained runs: its
# 90 % intervals cover 0.88-0.93 of the removed values on all four tables (RePaint 0.82-0.87, IterativeImputer's
# posterior 0.88-0.91), its point error is RePaint's on average (z-RMSE 0.652 at K = 50 against 0.665 at K = 20;
# better on wine and breast cancer, worse on iris and diabetes), and a draw costs 100 network calls against 2,410.
# With draws as wide as the conditional, the mean's Monte Carlo term E[(x - mean_K)^2] = E[(x - E[x | obs])^2]
# (1 + 1/K) shows: the error fell by 2-3 % from K = 20 to 50 and by at most 0.005 more at 100, so K = 50 (5,000 calls
# a row; at 0.9 the interval is then distribution-free, order statistics from K >= 19).
# On the exact oracle the order differs: with a correlated 4-D mixture's exact denoiser as the model
# (tests/test_imputation.py, 1,000 rows, 20 % MCAR, K = 10) the RMSE of the draws' mean over that of E[x_missing |
# x_observed] (1.05 for exact draws) was 1.35 for RePaint at its default 250 steps (1.31 at 100), 1.60-1.64 for x0 or
# x_t replacement at 100 or 1,000 steps (replacement fills the missing values without letting them agree with the
# observed ones); on mix16 (16-D) all were within 1.02-1.08. A learnt model of a small table is not that oracle:
# RePaint's resampling there narrows the draws below the posterior's spread.
DEFAULT_DRAWS = 50
DEFAULT_METHOD = "replace_xt"
# RePaint's steps for imputation, not the paper's 250 (its image inpainting default): on the tables benchmark's 12
# trained runs (benchmarks/RESULTS.md, "RePaint on 100 steps") 100 steps lowered the held-out cells' error on iris,
# wine and breast cancer by 2-5 % (diabetes +0.5 %) and the real gaps' by 2.6 % on breast cancer (iris, wine and
# diabetes within 1 %), at 910 network calls a draw instead of 2,410; on the exact oracle above, 1.31 against 1.35 x
# the exact mean's error. DEFAULT_METHOD is the fallback: a model trained with held-out rows carries its own choice.
REPAINT_STEPS = 100
NUMERIC = ("continuous", "integer", "positive", "bounded")  # the kinds that get a mean and an interval


def on_cpu(model: SavedModel) -> SavedModel:
    """``model``, or a copy of it whose network is on the CPU, where imputation runs (a network trained elsewhere)."""
    if next(model.network.parameters()).device.type == "cpu":
        return model
    return dataclasses.replace(model, network=copy.deepcopy(model.network).cpu())


def default_method(model: SavedModel, sampler: str = DEFAULT_SAMPLER) -> str:
    """The known-value method imputation uses unless told: the model's own, chosen where its training ended
    (``train.impute_choice``; RePaint only on the ancestral sampler ``ddpm``), else DEFAULT_METHOD."""
    chosen = (model.imputation or {}).get("method", DEFAULT_METHOD)
    return DEFAULT_METHOD if chosen == "repaint" and sampler != "ddpm" else chosen


def impute_steps(method: str, T: int) -> int:
    """The steps of ``method`` when none are given: REPAINT_STEPS for RePaint, sample_known's otherwise (at most T)."""
    return min(REPAINT_STEPS, T) if method == "repaint" else default_steps(method, T)


def column_layout(transform) -> tuple[list[str], list[slice]]:
    """(each column's kind, its slice of the model entries): a table's column specs and model slices; a
    standardization's D columns are continuous, one entry each. InputError for images."""
    if getattr(transform, "kind", None) == "table":
        return [spec.kind for spec in transform.specs], list(transform.model_slices)
    if getattr(transform, "kind", None) == "standardize":
        return ["continuous"] * transform.dim, [slice(j, j + 1) for j in range(transform.dim)]
    raise InputError("imputation fills the missing values of tables and vectors; this model draws images: "
                     "use gaussdiff inpaint with a mask")


def impute_draws(denoiser: Denoiser | ReverseModel, schedule: NoiseSchedule, y_known: torch.Tensor, draws: int, *,
                 method: str = DEFAULT_METHOD, sampler: str = DEFAULT_SAMPLER, steps: int | None = None,
                 spacing: str = DEFAULT_SPACING, grid_options: dict | None = None, seed: int = 0,
                 batch_size: int = 10_000, jump_length: int = JUMP_LENGTH, jump_n_sample: int = JUMP_N_SAMPLE,
                 callback=None, denoiser_of=None, **sampler_options) -> torch.Tensor:
    """(K, N, D) draws of the rows ``y_known`` (N, D) in model units, NaN = missing (module doc): the observed entries
    bit for bit, the missing ones drawn by ``method`` on ``sampler`` as ``sample_known`` takes them, ``batch_size``
    sample rows at a time; K = ``draws``. ``denoiser_of(rows)``, if given, is the denoiser of a batch completing the
    input rows ``rows`` (B,) long, in place of ``denoiser`` (a class-conditional model: given their classes)."""
    check_int("draws", draws, 1)
    check_int("batch_size", batch_size, 1)
    if not isinstance(y_known, torch.Tensor) or y_known.ndim != 2 or not y_known.is_floating_point():
        raise InputError("the rows to impute must be a floating-point tensor (N, D) in model units")
    known = ~torch.isnan(y_known)
    gaps = (~known).any(1).nonzero().flatten()  # the rows with a missing value, M of them
    rows = gaps.repeat(draws)  # sample row k M + r completes input row gaps[r]
    filled = torch.empty(len(rows), y_known.shape[1], dtype=y_known.dtype, device=y_known.device)
    for start in range(0, len(rows), batch_size):
        part = rows[start:start + batch_size]
        batch_denoiser = denoiser if denoiser_of is None else denoiser_of(part)
        filled[start:start + len(part)] = finite(sample_known(
            batch_denoiser, y_known[part], known[part], schedule, method=method, sampler=sampler, steps=steps,
            spacing=spacing, grid_options=grid_options, seed=seed, start=start, jump_length=jump_length,
            jump_n_sample=jump_n_sample, callback=callback, **sampler_options))
    out = y_known.expand(draws, *y_known.shape).clone()
    out[:, gaps] = filled.view(draws, len(gaps), y_known.shape[1])
    return out


def point_estimate(draw_codes: torch.Tensor, draws_model: torch.Tensor, transform) -> torch.Tensor:
    """(N, C) float64: each cell's single value from its K draws ``draw_codes`` (K, N, C) in the data's units (a
    table's codes), by its column's kind (module doc); ``draws_model`` (K, N, D): the same draws in model units, whose
    average one-hot breaks a categorical tie."""
    kinds, slices = column_layout(transform)
    if draw_codes.ndim != 3 or draw_codes.shape[2] != len(kinds) or draws_model.shape[:2] != draw_codes.shape[:2]:
        raise InputError(f"expected draws (K, N, {len(kinds)}) and their model units (K, N, D), got shapes "
                         f"{tuple(draw_codes.shape)} and {tuple(draws_model.shape)}")
    draw_codes = draw_codes.double()
    estimate = draw_codes.mean(0)
    for j, (kind, entries) in enumerate(zip(kinds, slices)):
        if kind == "integer":
            estimate[:, j] = estimate[:, j].round()  # half to even
        elif kind == "categorical":
            estimate[:, j] = _mode(draw_codes[:, :, j], draws_model[:, :, entries])
        elif kind == "constant":
            estimate[:, j] = draw_codes[0, :, j]
        elif isinstance(transform, Table):  # a number column: its mean, to the places the data show
            estimate[:, j] = rounded(transform.columns[j].spec, estimate[:, j])
    return estimate


def _mode(codes: torch.Tensor, one_hot: torch.Tensor) -> torch.Tensor:
    """(N,) float64: the most frequent of the K category indices ``codes`` (K, N), a tie going to the tied category
    with the largest average entry of ``one_hot`` (K, N, L)."""
    counts = torch.nn.functional.one_hot(codes.long(), one_hot.shape[2]).sum(0)  # (N, L)
    tied = counts == counts.max(1, keepdim=True).values
    average = one_hot.double().mean(0)
    return torch.where(tied, average, -math.inf).argmax(1).double()


def interval_rule(draws: int, level: float) -> int:
    """The order statistic i (1-based) whose pair [x_(i), x_(K+1-i)] of K = ``draws`` draws covers a further draw with
    probability >= ``level``, or 0 where none does and the Gaussian bounds stand in (module doc)."""
    if not (isinstance(level, (int, float)) and 0 < level < 1):
        raise InputError(f"the interval level must be a number between 0 and 1 (e.g. 0.9), got {level!r}")
    if check_int("draws", draws, 1) < 2:
        raise InputError("an interval needs at least 2 draws (--draws)")
    return math.floor((draws + 1) * (1 - level) / 2 + 1e-9)  # 1e-9: (1 - 0.9) / 2 * 20 is 0.99999...


def intervals(draws_model: torch.Tensor, level: float, transform) -> tuple[torch.Tensor, torch.Tensor]:
    """(lower, upper), each (N, C) float64 in the data's units: the level-``level`` interval of each cell from its K
    draws ``draws_model`` (K, N, D) in model units (module doc); NaN in the columns that are not NUMERIC."""
    K = len(draws_model)
    i = interval_rule(K, level)
    y = draws_model.double()
    if i:
        ordered = y.sort(0).values
        low, high = ordered[i - 1], ordered[K - i]
    else:  # mean +- t_{K-1, (1+l)/2} s sqrt(1 + 1/K)
        half = float(stdtrit(K - 1, (1 + level) / 2)) * math.sqrt(1 + 1 / K) * y.std(0)
        low, high = y.mean(0) - half, y.mean(0) + half
    return in_data_units(low, high, transform)


def in_data_units(low: torch.Tensor, high: torch.Tensor, transform) -> tuple[torch.Tensor, torch.Tensor]:
    """(lower, upper) (N, C) float64: model-unit bounds (N, D) mapped by the transform's inverse (increasing in each
    numeric column); NaN in the columns that are not NUMERIC."""
    kinds, _ = column_layout(transform)
    numeric = torch.tensor([kind in NUMERIC for kind in kinds])
    lower, upper = (torch.where(numeric, transform.inverse(b).double(), math.nan) for b in (low, high))
    return lower, upper


def conformal_quantile(scores, level: float) -> float | None:
    """The ceil((n + 1) ``level``)-th smallest of the n held-out ``scores``, or None where n is too small for it."""
    k = math.ceil((len(scores) + 1) * level - 1e-9)  # 1e-9: (n + 1) 0.9 may land a hair above a whole number
    return sorted(scores)[k - 1] if 1 <= k <= len(scores) else None


def calibrated_intervals(draws_model: torch.Tensor, level: float, transform, scores) -> tuple[torch.Tensor,
                                                                                              torch.Tensor]:
    """(lower, upper) (N, C) as :func:`intervals`, split-conformal (module doc): mean +- q s from the K draws
    ``draws_model`` (K >= 2), q = :func:`conformal_quantile` of the held-out ``scores`` (which must give one)."""
    interval_rule(len(draws_model), level)  # the same checks of level and K
    q = conformal_quantile(scores, level)
    y = draws_model.double()
    mean, half = y.mean(0), q * y.std(0)
    return in_data_units(mean - half, mean + half, transform)


@dataclass
class Imputation:
    """The result of :func:`impute`, in the data's units (float64; a table's codes): ``filled`` (N, C), the rows with
    each missing cell's point estimate and each observed cell as given; ``draws`` (K, N, C), the K completions (the
    observed cells as given); ``missing`` (N, C) bool; ``draws_model`` (K, N, D), the draws in model units; the
    model's ``transform``; ``scores``: the held-out scores of the method that drew them, if the model's training
    recorded them (module doc)."""

    filled: torch.Tensor
    draws: torch.Tensor
    missing: torch.Tensor
    draws_model: torch.Tensor
    transform: object
    scores: list[float] | None = None

    def calibrated(self, level: float) -> bool:
        """Whether the level-``level`` intervals are split-conformal (module doc), not the draws' own."""
        return bool(self.scores) and conformal_quantile(self.scores, level) is not None

    def intervals(self, level: float) -> tuple[torch.Tensor, torch.Tensor]:
        """(lower, upper) (N, C): the level-``level`` interval of each missing cell of a NUMERIC column (NaN
        elsewhere), from the draws, calibrated on the held-out scores where there are enough (module doc)."""
        lower, upper = calibrated_intervals(self.draws_model, level, self.transform, self.scores) \
            if self.calibrated(level) else intervals(self.draws_model, level, self.transform)
        return torch.where(self.missing, lower, math.nan), torch.where(self.missing, upper, math.nan)


def impute_with(sampling: Plan, x, draws: int = DEFAULT_DRAWS, *, method: str | None = None,
                steps: int | None = None, spacing: str = DEFAULT_SPACING, seed: int = 0, batch_size: int = 10_000,
                jump_length: int = JUMP_LENGTH, jump_n_sample: int = JUMP_N_SAMPLE, labels: torch.Tensor | None = None,
                callback=None) -> Imputation:
    """Impute the rows ``x`` (N, C) in the data's units (a table's codes), NaN = missing, with the checked sampling
    settings ``sampling``: K = ``draws`` completions by ``method`` (None: :func:`default_method`) and their point
    estimates (module doc). A class-conditional model completes each row given its class, ``labels`` (N,) long, or
    without them its null label's unconditional model."""
    model = sampling.model
    kinds, _ = column_layout(model.transform)
    x = torch.as_tensor(x, dtype=torch.float64)
    if x.ndim != 2 or x.shape[1] != len(kinds):
        raise InputError(f"the rows to impute must be (N, {len(kinds)}), one value per column, got shape "
                         f"{tuple(x.shape)}")
    missing = torch.isnan(x)
    denoiser, options = sampling.denoiser(None, len(x))

    def conditional(rows):  # the denoiser given the classes of the input rows a batch completes
        return sampler_inputs(model, sampling.sampler, sampling.options, labels[rows], sampling.guidance)[0]

    method = method or default_method(model, sampling.sampler)
    default = impute_steps(method, model.schedule.T)
    scored = sampling.sampler == DEFAULT_SAMPLER and steps in (None, default) and \
        (method != "repaint" or (jump_length, jump_n_sample) == (JUMP_LENGTH, JUMP_N_SAMPLE))  # as the check drew
    steps = default if steps is None else steps
    draws_model = impute_draws(denoiser, model.schedule, model.transform.forward(x).float(), draws, method=method,
                               sampler=sampling.sampler, steps=steps, spacing=spacing,
                               grid_options=sampling.grid_options, seed=seed, batch_size=batch_size,
                               jump_length=jump_length, jump_n_sample=jump_n_sample, callback=callback,
                               denoiser_of=None if labels is None else conditional, **options)
    decoded = model.transform.inverse(draws_model.flatten(0, 1).double()).double().view(draws, *x.shape)
    draw_codes = torch.where(missing, decoded, x)
    filled = torch.where(missing, point_estimate(draw_codes, draws_model, model.transform), x)
    scores = ((model.imputation or {}).get("scores") or {}).get(method) if scored else None
    return Imputation(filled, draw_codes, missing, draws_model, model.transform, scores)


@torch.no_grad()
def impute(model: SavedModel, x, draws: int = DEFAULT_DRAWS, *, method: str | None = None,
           sampler: str = DEFAULT_SAMPLER, steps: int | None = None, spacing: str = DEFAULT_SPACING, seed: int = 0,
           batch_size: int = 10_000, jump_length: int = JUMP_LENGTH, jump_n_sample: int = JUMP_N_SAMPLE,
           clip_x0: bool | None = None, progress: bool = False, **options) -> Imputation:
    """The missing values (NaN) of the rows ``x`` (N, C) in the data's units (a table's codes) imputed from ``draws``
    completions by ``model``: what ``gaussdiff impute`` computes with the same settings, whose defaults these are;
    ``options``: the sampler's own (``variance``, ``eta``, ...). Example::

        from gaussdiff.imputation import impute
        from gaussdiff.saved import load_model
        result = impute(load_model("runs/iris"), rows_with_nan, draws=10, seed=0)
        result.filled                      # (N, C): the point estimates where x was NaN, x elsewhere
        lower, upper = result.intervals(0.9)
    """
    sampling = plan(model, sampler, options, clip=clip_x0)
    with tqdm(desc="impute", unit="move", disable=not progress) as bar:
        return impute_with(sampling, x, draws, method=method, steps=steps, spacing=spacing, seed=seed,
                           batch_size=batch_size, jump_length=jump_length, jump_n_sample=jump_n_sample,
                           callback=lambda *_: bar.update())
