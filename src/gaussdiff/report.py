"""Pictures of a run (layer 7): samples over data (a pair plot beyond two columns), the forward/backward strip, the
loss curve.

The samples are drawn once, for both pictures, exactly as ``gaussdiff sample RUN -n N --seed S`` draws them (the
default sampler: ddpm on min(100, T) trailing steps with the model's own variance; x0 clipped for images); the strip
shows the states that run passed through. Each piece of work prints one line on stderr (what is drawn, then its
seconds). Point pictures say in their axis labels which units their axes are in: samples.png the data's own,
chain.png the model's (where the chain runs).
"""

from __future__ import annotations

import json
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from . import plots
from .chain import q_sample
from .data import load_points, output_folder
from .data.files import csv_header, label_column_index, row_format
from .data.images import save_image_grid
from .errors import InputError
from .samplers import DEFAULT_SPACING, DEFAULT_STEPS, generate, timestep_grid
from .sampling import plan
from .saved import SavedModel, find_model_dir, load_model

STRIP_FRACTIONS = (0.0, 0.05, 0.1, 0.2, 0.4, 0.7, 1.0)  # of T: the strip's columns (the nearest times on the grid)
GRID_SAMPLES, STRIP_ROWS = 64, 4  # images: samples in samples.png; rows of each kind in chain.png
# Pictures sample small batches of small networks: on 2 cores shared with other jobs, 2 threads took 4-15x the wall
# time of 1 (the default MLP on 2,000 points, the digits UNet on 64 images), and a second thread gains little on a
# quiet machine.
PICTURE_THREADS = 1


@dataclass
class Drawn:
    """Samples in model units (N, *shape) and, at the strip's times (decreasing, ending at 0), the first rows' x_t
    and the x0_hat the sampler saw there; ``settings`` says how they were drawn."""

    samples: torch.Tensor
    times: list[float]
    states: dict[float, torch.Tensor]
    x0_hats: dict[float, torch.Tensor]
    settings: str


def strip_times(grid: list[float], T: int) -> list[float]:
    """The times of the sampler's ``grid`` nearest to STRIP_FRACTIONS of T, decreasing (each once)."""
    return sorted({min(grid, key=lambda g: abs(g - f * T)) for f in STRIP_FRACTIONS}, reverse=True)


@torch.no_grad()
def draw_samples(model: SavedModel, n: int, seed: int, rows: int) -> Drawn:
    """``n`` samples as ``gaussdiff sample -n n --seed seed`` (``model.sample``) draws them, in model units, keeping
    the first ``rows`` of x_t and of x0_hat at the strip's times as the denoiser is called there (the final samples
    at t = 0)."""
    chosen = plan(model)  # the command's defaults: sampler, the model's own variance, the x0 clamp of images
    denoiser, options = chosen.denoiser(None, n)
    steps = min(DEFAULT_STEPS, model.schedule.T)
    times = strip_times(timestep_grid(model.schedule, steps, DEFAULT_SPACING).tolist(), model.schedule.T)
    states, x0_hats = {}, {}

    def watched(x, t):
        out = denoiser(x, t)
        if float(t) in times:
            states[float(t)] = x[:rows].clone()
            x0_hats[float(t)] = (out[0] if isinstance(out, tuple) else out)[:rows].clone()  # a reverse model's pair
        return out

    x = generate(watched, (n, *model.sample_shape), model.schedule, sampler=chosen.sampler, steps=steps,
                 spacing=DEFAULT_SPACING, seed=seed, **options)
    states[0.0] = x0_hats[0.0] = x[:rows]
    settings = ", ".join(f"{k} {v}" for k, v in options.items())
    unconditional = ", unconditional" if model.conditioning else ""
    return Drawn(x, times, states, x0_hats,
                 f"{chosen.sampler} ({settings}), {steps} {DEFAULT_SPACING} steps, seed {seed}{unconditional}")


