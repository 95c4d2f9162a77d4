"""Training (layer 6): the configuration, the run folder, the batch stream, the loop."""

from .batches import GlobalBatches
from .config import TrainConfig, resolve
from .loop import lr_factor, train

__all__ = ["GlobalBatches", "TrainConfig", "lr_factor", "resolve", "train"]
