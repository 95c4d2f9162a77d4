"""Image quality offline: a small feature network (JSON config + safetensors weights, never a pickle), the Frechet
distance in its feature space, and the numbers that keep an FD honest.

FD against the training images rewards memorising them, so a report gives beside it: the FD against held-out
images at their own n, its floor (held-out against as many training images), the share of samples that are exact
copies of a training image, and the median distance from a sample to its nearest training image beside the held-out
images' own. ``digits_report`` does all of it for the built-in digits with the shipped classifier
(``assets/digits_classifier.json``, trained by ``benchmarks/digits_classifier.py`` on the training split only).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from torch import nn

from .atomic import write_atomically, write_text_atomically
from .data.digits import LEVELS, digits_split
from .data.files import read_npy
from .errors import InputError
from .transforms import Pixels

DIGITS_NET = Path(__file__).parent / "assets" / "digits_classifier.json"
KINDS = ("cnn",)
FLOOR_DRAWS = 10  # training subsets the floor's mean and sd are taken over (seeds 0..9; seed 0 is the headline)
_FIELDS = {"kind": str, "input_shape": list, "levels": int, "channels": list, "pools": list, "feature_dim": int,
           "classes": list, "feature_layer": str, "weights": str}


# ---------------------------------------------------------------------------------------------
# The feature network.

def _positive_ints(value, length: int | None = None) -> bool:
    """Whether value is a list of integers >= 1 (of the given length)."""
    return (isinstance(value, list) and (length is None or len(value) == length)
            and all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in value))


def _check_config(config, where: str) -> dict:
    """The config if it describes a network of a known kind; InputError naming ``where`` and the field otherwise."""
    if not isinstance(config, dict):
        raise InputError(f"{where}: a feature-net config must be a JSON object, got {type(config).__name__}")
    for key, kind in _FIELDS.items():
        if not isinstance(config.get(key), kind) or isinstance(config.get(key), bool):
            raise InputError(f"{where}: field {key!r} must be a {kind.__name__}, got {config.get(key)!r}")
    if config["kind"] not in KINDS:
        raise InputError(f"{where}: unknown feature-net kind {config['kind']!r}; known: {', '.join(KINDS)}")
    checks = [("input_shape", _positive_ints(config["input_shape"], 3), "(channels, height, width) of integers >= 1"),
              ("levels", 2 <= config["levels"] <= 65536, "an integer in [2, 65536]"),
              ("channels", _positive_ints(config["channels"]) and len(config["channels"]) > 0,
               "a non-empty list of integers >= 1"),
              ("pools", _positive_ints(config["pools"], len(config["channels"])),
               "one pooling factor >= 1 per entry of 'channels'"),
              ("feature_dim", config["feature_dim"] >= 1, "an integer >= 1"),
              ("weights", Path(config["weights"]).name == config["weights"], "a file name beside the config"),
              ("classes", len(config["classes"]) >= 2 and all(isinstance(c, str) for c in config["classes"]),
               "a list of >= 2 class names")]
    for key, ok, expected in checks:
        if not ok:
            raise InputError(f"{where}: field {key!r} must be {expected}, got {config[key]!r}")
    return config


def build_cnn(config: dict, where: str) -> nn.Sequential:
    """[conv3x3-relu(-maxpool p)] per entry of channels/pools, flatten, feature = linear(feature_dim), feature_relu,
    logits = linear(classes): every layer named, so ``feature_layer`` can name where the features are read."""
    (c, h, w), layers = config["input_shape"], OrderedDict()
    for i, (width, pool) in enumerate(zip(config["channels"], config["pools"])):
        layers[f"conv{i}"], layers[f"relu{i}"] = nn.Conv2d(c, width, 3, padding=1), nn.ReLU()
        if h % pool or w % pool:
            raise InputError(f"{where}: pooling factor {pool} of layer {i} does not divide the {h}x{w} maps")
        if pool > 1:
            layers[f"pool{i}"] = nn.MaxPool2d(pool)
        c, h, w = width, h // pool, w // pool
    layers["flatten"] = nn.Flatten()
    layers["feature"], layers["feature_relu"] = nn.Linear(c * h * w, config["feature_dim"]), nn.ReLU()
    layers["logits"] = nn.Linear(config["feature_dim"], len(config["classes"]))
    if config["feature_layer"] not in layers:
        raise InputError(f"{where}: feature_layer {config['feature_layer']!r} is not a layer; layers: "
                         f"{', '.join(layers)}")
    return nn.Sequential(layers)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _read_weights(path: Path) -> tuple[dict[str, torch.Tensor], bytes]:
    """(tensors, raw bytes) of a safetensors file; InputError naming it if it is missing or unreadable."""
    try:
        data = path.read_bytes()
        return load_safetensors(data), data
    except FileNotFoundError:
        raise InputError(f"{path}: no such file (the feature net's weights)") from None
    except (OSError, SafetensorError, ValueError, RuntimeError) as e:
        raise InputError(f"{path}: not a readable safetensors file ({' '.join(str(e).split())})") from None


def _check_state(state: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], path: Path) -> None:
    """InputError naming the first missing, unexpected, misshapen or non-finite tensor."""
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if missing or unexpected:
        raise InputError(f"{path}: weights do not match the config: missing {missing or 'none'}, "
                         f"unexpected {unexpected or 'none'}")
    for key, value in expected.items():
        if state[key].shape != value.shape:
            raise InputError(f"{path}: tensor {key!r} has shape {tuple(state[key].shape)}, the config needs "
                             f"{tuple(value.shape)}")
        if not state[key].is_floating_point() or not torch.isfinite(state[key]).all():
            raise InputError(f"{path}: tensor {key!r} is not finite floating point")


class FeatureNet:
    """An image classifier whose ``feature_layer`` output is the feature space of FD; it reads integer images
    (N, C, H, W) with values 0..levels-1 and maps them to [-1, 1] (``Pixels``) itself."""

    def __init__(self, config: dict, where: str = "feature net"):
        self.config = _check_config(config, where)
        self.module = build_cnn(config, where).eval()
        self.pixels = Pixels(config["input_shape"], config["levels"])
        self.path: Path | None = None

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(self.config["input_shape"])

    @property
    def levels(self) -> int:
        return self.config["levels"]

    @property
    def classes(self) -> list[str]:
        return self.config["classes"]

    @property
    def stated_accuracy(self) -> float | None:
        """The held-out accuracy its config states (``heldout.accuracy``), if any."""
        heldout = self.config.get("heldout")
        return heldout.get("accuracy") if isinstance(heldout, dict) else None

    @classmethod
    def load(cls, json_path: str | os.PathLike) -> FeatureNet:
        """The network a JSON config describes, with the safetensors weights it names (beside it)."""
        json_path = Path(json_path)
        try:
            config = json.loads(json_path.read_text())
        except FileNotFoundError:
            raise InputError(f"{json_path}: no such file (a feature net's JSON config)") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise InputError(f"{json_path}: not a readable JSON config ({' '.join(str(e).split())})") from None
        net = cls(config, str(json_path))
        weights = json_path.parent / config["weights"]
        state, data = _read_weights(weights)
        if "weights_sha256" in config and _sha256(data) != config["weights_sha256"]:
            raise InputError(f"{weights}: its SHA-256 differs from the one {json_path.name} states (a changed file)")
        _check_state(state, net.module.state_dict(), weights)
        net.module.load_state_dict(state)
        net.path = json_path
        return net

    def save(self, json_path: str | os.PathLike, **stamp) -> None:
        """Write the weights (safetensors, named in the config) and the config with ``stamp`` (e.g. accuracy and
        provenance) and the weights' SHA-256 merged in, both atomically, the weights first."""
        json_path = Path(json_path)
        data = save_safetensors({k: v.detach().contiguous() for k, v in self.module.state_dict().items()})
        write_atomically(json_path.parent / self.config["weights"], lambda f: f.write(data))
        self.config = {**self.config, **stamp, "weights_sha256": _sha256(data)}
        write_text_atomically(json_path, json.dumps(self.config, indent=2) + "\n")

    def check_images(self, images, what: str = "images") -> np.ndarray:
        """``images`` as an integer array (N, C, H, W): (N, H, W) is taken for one channel; values must be the
        integers 0..levels-1 (integral floats are accepted); InputError naming ``what`` otherwise."""
        array = np.asarray(images.detach().cpu() if torch.is_tensor(images) else images)
        if array.ndim == 3 and self.input_shape[0] == 1:
            array = array[:, None]
        c, h, w = self.input_shape
        if array.ndim != 4 or array.shape[1:] != self.input_shape:
            expected = f"(N, {c}, {h}, {w})" + (f" or (N, {h}, {w})" if c == 1 else "")
            raise InputError(f"{what}: images of shape {array.shape}; the feature net takes {expected}")
        if array.dtype.kind not in "biuf":
            raise InputError(f"{what}: holds {array.dtype} values; expected the integer levels 0..{self.levels - 1}")
        if len(array) == 0:
            raise InputError(f"{what}: no images")
        in_range = np.isfinite(array).all() and array.min() >= 0 and array.max() <= self.levels - 1
        if not in_range or (array.dtype.kind == "f" and (array != np.round(array)).any()):
            raise InputError(f"{what}: values must be the integer levels 0..{self.levels - 1} of the data "
                             f"(quantized); got values in [{array.min()}, {array.max()}]")
        return array.astype(np.uint8 if self.levels <= 256 else np.int32)

    @torch.no_grad()
    def _run(self, images, upto: str, batch_size: int = 1024) -> np.ndarray:
        """Outputs of the layers up to and including ``upto`` for the images, float64 (N, ...)."""
        x = torch.from_numpy(self.check_images(images).astype(np.int32))
        out = []
        for chunk in x.split(batch_size):
            h = self.pixels.forward(chunk).float()
            for name, layer in self.module.named_children():
                h = layer(h)
                if name == upto:
                    break
            out.append(h.double())
        return torch.cat(out).numpy()

    def features(self, images) -> np.ndarray:
        """The ``feature_layer`` output: float64 (N, feature_dim or the layer's width)."""
        return self._run(images, self.config["feature_layer"]).reshape(len(images), -1)

    def predict(self, images) -> np.ndarray:
        """The most likely class index of each image, int64 (N,)."""
        return self._run(images, "logits").argmax(axis=1)