class Progress:
    """One line on stderr per piece of work: what is drawn, then, on the same line, its seconds."""

    def __init__(self, on: bool = True):
        self.on, self.start = on, time.perf_counter()

    def write(self, text: str) -> None:
        if self.on:
            sys.stderr.write(text)
            sys.stderr.flush()

    @contextmanager
    def __call__(self, what: str):
        start = time.perf_counter()
        self.write(f"pictures: {what} ...")
        try:
            yield
        except BaseException:
            self.write(" failed\n")
            raise
        self.write(f" {time.perf_counter() - start:.1f} s\n")

    def note(self, text: str) -> None:
        self.write(f"pictures: {text}\n")


@contextmanager
def torch_threads(n: int):
    """Run the block on ``n`` torch CPU threads, then restore the count."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def run_folder(path) -> Path | None:
    """The run folder of a run or of its model/ folder (None for a model folder outside a run)."""
    folder = find_model_dir(path)
    return folder.parent if folder.name == "model" and (folder.parent / "config.json").is_file() else None


def training_config(run: Path | None) -> dict:
    """RUN/config.json, the options a run was trained with ({} where there is none, or it is not readable)."""
    try:
        config = json.loads((run / "config.json").read_text()) if run else {}
    except (OSError, UnicodeDecodeError, ValueError):
        return {}
    return config if isinstance(config, dict) else {}


def read_metrics(run: Path | None) -> list[dict]:
    path = run / "metrics.jsonl" if run else None
    if path is None or not path.is_file():
        return []
    try:
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    except json.JSONDecodeError as e:
        raise InputError(f"{path} is not valid JSON lines: {e}") from None


def picture_data(model: SavedModel, config: dict, n: int, seed: int) -> tuple[torch.Tensor | None, str]:
    """(up to n points of the model's data, float64 in the data's own units (``data.load_points``: a built-in set
    drawn afresh under ``seed``, digits' held-out split, n rows of a file without the run's label column), "");
    (None, why) where they cannot be read as the model's samples (a file gone or changed): then the pictures show
    the samples alone."""
    try:
        column = config.get("label_column")
        points = load_points(model.data_name, n, seed, model.sample_shape, model.table, column)[0]
        if column is not None and points.ndim == 2 and model.table is None:
            j = label_column_index(str(column), csv_header(model.data_name), points.shape[1], model.data_name)
            points = points[:, [c for c in range(points.shape[1]) if c != j]]
    except InputError as e:
        return None, str(e)
    if tuple(points.shape[1:]) != model.data_shape:
        return None, (f"{model.data_name} has samples of shape {list(points.shape[1:])}, the model "
                      f"{list(model.data_shape)}")
    return points, ""


def column_names(model: SavedModel, config: dict) -> list[str] | None:
    """A vector model's column names: those it recorded, else (an older model) the header of the run's data file
    while it exists, without its label column; None (plots number them) where neither is known."""
    if model.header is not None:
        return model.header
    try:
        return row_format(config.get("data", model.data_name), config.get("label_column"),
                          np.empty((0, model.sample_shape[0])))[0]
    except InputError:  # the file is gone or unreadable
        return None


def is_image_model(model: SavedModel) -> bool:
    return len(model.sample_shape) == 3


def pictures_apply(model: SavedModel) -> bool:
    """Whether ``make_pictures`` draws this model's data: images, or vectors of 2 or more features."""
    return is_image_model(model) or (len(model.sample_shape) == 1 and model.data_shape[0] >= 2)


def make_pictures(run, n: int = 2000, seed: int = 0, out=None, threads: int | None = None,
                  progress: bool = True) -> list[Path]:
    """Write the pictures of a run (or model) folder into ``out`` (default RUN/pictures): samples, the chain and
    the loss curve, on ``threads`` torch threads (None: PICTURE_THREADS; the count is restored after), one progress
    line per picture on stderr unless ``progress`` is False."""
    run = Path(run)
    model = load_model(run)
    if not pictures_apply(model):
        raise InputError("pictures are drawn for images or for data of 2 or more dimensions")
    out = output_folder(out or run / "pictures", "the picture folder")  # before the sampling: one line, no work lost
    folder = run_folder(run)
    config, metrics, say = training_config(folder), read_metrics(folder), Progress(progress)
    with torch_threads(threads or PICTURE_THREADS):
        paths = (image_pictures if is_image_model(model) else point_pictures)(model, config, n, seed, out, say)
        if metrics:
            with say("loss.png"):
                paths.append(plots.loss_curve([m["step"] for m in metrics], [m["loss"] for m in metrics],
                                              out / "loss.png", lrs=[m["lr"] for m in metrics]))
        say.note(f"{len(paths)} in {out} in {time.perf_counter() - say.start:.1f} s "
                 f"({torch.get_num_threads()} torch thread(s))")
    return paths


