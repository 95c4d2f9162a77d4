"""Images in and out: a folder of PNG/JPEG files or a .npy array read into uint8 (N, C, H, W), and sample grids
and folders of PNGs written atomically. Pillow and numpy only.

Reading a folder (:func:`read_images`):

- Files ending in .png, .jpg or .jpeg (any case) anywhere below the folder, in the sorted order of their relative
  paths; names starting with "." (hidden files and folders, our own temporary files) are ignored.
- Classes: when every image lies below a first-level sub-folder, that sub-folder is its class (``classes`` are the
  sorted names of the sub-folders holding image files, ``labels`` their indices, fixed before any file is decoded,
  so a class whose files are all unreadable keeps its index); when every image lies directly in the folder there
  are no labels; a mix of the two is refused.
- Each file is decoded fully (``load()``), so a truncated file fails here rather than later; EXIF orientation is
  applied (``ImageOps.exif_transpose``), as image viewers show a photo.
- Unreadable files (corrupt, truncated, zero bytes, not an image) are skipped and listed in ``skipped``; the read is
  refused when no file, or more than half of them, could be read.
- Modes: alpha (RGBA, LA, PA, a transparency key) is composited over white, out = round(a c + (1 - a) 255) with a
  in [0, 1]; 16-bit gray (I;16, I) maps v to round(v 255 / 65535); colour becomes gray by Pillow's ITU-R 601-2
  luma L = (299 R + 587 G + 114 B) / 1000; gray becomes RGB by repeating it. ``channels=None`` gives RGB when any
  image is in colour (a colour mode; a palette image whose used entries are not all gray), else L.
- Size: each image is centre-cropped to a square (the offset (W - side) // 2 rounds down) and resized to
  ``image_size`` with Pillow's Lanczos filter (antialiased: the kernel widens by the downscaling factor). With
  ``image_size=None`` all images must share one square size, kept as it is.

Reading a .npy (never unpickled): (N, H, W) is gray; (N, H, W, C) or (N, C, H, W) with C in {1, 3}, channels
last when the last axis is 1 or 3 and axis 1 is not (both or neither: refused). Without ``pixel_range``, integer
arrays must lie in 0..255 and are taken as they are; with ``pixel_range=(lo, hi)`` (required for floats) values
map to round((x - lo) 255 / (hi - lo)), and NaN, Inf or values outside [lo, hi] are refused with a count. The
array then goes through the same channel conversion and centre-crop + resize as a folder's images.

Writing (:func:`save_image_grid`, :func:`save_image_folder`): levels 0..levels-1 are shown as
round(v 255 / (levels - 1)); a grid is written to a temporary file and renamed; a folder's PNGs are all encoded
into a temporary sibling folder first, which then becomes the folder (when it did not exist) or whose files are
renamed into it one by one (an existing folder keeps its other files; files of the same names are replaced), so an
error while encoding leaves nothing behind.
"""

from __future__ import annotations

import math
import os
import shutil
import struct
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from ..atomic import write_atomically
from ..errors import InputError, check_int, one_line
from .files import read_npy

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
RESAMPLE = Image.Resampling.LANCZOS
MIN_TILE = 32  # a grid's default scale makes each tile at least this many pixels on its shorter side
_GRAY_MODES = ("1", "L", "LA", "La", "I", "F")
_ALPHA_MODES = ("RGBA", "RGBa", "LA", "La", "PA")
# What Pillow raises on a bad file: OSError (UnidentifiedImageError, truncation), SyntaxError (broken PNG
# chunks), ValueError/TypeError/EOFError/struct.error (malformed headers), DecompressionBombError (absurd sizes).
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, TypeError, EOFError, struct.error,
                  Image.DecompressionBombError)


