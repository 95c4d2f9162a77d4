"""Data (layer 4): built-in 2-D sets and digits, user files, the :class:`Dataset` training reads, and writers.

The map between the data's own units and the model's lives in :mod:`gaussdiff.transforms`.
"""

from ..transforms import Pixels, Standardize
from .dataset import IMAGE_BUILTIN, Batch, Dataset, is_builtin, load_dataset, load_points
from .files import check_output_path, load_array, output_folder, save_array
from .toys import BUILTIN, check_seed, eight_gaussians_params

__all__ = ["BUILTIN", "IMAGE_BUILTIN", "Batch", "Dataset", "Pixels", "Standardize", "check_output_path",
           "check_seed", "eight_gaussians_params", "is_builtin", "load_array", "load_dataset", "load_points",
           "output_folder", "save_array"]
