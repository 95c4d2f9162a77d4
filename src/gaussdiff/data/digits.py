"""scikit-learn's bundled digits: 1,797 grayscale 8x8 images with 17 levels (0..16) and their labels 0..9,
split once and for all into 1,500 training images and 297 held out (a permutation under a fixed seed)."""

from __future__ import annotations

import numpy as np
from sklearn.datasets import load_digits

LEVELS = 17
N_TRAIN = 1500
SPLIT_SEED = 20261207  # the permutation that splits them; never change it (it defines the held-out set)
CLASSES = [str(k) for k in range(10)]


def digits_split(split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 (N, 1, 8, 8) with values 0..16, labels int64 (N,)) of the 'train' (1,500) or 'test' (297)
    split, in the order of the fixed permutation."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    bunch = load_digits()
    order = np.random.default_rng(SPLIT_SEED).permutation(len(bunch.target))
    rows = order[:N_TRAIN] if split == "train" else order[N_TRAIN:]
    images = bunch.images[rows].astype(np.uint8)[:, None]  # sklearn stores the integers 0..16 as float64
    return images, bunch.target[rows].astype(np.int64)