@dataclass
class ImageSet:
    """Images read from a folder or a .npy: ``images`` uint8 (N, C, H, W) with values 0..levels-1; ``labels``
    int64 (N,) indices into ``classes`` (both None without class sub-folders); ``skipped`` the files that could
    not be read; ``source`` a one-line description."""

    images: np.ndarray
    labels: np.ndarray | None
    classes: list[str] | None
    levels: int
    source: str
    skipped: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------
# One image: decode, convert, crop and resize.


def _open(path: Path) -> Image.Image:
    """The fully decoded image at path, upright by its EXIF orientation."""
    with Image.open(path) as image:
        image.load()  # decode now: Pillow's open() reads only the header, so truncation would go unseen
        return ImageOps.exif_transpose(image)


def _is_colour(image: Image.Image) -> bool:
    """Whether the image carries colour: a colour mode, or a palette whose used entries are not all gray."""
    if image.mode == "P":
        palette = np.array(image.getpalette("RGB")).reshape(-1, 3)
        palette = palette[[i for i in np.unique(np.asarray(image)) if i < len(palette)]]
        return not (palette == palette[:, :1]).all()
    return not (image.mode in _GRAY_MODES or image.mode.startswith("I;16"))


def _over_white(image: Image.Image) -> Image.Image:
    """RGB of the image composited over white: round(a c + (1 - a) 255), a the alpha in [0, 1]."""
    rgba = np.asarray(image.convert("RGBA"), dtype=np.float64)
    alpha = rgba[..., 3:] / 255
    return Image.fromarray(np.rint(alpha * rgba[..., :3] + (1 - alpha) * 255).astype(np.uint8), "RGB")


