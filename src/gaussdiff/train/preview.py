"""Grids of samples drawn while training on images, so a user sees the model take shape (as TensorBoard users
watch image summaries): RUN/pictures/preview_STEP.png, every ``preview_every`` steps, from the EMA weights."""

from __future__ import annotations

from pathlib import Path

import torch

from ..data.images import save_image_grid
from ..samplers import generate
from ..samplers.guidance import clip_x0
from ..saved import SavedModel

PREVIEW_SAMPLES = 64
PREVIEW_SEED = 0  # the same x_T at every step: the grids show one set of samples improving


@torch.no_grad()
def write_preview(model: SavedModel, run: Path, step: int) -> Path:
    """Draw PREVIEW_SAMPLES images with the default sampler (x0 clipped to the data's range) and write their grid.
    The network is put in eval mode for the draw (no dropout, so the global random stream is untouched) and its
    mode restored; the sampler's noise comes from its own generators (seeded rows), so training's stream is unchanged
    too."""
    network, was_training = model.network, model.network.training
    network.eval()
    try:
        device = next(network.parameters()).device
        x = generate(clip_x0(model.denoiser(), *model.transform.model_range), (PREVIEW_SAMPLES, *model.sample_shape),
                     model.schedule, seed=PREVIEW_SEED, device=device)
    finally:
        network.train(was_training)
    path = run / "pictures" / f"preview_{step:08d}.png"
    path.parent.mkdir(exist_ok=True)
    save_image_grid(path, model.to_data_units(x.cpu()).numpy(), model.transform.levels)
    return path