def samples_and_data(model: SavedModel, config: dict, n: int, rows: int, seed: int, say: Progress, what: str):
    """(the ``n`` samples the pictures show, with the states of their first ``rows``; ``rows`` data points to draw
    beside them, or None where the data cannot be read, said by a note)."""
    with say(f"sampling {n} {what}"):
        drawn = draw_samples(model, n, seed, rows=rows)
    say.note(f"samples: {drawn.settings}")
    data, why = picture_data(model, config, rows, seed + 1)
    if data is None:
        say.note(f"data not drawn: {why}")
    return drawn, data


def point_pictures(model: SavedModel, config: dict, n: int, seed: int, out: Path, say: Progress) -> list[Path]:
    """samples.png (n samples over n data points in the data's units: the two columns, or a pair plot of the first
    plots.PAIR_COLUMNS) and chain.png (the forward marginals above the sampler's states, first two columns, in
    model units)."""
    drawn, data = samples_and_data(model, config, n, n, seed, say, "points")
    names, dims = column_names(model, config), model.data_shape[0]
    title = f"{Path(model.data_name).name}: {'model samples' if data is None else 'data and model samples'}\n" \
            f"{drawn.settings}"
    pair = dims > 2
    with say("samples.png" + (f" (pairs of the first {min(dims, plots.PAIR_COLUMNS)} of {dims} columns)"
                              if pair else "")):
        draw = plots.pair_plot if pair else plots.samples_over_data
        paths = [draw(model.to_data_units(drawn.samples), data, out / "samples.png", title=title, columns=names,
                      units=plots.DATA_UNITS)]
    generator = torch.Generator().manual_seed(seed)
    y = None if data is None else model.transform.forward(data).float()  # a table's missing cells: NaN, not drawn
    forward = [] if y is None else [
        (t, q_sample(y, torch.tensor(t), model.schedule, torch.randn(y.shape, generator=generator)))
        for t in drawn.times]
    with say("chain.png"):
        paths.append(plots.chain_strip(forward, [(t, drawn.states[t]) for t in drawn.times], model.schedule.T,
                                       out / "chain.png", columns=model.table.entry_names if model.table else names,
                                       units=plots.MODEL_UNITS,
                                       title=f"diffusion chain over T = {model.schedule.T} steps\nbackward: "
                                             f"{drawn.settings}"))
    return paths


@torch.no_grad()
def image_pictures(model: SavedModel, config: dict, n: int, seed: int, out: Path, say: Progress) -> list[Path]:
    """samples.png (a grid of GRID_SAMPLES samples, ``n`` unused) and chain.png: one column per strip time;
    STRIP_ROWS held-out images noised by q(x_t | x_0) (when the data can be read), then STRIP_ROWS samples' x_t,
    then the x_0 the sampler predicted at that t."""
    drawn, data = samples_and_data(model, config, GRID_SAMPLES, STRIP_ROWS, seed, say, "images")
    levels, generator = model.transform.levels, torch.Generator().manual_seed(seed)
    with say("samples.png"):
        save_image_grid(out / "samples.png", model.to_data_units(drawn.samples).numpy(), levels)
    chains = [[drawn.states[t] for t in drawn.times], [drawn.x0_hats[t] for t in drawn.times]]
    if data is not None:
        x0 = model.transform.forward(data).float()
        chains.insert(0, [q_sample(x0, torch.tensor(t), model.schedule, torch.randn(x0.shape, generator=generator))
                          for t in drawn.times])
    rows = [torch.stack(chain, 1) for chain in chains]  # each (rows, columns, C, H, W)
    strip = model.to_data_units(torch.cat(rows).flatten(0, 1).clamp(*model.transform.model_range))
    with say("chain.png"):
        save_image_grid(out / "chain.png", strip.numpy(), levels, nrow=len(drawn.times))
    return [out / "samples.png", out / "chain.png"]
