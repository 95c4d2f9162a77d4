"""Pictures of a run: samples over data, the forward/backward strip, the loss curve (layer 7)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from . import plots
from .chain import q_sample
from .data import load_points, output_folder
from .errors import InputError
from .sampling import sampler_inputs
from .saved import SavedModel, load_model
from .data.images import save_image_grid
from .samplers import DEFAULT_SPACING, DEFAULT_STEPS, ddpm, timestep_grid
from .samplers.guidance import clip_x0

STRIP_FRACTIONS = (0.0, 0.05, 0.1, 0.2, 0.4, 0.7, 1.0)


def strip_times(T: int) -> list[int]:
    return sorted({round(f * T) for f in STRIP_FRACTIONS})


@torch.no_grad()
def backward_states(model: SavedModel, n: int, times: list[int], generator) -> list[tuple[int, torch.Tensor]]:
    """Run ancestral sampling over all T steps and keep x_t at ``times`` (model units)."""
    keep = {}
    x_T = torch.randn(n, *model.sample_shape, generator=generator)
    keep[model.schedule.T] = x_T

    def record(i, t, x, x0_hat):
        if int(t) in times:
            keep[int(t)] = x.clone()

    denoiser, options = sampler_inputs(model, "ddpm")  # the model's own reverse variance, as ``gaussdiff sample``
    ddpm(denoiser, x_T, model.schedule, timestep_grid(model.schedule, model.schedule.T), generator=generator,
         callback=record, **options)
    return [(t, keep[t]) for t in sorted(keep, reverse=True)]


def held_out_data(model: SavedModel, n: int, seed: int) -> torch.Tensor:
    """Up to n points of the model's data set (``data.load_points``: a built-in one drawn afresh), in model units."""
    points = load_points(model.data_name, n, seed, model.sample_shape)[0]
    return model.transform.forward(points).float()  # float64 until here


def read_metrics(run: Path) -> list[dict]:
    path = run / "metrics.jsonl"
    if not path.is_file():
        return []
    try:
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    except json.JSONDecodeError as e:
        raise InputError(f"{path} is not valid JSON lines: {e}") from None


def is_image_model(model: SavedModel) -> bool:
    return len(model.sample_shape) == 3


def pictures_apply(model: SavedModel) -> bool:
    """Whether ``make_pictures`` draws this model's data: images, or vectors of 2 or more features (the first two
    are shown)."""
    return is_image_model(model) or (len(model.sample_shape) == 1 and model.sample_shape[0] >= 2)


def make_pictures(run, n: int = 2000, seed: int = 0, out=None) -> list[Path]:
    """Write the pictures of a run (or model) folder into ``out`` (default RUN/pictures): samples, the chain and
    the loss curve."""
    run = Path(run)
    model = load_model(run)
    if not pictures_apply(model):
        raise InputError("pictures are drawn for images or for data of 2 or more dimensions (the first two are shown)")
    out = output_folder(out or run / "pictures", "the picture folder")  # before the sampling: one line, no work lost
    paths = (image_pictures if is_image_model(model) else point_pictures)(model, n, seed, out)
    metrics = read_metrics(run)
    if metrics:
        paths.append(plots.loss_curve([m["step"] for m in metrics], [m["loss"] for m in metrics], out / "loss.png",
                                      lrs=[m["lr"] for m in metrics]))
    return paths


def point_pictures(model: SavedModel, n: int, seed: int, out: Path) -> list[Path]:
    """samples.png (n model samples over n data points, the first two features) and chain.png (the forward marginals
    above the backward chain's states)."""
    generator = torch.Generator().manual_seed(seed)
    data = held_out_data(model, n, seed + 1)
    T = model.schedule.T
    times = strip_times(T)
    backward = backward_states(model, n, times, generator)
    forward = [(t, q_sample(data, torch.tensor(t), model.schedule, torch.randn(data.shape, generator=generator)))
               for t in times]
    samples, data_user = model.transform.inverse(backward[-1][1].double()), model.transform.inverse(data.double())
    return [plots.samples_over_data(samples, data_user,
                                    out / "samples.png", title=f"{model.data_name}: data and model samples"),
            plots.chain_strip(forward, backward, T, out / "chain.png")]


GRID_SAMPLES, STRIP_ROWS = 64, 4


@torch.no_grad()
def image_pictures(model: SavedModel, n: int, seed: int, out: Path) -> list[Path]:
    """samples.png (a grid of GRID_SAMPLES samples of the default sampler, x0 clipped to the data's range) and
    chain.png: one column per t of STRIP_FRACTIONS (nearest on the sampler's grid); STRIP_ROWS held-out images noised
    by q(x_t | x_0), then STRIP_ROWS samples' x_t, then their predicted x_0 at that t."""
    generator, T = torch.Generator().manual_seed(seed), model.schedule.T
    sampling, options = sampler_inputs(model, "ddpm")  # the model's own reverse variance, as ``gaussdiff sample``
    sampling = clip_x0(sampling, *model.transform.model_range)
    denoiser = clip_x0(model.denoiser(), *model.transform.model_range)
    grid = timestep_grid(model.schedule, min(DEFAULT_STEPS, T), DEFAULT_SPACING)
    columns = sorted({min(grid.tolist(), key=lambda g: abs(g - f * T)) for f in STRIP_FRACTIONS}, reverse=True)
    states = {}

    def record(i, t, x, x0_hat):
        if float(t) in columns:
            states[float(t)] = x[:STRIP_ROWS].clone()

    x_T = torch.randn(GRID_SAMPLES, *model.sample_shape, generator=generator)
    record(None, float(grid[0]), x_T, None)  # x_T, before the first step
    samples = ddpm(sampling, x_T, model.schedule, grid, generator=generator, callback=record, **options)
    data = held_out_data(model, STRIP_ROWS, seed + 1)
    forward = [q_sample(data, torch.tensor(t), model.schedule, torch.randn(data.shape, generator=generator))
               for t in columns]
    x_ts = [states[t] for t in columns]
    x0s = [denoiser(x, torch.tensor(t)) if t > 0 else x for t, x in zip(columns, x_ts)]
    levels = model.transform.levels
    rows = [torch.stack(chain, 1) for chain in (forward, x_ts, x0s)]  # each (STRIP_ROWS, columns, C, H, W)
    strip = model.to_data_units(torch.cat(rows).flatten(0, 1).clamp(*model.transform.model_range))
    save_image_grid(out / "samples.png", model.to_data_units(samples).numpy(), levels)
    save_image_grid(out / "chain.png", strip.numpy(), levels, nrow=len(columns))
    return [out / "samples.png", out / "chain.png"]