def _convert(image: Image.Image, colour: bool) -> Image.Image:
    """The image in mode RGB (colour) or L: 16-bit gray scaled to 8 bits, alpha composited over white."""
    if image.mode == "I" or image.mode.startswith("I;16"):
        # v -> round(v * 255 / 65535) in integers (Pillow's own conversion clips at 255 instead).
        v = np.asarray(image).astype(np.int64).clip(0, 65535)
        image = Image.fromarray(((v * 510 + 65535) // 131070).astype(np.uint8), "L")
    if image.mode in _ALPHA_MODES or "transparency" in image.info:
        image = _over_white(image)
    return image.convert("RGB" if colour else "L")


def _crop_resize(image: Image.Image, size: int) -> Image.Image:
    """The centred square of side min(W, H), resized to size x size by Lanczos (no resampling if it fits)."""
    width, height = image.size
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    box = (left, top, left + side, top + side)
    return image.crop(box) if side == size else image.resize((size, size), RESAMPLE, box=box)


def _chw(image: Image.Image) -> np.ndarray:
    """An L or RGB image as uint8 (C, H, W)."""
    array = np.asarray(image, dtype=np.uint8)
    return array[None] if array.ndim == 2 else array.transpose(2, 0, 1)


def _check_size(path, image: Image.Image, first: tuple[Path, tuple[int, int]] | None) -> None:
    """Without an image size: InputError unless the image is square and of the first image's size."""
    width, height = image.size
    if width != height:
        raise InputError(f"{path}: image is {width}x{height}, not square; give --image-size to centre-crop "
                         "and resize every image")
    if first is not None and first[1] != image.size:
        raise InputError(f"{path}: image is {width}x{height} but {first[0]} is {first[1][0]}x{first[1][1]}; "
                         "give --image-size to resize every image to one size")


# ---------------------------------------------------------------------------------------------
# A folder of image files.


def _image_files(root: Path) -> list[Path]:
    """The image files below root (relative paths), hidden names skipped, sorted by path components."""
    files = [p.relative_to(root) for p in root.rglob("*")
             if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()]
    files = [p for p in files if not any(part.startswith(".") for part in p.parts)]
    if not files:
        others = sum(1 for _ in root.rglob("*"))
        raise InputError(f"{root}: no image files ({', '.join(IMAGE_SUFFIXES)}) in the folder"
                         + (f" (it holds {others} other entries)" if others else " (it is empty)"))
    return sorted(files, key=lambda p: p.parts)


def _class_names(root: Path, files: list[Path]) -> list[str] | None:
    """The sorted first-level sub-folders when every image lies below one, None when all lie in root."""
    loose = sum(len(p.parts) == 1 for p in files)
    if loose == len(files):
        return None
    if loose:
        raise InputError(f"{root}: {loose} image files lie directly in the folder and {len(files) - loose} in "
                         "sub-folders; put every image in a class sub-folder, or all of them in the folder itself")
    return sorted({p.parts[0] for p in files})


def _read_folder(root: Path, image_size: int | None, channels: int | None) -> ImageSet:
    """Read, convert, crop and resize every image below root (see the module docstring)."""
    files = _image_files(root)
    classes = _class_names(root, files)
    index = {name: k for k, name in enumerate(classes or [])}
    arrays, labels, skipped, first = [], [], [], None
    for rel in files:
        path = root / rel
        try:
            image = _open(path)
        except _DECODE_ERRORS:
            skipped.append(str(path))
            continue
        if image_size is None:
            _check_size(path, image, first)
            first = first or (path, image.size)
        colour = _is_colour(image) if channels is None else channels == 3
        image = _convert(image, colour)
        arrays.append(_chw(image if image_size is None else _crop_resize(image, image_size)))
        labels.append(index.get(rel.parts[0], 0))
    _check_skipped(root, len(files), skipped)
    c = max(len(a) for a in arrays)  # gray images join colour ones as RGB, their gray repeated
    images = np.stack([np.repeat(a, c // len(a), axis=0) for a in arrays])
    return ImageSet(images, np.array(labels, dtype=np.int64) if classes else None, classes, 256,
                    _describe(root, images, classes, skipped, image_size), skipped)


def _check_skipped(root: Path, total: int, skipped: list[str]) -> None:
    """InputError when no file, or more than half of the total, could not be read."""
    if 2 * len(skipped) > total:
        raise InputError(f"{root}: {len(skipped)} of {total} image files could not be read (first: {skipped[0]}); "
                         "refusing a folder where more than half are unreadable")


def _describe(root: Path, images: np.ndarray, classes, skipped: list[str], image_size: int | None) -> str:
    """One line saying what was read from a folder."""
    n, c, h, w = images.shape
    text = f"{root}: {n} images {c}x{h}x{w}"
    text += f" in {len(classes)} classes" if classes else ""
    text += f", centre-cropped and resized to {image_size} (Lanczos)" if image_size is not None else ""
    return text + (f", {len(skipped)} unreadable files skipped" if skipped else "")


# ---------------------------------------------------------------------------------------------
# A .npy array.


def _npy_header(path: Path) -> tuple[tuple[int, ...], np.dtype]:
    """(shape, dtype) from a .npy file's header, without reading its data; ValueError/OSError if not one."""
    with open(path, "rb") as f:
        version = np.lib.format.read_magic(f)
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _, dtype = read(f)
    return shape, dtype


def _npy_layout(path: Path, shape: tuple[int, ...]) -> str:
    """'NHW', 'NHWC' or 'NCHW' for an image array's shape; InputError otherwise."""
    if len(shape) == 3:
        return "NHW"
    if len(shape) != 4:
        raise InputError(f"{path}: array of shape {shape}; expected images (N, H, W), (N, H, W, C) or (N, C, H, W)")
    first, last = shape[1] in (1, 3), shape[3] in (1, 3)
    if first == last:
        what = "is ambiguous (axes 1 and 3 could both be channels)" if first else "has no channel axis of size 1 or 3"
        raise InputError(f"{path}: array of shape {shape} {what}; expected (N, H, W, C) or (N, C, H, W), C = 1 or 3")
    return "NHWC" if last else "NCHW"


def _to_levels(path: Path, array: np.ndarray, pixel_range) -> np.ndarray:
    """uint8 values 0..255: integers as they are (they must lie in 0..255), or round((x - lo) 255 / (hi - lo))."""
    if pixel_range is None:
        if array.dtype.kind == "f":
            raise InputError(f"{path}: holds {array.dtype} values; give --pixel-range LO HI to map them to 0..255")
        outside = np.count_nonzero((array < 0) | (array > 255))
        if outside:
            raise InputError(f"{path}: {outside} values lie outside 0..255; give --pixel-range LO HI to rescale")
        return array.astype(np.uint8)
    lo, hi = _check_range(pixel_range)
    x = array.astype(np.float64)
    bad = np.count_nonzero(~np.isfinite(x))
    if bad:
        raise InputError(f"{path}: {bad} values are NaN or Inf")
    outside = np.count_nonzero((x < lo) | (x > hi))
    if outside:
        raise InputError(f"{path}: {outside} values lie outside the pixel range [{lo:g}, {hi:g}]")
    return np.rint((x - lo) / (hi - lo) * 255).astype(np.uint8)


def _check_range(pixel_range) -> tuple[float, float]:
    """(lo, hi) as floats; InputError unless two finite numbers with lo < hi."""
    try:
        lo, hi = (float(v) for v in pixel_range)
    except (TypeError, ValueError):
        raise InputError(f"the pixel range must be two numbers LO HI, got {pixel_range!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise InputError(f"the pixel range must be two finite numbers LO < HI, got {lo:g} {hi:g}")
    return lo, hi


def _read_npy(path: Path, image_size: int | None, channels: int | None, pixel_range) -> ImageSet:
    """Read an image array (see the module docstring); the data are never unpickled."""
    try:
        shape, dtype = _npy_header(path)
    except (OSError, ValueError, EOFError) as e:
        raise InputError(f"{path}: not a readable .npy file ({one_line(e)})") from None
    if dtype.kind not in "uif":
        raise InputError(f"{path}: holds {dtype} values; expected integers or floats")
    layout = _npy_layout(path, shape)
    if shape[0] == 0:
        raise InputError(f"{path}: holds no images (shape {shape})")
    array = _to_levels(path, read_npy(path), pixel_range)
    if layout != "NCHW":
        array = array[:, None] if layout == "NHW" else array.transpose(0, 3, 1, 2)
    images = _reshape_images(path, np.ascontiguousarray(array), image_size, channels)
    n, c, h, w = images.shape
    return ImageSet(images, None, None, 256, f"{path}: {n} images {c}x{h}x{w} from a {dtype} array {shape}")


def _reshape_images(path: Path, images: np.ndarray, image_size: int | None, channels: int | None) -> np.ndarray:
    """uint8 (N, C, H, W) converted to ``channels`` and centre-cropped + resized to ``image_size`` as for files."""
    n, c, h, w = images.shape
    channels = channels or c
    if image_size is None:
        if h != w:
            raise InputError(f"{path}: images are {h}x{w}, not square; give --image-size to centre-crop and resize")
        image_size = h
    if channels == c and image_size == h == w:
        return images
    pil = [Image.fromarray(a[0] if c == 1 else a.transpose(1, 2, 0), "L" if c == 1 else "RGB") for a in images]
    return np.stack([_chw(_crop_resize(_convert(p, channels == 3), image_size)) for p in pil])


# ---------------------------------------------------------------------------------------------
# The entry points for reading.


def is_image_source(path) -> bool:
    """Whether path is a folder, or a .npy file whose header says 3 or 4 dimensions (images rather than rows)."""
    path = Path(path)
    if path.is_dir():
        return True
    if path.suffix.lower() != ".npy" or not path.is_file():
        return False
    try:
        shape, _ = _npy_header(path)
    except (OSError, ValueError, EOFError):
        return False
    return len(shape) in (3, 4)


def read_images(path, image_size: int | None = None, channels: int | None = None, pixel_range=None) -> ImageSet:
    """The images of a folder of PNG/JPEG files or of a .npy array as uint8 (N, C, H, W), 256 levels.

    image_size: the side every image is centre-cropped and resized to (None: keep one shared square size);
    channels: 1 (L) or 3 (RGB), None for the data's own (RGB when any image is in colour); pixel_range: (lo, hi)
    of a .npy's values, mapped linearly onto 0..255 (required for float arrays). Details in the module docstring.
    """
    path = Path(path)
    if image_size is not None:
        check_int("the image size", image_size, 1)
    if channels is not None and channels not in (1, 3):
        raise InputError(f"the number of channels must be 1 (gray) or 3 (RGB), got {channels!r}")
    if path.is_dir():
        return _read_folder(path, image_size, channels)
    if not path.exists():
        raise InputError(f"{path}: no such file or folder")
    if path.suffix.lower() != ".npy":
        raise InputError(f"{path}: expected a folder of image files or a .npy array of images")
    return _read_npy(path, image_size, channels, pixel_range)


IMAGE_FILE_SUFFIXES = (".png", ".jpg", ".jpeg")


def read_image_file(path, image_size: int, channels: int) -> np.ndarray:
    """One PNG/JPEG file as uint8 (1, channels, image_size, image_size), 256 levels: converted, centre-cropped and
    resized as a folder's images are; InputError in one line when it cannot be decoded."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    try:
        image = _open(path)
    except _DECODE_ERRORS as e:
        raise InputError(f"{path}: not a readable image ({one_line(e)})") from None
    return _chw(_crop_resize(_convert(image, channels == 3), image_size))[None]


# ---------------------------------------------------------------------------------------------
# Writing.


def to_display(images, levels: int) -> np.ndarray:
    """uint8 (N, H, W, C) for integer images (N, C, H, W) of values 0..levels-1: v -> round(v 255 / (levels - 1))
    (halves up, in exact integer arithmetic)."""
    levels = check_int("the number of pixel levels", levels, 2, 65536)
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[1] not in (1, 3) or images.dtype.kind not in "ui":
        raise ValueError(f"expected integer images (N, C, H, W) with C = 1 or 3, got {images.dtype} {images.shape}")
    v = images.astype(np.int64)
    if v.size and (v.min() < 0 or v.max() >= levels):
        raise ValueError(f"image values must lie in 0..{levels - 1}, got {v.min()}..{v.max()}")
    # round(v * 255 / (L - 1)) = floor((2 * 255 v + (L - 1)) / (2 (L - 1))).
    return ((510 * v + levels - 1) // (2 * (levels - 1))).astype(np.uint8).transpose(0, 2, 3, 1)


def _pil(array: np.ndarray) -> Image.Image:
    """uint8 (H, W, 1) as mode L, (H, W, 3) as RGB."""
    return Image.fromarray(array[..., 0], "L") if array.shape[-1] == 1 else Image.fromarray(array, "RGB")


def _grid(tiles: np.ndarray, nrow: int, pad: int, pad_value: int) -> np.ndarray:
    """uint8 (H', W', C) with the tiles (N, h, w, C) in rows of nrow, pad pixels between and around them."""
    n, h, w, c = tiles.shape
    rows = math.ceil(n / nrow)
    grid = np.full((rows * (h + pad) + pad, nrow * (w + pad) + pad, c), pad_value, dtype=np.uint8)
    for i, tile in enumerate(tiles):
        top, left = pad + (i // nrow) * (h + pad), pad + (i % nrow) * (w + pad)
        grid[top:top + h, left:left + w] = tile
    return grid


def _check_parent(path: Path) -> None:
    """InputError unless path's folder exists and path itself is not a folder."""
    if not path.parent.is_dir():
        raise InputError(f"{path}: directory {path.parent} does not exist")
    if path.is_dir():
        raise InputError(f"{path}: is a directory")


def save_image_grid(path, images, levels: int, nrow: int | None = None, scale: int | None = None, pad: int = 1,
                    pad_value: int = 255) -> None:
    """Write images (N, C, H, W) of values 0..levels-1 as one PNG grid, atomically.

    nrow columns (default ceil(sqrt(N)), at most N); each image enlarged by the integer ``scale`` with nearest
    neighbour (default: the least making its shorter side >= 32 px); ``pad`` pixels of ``pad_value`` between and
    around the tiles. Gray images give a mode L PNG, colour ones RGB.
    """
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise InputError(f"{path}: an image grid is written as PNG; name it *.png")
    _check_parent(path)
    tiles = to_display(images, levels)
    n, h, w, _ = tiles.shape
    if n == 0:
        raise ValueError("no images to put in a grid")
    nrow = min(n, math.ceil(math.sqrt(n)) if nrow is None else check_int("the grid's number of columns", nrow, 1))
    scale = math.ceil(MIN_TILE / min(h, w)) if scale is None else check_int("the grid's scale", scale, 1)
    pad = check_int("the grid's padding", pad, 0)
    pad_value = check_int("the grid's padding value", pad_value, 0, 255)
    tiles = tiles.repeat(scale, axis=1).repeat(scale, axis=2)  # nearest-neighbour enlargement
    image = _pil(_grid(tiles, nrow, pad, pad_value))
    try:
        write_atomically(path, lambda f: image.save(f, format="PNG"))
    except OSError as e:
        raise InputError(f"{path}: cannot write ({one_line(e)})") from None


def _check_names(names, n: int) -> list[str]:
    """The names as a list; ValueError unless n distinct plain file stems (no separators, not hidden)."""
    names = list(names)
    if len(names) != n or len(set(names)) != n:
        raise ValueError(f"need {n} distinct names, got {len(names)} ({len(set(names))} distinct)")
    bad = [s for s in names if not isinstance(s, str) or not s or s.startswith(".") or "/" in s or os.sep in s]
    if bad:
        raise ValueError(f"names must be plain file names, not hidden, without separators; got {bad[0]!r}")
    return names


def _write_pngs(folder: Path, tiles: np.ndarray, names: list[str]) -> None:
    """Write tiles (N, H, W, C) as folder/NAME.png, each flushed to disk."""
    for tile, name in zip(tiles, names):
        with open(folder / f"{name}.png", "wb") as f:
            _pil(tile).save(f, format="PNG")
            f.flush()
            os.fsync(f.fileno())


def save_image_folder(folder, images, levels: int, names) -> None:
    """Write images (N, C, H, W) of values 0..levels-1 as folder/NAME.png, one per name (file stems).

    The folder is created if missing (its parent must exist). Every PNG is first written into a temporary sibling
    folder; it is then renamed to ``folder`` (when that did not exist) or its files are renamed into it one by one.
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise InputError(f"{folder}: exists and is not a folder")
    if not folder.parent.is_dir():
        raise InputError(f"{folder}: directory {folder.parent} does not exist")
    tiles = to_display(images, levels)
    names = _check_names(names, len(tiles))
    try:
        tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.", suffix=".tmp"))
        try:
            _write_pngs(tmp, tiles, names)
            _move_in(tmp, folder, names)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    except OSError as e:
        raise InputError(f"{folder}: cannot write ({one_line(e)})") from None


def _move_in(tmp: Path, folder: Path, names: list[str]) -> None:
    """Rename the written folder tmp to folder, or, when folder exists, its files into folder."""
    if not folder.is_dir():
        os.chmod(tmp, 0o755)  # mkdtemp makes it private (0700); give it a usual folder's mode
        os.rename(tmp, folder)
        return
    for name in names:
        os.replace(tmp / f"{name}.png", folder / f"{name}.png")
    tmp.rmdir()