def load_images(path: str | os.PathLike, net: FeatureNet) -> np.ndarray:
    """The images of a .npy file (never unpickled) checked against ``net`` (``FeatureNet.check_images``)."""
    path = Path(path)
    if path.suffix.lower() != ".npy":
        raise InputError(f"{path}: expected a .npy file of images")
    return net.check_images(read_npy(path), str(path))


def digits_net() -> FeatureNet:
    """The shipped digits classifier (its held-out accuracy is in its JSON)."""
    return FeatureNet.load(DIGITS_NET)


# ---------------------------------------------------------------------------------------------
# Metrics.

def _psd_sqrt(s: np.ndarray) -> np.ndarray:
    """S^{1/2} of a symmetric positive semi-definite matrix: V diag(sqrt(max(w, 0))) V^T from S = V diag(w) V^T."""
    w, v = np.linalg.eigh(s)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def frechet_distance(f1, f2) -> float:
    """FD = |mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1^{1/2} S2 S1^{1/2})^{1/2}) between Gaussians with the sample means and
    covariances (ddof 1) of two feature sets (N1, D), (N2, D), in float64.

    S^{1/2} comes from the symmetric eigendecomposition (negative rounding clipped to 0). As S1^{1/2} S2 S1^{1/2} =
    A^T A with A = S2^{1/2} S1^{1/2}, the trace of its root is the sum of A's singular values: no square root of the
    product's tiny eigenvalues, which carry sqrt(eps) |S| of error where a covariance is singular (dead units, n < D).
    """
    f1, f2 = (np.asarray(f, dtype=np.float64) for f in (f1, f2))
    if f1.ndim != 2 or f2.ndim != 2 or f1.shape[1] != f2.shape[1] or min(len(f1), len(f2)) < 2:
        raise InputError(f"FD needs two feature sets (N, D) with the same D and N >= 2, got {f1.shape} and {f2.shape}")
    mu1, mu2 = f1.mean(axis=0), f2.mean(axis=0)
    s1, s2 = np.atleast_2d(np.cov(f1, rowvar=False)), np.atleast_2d(np.cov(f2, rowvar=False))
    cross = np.linalg.svd(_psd_sqrt(s2) @ _psd_sqrt(s1), compute_uv=False).sum()
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * cross)


