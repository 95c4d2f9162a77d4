"""Pictures of a run: samples over data, the forward/backward strip, the loss curve (layer 7)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from . import plots
from .chain import q_sample
from .data import load_points, output_folder
from .errors import InputError
from .saved import SavedModel, load_model
from .samplers import ddpm, timestep_grid

STRIP_FRACTIONS = (0.0, 0.05, 0.1, 0.2, 0.4, 0.7, 1.0)


def strip_times(T: int) -> list[int]:
    return sorted({round(f * T) for f in STRIP_FRACTIONS})


@torch.no_grad()
def backward_states(model: SavedModel, n: int, times: list[int], generator) -> list[tuple[int, torch.Tensor]]:
    """Run ancestral sampling over all T steps and keep x_t at ``times`` (model units)."""
    keep = {}
    x_T = torch.randn(n, *model.sample_shape, generator=generator)
    keep[model.schedule.T] = x_T

    def record(t, x):
        if int(t) in times:
            keep[int(t)] = x.clone()

    variance = model.ddpm_variance  # the model's own reverse variance, as ``gaussdiff sample`` draws by default
    ddpm(model.sampling_denoiser(variance), x_T, model.schedule, timestep_grid(model.schedule, model.schedule.T),
         generator=generator, variance=variance, callback=record)
    return [(t, keep[t]) for t in sorted(keep, reverse=True)]


def held_out_data(model: SavedModel, n: int, seed: int) -> torch.Tensor:
    """Up to n points of the model's data set (``data.load_points``: a built-in one drawn afresh), in model units."""
    return model.transform.forward(load_points(model.data_name, n, seed)[0]).float()  # float64 until here


def read_metrics(run: Path) -> list[dict]:
    path = run / "metrics.jsonl"
    if not path.is_file():
        return []
    try:
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    except json.JSONDecodeError as e:
        raise InputError(f"{path} is not valid JSON lines: {e}") from None


def pictures_apply(model: SavedModel) -> bool:
    """Whether ``make_pictures`` draws this model's data: vectors of 2 or more features (the first two are shown)."""
    return len(model.sample_shape) == 1 and model.sample_shape[0] >= 2


def make_pictures(run, n: int = 2000, seed: int = 0, out=None) -> list[Path]:
    """Write the pictures of a run (or model) folder into ``out`` (default RUN/pictures)."""
    run = Path(run)
    model = load_model(run)
    if not pictures_apply(model):
        raise InputError("pictures are drawn for data of 2 or more dimensions (the first two are shown)")
    out = output_folder(out or run / "pictures", "the picture folder")  # before the sampling: one line, no work lost
    generator = torch.Generator().manual_seed(seed)
    data = held_out_data(model, n, seed + 1)
    T = model.schedule.T
    times = strip_times(T)
    backward = backward_states(model, n, times, generator)
    forward = [(t, q_sample(data, torch.tensor(t), model.schedule, torch.randn(data.shape, generator=generator)))
               for t in times]
    samples, data_user = model.transform.inverse(backward[-1][1].double()), model.transform.inverse(data.double())
    paths = [plots.samples_over_data(samples, data_user,
                                     out / "samples.png", title=f"{model.data_name}: data and model samples"),
             plots.chain_strip(forward, backward, T, out / "chain.png")]
    metrics = read_metrics(run)
    if metrics:
        paths.append(plots.loss_curve([m["step"] for m in metrics], [m["loss"] for m in metrics], out / "loss.png",
                                      lrs=[m["lr"] for m in metrics]))
    return paths