def class_histogram(net: FeatureNet, images) -> np.ndarray:
    """How many images the net assigns to each of its classes, int64 (classes,)."""
    return np.bincount(net.predict(images), minlength=len(net.classes))


def _flat_ints(images, what: str) -> np.ndarray:
    """Integer images flattened to int64 rows (N, D); InputError for floating values."""
    array = np.asarray(images.detach().cpu() if torch.is_tensor(images) else images)
    if array.dtype.kind not in "biu":
        raise InputError(f"{what}: needs quantized images (integer levels), got {array.dtype}")
    return array.reshape(len(array), -1).astype(np.int64)


def exact_copies(samples, train) -> float:
    """The share of samples equal, level for level, to some training image (integer arrays of equal image shape)."""
    samples, train = _flat_ints(samples, "exact_copies"), _flat_ints(train, "exact_copies")
    if samples.shape[1] != train.shape[1]:
        raise InputError(f"exact_copies: images of {samples.shape[1]} and {train.shape[1]} values")
    seen = {row.tobytes() for row in train}
    return float(np.mean([row.tobytes() in seen for row in samples]))


def nearest_train_distance(images, train, levels: int, chunk: int = 1024) -> np.ndarray:
    """min over training images y of |x - y|_2 / (levels - 1): the L2 distance from each image to its nearest training
    image with pixels scaled to [0, 1], float64 (N,). |x - y|^2 = |x|^2 + |y|^2 - 2 x.y is exact here: integer
    levels, sums far below 2^53."""
    x, y = (_flat_ints(a, "nearest_train_distance").astype(np.float64) for a in (images, train))
    if x.shape[1] != y.shape[1]:
        raise InputError(f"nearest_train_distance: images of {x.shape[1]} and {y.shape[1]} values")
    y2 = (y ** 2).sum(axis=1)
    chunks = np.split(x, range(chunk, len(x), chunk))
    d2 = [((c ** 2).sum(axis=1)[:, None] + y2 - 2 * c @ y.T).min(axis=1) for c in chunks]
    return np.sqrt(np.concatenate(d2)) / (levels - 1)


# ---------------------------------------------------------------------------------------------
# Reports.

def floor_draws(f_heldout: np.ndarray, f_train: np.ndarray, draws: int = FLOOR_DRAWS) -> list[float]:
    """FD of the held-out features against those of ``len(f_heldout)`` training images drawn without replacement
    under seeds 0..draws-1: what real images score at the held-out n (the first is the headline floor)."""
    n = len(f_heldout)
    if len(f_train) < n:
        raise InputError(f"the floor needs at least {n} training images (as many as held out), got {len(f_train)}")
    subsets = (np.random.default_rng(seed).choice(len(f_train), n, replace=False) for seed in range(draws))
    return [frechet_distance(f_heldout, f_train[rows]) for rows in subsets]


def score_report(samples, train, net: FeatureNet, heldout=None) -> dict:
    """FD of the samples against the training images, exact copies, nearest-training distances and the class
    histogram; with held-out images also the FD against them at their n (the first len(heldout) samples), its floor
    and the held-out images' own copies and distances. Every value is a plain JSON type."""
    samples, train = net.check_images(samples, "samples"), net.check_images(train, "training images")
    f_samples, f_train = net.features(samples), net.features(train)
    nearest = nearest_train_distance(samples, train, net.levels)
    report = {"feature_net": str(net.path) if net.path else None,
              "feature_net_heldout_accuracy": net.stated_accuracy,
              "samples": len(samples), "train_images": len(train),
              "fd_train": frechet_distance(f_samples, f_train),
              "exact_copies": exact_copies(samples, train),
              "nearest_train_median": float(np.median(nearest)),
              "classes": list(net.classes), "class_histogram": class_histogram(net, samples).tolist()}
    if heldout is None:
        return report
    heldout = net.check_images(heldout, "held-out images")
    n = len(heldout)
    if len(samples) < n:
        raise InputError(f"the held-out FD is taken at n = {n} (the held-out images): need at least {n} samples, "
                         f"got {len(samples)}")
    f_heldout = net.features(heldout)
    floors = floor_draws(f_heldout, f_train)
    heldout_nearest = float(np.median(nearest_train_distance(heldout, train, net.levels)))
    return {**report, "heldout_images": n,
            "fd_heldout": frechet_distance(f_samples[:n], f_heldout),
            "floor": floors[0], "floor_mean": float(np.mean(floors)), "floor_sd": float(np.std(floors, ddof=1)),
            "floor_draws": len(floors),
            "fd_heldout_vs_train": frechet_distance(f_heldout, f_train),
            "heldout_exact_copies": exact_copies(heldout, train),
            "heldout_nearest_train_median": heldout_nearest,
            "nearest_ratio": report["nearest_train_median"] / heldout_nearest}


def digits_report(samples, net: FeatureNet | None = None) -> dict:
    """``score_report`` of digit samples (integer levels 0..16, (N, 1, 8, 8) or (N, 8, 8), N >= 297) against the
    1,500 training and the 297 held-out digits, in the feature space of ``net`` (default: the shipped classifier)."""
    net = net or digits_net()
    if net.input_shape != (1, 8, 8) or net.levels != LEVELS:
        raise InputError(f"{net.path or 'feature net'}: takes {net.input_shape} images with {net.levels} levels; "
                         f"the digits are (1, 8, 8) with {LEVELS}")
    (train, _), (heldout, _) = digits_split("train"), digits_split("test")
    return {"data": "digits", **score_report(samples, train, net, heldout)}
